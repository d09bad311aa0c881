"""Shared training plumbing: run directories, seeds, TensorBoard, checkpoints, --resume, progress, loss windows.

Small and generic on purpose: the detector, temporal, swapper and DCGAN trainers
all use it the same way::

    run = RunDir.create(args.run_dir, config, resume=args.resume)   # writes config.json
    seed_everything(config["seed"])
    writer = tensorboard_writer(run.path)
    state = run.latest_checkpoint() and load_checkpoint(run.latest_checkpoint())
    ...
    save_checkpoint(run.checkpoint_path(step), model, architecture, metadata, optimizer=opt, step=step, epoch=epoch)

Checkpoints are plain dicts in the ``dfstream-checkpoint-v1`` format (see
:mod:`engines.networks`); they hold only tensors, numbers, strings, lists and dicts,
so they load with ``torch.load(weights_only=True)`` -- nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from engines.networks import CHECKPOINT_FORMAT

LATEST = "last.pt"
BEST = "best.pt"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


@dataclass
class RunDir:
    """A training run's folder: ``config.json``, ``checkpoints/``, TensorBoard events."""

    path: Path
    config: dict
    resumed: bool = False

    @classmethod
    def create(cls, path: str | Path, config: dict, resume: bool = False) -> "RunDir":
        """Make (or reopen, with ``resume``) a run folder and save the config used as JSON.

        A fresh run refuses a folder that already holds checkpoints, so a run is never
        silently overwritten; resuming keeps the first config and records the new one
        as ``config.resume-<n>.json``.
        """
        path = Path(path)
        ckpt_dir = path / "checkpoints"
        has_ckpt = ckpt_dir.is_dir() and any(ckpt_dir.glob("*.pt"))
        if has_ckpt and not resume:
            raise FileExistsError(f"{path} already holds a training run; pass --resume to continue it or choose another --run-dir")
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        config = _jsonable(dict(config))
        config.setdefault("command", " ".join([Path(sys.argv[0]).name] + sys.argv[1:]))
        config.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S"))
        target = path / "config.json"
        if target.exists() and resume:
            n = len(list(path.glob("config.resume-*.json"))) + 1
            target = path / f"config.resume-{n}.json"
        target.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return cls(path=path, config=config, resumed=resume and has_ckpt)

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_path(self, name: str | int = LATEST) -> Path:
        if isinstance(name, int):
            name = f"step{name:08d}.pt"
        return self.checkpoint_dir / name

    def latest_checkpoint(self) -> Path | None:
        last = self.checkpoint_dir / LATEST
        if last.is_file():
            return last
        steps = sorted(self.checkpoint_dir.glob("step*.pt"))
        return steps[-1] if steps else None


def open_run(path: str | Path, config: dict, resume: bool, kept: Iterable[str]) -> tuple[RunDir, dict | None]:
    """The run folder (:meth:`RunDir.create`, which records ``config``) and, when the run resumes, its
    last checkpoint, with the ``kept`` settings put back into ``config`` from the checkpoint's own
    config: they fix the data and the network, whatever the command line says now."""
    run = RunDir.create(path, config, resume=resume)
    checkpoint = load_checkpoint(run.latest_checkpoint()) if run.resumed else None
    if checkpoint is not None:
        saved = checkpoint["extra"].get("config", {})
        for key in kept:
            if key in saved:
                config[key] = saved[key]
    return run, checkpoint


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (and make torch deterministic when asked)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def set_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads in torch (default: the cores this process may use)."""
    import torch

    if not threads:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:
            threads = os.cpu_count() or 1
    torch.set_num_threads(max(1, int(threads)))
    return int(threads)


def training_device(name: str | None = "auto"):
    """The torch device a trainer runs on: ``cpu``, ``cuda``, ``cuda:N``, or ``auto`` (the first GPU when
    torch sees one, else the CPU).  A GPU asked for and not there is a clear error, not a silent CPU run."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name}: use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: use cpu, cuda, cuda:N or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: torch sees no CUDA GPU here (torch {torch.__version__}); "
                             "use --device cpu, or install a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def device_name(device) -> str:
    """What a checkpoint records of where it was trained: the GPU's name, or "cpu"."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def tensorboard_writer(run_path: str | Path, purge_step: int | None = None):
    """A TensorBoard SummaryWriter writing into the run folder (``tensorboard --logdir RUN``)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_path), purge_step=purge_step)


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", disable: bool | None = None, **kwargs):
    """A tqdm progress bar (quiet when stderr is not a terminal unless DFSTREAM_PROGRESS=1)."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = not (sys.stderr.isatty() or os.environ.get("DFSTREAM_PROGRESS") == "1")
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, **kwargs)


class LossWindow:
    """Mean of each loss over the first and the latest ``size`` steps (for 'start -> end' reports)."""

    def __init__(self, size: int = 20):
        self.size = size
        self.first: dict[str, list[float]] = {}
        self.last: dict[str, list[float]] = {}

    def add(self, losses: dict) -> None:
        for k, v in losses.items():
            first = self.first.setdefault(k, [])
            if len(first) < self.size:
                first.append(v)
            last = self.last.setdefault(k, [])
            last.append(v)
            del last[: -self.size]

    def summary(self) -> dict:
        return {k: (float(np.mean(self.first[k])), float(np.mean(self.last[k]))) for k in self.first}


def _rng_state() -> dict:
    import numpy as np
    import torch

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": json.dumps(_jsonable(random.getstate())),
    }


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    if not state:
        return
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_checkpoint(
    path: str | Path,
    model,
    architecture: dict,
    metadata: dict | Any,
    optimizer=None,
    scheduler=None,
    step: int = 0,
    epoch: int = 0,
    extra: dict | None = None,
    extra_state: dict | None = None,
) -> Path:
    """Write a ``dfstream-checkpoint-v1`` file atomically (tmp file + rename).

    ``extra_state`` holds further state_dicts (a second network, a second optimizer)
    by name; ``extra`` holds plain JSON-like values (best metric, history ...).
    """
    import torch

    if hasattr(metadata, "to_dict"):
        metadata = metadata.to_dict()
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "metadata": _jsonable(metadata),
        "architecture": _jsonable(architecture),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": int(step),
        "epoch": int(epoch),
        "rng": _rng_state(),
        "extra": _jsonable(extra or {}),
    }
    if optimizer is not None:
        checkpoint["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        checkpoint["scheduler"] = scheduler.state_dict()
    if extra_state:
        checkpoint["extra_state"] = {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in extra_state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(checkpoint, str(tmp))
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely (``weights_only=True``); raises ValueError if it is not one of ours."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a dfstream checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a dfstream checkpoint")
    return checkpoint


def resume_from(checkpoint: dict, model, optimizer=None, scheduler=None, extra_state: dict | None = None, restore_rng: bool = True) -> tuple[int, int]:
    """Load model/optimizer/scheduler (and named extra) state; returns ``(step, epoch)`` to continue from."""
    model.load_state_dict(checkpoint["state_dict"])
    if optimizer is not None and "optimizer" in checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None and "scheduler" in checkpoint:
        scheduler.load_state_dict(checkpoint["scheduler"])
    for name, obj in (extra_state or {}).items():
        state = checkpoint.get("extra_state", {}).get(name)
        if state is not None and hasattr(obj, "load_state_dict"):
            obj.load_state_dict(state)
    if restore_rng:
        try:
            _set_rng_state(checkpoint.get("rng", {}))
        except Exception:  # RNG state from another version: continue with the current seed
            pass
    return int(checkpoint.get("step", 0)), int(checkpoint.get("epoch", 0))


def cache_root() -> Path:
    """Per-user cache for derived training data (face crops), outside the repository."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dfstream"


def p_fake_metadata(name: str, size: int, crop_margin: float, architecture: str, training: dict | None = None,
                    metrics: dict | None = None, extra: dict | None = None):
    """Metadata of one of our P(fake) models (the frame detector, the DCGAN discriminator).

    They see RGB crops scaled to [-1, 1]. This is the one place that is decided: training
    (:func:`train.datasets.to_tensor`) and the pipeline both read it back from the metadata."""
    from engines.metadata import KIND_DETECTOR, ModelMetadata

    return ModelMetadata(
        kind=KIND_DETECTOR,
        name=name,
        input_size=(int(size), int(size)),
        color_order="RGB",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        crop_margin=float(crop_margin),
        output="p_fake",
        labels=("real", "fake"),
        threshold=0.5,
        architecture=architecture,
        training=training or {},
        metrics=metrics or {},
        extra=extra or {},
    )
