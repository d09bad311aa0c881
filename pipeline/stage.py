"""The life cycle every stage shares: open, process one packet, close.

A stage is a plain object with no knowledge of sockets or processes; the runner
(:mod:`runtime.runner`) feeds it.  That is what lets training reuse the source
and detect stages in-process to turn videos into face crops.
"""
from __future__ import annotations

from pipeline.messages import FrameMessage, Packet


class StageError(RuntimeError):
    """A failure the user can act on; its message is shown as one line."""


class Stage:
    name = "stage"

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

    def next_deadline(self) -> float | None:
        """``time.monotonic()`` at which :meth:`tick` must run even with no input, or None."""
        return None

    def tick(self) -> list[Packet]:
        """Called at :meth:`next_deadline` (batch timeouts, live gap timeouts)."""
        return []

    def stats(self) -> dict:
        """Stage-specific figures for the metrics report."""
        return {}

    def abort(self) -> None:
        """The run failed: :meth:`close` must discard partial outputs, not finalise them."""

    def close(self) -> None:
        """Release resources; must leave outputs valid (called on errors and Ctrl-C too)."""
