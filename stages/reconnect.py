"""What a live source needs to ride out an outage: the backoff between reconnect tries, and
the stream's health (:class:`pipeline.health.Health`) as one state at a time.

The source stage's reader thread (:mod:`stages.source`) moves the health as the camera comes
and goes; the runner moves it to ``blocked`` and back when the pipeline refuses frames; the
runner's main loop collects the changes (:meth:`HealthTracker.drain`) and reports them to the
supervisor, which prints them, keeps the latest per stream and forwards them to the sink,
the one writer of the events file.
"""
from __future__ import annotations

import random
import threading
import time

from pipeline.config import ReconnectConfig, StreamInfo
from pipeline.health import Health, HealthChange
from pipeline.urls import redact


class Backoff:
    """Waits between reconnect tries: exponential (``initial_s`` doubling per failed try, at
    most ``max_s``), each drawn from ``[(1 - jitter) * w, w]`` so cameras that fail together
    do not retry in lockstep; tries run out after ``attempts`` (0: never)."""

    def __init__(self, config: ReconnectConfig, rng: random.Random | None = None):
        self.config = config
        self.rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        """The longest wait before try number ``attempt`` (1 = the first)."""
        cfg = self.config
        return min(cfg.max_s, cfg.initial_s * 2.0 ** min(max(0, attempt - 1), 60))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try number ``attempt`` (1 = the first)."""
        top = self.ceiling(attempt)
        jitter = min(1.0, max(0.0, self.config.jitter))
        return self.rng.uniform((1.0 - jitter) * top, top)

    def exhausted(self, attempt: int) -> bool:
        """Whether try number ``attempt`` is one more than the config allows."""
        return bool(self.config.attempts) and attempt > self.config.attempts


def one_line(text: str) -> str:
    """``text`` as it may appear in a health change: credentials redacted, one line."""
    return " ".join(redact(text or "").split())


class HealthTracker:
    """One live stream's health: the current state and the changes not yet reported.

    Written from the source's reader thread and the runner's loop, so every access holds a lock."""

    def __init__(self, stream: StreamInfo):
        self.stream = stream
        self.state: Health | None = None
        self.reconnects = 0  # reconnect tries made so far (each one is a change to `reconnecting`)
        self._lock = threading.Lock()
        self._pending: list[HealthChange] = []

    def set(self, state: Health, detail: str = "", *, again: bool = False) -> bool:
        """Move to ``state``; False if already there (``again``: record it anyway, e.g. a
        further reconnect try). Counts a reconnect for every change to ``reconnecting``."""
        with self._lock:
            if state == self.state and not again:
                return False
            if state == Health.RECONNECTING:
                self.reconnects += 1
            self._pending.append(HealthChange(
                stream_id=self.stream.stream_id, stream=self.stream.name, state=state, previous=self.state,
                detail=one_line(detail), reconnects=self.reconnects, epoch_s=time.time()))
            self.state = state
            return True

    def drain(self) -> list[HealthChange]:
        """The changes since the last call, oldest first."""
        with self._lock:
            pending, self._pending = self._pending, []
            return pending
