"""int8 post-training quantisation of an exported model (``dfstream export --int8``).

Why: on CPUs with 8-bit dot-product instructions (x86 AVX-512 VNNI / AVX-VNNI, ARM
dotprod) ONNX Runtime runs int8 convolutions several times faster than fp32, which
is what lets a larger detector keep up with a stream on a few cores.

How: ONNX Runtime's static quantiser writes QuantizeLinear/DequantizeLinear pairs
(the QDQ format) around each convolution, with per-channel int8 weight scales and
uint8 activation ranges measured on calibration crops.  uint8 activations with a zero
point are what ONNX Runtime's fast x86 kernels take (U8S8); symmetric int8 activations,
the only form TensorRT reads, measured 3x slower here than U8S8 and twice as far from
fp32.  So an int8 file is a CPU model: TensorRT builds from its fp32 twin
(:func:`engines.loader.load_engine`).

The quantised model is then run beside the fp32 one on the calibration crops; one
whose P(fake) moves by more than the tolerance on average is refused, as an export
that differs from its checkpoint is.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import EngineError

log = logging.getLogger(__name__)

# Largest accepted mean |P(fake) int8 - P(fake) fp32| over the calibration crops.  Int8
# rounding moves a probability by about a percentage point; 0.02 on average still
# leaves the ranking of faces (what ROC-AUC measures) essentially as it was.
MEAN_TOLERANCE = 0.02


class QuantizeError(EngineError):
    """Quantisation failed, or moved the model's outputs beyond the tolerance."""


@dataclass(frozen=True)
class QuantizeReport:
    samples: int  # calibration crops
    mean_abs_diff: float  # mean |int8 - fp32| over the calibration crops
    max_abs_diff: float
    tolerance: float

    def summary(self) -> str:
        return (f"int8 (QDQ, calibrated on {self.samples} crops) vs fp32: mean |diff| {self.mean_abs_diff:.4f}, "
                f"max {self.max_abs_diff:.4f} (tolerance on the mean {self.tolerance})")

    def to_dict(self) -> dict:
        return {"format": "QDQ, uint8 activations, per-channel int8 weights (ONNX Runtime static quantiser)",
                "calibration_crops": self.samples, "mean_abs_diff_vs_fp32": round(self.mean_abs_diff, 6),
                "max_abs_diff_vs_fp32": round(self.max_abs_diff, 6)}


def _cpu_session(path: Path):
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"])


def _run(session, batch: np.ndarray, chunk: int = 32) -> np.ndarray:
    try:
        return np.concatenate([session.run_tensor(batch[i:i + chunk]) for i in range(0, len(batch), chunk)])
    finally:
        session.close()


def quantize_int8(fp32_onnx: str | Path, output: str | Path, calibration: np.ndarray,
                  tolerance: float = MEAN_TOLERANCE) -> QuantizeReport:
    """Write an int8 QDQ copy of ``fp32_onnx`` to ``output``, calibrated on ``calibration``
    (preprocessed NCHW float32 crops, as the engine feeds the model); check it against the fp32 model.

    The caller copies the model metadata onto ``output`` (the quantiser keeps the graph only)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_onnx, output = Path(fp32_onnx), Path(output)
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise QuantizeError(f"calibration needs a batch of NCHW crops, got shape {calibration.shape}")
    reference = _cpu_session(fp32_onnx)
    input_name = reference.session.get_inputs()[0].name
    expected = _run(reference, calibration)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{input_name: calibration[i:i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self._batches, None)

    prepared = output.with_name(output.stem + ".prepared.onnx")
    try:
        # shape inference and constant folding first, as the quantiser's documentation asks
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(output), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as exc:
        output.unlink(missing_ok=True)
        raise QuantizeError(f"int8 quantisation of {fp32_onnx} failed: {type(exc).__name__}: "
                            f"{(str(exc).strip().splitlines() or [''])[0]}") from exc
    finally:
        prepared.unlink(missing_ok=True)
    diff = np.abs(_run(_cpu_session(output), calibration).astype(np.float64) - expected)
    report = QuantizeReport(samples=len(calibration), mean_abs_diff=float(diff.mean()), max_abs_diff=float(diff.max()),
                            tolerance=tolerance)
    if not report.mean_abs_diff <= tolerance:  # also catches NaN
        output.unlink(missing_ok=True)
        raise QuantizeError(f"{report.summary()}: the int8 model strays too far from the fp32 one; refused")
    log.info(report.summary())
    return report
