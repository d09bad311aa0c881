"""ONNX Runtime backend: CUDA or TensorRT execution providers when present, else CPU."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from engines.base import Engine
from engines.metadata import ModelMetadata, read_onnx_metadata

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2 quota (containers), or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by a container CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def session_options(threads: int | None = None):
    """Session options with thread counts sized from the usable cores: more intra-op
    threads than cores makes ONNX Runtime several times slower, not faster."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    # Idle pool threads sleep instead of spinning: the pipeline runs small batches a few
    # times a second, and a spinning pool burned ~45 ms of CPU after every run, taken
    # from face detection and encoding (dfstream bench: 46 -> 2.6 ms per sparse call).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def model_source(path: str | Path) -> str | bytes:
    """What ONNX Runtime is given to load ``path``: the file's name, or -- where its float weights hold
    subnormal numbers -- its bytes with those set to zero (:mod:`engines.onnx_wire`: the same outputs,
    tens of times faster on Intel CPUs). A file that is not ONNX is left for ONNX Runtime to refuse."""
    import mmap

    from engines.onnx_wire import count_subnormal_weights, flush_subnormal_weights

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if not count_subnormal_weights(mapped):
                return str(path)
            data = bytearray(mapped)
    except (OSError, ValueError):
        return str(path)
    flushed = flush_subnormal_weights(data)
    log.info("%s: %d subnormal weights set to zero (slow on Intel CPUs, zero in all but name)", path, flushed)
    return bytes(data)


def provider_list(available: list[str], fp16: bool = False) -> list:
    """The preferred providers present in this ONNX Runtime build, with their options.

    The TensorRT provider builds an engine on first use; it is told to cache it under
    the user cache (ONNX Runtime keys it by model and GPU itself) so the next start
    does not pay the build again.
    """
    from engines.registry import cache_root

    chosen = []
    for name in PREFERRED_PROVIDERS:
        if name not in available:
            continue
        if name == "TensorrtExecutionProvider":
            cache = cache_root() / "onnxruntime-trt"
            cache.mkdir(parents=True, exist_ok=True)
            chosen.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                  "trt_timing_cache_enable": True, "trt_fp16_enable": fp16}))
        else:
            chosen.append(name)
    return chosen


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, metadata: ModelMetadata | None = None, threads: int | None = None,
                 providers: list | None = None, fp16: bool = False):
        import onnxruntime as ort

        super().__init__(metadata or read_onnx_metadata(path))
        chosen = providers or provider_list(ort.get_available_providers(), fp16=fp16)
        self.session = ort.InferenceSession(model_source(path), sess_options=session_options(threads), providers=chosen)
        # A GPU provider compiled in but without a usable GPU is dropped by ONNX Runtime: report what it kept.
        self.providers = self.session.get_providers()
        self.backend = f"onnxruntime[{self.providers[0].replace('ExecutionProvider', '')}]"
        self._input_name = self.session.get_inputs()[0].name
        log.info("loaded %s with %s", path, ", ".join(self.providers))

    def run_tensor(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def close(self) -> None:
        self.session = None
