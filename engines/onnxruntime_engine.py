"""ONNX Runtime backend: CUDA or TensorRT execution providers when present, else CPU."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from engines.base import Engine
from engines.metadata import ModelMetadata, read_onnx_metadata

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None):
    """Session options with thread counts sized from the usable cores: more intra-op
    threads than cores makes ONNX Runtime several times slower, not faster."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, metadata: ModelMetadata | None = None, threads: int | None = None,
                 providers: list[str] | None = None):
        import onnxruntime as ort

        super().__init__(metadata or read_onnx_metadata(path))
        available = ort.get_available_providers()
        chosen = providers or [p for p in PREFERRED_PROVIDERS if p in available]
        self.session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=chosen)
        self.providers = self.session.get_providers()
        self.backend = f"onnxruntime[{self.providers[0].replace('ExecutionProvider', '')}]"
        self._input_name = self.session.get_inputs()[0].name
        log.info("loaded %s with %s", path, ", ".join(self.providers))

    def run_tensor(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input_name: batch})[0]
