"""StageChain: several stages in one process, each receiving the calls the stage protocol promises."""
from __future__ import annotations

import time

import pytest

from pipeline.stage import Stage, StageChain


class Holding(Stage):
    """Holds every packet until its stream ends (as annotate's reorder window does), and can be due a tick."""

    name = "holding"

    def __init__(self):
        self.held, self.deadline, self.closed = [], None, False

    def process(self, packet):
        self.held.append(packet)
        return []

    def end_of_stream(self, stream_id):
        out, self.held = self.held, []
        return out

    def next_deadline(self):
        return self.deadline

    def tick(self):
        self.deadline = None
        return [["ticked"]]

    def close(self):
        self.closed = True
        raise OSError("disk gone")


class Recording(Stage):
    """Writes down every call in order (as the sink writes frames and closes files)."""

    name = "recording"

    def __init__(self):
        self.calls, self.closed = [], False

    def process(self, packet):
        self.calls.append(("process", list(packet)))
        return [[f"out-{x}" for x in packet]]

    def end_of_stream(self, stream_id):
        self.calls.append(("end_of_stream", stream_id))
        return []

    def tick(self):
        self.calls.append(("tick",))
        return []

    def close(self):
        self.closed = True


def test_what_the_first_stage_returns_is_what_the_next_one_receives():
    passing, recording = Recording(), Recording()
    chain = StageChain([passing, recording])
    assert chain.process([1, 2]) == [["out-out-1", "out-out-2"]]
    assert recording.calls == [("process", ["out-1", "out-2"])]
    (first, frames1, _, _), (second, frames2, _, _) = chain.member_stats()
    assert (first, frames1, second, frames2) == ("recording", 2, "recording", 2)


def test_at_end_of_stream_the_first_stage_flushes_into_the_next_before_the_next_flushes():
    holding, recording = Holding(), Recording()
    chain = StageChain([holding, recording])
    assert chain.process([1]) == [] and chain.process([2]) == []
    assert recording.calls == []
    chain.end_of_stream(7)
    assert recording.calls == [("process", [1]), ("process", [2]), ("end_of_stream", 7)]


def test_only_a_stage_whose_deadline_passed_ticks_and_its_output_goes_on():
    holding, recording = Holding(), Recording()
    chain = StageChain([holding, recording])
    assert chain.next_deadline() is None
    holding.deadline = time.monotonic() - 0.01
    assert chain.next_deadline() == holding.deadline
    assert chain.tick() == [["out-ticked"]]
    assert recording.calls == [("process", ["ticked"])]  # the recorder had no deadline: no tick of its own


def test_close_closes_every_stage_even_when_one_fails_and_then_says_so():
    holding, recording = Holding(), Recording()
    with pytest.raises(OSError, match="disk gone"):
        StageChain([holding, recording]).close()
    assert holding.closed and recording.closed


def test_a_stop_asked_by_any_stage_is_the_chains_and_clears_for_all():
    holding, recording = Holding(), Recording()
    chain = StageChain([holding, recording])
    assert not chain.stop_requested
    recording.stop_requested = True
    assert chain.stop_requested
    chain.stop_requested = False
    assert not recording.stop_requested


def test_what_reached_the_last_stage_is_told_once_and_held_frames_are_not():
    holding, recording = Holding(), Recording()
    chain = StageChain([holding, recording])
    chain.process([1])
    assert chain.reached_last() == []  # held by the first stage: not yet written
    chain.end_of_stream(0)
    assert chain.reached_last() == [[1]]
    assert chain.reached_last() == []
