"""The stage protocol: everything the runner calls on a stage, and what each call promises.

A stage is a plain object with no knowledge of sockets or processes; the runner
(:mod:`runtime.runner`) feeds it.  That is what lets training reuse the source
and detect stages in-process to turn videos into face crops.

In a stage's process the runner calls, in this order: :meth:`Stage.open`; then, for
a consumer stage, :meth:`Stage.process` for each packet received (and
:meth:`Stage.tick` at :meth:`Stage.next_deadline`), :meth:`Stage.end_of_stream` and
:meth:`Stage.stream_finished` once every upstream replica has ended a stream; or,
for a :class:`Source`, :meth:`Source.start` and :meth:`Stage.process` until
:attr:`Source.finished`; after every send it looks at :attr:`Stage.stop_requested`;
at the end :meth:`Stage.abort` (only when the run failed) and :meth:`Stage.close`
(always).  :meth:`Stage.stats` is read for every stats report.

Several stages can share one process (:class:`StageChain`): the runner then sees one
stage, and each member still receives exactly these calls, in this order.
"""
from __future__ import annotations

import time
from typing import Callable

from pipeline.config import StreamInfo
from pipeline.health import HealthChange
from pipeline.messages import EndOfStream, FrameMessage, Packet


class StageError(RuntimeError):
    """A failure the user can act on; its message is shown as one line."""


class Stage:
    name = "stage"
    # Set by the stage to ask the supervisor to stop the sources, as Ctrl-C does (the sink's
    # window: q or Esc). The runner reports it once after the packets it is sending and
    # clears it; the stage goes on processing what is still in flight.
    stop_requested: bool = False

    def open(self) -> None:
        """Acquire resources (models, files, windows). Called once in the stage's process."""

    def process(self, packet: Packet) -> list[Packet]:
        """Handle one incoming packet; return the packets to send downstream."""
        raise NotImplementedError

    def frames_in(self, packet: Packet) -> int:
        """How many frames ``packet`` brings, for the stage's frame count and fps."""
        return len(packet)

    def takes_bypass(self, message: FrameMessage) -> bool:
        """Whether ``message`` may skip the next stages and take the runner's bypass
        (see ``StageSpec.bypass``): it holds nothing those stages would work on."""
        return False

    def end_of_stream(self, stream_id: int) -> list[Packet]:
        """Every upstream replica has finished ``stream_id``: flush what is held for it."""
        return []

    def stream_finished(self, info: EndOfStream) -> None:
        """Called after :meth:`end_of_stream`'s packets are sent, with the source's totals for
        the stream (frames, drops, its error if it failed); the marker goes downstream next.
        The sink closes the stream's output file here (or discards it when ``info.error``)."""

    def next_deadline(self) -> float | None:
        """``time.monotonic()`` at which :meth:`tick` must run even with no input, or None."""
        return None

    def tick(self) -> list[Packet]:
        """Called at :meth:`next_deadline` (batch timeouts, live gap timeouts)."""
        return []

    def stats(self) -> dict:
        """Stage-specific figures for the metrics report."""
        return {}

    def health_changed(self, change: HealthChange) -> None:
        """A live stream's health changed (forwarded by the supervisor to every stage; the sink
        writes it to the events file)."""

    def abort(self) -> None:
        """The run failed: :meth:`close` must discard partial outputs, not finalise them."""

    def close(self) -> None:
        """Release resources; must leave outputs valid (called on errors and Ctrl-C too)."""


class Source(Stage):
    """A stage with no input: it produces frames of one stream (:mod:`stages.source`).

    The runner calls :meth:`start` once every stage of the run is ready, then
    :meth:`Stage.process` with no packet until :attr:`finished`, and :meth:`stop` on a
    stop request.  In live runs it may hold a frame back (:class:`runtime.admission.LiveAdmission`)
    and asks :meth:`detect_due` first; it gives the source :attr:`detector_free`."""

    stream: StreamInfo
    finished: bool = False  # no more frames: the runner sends the end-of-stream marker
    frames_sent: int = 0  # frames produced so far (the end-of-stream marker's total)
    warning: str | None = None  # why the stream ended early, shown once the source is done
    waited_s: float = 0.0  # time process() spent waiting for a live camera (not counted as busy)
    # Live runs: set by the runner, "is a detect replica free for a frame now?". A source
    # whose config allows it sends a frame due for detection round a busy detector.
    detector_free: Callable[[], bool] | None = None

    def start(self) -> None:
        """Begin reading (live sources start their camera reader only now)."""

    def stop(self) -> None:
        """Stop reading early (a stop request): set :attr:`finished`; what was sent still flows."""
        self.finished = True

    @property
    def dropped(self) -> int:
        """Frames the source dropped (a live reader keeps only the newest frame)."""
        return 0

    def detect_due(self) -> bool:
        """Whether the next frame produced is due for face detection."""
        return True

    def health_changes(self) -> list[HealthChange]:
        """The stream's health changes since the last call, oldest first (cameras only; the
        runner reports them to the supervisor)."""
        return []

    def note_refused(self, refused_s: float) -> None:
        """The runner's live admission has refused this source's frames for ``refused_s``
        seconds (0: it just let one in); a camera that streams meanwhile is ``blocked``."""


class StageChain(Stage):
    """Stages run one after another in one process: each one's packets are the next one's
    input, handed over in memory instead of through a socket (``StageSpec.then``).

    The chain is a stage like any other to the runner; it keeps each member's busy time
    and frame count apart, so the run's metrics still show every stage.  End-of-stream
    and ticks go through the members in order: what the first flushes reaches the next
    before the next flushes."""

    def __init__(self, members: list[Stage]):
        self.members = members
        self.name = "+".join(m.name for m in members)
        self.busy_s = [0.0] * len(members)
        self.processed = [0] * len(members)
        self._reached_last: list[Packet] = []

    @property
    def stop_requested(self) -> bool:  # type: ignore[override]
        return any(m.stop_requested for m in self.members)

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        if not value:
            for m in self.members:
                m.stop_requested = False

    def open(self) -> None:
        for m in self.members:
            m.open()

    def _one(self, i: int, packets: list[Packet]) -> list[Packet]:
        """``packets`` processed by member ``i``, its time and frames counted as the runner counts a stage's."""
        member, out = self.members[i], []
        if i == len(self.members) - 1:
            self._reached_last += packets
        for packet in packets:
            began = time.monotonic()
            out += member.process(packet)
            self.busy_s[i] += time.monotonic() - began
            self.processed[i] += member.frames_in(packet)
        return out

    def _through(self, start: int, packets: list[Packet]) -> list[Packet]:
        for i in range(start, len(self.members)):
            packets = self._one(i, packets)
        return packets

    def process(self, packet: Packet) -> list[Packet]:
        return self._through(0, [packet])

    def frames_in(self, packet: Packet) -> int:
        return self.members[0].frames_in(packet)

    def reached_last(self) -> list[Packet]:
        """The packets the last stage has taken since the last call (for the runner: the frames a
        chain ending in the sink has written)."""
        out, self._reached_last = self._reached_last, []
        return out

    def takes_bypass(self, message: FrameMessage) -> bool:
        return self.members[-1].takes_bypass(message)

    def end_of_stream(self, stream_id: int) -> list[Packet]:
        flushed: list[Packet] = []
        for i, member in enumerate(self.members):
            flushed = self._one(i, flushed) + member.end_of_stream(stream_id)
        return flushed

    def stream_finished(self, info: EndOfStream) -> None:
        for m in self.members:
            m.stream_finished(info)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (m.next_deadline() for m in self.members) if d is not None]
        return min(deadlines) if deadlines else None

    def tick(self) -> list[Packet]:
        now, out = time.monotonic(), []
        for i, member in enumerate(self.members):
            deadline = member.next_deadline()
            if deadline is not None and now >= deadline:
                out += self._through(i + 1, member.tick())
        return out

    def member_stats(self) -> list[tuple[str, int, float, dict]]:
        """(name, frames, busy seconds, stats) of each member, for the runner's reports."""
        return [(m.name, n, busy, m.stats()) for m, n, busy in zip(self.members, self.processed, self.busy_s)]

    def health_changed(self, change: HealthChange) -> None:
        for m in self.members:
            m.health_changed(change)

    def abort(self) -> None:
        for m in self.members:
            m.abort()

    def close(self) -> None:
        errors = []
        for m in self.members:
            try:
                m.close()
            except Exception as exc:  # close every member, then say what failed
                errors.append(exc)
        if errors:
            raise errors[0]
