"""The training loop shared by the detector, swapper and DCGAN trainers.

What each trainer did in its own loop before, side by side, and the one rule kept here:

============================  ============================  ============================  ============================
point                         detector (``train``)          swapper (``train_swapper``)   DCGAN (``train_gan``)
============================  ============================  ============================  ============================
bound                         ``--steps``                   ``--steps``                   ``--epochs`` x steps/epoch
resume source                 last checkpoint; settings     last checkpoint; settings     last checkpoint; settings
                              from config.json              from its ``extra.config``     from its ``extra.config``
time limit starts             just before the first step    before the faces are cut      before the faces are cut
                              (``--time-limit``)            (``--minutes``)               (``--minutes``)
time limit checked            after each step               before each step              before each step
TensorBoard purge on resume   events from the saved step    events after the saved step   events after the saved step
scalars written               every K steps (window mean)   every K steps and step 1      every K steps
                              and the last step             (the step's own values)       (the step's own values)
periodic checkpoint           every N steps: last.pt and    every N steps: last.pt        each epoch end: last.pt
                              stepNNNNNNNN.pt (+ ema.pt)
final checkpoint              at the last step or on the    after the loop unless the     on a time stop inside an
                              time stop                     last step was saved           epoch (a partial epoch)
EMA                           ``--ema``: after each step    --                            --
============================  ============================  ============================  ============================

The rules :class:`TrainingLoop` applies to all three:

- **Steps** run from ``start`` (0, or a resumed checkpoint's step) to ``total``.  A trainer's ``step(done)``
  trains one step (``done``: the steps completed before it) and returns the step's values (losses ...).
- **Time limit**: checked *before* each step, counted from ``started`` -- an explicit argument, so each
  trainer keeps its documented start point (the detector: just before the first step; the swapper and the
  DCGAN: before their faces are cut, so ``--minutes`` covers the whole command).  No step starts after the
  limit; the steps done are then saved by the final checkpoint.  (The detector used to check after each
  step, which always ran at least one step; with its limit counted from the first step that only differs
  for a limit shorter than one step.)
- **Scalars** (TensorBoard): every ``log_every`` steps, at the first step of the run and at the last step
  (``total`` or the time stop).  The trainer's ``scalars(step, window)`` turns the values of the steps since
  the last point into ``{tag: value}`` -- the detector averages them, the others keep the latest step's --
  and the loop writes them.  (Before, the detector skipped the first step, the swapper logged absolute step
  1 rather than the first step of a resumed run and skipped the last, the DCGAN skipped both; with the
  default ``--log-every 1`` the DCGAN's points are unchanged.)
- **Checkpoints**: ``save(step, final=False)`` every ``checkpoint_every`` steps counted from
  ``checkpoint_origin`` (0 for step counts; the DCGAN's epoch ends are counted from its start step); then
  ``save(step, final=True)`` once when the run stops, unless the last step was just saved (or, with no
  step run, a checkpoint already holds ``start``: ``saved_at_start``).  What a checkpoint holds is the
  trainer's business.
- **EMA**: with ``ema`` (timm's ``ModelEmaV3`` or the like) ``ema.update(model, step=step)`` after each step.
- **TensorBoard on resume** (:func:`tensorboard_writer`): events *after* the saved step are purged (they
  came from steps that are trained again); the saved step's own events stay.  The detector used to purge
  the saved step's events too, and did not write them again.
- The progress bar counts from ``start`` to ``total``.

The resume *source* still differs (the detector reads the settings it keeps from ``config.json`` before it
makes the run folder, to fail on a bad backbone or landmark model before any folder or face caching; the
swapper and the DCGAN read them from the checkpoint via :func:`train.common.open_run`); the loop only needs
the step to start from.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from train import common

Values = dict[str, float]


class Averager(Protocol):
    def update(self, model: Any, step: int | None = None) -> None: ...


@dataclass
class LoopConfig:
    """When the loop stops, logs and saves."""

    total: int  # stop when the step count reaches this
    start: int = 0  # the step the run starts from (a resumed checkpoint's)
    started: float | None = None  # time.time() the time limit counts from; None: when run() starts
    time_limit_s: float | None = None  # no step starts after this many seconds from ``started``; None: no limit
    log_every: int = 0  # scalars every this many steps (0: only the first and the last step)
    checkpoint_every: int = 0  # save every this many steps (0: only the final checkpoint)
    checkpoint_origin: int = 0  # the periodic saves fall where (step - origin) % checkpoint_every == 0
    saved_at_start: bool = False  # a checkpoint already holds ``start``
    desc: str = "train"
    unit: str = "step"
    progress: bool | None = None  # None: a bar on a terminal (common.progress)


@dataclass
class LoopResult:
    step: int  # the step the run stopped at
    out_of_time: bool  # stopped by the time limit before ``total``
    seconds: float  # wall time since ``started``


def tensorboard_writer(run_path: str | Path, start: int):
    """The run's SummaryWriter; a resumed run (``start`` > 0) purges the events logged after ``start``."""
    return common.tensorboard_writer(run_path, purge_step=start + 1 if start else None)


@dataclass
class TrainingLoop:
    config: LoopConfig
    step: Callable[[int], Values]  # trains one step; the argument: steps done before it
    save: Callable[[int, bool], Any]  # (step, final): write the checkpoint(s)
    writer: Any = None  # a SummaryWriter, or None: no scalars
    scalars: Callable[[int, list[Values]], Values] | None = None  # (step, values since the last point) -> {tag: value}
    postfix: Callable[[Values], dict] | None = None  # the progress bar's postfix from a step's values
    ema: Averager | None = None
    model: Any = None  # what ``ema`` averages

    def _log(self, step: int, window: list[Values]) -> None:
        if self.writer is None or self.scalars is None or not window:
            return
        for tag, value in self.scalars(step, window).items():
            self.writer.add_scalar(tag, value, step)

    def _save(self, step: int, final: bool) -> None:
        self.save(step, final)
        if self.writer is not None:
            self.writer.flush()

    def run(self) -> LoopResult:
        cfg = self.config
        started = time.time() if cfg.started is None else float(cfg.started)
        deadline = started + float(cfg.time_limit_s) if cfg.time_limit_s else None
        step, total = int(cfg.start), int(cfg.total)
        last_saved = step if cfg.saved_at_start else None
        window: list[Values] = []
        out_of_time = False
        bar = common.progress(total=max(total, step), initial=step, desc=cfg.desc, unit=cfg.unit,
                              disable=None if cfg.progress is None else not cfg.progress)
        try:
            while step < total:
                if deadline is not None and time.time() >= deadline:
                    out_of_time = True
                    break
                values = self.step(step)
                step += 1
                if self.ema is not None:
                    self.ema.update(self.model, step=step)
                window.append(values)
                bar.update(1)
                if self.postfix is not None:
                    bar.set_postfix(self.postfix(values), refresh=False)
                if (cfg.log_every and step % cfg.log_every == 0) or step == cfg.start + 1 or step == total:
                    self._log(step, window)
                    window = []
                if cfg.checkpoint_every and (step - cfg.checkpoint_origin) % cfg.checkpoint_every == 0:
                    self._save(step, False)
                    last_saved = step
            self._log(step, window)  # the last step, on a time stop
            if step != last_saved:
                self._save(step, True)
        finally:
            bar.close()
        return LoopResult(step=step, out_of_time=out_of_time, seconds=time.time() - started)
