"""Launcher and supervisor: start every stage process, watch them, stop them.

The supervisor is the only process that acts on Ctrl-C and SIGTERM.  The first
one (either) asks the sources to stop reading; what was read still flows through and
the sink closes a playable file.  A second one (or a stage failure) aborts:
every stage stops at once and outputs in progress are discarded.  A stage
process that dies without saying why is a crash: a live run restarts it, a file
run (which must not lose frames) stops with an error.

Live sources report their health (:class:`pipeline.health.HealthChange`): the
supervisor prints each change as one line, keeps the latest per stream
(:attr:`Supervisor.health`) for the metrics and any observer, and forwards it to
the sink (a ``Control.HEALTH`` message), which writes it to the events file.
A run whose every stream ended offline fails with a message naming them.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace

import msgpack
import zmq

from pipeline.config import RunConfig
from pipeline.health import Health, HealthChange
from pipeline.urls import redact
from runtime.graph import build_graph
from pipeline.metrics import RunMetrics, write_json
from runtime.plan import RunPlan
from runtime.runner import (TERMINATE_SIGNAL, Control, Report, StageSpec, health_fields, health_from_fields,
                            run_stage_process)
from pipeline.transport import CurveKeys, EndpointAllocator, bind_socket, release_context

EXTERNAL_START_S = 120.0  # stages started by hand on other hosts must report this soon
EXTERNAL_SILENCE_S = 15.0  # ... and then keep reporting (about once a second)
STARTUP_S = 180.0  # a stage that has not opened (models, sources, windows) by then is stuck
GRACEFUL_STOP_S = 30.0  # after a stop request, abort if the graph has not drained by then
ABORT_GRACE_S = 5.0  # after an abort, terminate processes that are still running


@dataclass
class RunResult:
    exit_code: int
    error: str | None
    metrics: dict
    stopped: bool


class SupervisorObserver:
    """Watches a run from inside the supervisor (the bench's clocks, the monitor service): told
    each time the supervisor has looked for stage reports (every 100 ms at most) and taken in
    what came, so these are up to date:

    * :attr:`Supervisor.ready`, :attr:`Supervisor.exited`: stage labels (``"source[0]"``);
    * :attr:`Supervisor.health`: ``{stream_id: HealthChange}``, each live stream's latest health
      change (its ``state``, ``detail``, ``reconnects``, ``epoch_s``); files have none;
    * :attr:`Supervisor.reconnects`: ``{stream_id: int}``, reconnect tries of each live stream;
    * :attr:`Supervisor.metrics`: the :class:`pipeline.metrics.RunMetrics` (``document()``).

    It must only read the supervisor, and return quickly."""

    def reports_received(self, supervisor: "Supervisor") -> None:
        pass


class Supervisor:
    def __init__(self, config: RunConfig, out=sys.stderr, plan: RunPlan | None = None, external: tuple[str, ...] = (),
                 observer: SupervisorObserver | None = None, handle_signals: bool = True):
        self.config = config
        # Ctrl-C and SIGTERM stop the run: only where this supervisor owns the process (its main
        # thread). dfstream monitor runs one supervisor per camera in threads and handles them itself.
        self.handle_signals = handle_signals and threading.current_thread() is threading.main_thread()
        self.out = out
        self.observer = observer
        self.context = multiprocessing.get_context("spawn")
        self.zmq = zmq.Context()
        if plan is None:
            self.endpoints = EndpointAllocator(config.transport)
            plan = RunPlan(self.endpoints.endpoint("control"), self.endpoints.endpoint("report"), [])
            plan.specs = build_graph(config, self.endpoints, plan.control, plan.report)
        else:
            self.endpoints = None  # the plan's author chose the endpoints
        for label in external:
            plan.spec(label)  # raises PlanError for a label that is not in the plan
        self.external = set(external)  # started by hand (on other hosts), not by us
        self.control_url, self.report_url = plan.control, plan.report
        keys = CurveKeys.load(plan.curve_keys) if plan.curve_keys else None
        self.control = self.zmq.socket(zmq.PUB)
        self.control.setsockopt(zmq.LINGER, 0)
        bind_socket(self.control, self.control_url, keys)
        self.reports = self.zmq.socket(zmq.PULL)
        self.reports.setsockopt(zmq.LINGER, 0)
        bind_socket(self.reports, self.report_url, keys)
        self.specs = plan.specs
        self.last_heard: dict[str, float] = {}
        self.processes: dict[str, multiprocessing.Process] = {}
        self.exited: set[str] = set()
        self.ready: set[str] = set()
        self.restarts: dict[str, int] = {}
        self.metrics = RunMetrics(config)
        self.error: str | None = None
        self.stop_requested_at: float | None = None
        self.abort_at: float | None = None
        self.interrupts = 0
        self.first_signal: int | None = None
        self.health: dict[int, HealthChange] = {}  # stream id -> its latest health change (live streams)
        self.reconnects: dict[int, int] = {}  # stream id -> reconnect tries so far
        self._health_to_forward: list[bytes] = []  # held until every stage is ready (subscribed)

    # -- process management ---------------------------------------------------
    def _start(self, spec: StageSpec) -> None:
        spec = replace(spec, parent_pid=os.getpid())  # it exits by itself if we die
        process = self.context.Process(target=run_stage_process, args=(spec,), name=f"dfstream-{spec.label}")
        process.start()
        self.processes[spec.label] = process
        self.exited.discard(spec.label)

    def _start_all(self) -> None:
        # Children inherit "ignore SIGINT" across exec, so a Ctrl-C during
        # start-up cannot kill a half-started stage behind our back.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if self.handle_signals else None
        try:
            for spec in reversed(self.specs):  # consumers first: their inboxes are bound before frames flow
                if spec.label not in self.external:
                    self._start(spec)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _on_signal(self, signum, _frame) -> None:
        # SIGTERM (systemd, docker stop, kill) stops as gracefully as the first Ctrl-C: the
        # recordings are kept. A second signal of either kind aborts.
        self.interrupts += 1
        self.first_signal = self.first_signal or signum
        if self.interrupts == 1:
            key = "Ctrl-C" if signum == signal.SIGINT else "a signal"
            self.request_stop(f"{'interrupted' if signum == signal.SIGINT else 'terminated'}: finishing the "
                              f"frames already read ({key} again to abort)")
        else:
            self.abort("interrupted" if signum == signal.SIGINT else "terminated")

    def request_stop(self, why: str) -> None:
        if self.stop_requested_at is None:
            print(f"dfstream: {why}", file=self.out)
            self.stop_requested_at = time.monotonic()
        self.control.send(Control.STOP)

    def abort(self, error: str) -> None:
        self.error = self.error or redact(error)
        if self.abort_at is None:
            self.abort_at = time.monotonic()
        self.control.send(Control.ABORT)

    # -- reports ----------------------------------------------------------------
    def _drain_reports(self, timeout_ms: int) -> None:
        if self.reports.poll(timeout_ms):
            while self.reports.poll(0):
                report = msgpack.unpackb(self.reports.recv())
                label = report["label"]  # the replica's; a chain's stats name each of its stages in "stage"
                kind = report["type"]
                self.last_heard[label] = time.monotonic()
                if kind == Report.STATS:
                    self.metrics.update(report)
                elif kind == Report.ERROR:
                    self.abort(report["message"])
                elif kind == Report.WARNING:
                    print(f"dfstream: warning: {redact(report['message'])}", file=self.out)
                elif kind == Report.HEALTH:
                    self._health_changed(health_from_fields(report["change"]))
                elif kind == Report.STOP_REQUEST:
                    self.request_stop("window closed: stopping")
                elif kind == Report.READY:
                    self.ready.add(label)
                elif kind == Report.EXIT:
                    self.exited.add(label)
        if self.observer is not None:
            self.observer.reports_received(self)

    def _health_changed(self, change: HealthChange) -> None:
        change.detail = redact(change.detail)
        self.health[change.stream_id] = change
        self.reconnects[change.stream_id] = change.reconnects
        self.metrics.health_changed(change)
        # the first state is no news, and going offline is the source's own warning line
        if change.previous is not None and change.state != Health.OFFLINE:
            detail = f": {change.detail}" if change.detail else ""
            print(f"dfstream: {change.stream}: {change.state.value}{detail}", file=self.out, flush=True)
        self._health_to_forward.append(Control.HEALTH + msgpack.packb(health_fields(change)))
        self._forward_health()

    def _forward_health(self) -> None:
        """Send the sink the health changes held so far, once every stage is ready: a PUB
        message reaches only the subscribers already connected."""
        if len(self.ready) < len(self.specs):
            return
        for message in self._health_to_forward:
            self.control.send(message)
        self._health_to_forward.clear()

    def _all_offline(self) -> str | None:
        """The error of a run whose every stream ended offline, naming them; None otherwise."""
        changes = [self.health.get(s.stream_id) for s in self.config.streams]
        if not changes or any(c is None or c.state != Health.OFFLINE for c in changes):
            return None
        return "every stream went offline: " + "; ".join(f"{c.stream} ({c.detail})" for c in changes)

    def _can_restart(self, spec: StageSpec) -> bool:
        # Sources and the sink hold per-stream state that a new process cannot
        # take over (sequence numbers, the output file); the rest can restart.
        restartable = not {"source", "sink"} & set(spec.stages)
        return restartable and self.restarts.get(spec.label, 0) < self.config.max_restarts

    def _check_external(self, started: float) -> None:
        now = time.monotonic()
        for label in self.external - self.exited:
            heard = self.last_heard.get(label)
            if heard is None and now - started > EXTERNAL_START_S:
                self.abort(f"stage {label} never reported: start it with `dfstream stage PLAN '{label}'`")
            elif heard is not None and now - heard > EXTERNAL_SILENCE_S:
                self.abort(f"stage {label} stopped reporting for {EXTERNAL_SILENCE_S:g} s")

    def _check_startup(self, started: float) -> None:
        if len(self.ready) < len(self.specs) and time.monotonic() - started > STARTUP_S:
            stuck = [s.label for s in self.specs if s.label not in self.ready and s.label not in self.external]
            if stuck:
                self.abort(f"stage {', '.join(stuck)} did not start within {STARTUP_S:g} s")

    def _check_processes(self) -> None:
        for spec in self.specs:
            if spec.label in self.external:
                continue
            process = self.processes[spec.label]
            if process.is_alive() or spec.label in self.exited:
                continue
            if process.exitcode == 0:
                self.exited.add(spec.label)
                continue
            # died without reporting its exit: a crash (killed, segfault, out of memory)
            if self.abort_at is None and self.config.live and self._can_restart(spec):
                self.restarts[spec.label] = self.restarts.get(spec.label, 0) + 1
                print(f"dfstream: stage {spec.label} crashed (exit code {process.exitcode}); restarting", file=self.out)
                for stage in spec.stages:
                    self.metrics.replaced(stage, spec.replica)
                self._start(spec)
                continue
            self.exited.add(spec.label)
            if self.abort_at is None:
                self.abort(f"stage {spec.label} crashed (exit code {process.exitcode})")

    # -- the run --------------------------------------------------------------
    def run(self) -> RunResult:
        started = time.monotonic()
        handlers = ({s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
                    if self.handle_signals else {})
        progress = self._progress_bar()
        last_print = time.monotonic()
        try:
            self._start_all()
            while len(self.exited) < len(self.specs):
                self._drain_reports(100)
                self._check_processes()
                if self.abort_at is None:
                    self._check_external(started)
                    self._check_startup(started)
                now = time.monotonic()
                if self.abort_at is None and len(self.ready) == len(self.specs):
                    self.control.send(Control.START)  # repeated: a PUB message reaches only current subscribers
                    self._forward_health()
                for label in self.exited:  # repeated too: upstream stages wait for these to close
                    self.control.send(Control.EXITED + label.encode())
                if self.stop_requested_at is not None and self.abort_at is None:
                    self.control.send(Control.STOP)  # late subscribers must hear it too
                    if now - self.stop_requested_at > GRACEFUL_STOP_S:
                        self.abort("the pipeline did not drain in time after the stop request")
                if self.abort_at is not None:
                    self.control.send(Control.ABORT)
                    if now - self.abort_at > ABORT_GRACE_S:
                        self._terminate_all()
                        break
                if progress is not None:
                    progress.update(self.metrics.frames_written() - progress.n)
                elif self.config.live and now - last_print >= self.config.metrics_interval_s:
                    last_print = now
                    print(self.metrics.table(), file=self.out, flush=True)
            self._drain_reports(200)  # last stats from the stages that just exited
        finally:
            if progress is not None:
                progress.update(self.metrics.frames_written() - progress.n)
                progress.close()
            self._terminate_all()
            for s, handler in handlers.items():
                signal.signal(s, handler)
            self.control.close()
            self.reports.close()
            release_context(self.zmq)
            self.zmq.term()
            if self.endpoints is not None:
                self.endpoints.cleanup()
        stopped = self.stop_requested_at is not None
        if self.error is None and not stopped:
            self.error = self._all_offline()
        document = self.metrics.document(time.monotonic() - started, self.error, stopped)
        if self.config.metrics_json:
            write_json(self.config.metrics_json, document)
        code = 0
        if self.error:
            code = 130 if self.error == "interrupted" else 1
        elif stopped and self.first_signal == signal.SIGINT:
            code = 130  # SIGTERM's graceful stop is a normal end: 0
        return RunResult(code, self.error, document, stopped)

    def _terminate_all(self) -> None:
        for process in self.processes.values():
            if process.is_alive():
                with contextlib.suppress(OSError):  # it may have exited just now
                    os.kill(process.pid, TERMINATE_SIGNAL)
        deadline = time.monotonic() + 3.0
        for process in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)

    def _progress_bar(self):
        if not self.config.progress or self.config.live:
            return None
        counts = [s.frame_count for s in self.config.streams]
        if any(c is None for c in counts):
            return None
        from tqdm import tqdm

        return tqdm(total=sum(counts), unit="frame", desc="dfstream", file=self.out, dynamic_ncols=True,
                    mininterval=1.0, disable=not getattr(self.out, "isatty", lambda: False)())


def run_pipeline(config: RunConfig, out=sys.stderr, plan: RunPlan | None = None, external: tuple[str, ...] = ()) -> RunResult:
    return Supervisor(config, out, plan, external).run()
