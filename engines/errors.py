"""The error every engine module raises for a model that cannot run here, and the model file types.

A leaf module: the backends, the exporter and the loader all import it, and it imports none of them.
"""
from __future__ import annotations

from pathlib import Path

ONNX_SUFFIXES = (".onnx",)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
TENSORRT_SUFFIXES = (".engine", ".plan")


class EngineError(RuntimeError):
    """A model that cannot be run here: missing or unreadable file, or a backend this machine lacks."""


def model_format(path: str | Path) -> str:
    """"onnx", "checkpoint" or "tensorrt", from the file name."""
    suffix = Path(path).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix in TENSORRT_SUFFIXES:
        return "tensorrt"
    known = ", ".join(ONNX_SUFFIXES + CHECKPOINT_SUFFIXES + TENSORRT_SUFFIXES)
    raise EngineError(f"{path}: unknown model file type {suffix or '(no suffix)'!r} (expected one of {known})")
