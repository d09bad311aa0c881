"""TensorRT backend (placeholder while the full implementation lands)."""
from __future__ import annotations

import importlib.util

TENSORRT_EXTRA_HINT = "torch-tensorrt is not installed (pip install dfstream[tensorrt])"


def tensorrt_missing() -> list[str]:
    """What this machine lacks to build or run TensorRT engines; empty when nothing."""
    missing = []
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append("no CUDA device")
    except ImportError:
        missing.append("torch is not installed")
    if importlib.util.find_spec("torch_tensorrt") is None:
        missing.append(TENSORRT_EXTRA_HINT)
    return missing


def cuda_and_trt_available() -> bool:
    return not tensorrt_missing()
