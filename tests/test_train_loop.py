"""The training loop shared by the trainers (train/loop.py): when it steps, stops, logs and saves."""
from __future__ import annotations

import pytest

from train import loop as loop_module
from train.loop import LoopConfig, TrainingLoop


class FakeClock:
    """time.time() that moves only when a step says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def time(self) -> float:
        return self.now


class Writer:
    def __init__(self):
        self.scalars: list[tuple[str, float, int]] = []
        self.flushes = 0

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1


def _loop(config: LoopConfig, seconds_per_step: float = 0.0, clock: FakeClock | None = None, **hooks):
    """A loop over a trivial step (its loss: the step number); returns (loop, steps called, saves)."""
    called, saves = [], []

    def step(done: int) -> dict:
        called.append(done)
        if clock is not None:
            clock.now += seconds_per_step
        return {"loss": float(done + 1)}

    config.progress = False
    return TrainingLoop(config, step=step, save=lambda at, final: saves.append((at, final)), **hooks), called, saves


def test_it_runs_to_the_total_and_saves_the_last_step_once():
    loop, called, saves = _loop(LoopConfig(total=7, checkpoint_every=3))
    result = loop.run()
    assert called == list(range(7)) and result.step == 7 and not result.out_of_time
    assert saves == [(3, False), (6, False), (7, True)]


def test_checkpoints_land_every_n_steps_and_a_saved_last_step_is_not_saved_again():
    loop, _, saves = _loop(LoopConfig(total=6, checkpoint_every=2))
    loop.run()
    assert saves == [(2, False), (4, False), (6, False)]


def test_the_periodic_saves_can_count_from_an_origin():
    loop, _, saves = _loop(LoopConfig(total=9, start=3, checkpoint_every=3, checkpoint_origin=3, saved_at_start=True))
    loop.run()
    assert saves == [(6, False), (9, False)]


def test_it_stops_on_the_time_limit_and_still_writes_the_final_checkpoint(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(loop_module, "time", clock)
    loop, called, saves = _loop(LoopConfig(total=100, started=clock.now, time_limit_s=3.5, checkpoint_every=10),
                                seconds_per_step=1.0, clock=clock)
    result = loop.run()
    assert called == [0, 1, 2, 3]  # no step starts after 3.5 s
    assert result.out_of_time and result.step == 4 and result.seconds == pytest.approx(4.0)
    assert saves == [(4, True)]


def test_the_time_limit_counts_from_the_given_start(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(loop_module, "time", clock)
    loop, called, saves = _loop(LoopConfig(total=5, started=clock.now - 60, time_limit_s=30))
    result = loop.run()
    assert called == [] and result.out_of_time and saves == [(0, True)]  # a fresh run still leaves a checkpoint


def test_it_resumes_from_the_start_step():
    loop, called, saves = _loop(LoopConfig(total=8, start=5, checkpoint_every=2, saved_at_start=True))
    result = loop.run()
    assert called == [5, 6, 7] and result.step == 8
    assert saves == [(6, False), (8, False)]


def test_a_resumed_run_already_at_its_total_does_nothing():
    loop, called, saves = _loop(LoopConfig(total=4, start=4, checkpoint_every=2, saved_at_start=True))
    result = loop.run()
    assert called == [] and saves == [] and result.step == 4 and not result.out_of_time


def test_scalars_go_out_every_k_steps_and_at_the_first_and_last_step():
    writer = Writer()
    windows = []

    def scalars(step, window):
        windows.append((step, [v["loss"] for v in window]))
        return {"train/loss": sum(v["loss"] for v in window) / len(window)}

    loop, _, _ = _loop(LoopConfig(total=7, log_every=3), writer=writer, scalars=scalars)
    loop.run()
    assert windows == [(1, [1.0]), (3, [2.0, 3.0]), (6, [4.0, 5.0, 6.0]), (7, [7.0])]
    assert writer.scalars == [("train/loss", 1.0, 1), ("train/loss", 2.5, 3), ("train/loss", 5.0, 6), ("train/loss", 7.0, 7)]
    assert writer.flushes == 1  # after the final checkpoint


def test_the_moving_average_is_updated_after_each_step():
    class Ema:
        def __init__(self):
            self.updates = []

        def update(self, model, step=None):
            self.updates.append((model, step))

    ema = Ema()
    loop, _, _ = _loop(LoopConfig(total=3, start=1, saved_at_start=True), ema=ema, model="net")
    loop.run()
    assert ema.updates == [("net", 2), ("net", 3)]
