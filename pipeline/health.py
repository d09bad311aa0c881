"""A camera's health, and the wall-clock time every event and alert carries.

The source stage knows whether frames arrive; the runner knows whether the pipeline takes
them. Between them a live stream is always in exactly one of these states, and every change
is an event (``{"type": "health", ...}`` in the events file, see :func:`health_record`).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from enum import Enum


class Health(str, Enum):
    STARTING = "starting"  # opening the camera, no frame yet
    STREAMING = "streaming"  # frames arrive and the pipeline takes them
    STALLED = "stalled"  # connected, but no frame for the stall timeout
    RECONNECTING = "reconnecting"  # the connection was lost or given up; trying again (backoff)
    OFFLINE = "offline"  # reconnect attempts used up (or the camera never answered): given up
    BLOCKED = "blocked"  # frames arrive but the pipeline downstream cannot take them (not the camera's fault)


def utc_now() -> str:
    """Now, as ISO 8601 UTC with milliseconds: ``2026-12-06T11:33:02.123Z``."""
    return utc_time(_dt.datetime.now(_dt.timezone.utc).timestamp())


def utc_time(epoch_s: float) -> str:
    """A ``time.time()`` value as ISO 8601 UTC with milliseconds."""
    moment = _dt.datetime.fromtimestamp(epoch_s, _dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class HealthChange:
    """One stream's move from one state to another."""

    stream_id: int
    stream: str  # the stream's name
    state: Health
    previous: Health | None
    detail: str = ""  # why, in one line (credentials redacted)
    reconnects: int = 0  # reconnects of this stream so far
    epoch_s: float = 0.0  # time.time() of the change

    def record(self) -> dict:
        """The events-file line for this change."""
        return {
            "type": "health",
            "time": utc_time(self.epoch_s),
            "stream": self.stream,
            "stream_id": self.stream_id,
            "state": self.state.value,
            "previous": None if self.previous is None else self.previous.value,
            "detail": self.detail,
            "reconnects": self.reconnects,
        }
