"""``dfstream export``: a training checkpoint -> an ONNX model that describes itself.

The ONNX file gets a dynamic batch axis, the checkpoint's :class:`ModelMetadata`
(plus where it came from) in ``metadata_props``, and is then run through ONNX
Runtime next to the checkpoint's own torch model on the same sample crops.  An
export whose outputs differ by more than the tolerance is deleted and refused:
a model that silently changed on the way to deployment is worse than none.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.base import preprocess
from engines.errors import EngineError
from engines.metadata import KIND_TEMPORAL, ModelMetadata, write_onnx_metadata
from engines.registry import cache_lock, cache_root, sha256_of

if TYPE_CHECKING:
    from engines.quantize import QuantizeReport

log = logging.getLogger(__name__)

# opset 18 is what torch's dynamo exporter emits natively; asking it for an older one
# runs a down-converter that fails on common models (Reduce* axes) and leaves 18 anyway.
DEFAULT_OPSET = 18
EXPORTERS = ("auto", "dynamo", "legacy")

# Largest |ONNX Runtime - torch| accepted, by output type.  Both run fp32 kernels that
# only differ in summation order (typically ~1e-7); 1e-4 on a probability cannot move a
# verdict, 1e-3 on an image in mean/std space is under one grey level out of 255.
TOLERANCES = {"p_fake": 1e-4, "image": 1e-3}


class ExportError(EngineError):
    """The export failed, or its outputs differ from the checkpoint's beyond the tolerance."""


@dataclass(frozen=True)
class ExportReport:
    output: Path
    exporter: str  # "dynamo" or "legacy"
    opset: int
    batch_sizes: tuple[int, ...]  # batch sizes compared between torch and ONNX Runtime
    max_abs_diff: float | None  # None when the check was skipped
    tolerance: float
    int8: QuantizeReport | None = None  # when the export was quantised (--int8)

    def summary(self) -> str:
        head = f"exported {self.output} (opset {self.opset}, {self.exporter} exporter, dynamic batch)"
        tail = f"; {self.int8.summary()}" if self.int8 else ""
        if self.max_abs_diff is None:
            return head + "; fp32 not checked against the checkpoint (--no-check)" + tail
        sizes = ", ".join(str(b) for b in self.batch_sizes)
        return (f"{head}; fp32 ONNX Runtime vs torch at batch {sizes}: max |diff| {self.max_abs_diff:.2e} "
                f"(tolerance {self.tolerance:.0e}){tail}")


def sample_crops(metadata: ModelMetadata, n: int, seed: int = 0) -> np.ndarray:
    """n random uint8 BGR crops of the model's input size (the infer stage's input type)."""
    height, width = metadata.input_size
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


@contextlib.contextmanager
def _quiet_exporter_logs():
    """The exporters log every graph pass at INFO; a CLI user only needs our summary line."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model, metadata: ModelMetadata, output: str | Path, opset: int = DEFAULT_OPSET,
                exporter: str = "auto") -> str:
    """Write ``model`` (taking the preprocessed NCHW batch) to ONNX with a dynamic batch axis.

    Returns the exporter that produced the file.  "auto" uses torch's dynamo exporter
    (the maintained one) for opset >= 18 and falls back to the legacy TorchScript
    exporter when dynamo cannot trace the model or an older opset is asked for.
    """
    import torch

    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r} (expected one of {', '.join(EXPORTERS)})")
    output = Path(output)
    example = torch.from_numpy(preprocess(sample_crops(metadata, 2, seed=1), metadata))
    output_name = "image" if metadata.output == "image" else "p_fake"
    order = ["dynamo", "legacy"] if exporter == "auto" and opset >= DEFAULT_OPSET else [exporter]
    if exporter == "auto" and opset < DEFAULT_OPSET:
        order = ["legacy"]
    last_error: Exception | None = None
    for name in order:
        try:
            with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter_logs():
                warnings.simplefilter("ignore")  # the exporters' deprecation chatter, not ours to fix
                if name == "dynamo":
                    batch = torch.export.Dim("batch", min=1)
                    torch.onnx.export(model, (example,), str(output), dynamo=True, opset_version=opset,
                                      input_names=["input"], output_names=[output_name],
                                      dynamic_shapes=({0: batch},), external_data=False, verbose=False)
                else:
                    torch.onnx.export(model, (example,), str(output), dynamo=False, opset_version=opset,
                                      input_names=["input"], output_names=[output_name],
                                      dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}})
            return name
        except Exception as exc:
            last_error = exc
            log.warning("%s ONNX exporter failed (%s: %s)%s", name, type(exc).__name__,
                        (str(exc).strip().splitlines() or [""])[0],
                        "; trying the legacy exporter" if name != order[-1] else "")
    raise ExportError(f"could not export {metadata.name} to ONNX: {type(last_error).__name__}: "
                      f"{(str(last_error).strip().splitlines() or [''])[0]}") from last_error


def compare_with_onnxruntime(model, onnx_path: str | Path, metadata: ModelMetadata,
                             batch_sizes=(1, 4), seed: int = 0) -> float:
    """Largest |ONNX Runtime - torch| over random crops at each batch size (CPU, fp32)."""
    import torch

    from engines.onnxruntime_engine import OnnxRuntimeEngine

    session = OnnxRuntimeEngine(onnx_path, providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, n in enumerate(batch_sizes):
        batch = preprocess(sample_crops(metadata, n, seed=seed + i), metadata)
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).float().numpy()
        got = session.run_tensor(batch)
        if got.shape != expected.shape:
            raise ExportError(f"ONNX output has shape {got.shape} at batch {n}, torch gives {expected.shape}")
        worst = max(worst, float(np.max(np.abs(got.astype(np.float32) - expected))))
    session.close()
    return worst


def export_checkpoint(checkpoint: str | Path, output: str | Path, opset: int = DEFAULT_OPSET, check: bool = True,
                      batch_sizes=(1, 4), tolerance: float | None = None, exporter: str = "auto",
                      mirror_mean: bool = False, int8_calibration: np.ndarray | None = None) -> ExportReport:
    """Export a dfstream checkpoint to ONNX with its metadata; check it against the checkpoint.

    ``mirror_mean`` (detectors only): the exported graph scores each crop and its mirror
    image and returns their mean P(fake) (:class:`engines.networks.ensemble.MirrorAveraged`).
    ``int8_calibration`` (uint8 BGR crops, :mod:`train.calibration`): the checked fp32 export
    is then quantised to int8 on these crops (:func:`engines.quantize.quantize_int8`)."""
    from engines.networks import load_checkpoint

    checkpoint, output = Path(checkpoint), Path(output)
    if not checkpoint.is_file():
        raise ExportError(f"checkpoint not found: {checkpoint}")
    try:
        model, state = load_checkpoint(checkpoint)  # torch.load(weights_only=True)
        metadata = ModelMetadata.from_dict(state["metadata"])
    except Exception as exc:
        raise ExportError(f"{checkpoint} is not a loadable dfstream checkpoint: {type(exc).__name__}: "
                          f"{(str(exc).strip().splitlines() or [''])[0]}") from exc
    if metadata.kind == KIND_TEMPORAL:
        raise ExportError(f"{checkpoint} is a temporal model; export handles crop models (detector, swapper)")
    if mirror_mean:
        if metadata.output != "p_fake":
            raise ExportError(f"{checkpoint} is a {metadata.kind}; --mirror-mean averages the P(fake) of detectors only")
        from engines.networks.ensemble import MirrorAveraged

        model = MirrorAveraged(model).eval()
        metadata = dataclasses.replace(metadata, architecture=f"{metadata.architecture}; mean of the crop and its mirror image",
                                       extra={**metadata.extra, "mirror_mean": True})
    tolerance = TOLERANCES.get(metadata.output, 1e-3) if tolerance is None else tolerance
    metadata = dataclasses.replace(metadata, extra={**metadata.extra, "source": {
        "checkpoint": checkpoint.name, "checkpoint_sha256": sha256_of(checkpoint)}})

    output.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed at the end, so a failed export never leaves a half file.
    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.stem}-", suffix=".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o644)  # mkstemp makes it private (0600); a model file is meant to be shared and deployed
    try:
        used = export_onnx(model, metadata, tmp, opset=opset, exporter=exporter)
        write_onnx_metadata(tmp, metadata)
        diff = None
        if check:
            diff = compare_with_onnxruntime(model, tmp, metadata, batch_sizes)
            if not diff <= tolerance:  # also catches NaN
                raise ExportError(f"ONNX Runtime and torch differ by {diff:.2e} (tolerance {tolerance:.0e}); "
                                  f"export of {checkpoint} refused")
        int8 = None
        if int8_calibration is not None:
            int8 = _quantize(tmp, metadata, int8_calibration)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    report = ExportReport(output=output, exporter=used, opset=_opset_of(output), batch_sizes=tuple(batch_sizes),
                          max_abs_diff=diff, tolerance=tolerance, int8=int8)
    log.info(report.summary())
    return report


def _quantize(path: Path, metadata: ModelMetadata, crops: np.ndarray):
    """Replace the fp32 export at ``path`` by its int8 copy, calibrated on ``crops``; metadata says so."""
    from engines.quantize import quantize_int8

    if metadata.output != "p_fake":
        raise ExportError(f"{metadata.name} is a {metadata.kind}; --int8 is for detectors (P(fake) outputs) only")
    quantized = path.with_name(path.stem + ".int8.onnx")
    try:
        report = quantize_int8(path, quantized, preprocess(crops, metadata))
        write_onnx_metadata(quantized, dataclasses.replace(
            metadata, architecture=f"{metadata.architecture}; int8", extra={**metadata.extra, "int8": report.to_dict()}))
        os.replace(quantized, path)
    finally:
        quantized.unlink(missing_ok=True)
    return report


def _opset_of(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def exports_dir() -> Path:
    return cache_root() / "onnx"


def cached_export_path(checkpoint: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Where the cached export of ``checkpoint`` lives: named by its content, so a new checkpoint is re-exported."""
    checkpoint = Path(checkpoint)
    return exports_dir() / f"{checkpoint.stem}-{sha256_of(checkpoint)[:16]}-opset{opset}.onnx"


def cached_export(checkpoint: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """ONNX export of ``checkpoint`` in the user cache, made (and checked) once per checkpoint content."""
    target = cached_export_path(checkpoint, opset)
    with cache_lock(target):
        if not target.is_file():
            log.info("exporting %s to ONNX once (cached as %s)", checkpoint, target)
            export_checkpoint(checkpoint, target, opset=opset, check=True)
    return target
