"""Runs one stage replica in its own process: sockets in, stage, sockets out.

The runner owns everything a stage should not care about: the inbox and
outbox, counting end-of-stream markers, the supervisor's control channel
(stop / abort), periodic stats, and turning a stage failure into one line the
supervisor can show.  A stage replica exits when every stream it carries has
ended, when the supervisor aborts the run, or when its parent process is gone
(so a killed supervisor never leaves stray processes behind).
"""
from __future__ import annotations

import os
import resource
import signal
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack
import zmq

from pipeline.health import Health, HealthChange
from pipeline.messages import EndOfStream, Packet
from pipeline.metrics import rss_mb
from pipeline.stage import Source, Stage, StageChain, StageError
from pipeline.transport import (CreditInbox, CreditSender, CurveKeys, FinishedInbox, FinishedSender, Inbox, Outbox,
                                connect_socket, release_context)
from runtime.admission import LiveAdmission

# What the supervisor sends a stage process that is still running after an abort (SIGTERM is
# the supervisor's own, see run_stage_process). Its default action ends the process too.
TERMINATE_SIGNAL = signal.SIGUSR1


class Control(bytes, Enum):
    """What the supervisor publishes to every stage on the control channel."""

    START = b"start"  # every stage is ready: sources may start reading
    STOP = b"stop"  # sources stop reading; everything already read still flows to the sink
    ABORT = b"abort"  # every stage stops now; outputs in progress are discarded
    EXITED = b"exited "  # + a stage label: that stage has taken all its input and left
    HEALTH = b"health "  # + a msgpack'd HealthChange (health_fields): for the sink's events file


class Report(str, Enum):
    """The kinds of report a stage sends the supervisor (a msgpack dict, its "type")."""

    READY = "ready"  # opened: models loaded, sources open
    STATS = "stats"  # figures for the metrics, about once a second and at the end
    WARNING = "warning"  # a line to show the user (a live stream that ended early)
    STOP_REQUEST = "stop_request"  # the stage asked to stop the run (Stage.stop_requested)
    ERROR = "error"  # the stage failed: its one-line message; the run aborts
    EXIT = "exit"  # the stage has finished and is leaving
    HEALTH = "health"  # a live source's health changed: {"change": health_fields(change)}


def health_fields(change: HealthChange) -> dict:
    """A HealthChange as plain values, for a report or a control message (msgpack)."""
    return {"stream_id": change.stream_id, "stream": change.stream, "state": change.state.value,
            "previous": None if change.previous is None else change.previous.value, "detail": change.detail,
            "reconnects": change.reconnects, "epoch_s": change.epoch_s}


def health_from_fields(fields: dict) -> HealthChange:
    previous = fields.get("previous")
    return HealthChange(stream_id=fields["stream_id"], stream=fields["stream"], state=Health(fields["state"]),
                        previous=None if previous is None else Health(previous), detail=fields.get("detail", ""),
                        reconnects=fields.get("reconnects", 0), epoch_s=fields.get("epoch_s", 0.0))


@dataclass
class StageSpec:
    """Everything one stage replica needs to run, sent to its process."""

    stage: str  # one of pipeline.config.STAGE_NAMES
    replica: int
    config: Any  # the stage's config dataclass
    inbox: str | None  # endpoint this replica binds (None for sources)
    outbox: list[str]  # endpoints of the downstream replicas (empty for the sink)
    downstream: list[str]  # labels of the replicas it feeds: this one keeps its sockets open until they have left
    expected_eos: dict[int, int]  # stream id -> end-of-stream markers to wait for
    hwm: int
    control: str  # supervisor's PUB endpoint
    report: str  # supervisor's PULL endpoint
    live: bool = False  # any live source: keep every queue short, latency matters more than throughput
    # Where packets go that have nothing for the next stages (Stage.takes_bypass): the
    # annotate stage, for frames the face detector skips (from the source) and frames
    # with no face crops (from detect). End-of-stream markers go both ways.
    bypass: list[str] = field(default_factory=list)
    credit_inbox: str | None = None  # live sources: where detect replicas ask for frames
    credit_outboxes: dict[int, str] = field(default_factory=dict)  # detect in live runs: stream -> source's credit inbox
    # live sources: where the sink says which frame it finished, and the latency budget
    finished_inbox: str | None = None
    latency_budget_s: float = 0.0
    finished_outboxes: dict[int, str] = field(default_factory=dict)  # sink: live stream -> its source's finished inbox
    report_interval_s: float = 1.0
    niceness: int = 0  # added to the process's niceness when it starts (RunConfig.upstream_niceness)
    # The sink of a live run: before it closes, wait (a few seconds at most) until the supervisor
    # has announced these stages' exit (the sources): it forwards every health change a source
    # reported before announcing that source's exit, so the events file gets the last ones too.
    await_exited: list[str] = field(default_factory=list)
    parent_pid: int = 0  # the supervisor's pid when it launched this process (0: started by hand)
    # folder of `dfstream keys` (the plan's curve_keys): hops to other hosts go over CurveZMQ with them
    curve_keys: str = ""
    # Stages that run after this one in the same process, fed in memory (pipeline.stage.StageChain):
    # (stage name, its config) each. The inbox is the first stage's, the outbox the last one's.
    then: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{'+'.join(self.stages)}[{self.replica}]"

    @property
    def stages(self) -> list[str]:
        """The stages this replica's process runs, in order."""
        return [self.stage] + [name for name, _ in self.then]


def build_stage(spec: StageSpec) -> Stage:
    """The stage object for a spec (a StageChain when it runs several)."""
    if not spec.then:
        return _stage_object(spec.stage, spec.config)
    return StageChain([_stage_object(spec.stage, spec.config)] + [_stage_object(n, c) for n, c in spec.then])


def _stage_object(stage: str, config: Any) -> Stage:
    """Each stage's module is imported only here, in its own process, so a process loads only
    its own stage's libraries (the sink never loads a model runtime)."""
    if stage == "source":
        from stages.source import SourceStage as stage_class
    elif stage == "detect":
        from stages.detect import DetectStage as stage_class
    elif stage == "batch":
        from stages.batch import BatchStage as stage_class
    elif stage == "infer":
        from stages.infer import InferStage as stage_class
    elif stage == "annotate":
        from stages.annotate import AnnotateStage as stage_class
    elif stage == "sink":
        from stages.sink import SinkStage as stage_class
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return stage_class(config)


class StageRunner:
    def __init__(self, spec: StageSpec):
        self.spec = spec
        self.context = zmq.Context()
        keys = CurveKeys.load(spec.curve_keys) if spec.curve_keys else None
        self.reporter = self.context.socket(zmq.PUSH)
        self.reporter.setsockopt(zmq.LINGER, 2000)
        connect_socket(self.reporter, spec.report, keys)
        self.control = self.context.socket(zmq.SUB)
        self.control.setsockopt(zmq.SUBSCRIBE, b"")
        self.control.setsockopt(zmq.LINGER, 0)
        connect_socket(self.control, spec.control, keys)
        self.inbox = Inbox(self.context, spec.inbox, spec.hwm, spec.live, keys) if spec.inbox else None
        self.outbox = (Outbox(self.context, spec.outbox, spec.hwm, small_buffers=spec.live, keys=keys)
                       if spec.outbox else None)
        self.bypass = (Outbox(self.context, spec.bypass, spec.hwm, small_buffers=spec.live, keys=keys)
                       if spec.bypass else None)
        self.credit_inbox = (CreditInbox(self.context, spec.credit_inbox, len(spec.outbox), keys)
                             if spec.credit_inbox else None)
        self.credit_sender = (
            CreditSender(self.context, spec.credit_outboxes, spec.replica, keys) if spec.credit_outboxes else None
        )
        finished_inbox = (FinishedInbox(self.context, spec.finished_inbox, spec.latency_budget_s, keys)
                          if spec.finished_inbox else None)
        # live sources: credits from the detect replicas and the latency budget decide when a frame enters
        self.admission = (LiveAdmission(self.credit_inbox, finished_inbox)
                          if self.credit_inbox is not None or finished_inbox is not None else None)
        self.finished_sender = (FinishedSender(self.context, spec.finished_outboxes, keys)
                                if spec.finished_outboxes else None)
        self.stage: Stage | None = None
        self.started_flow = False  # supervisor said every stage is ready
        self.downstream_exited: set[str] = set()
        self.stopping = False  # supervisor asked sources to stop reading
        self.aborted = False
        self.processed = 0  # frames handled
        self.busy_s = 0.0  # time inside stage.process
        self.started = time.monotonic()
        self.first_input: float | None = None
        self.last_output: float | None = None
        self._last_report = 0.0
        self._eos_seen: dict[int, int] = defaultdict(int)
        self._eos_info: dict[int, EndOfStream] = {}

    def outboxes(self) -> list[Outbox]:
        """Every output socket set: end-of-stream markers go down each of them."""
        return [box for box in (self.outbox, self.bypass) if box is not None]

    # -- reporting ----------------------------------------------------------
    def report(self, kind: Report, **fields) -> None:
        body = {"type": kind.value, "label": self.spec.label, "stage": self.spec.stage, "replica": self.spec.replica,
                "pid": os.getpid(), **fields}
        self.reporter.send(msgpack.packb(body, default=str))

    def report_stats(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last_report < self.spec.report_interval_s:
            return
        self._last_report = now
        usage = resource.getrusage(resource.RUSAGE_SELF)
        extra = self.stage.stats() if self.stage else {}
        if self.admission is not None and self.admission.finished is not None:
            extra["dropped_over_budget"] = self.admission.dropped_over_budget
        common = dict(cpu_s=usage.ru_utime + usage.ru_stime,
                      max_rss_mb=rss_mb(field="VmHWM") or usage.ru_maxrss / 1024.0,  # ru_maxrss: not Linux
                      niceness=os.nice(0), final=final)
        active_s = (self.last_output or now) - (self.first_input or self.started) if self.first_input else 0.0
        received = self.inbox.received if self.inbox else 0
        sent = {url: n for box in self.outboxes() for url, n in zip(box.urls, box.sent)}
        if not isinstance(self.stage, StageChain):
            self.report(Report.STATS, **common, processed=self.processed, busy_s=self.busy_s, active_s=active_s,
                        received=received, inbox=self.spec.inbox, sent=sent, extra=extra)
            return
        # one report per stage of the chain, so the metrics keep a row for each; the process's
        # CPU is shared out by each stage's busy time (the only split a shared process has)
        members = self.stage.member_stats()
        busy_total = sum(busy for _, _, busy, _ in members) or 1.0
        for i, (name, frames, busy, stats) in enumerate(members):
            first, last = i == 0, i == len(members) - 1
            self.report(Report.STATS, stage=name, **{**common, "cpu_s": common["cpu_s"] * busy / busy_total},
                        processed=frames, busy_s=busy, active_s=active_s, received=received if first else 0,
                        inbox=self.spec.inbox if first else None, sent=sent if last else {}, extra=stats)

    # -- control ------------------------------------------------------------
    def check_control(self) -> None:
        while self.control.poll(0):
            command = self.control.recv()
            if command == Control.ABORT:
                self.aborted = True
            elif command == Control.STOP:
                self.stopping = True
            elif command == Control.START:
                self.started_flow = True
            elif command.startswith(Control.EXITED):
                self.downstream_exited.add(command[len(Control.EXITED):].decode())
            elif command.startswith(Control.HEALTH) and self.stage is not None:
                self.stage.health_changed(health_from_fields(msgpack.unpackb(command[len(Control.HEALTH):])))
        if self.spec.parent_pid and os.getppid() != self.spec.parent_pid:
            self.aborted = True  # the supervisor died: do not linger as an orphan

    def should_stop_sending(self) -> bool:
        self.check_control()
        return self.aborted

    def emit(self, packets: list[Packet]) -> None:
        for packet in packets:
            outbox = self.outbox
            if self.bypass is not None and all(self.stage.takes_bypass(message) for message in packet):
                outbox = self.bypass
            if outbox is not None and packet:
                outbox.send(packet, self.should_stop_sending)
            self.last_output = time.monotonic()
        if self.stage is not None and self.stage.stop_requested:
            self.report(Report.STOP_REQUEST)
            self.stage.stop_requested = False

    # -- main loops -----------------------------------------------------------
    def run(self) -> int:
        spec = self.spec
        try:
            self.stage = build_stage(spec)
            self.stage.open()
            self.report(Report.READY)
            if self.credit_sender is not None:
                self.credit_sender.give_all()
            if spec.stage == "source":
                self.run_source()
            else:
                self.run_consumer()
                self.wait_for_exits(spec.await_exited)
            code = 0
        except StageError as exc:
            self.report(Report.ERROR, message=str(exc))
            code = 2
        except Exception as exc:  # an unexpected failure is still reported as one line
            self.report(Report.ERROR, message=f"{spec.label} failed: {type(exc).__name__}: {exc}", trace=traceback.format_exc())
            code = 1
        finally:
            if self.stage is not None:
                if self.aborted:
                    self.stage.abort()
                try:
                    self.stage.close()
                except Exception as exc:
                    self.report(Report.ERROR, message=f"{spec.label} could not close cleanly: {exc}")
            self.report_stats(final=True)
            self.report(Report.EXIT, aborted=self.aborted)
            self.wait_for_downstream()
            self.close_sockets()
        return code

    def wait_for_downstream(self) -> None:
        """Keep the connections open until every stage we feed has left.

        ZeroMQ does not promise delivery once the sending process is gone: a message
        still in the kernel's socket buffer, behind a receiver whose queue is full,
        was seen to be dropped when the sender exited -- an end-of-stream marker lost
        that way hangs the run.  So a stage leaves only after its consumers have."""
        waiting = set(self.spec.downstream)
        while waiting - self.downstream_exited and not self.aborted:
            self.control.poll(100)
            self.check_control()

    def wait_for_exits(self, labels: list[str], timeout_s: float = 5.0) -> None:
        """Take control messages until the supervisor has announced that ``labels`` have left
        (see StageSpec.await_exited)."""
        deadline = time.monotonic() + timeout_s
        while set(labels) - self.downstream_exited and not self.aborted and time.monotonic() < deadline:
            self.control.poll(100)
            self.check_control()

    def report_health(self) -> None:
        for change in self.stage.health_changes():
            self.report(Report.HEALTH, change=health_fields(change))

    def run_source(self) -> None:
        stage: Source = self.stage
        admission = self.admission
        error = None
        refused_since = None  # live admission has refused every frame since then
        self.report_health()
        # Frames read before the other stages have loaded their models would
        # wait in a queue: live latency from the very first frame.
        while not (self.started_flow or self.stopping or self.aborted):
            self.control.poll(100)
            self.check_control()
        if admission is not None and admission.credits is not None:
            stage.detector_free = admission.detector_free
        stage.start()
        try:
            while not stage.finished:
                self.check_control()
                if self.aborted:
                    return
                if self.stopping:
                    stage.stop()
                    break
                if admission is not None and not admission.admit(stage):
                    now = time.monotonic()
                    refused_since = refused_since or now
                    stage.note_refused(now - refused_since)
                    self.report_health()
                    continue
                if refused_since is not None:
                    refused_since = None
                    stage.note_refused(0.0)
                started, waited = time.monotonic(), stage.waited_s
                packets = stage.process(None)
                self.first_input = self.first_input or started
                self.busy_s += time.monotonic() - started - (stage.waited_s - waited)
                self.processed += sum(len(p) for p in packets)
                for packet in packets:
                    detect_replica = admission.sent(packet) if admission is not None else None
                    if detect_replica is not None:
                        self.outbox.send_to(detect_replica, packet, self.should_stop_sending)
                        self.last_output = time.monotonic()
                    else:
                        self.emit([packet])
                self.report_health()
                self.report_stats()
        except StageError as exc:
            error = str(exc)
            raise
        finally:
            self.report_health()  # the last change (offline) before the EXIT report
            if stage.warning:
                self.report(Report.WARNING, message=stage.warning)
            if not self.aborted:
                marker = EndOfStream(stage.stream.stream_id, stage.frames_sent, stage.dropped, error)
                for outbox in self.outboxes():
                    outbox.broadcast(marker, self.should_stop_sending)

    def run_consumer(self) -> None:
        stage, spec = self.stage, self.spec
        open_streams = set(spec.expected_eos)
        while open_streams:
            self.check_control()
            if self.aborted:
                return
            deadline = stage.next_deadline()
            timeout_ms = 100 if deadline is None else max(0, min(100, int((deadline - time.monotonic()) * 1000)))
            if self.inbox.poll(timeout_ms):
                message = self.inbox.receive()
                if isinstance(message, EndOfStream):
                    self.on_end_of_stream(message, open_streams)
                else:
                    started = time.monotonic()
                    self.first_input = self.first_input or started
                    packets = stage.process(message)
                    self.busy_s += time.monotonic() - started
                    self.processed += stage.frames_in(message)
                    self.emit(packets)
                    self.return_credits(message)
                    self.report_finished([message])
            deadline = stage.next_deadline()
            if deadline is not None and time.monotonic() >= deadline:
                self.emit(stage.tick())
                self.report_finished([])
            self.report_stats()

    def report_finished(self, received: list[Packet]) -> None:
        """Live runs, the sink's runner: tell each source which of its frames are done (its latency
        budget). In a chain that is what reached its last stage, not what entered its first
        (annotate holds frames back to put them in order)."""
        done = self.stage.reached_last() if isinstance(self.stage, StageChain) else received  # drained in every run
        if self.finished_sender is None:
            return
        for packet in done:
            for message in packet:
                self.finished_sender.finished(message.stream_id, message.seq)

    def return_credits(self, packet: Packet) -> None:
        if self.credit_sender is not None:
            for message in packet:
                self.credit_sender.give(message.stream_id)

    def on_end_of_stream(self, marker: EndOfStream, open_streams: set[int]) -> None:
        stream = marker.stream_id
        self._eos_seen[stream] += 1
        merged = self._eos_info.setdefault(stream, marker)
        if merged is not marker:  # every replica forwards the source's own totals
            merged.frames = max(merged.frames, marker.frames)
            merged.dropped = max(merged.dropped, marker.dropped)
            merged.error = merged.error or marker.error
        if self._eos_seen[stream] < self.spec.expected_eos.get(stream, 1):
            return
        info = self._eos_info[stream]
        self.emit(self.stage.end_of_stream(stream))
        self.stage.stream_finished(info)
        for outbox in self.outboxes():
            outbox.broadcast(info, self.should_stop_sending)
        open_streams.discard(stream)

    def close_sockets(self) -> None:
        if self.inbox is not None:
            self.inbox.close()
        for outbox in self.outboxes():
            outbox.close(linger_ms=0 if self.aborted else None)
        finished_inbox = self.admission.finished if self.admission is not None else None
        for extra in (self.credit_inbox, self.credit_sender, finished_inbox, self.finished_sender):
            if extra is not None:
                extra.close()
        self.control.close()
        self.reporter.close()
        release_context(self.context)
        self.context.term()


def _name_process(name: str) -> None:
    """Show the stage in ps/top (``dfs-detect0``; ``dfs-sink0`` runs annotate too) instead of a generic python."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # 15 = PR_SET_NAME
    except (OSError, AttributeError):
        pass  # not Linux: the name is cosmetic


def keep_large_buffers_on_heap() -> None:
    """Let freed picture-sized buffers be reused instead of returned to the kernel.

    glibc serves allocations above a threshold with fresh mmaps and unmaps them when
    freed; its dynamic threshold rises only to a freed chunk's size, so the next
    picture of the same size gets a fresh mapping again, and a page fault and a zeroed
    page for each 4 KiB of it (338 for a 720p I420 picture; every stage allocates a
    few per frame). A fixed 32 MiB threshold (glibc's largest) and no trimming below
    256 MiB keep them on the heap: dfstream bench, 9 interleaved pairs of runs on our
    2-core VM, 52.5 against 48 fps."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_threshold = -1, -3  # from malloc.h
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator makes its own choices


def run_stage_process(spec: StageSpec) -> None:
    """Entry point of a spawned stage process."""
    _name_process(f"dfs-{spec.stages[-1]}{spec.replica}")  # a chain by its last stage: 15 characters at most
    keep_large_buffers_on_heap()
    if spec.niceness:
        try:
            os.nice(spec.niceness)
        except OSError:
            pass  # a hand-written plan may ask for a negative one, which needs privileges: keep the inherited one
    # Ctrl-C goes to the whole process group; only the supervisor acts on it,
    # and it tells the stages what to do over the control channel.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runner = StageRunner(spec)
    abort = lambda *_: setattr(runner, "aborted", True)  # noqa: E731
    # SIGTERM to the whole group (a service manager's stop, `kill -- -PGID`) is the supervisor's
    # to act on, as Ctrl-C is: it stops the run gracefully and keeps the outputs, which the
    # stages would otherwise discard by aborting. The supervisor ends a lingering stage with
    # TERMINATE_SIGNAL; a stage started by hand (`dfstream stage`) has no supervisor as parent.
    signal.signal(TERMINATE_SIGNAL, abort)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if spec.parent_pid else abort)
    raise SystemExit(runner.run())
