"""Plain torch (eager) backend for training checkpoints.

The reference the other backends are checked against: export and the parity tests
compare ONNX Runtime and TensorRT outputs with this one.  Checkpoints are loaded
with ``torch.load(weights_only=True)`` (through ``engines.networks.load_checkpoint``),
so a checkpoint file can never run code when it is opened.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engines.base import Engine
from engines.metadata import ModelMetadata
from engines.onnxruntime_engine import usable_cores

log = logging.getLogger(__name__)


def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, model, metadata: ModelMetadata, device: str | None = None, threads: int | None = None):
        import torch

        super().__init__(metadata)
        self.device = pick_device(device)
        if self.device == "cpu":
            # torch's default is every core of the machine, not the ones this process may use.
            torch.set_num_threads(threads or usable_cores())
        self.model = model.to(self.device).eval()
        self.backend = f"torch[{self.device}]"

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None, threads: int | None = None) -> "TorchEngine":
        from engines.errors import EngineError
        from engines.networks import load_checkpoint

        try:
            model, checkpoint = load_checkpoint(path)
            metadata = ModelMetadata.from_dict(checkpoint["metadata"])
        except Exception as exc:  # weights_only refusals, wrong format, missing keys, state-dict mismatch
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise EngineError(f"{path} is not a loadable dfstream checkpoint: {type(exc).__name__}: {first_line}") from exc
        engine = cls(model, metadata, device=device, threads=threads)
        log.info("loaded %s with torch on %s", path, engine.device)
        return engine

    def run_tensor(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device))
        return out.float().cpu().numpy()
