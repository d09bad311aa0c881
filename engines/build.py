"""``dfstream build-engine``: an ONNX file or a checkpoint -> a TensorRT engine on this GPU.

The engine is checked against its source (torch for a checkpoint, ONNX Runtime for
an ONNX file) on sample crops at the profile's batch sizes before it is written;
an engine outside the stated tolerance is refused.  Without CUDA or torch-tensorrt
the build stops at once with one line naming what is missing.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.base import preprocess
from engines.errors import EngineError, model_format
from engines.loader import load_metadata
from engines.registry import sha256_of
from engines.tensorrt_engine import (ENGINE_SUFFIX, BuildProfile, TargetInfo, build_plan, sidecar_path,
                                     tensorrt_missing, write_engine)

log = logging.getLogger(__name__)

# Largest |TensorRT - reference| accepted on P(fake) / on images in mean/std space.
# FP16 keeps ~3 significant digits; FP32 engines may still use TF32 matmuls (TensorRT's default).
TOLERANCES = {True: 2e-2, False: 5e-3}


@dataclass(frozen=True)
class BuildReport:
    engine: Path
    sidecar: Path
    target: TargetInfo
    profile: BuildProfile
    seconds: float
    reference: str  # what the engine was compared with: "torch" or "onnxruntime"
    max_abs_diff: float | None  # None when the check was skipped
    tolerance: float

    def summary(self) -> str:
        p = self.profile
        head = (f"built {self.engine} for {self.target.describe()} in {self.seconds:.0f} s "
                f"({'fp16' if p.fp16 else 'fp32'}, batch {p.min_batch}..{p.max_batch}, opt {p.opt_batch})")
        if self.max_abs_diff is None:
            return head + "; not checked (--no-check)"
        return f"{head}; TensorRT vs {self.reference}: max |diff| {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e})"


def require_tensorrt(what: str = "build-engine") -> None:
    """Raise EngineError naming everything this machine lacks for TensorRT."""
    missing = tensorrt_missing()
    if missing:
        raise EngineError(f"{what} needs an NVIDIA GPU with CUDA and torch-tensorrt: {'; '.join(missing)}")


def _reference_engine(model: Path, fmt: str):
    if fmt == "checkpoint":
        from engines.torch_engine import TorchEngine

        return TorchEngine.from_checkpoint(model)
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(model)


def compare_engines(engine, reference, batch_sizes, seed: int = 0) -> float:
    from engines.export import sample_crops

    worst = 0.0
    for i, n in enumerate(batch_sizes):
        batch = preprocess(sample_crops(engine.metadata, n, seed=seed + i), engine.metadata)
        diff = np.abs(engine.run_tensor(batch).astype(np.float32) - reference.run_tensor(batch).astype(np.float32))
        worst = max(worst, float(np.max(diff)))
    return worst


def build_engine(model: str | Path, output_dir: str | Path, fp16: bool = True, min_batch: int = 1,
                 opt_batch: int = 8, max_batch: int = 32, check: bool = True, tolerance: float | None = None,
                 device_index: int | None = None) -> BuildReport:
    """Build ``output_dir/<model stem>.engine`` (+ ``.engine.json``) from an ONNX file or a checkpoint."""
    profile = BuildProfile(min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, fp16=fp16)
    model = Path(model)
    if not model.is_file():
        raise EngineError(f"model file not found: {model}")
    fmt = model_format(model)
    if fmt == "tensorrt":
        raise EngineError(f"{model} is already a TensorRT engine; give its ONNX file or checkpoint")
    require_tensorrt()
    from engines.tensorrt_engine import TensorRTEngine

    metadata = load_metadata(model)
    target = TargetInfo.current(device_index)
    tolerance = TOLERANCES[fp16] if tolerance is None else tolerance
    started = time.perf_counter()
    plan = build_plan(model, metadata, profile, device_index)
    seconds = time.perf_counter() - started
    diff, reference_name = None, "torch" if fmt == "checkpoint" else "onnxruntime"
    if check:
        engine, reference = TensorRTEngine(plan, metadata, device_index=device_index), _reference_engine(model, fmt)
        sizes = sorted({profile.min_batch, profile.opt_batch, profile.max_batch})
        diff = compare_engines(engine, reference, sizes)
        engine.close()
        reference.close()
        if not diff <= tolerance:
            raise EngineError(f"the TensorRT engine differs from {reference_name} by {diff:.2e} (tolerance "
                              f"{tolerance:.0e}); not written (use --fp32, or --no-check to keep it anyway)")
    path = Path(output_dir) / f"{model.stem}{ENGINE_SUFFIX}"
    write_engine(plan, path, metadata, profile, target, model, sha256_of(model))
    report = BuildReport(engine=path, sidecar=sidecar_path(path), target=target, profile=profile, seconds=seconds,
                         reference=reference_name, max_abs_diff=diff, tolerance=tolerance)
    log.info(report.summary())
    return report
