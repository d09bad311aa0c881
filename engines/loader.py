"""Open any dfstream model file behind the one :class:`engines.base.Engine` interface.

``load_engine(path, engine="auto")`` is all the infer stage calls.  The backend is
picked from the file type and from what this machine has, and the choice is logged
with its reason:

=====================  ==========================  ===============================
file                   ``auto`` with CUDA + TRT    ``auto`` otherwise
=====================  ==========================  ===============================
``.onnx``              TensorRT engine (cached)    ONNX Runtime
``.pt/.pth/.ckpt``     TensorRT engine (cached)    ONNX Runtime on a cached export
``.engine``            TensorRT                    error: needs CUDA + TensorRT
=====================  ==========================  ===============================

An int8 ONNX file (``dfstream export --int8``) is a CPU model: TensorRT builds from
its registry fp32 twin instead, and ``auto`` without a twin stays on ONNX Runtime.

``engine="torch"`` runs a checkpoint eagerly, ``"onnxruntime"`` and ``"tensorrt"``
force those backends.  Every failure a user can cause (missing file, a file that is
not a model, a model of the wrong kind, a backend this machine lacks) raises an
exception whose message is one clear line; see :data:`MODEL_ERRORS`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from engines.base import Engine
from engines.errors import EngineError, model_format
from engines.metadata import MetadataError, ModelMetadata, read_metadata
from engines.registry import ModelIntegrityError, ModelNotFoundError, identify, resolve

log = logging.getLogger(__name__)

ENGINE_CHOICES = ("auto", "tensorrt", "onnxruntime", "torch")
# What a caller (the CLI, the infer stage) catches to print one line instead of a traceback.
MODEL_ERRORS = (EngineError, MetadataError, ModelNotFoundError, ModelIntegrityError)


def choose_backend(path: str | Path, engine: str = "auto") -> tuple[str, str]:
    """(backend, reason) for running ``path``; raises EngineError when ``engine`` cannot run it here."""
    from engines.tensorrt_engine import tensorrt_missing

    if engine not in ENGINE_CHOICES:
        raise EngineError(f"unknown engine {engine!r} (expected one of {', '.join(ENGINE_CHOICES)})")
    fmt = model_format(path)
    if engine == "auto":
        missing = tensorrt_missing()
        if not missing:
            return "tensorrt", "CUDA and torch-tensorrt are available"
        if fmt == "tensorrt":
            raise EngineError(f"{path} is a TensorRT engine, which needs CUDA and TensorRT: {'; '.join(missing)}")
        return "onnxruntime", f"TensorRT not usable: {'; '.join(missing)}"
    if engine == "tensorrt":
        missing = tensorrt_missing()
        if missing:
            raise EngineError(f"--engine tensorrt needs CUDA and torch-tensorrt: {'; '.join(missing)}")
        return "tensorrt", "requested"
    if fmt == "tensorrt":
        raise EngineError(f"{path} is a TensorRT engine; only --engine tensorrt (or auto) can run it")
    if engine == "torch" and fmt != "checkpoint":
        raise EngineError(f"--engine torch runs training checkpoints (.pt); {path} is {fmt.upper()}")
    return engine, "requested"


def _locate(path: str | Path) -> Path:
    """An existing model file: an explicit path, or a registry name resolved to its verified file."""
    candidate = Path(path).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.exists():
        raise EngineError(f"{path} is not a model file")
    try:
        return resolve(str(path))  # registry name -> $DFSTREAM_MODELS / cache, sha256-checked
    except ModelIntegrityError as exc:
        raise EngineError(str(exc)) from exc


def load_metadata(path: Path) -> ModelMetadata:
    """The model's own metadata; a file that is not a dfstream model is an EngineError."""
    try:
        return read_metadata(path)
    except MetadataError as exc:
        raise EngineError(str(exc)) from exc


def load_engine(path: str | Path, engine: str = "auto", threads: int | None = None, kind: str | None = None,
                *, fp16: bool = True, max_batch: int | None = None) -> Engine:
    """Load a model file (or registry name) on the best (or the requested) backend.

    ``kind``: the ModelMetadata kind the caller needs; another kind raises MetadataError.
    ``threads``: ONNX Runtime / torch CPU threads; None sizes them from the usable cores.
    ``fp16`` and ``max_batch`` only matter when a TensorRT engine has to be built.
    Raises EngineError (cannot run it here, not a model, refused by the registry),
    MetadataError (a model of another kind) or ModelNotFoundError (a FileNotFoundError).
    """
    path = _locate(path)
    backend, reason = choose_backend(path, engine)
    metadata = load_metadata(path)
    if kind is not None:
        metadata.expect_kind(kind, path)
    if backend == "tensorrt" and metadata.extra.get("int8"):
        path, backend, reason = tensorrt_source_for_int8(path, engine)
        metadata = load_metadata(path)
    fmt = model_format(path)
    log.info("engine for %s: %s (%s)", path, backend, reason)

    try:
        if backend == "tensorrt":
            from engines.tensorrt_engine import TensorRTEngine

            if fmt == "tensorrt":
                return TensorRTEngine.from_file(path)
            return TensorRTEngine.from_source(path, fp16=fp16, max_batch=max_batch)
        if backend == "torch":
            from engines.torch_engine import TorchEngine

            return TorchEngine.from_checkpoint(path, threads=threads)
        from engines.onnxruntime_engine import OnnxRuntimeEngine

        onnx_path = path
        if fmt == "checkpoint":
            onnx_path = _cached_onnx(path)
        return OnnxRuntimeEngine(onnx_path, metadata=metadata if onnx_path == path else None, threads=threads)
    except MODEL_ERRORS:
        raise
    except Exception as exc:  # a runtime's own error on a corrupt or unsupported model
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise EngineError(f"{path}: {backend} could not load it: {type(exc).__name__}: {first_line}") from exc


def tensorrt_source_for_int8(path: Path, engine: str) -> tuple[Path, str, str]:
    """(model, backend, reason) for an int8 model (``dfstream export --int8``) that TensorRT was chosen for.

    Its uint8 activations are ONNX Runtime's CPU form, which TensorRT does not read
    (:mod:`engines.quantize`); a registry model's fp32 twin holds the same weights for it.
    Without a twin, ``auto`` runs the int8 file on ONNX Runtime and ``tensorrt`` is refused."""
    entry = identify(path)
    if entry is not None and entry.fp32_twin:
        return _locate(entry.fp32_twin), "tensorrt", f"TensorRT builds from {entry.name}'s fp32 twin {entry.fp32_twin!r}"
    if engine == "auto":
        return path, "onnxruntime", "an int8 model quantised for CPUs, whose uint8 activations TensorRT does not read"
    raise EngineError(f"{path} is an int8 model quantised for CPUs (uint8 activations), which TensorRT does not read: "
                      "give --engine tensorrt the fp32 export of its checkpoint")


def _cached_onnx(checkpoint: Path) -> Path:
    """An ONNX export of ``checkpoint`` in the user cache, keyed by the checkpoint's sha256."""
    from engines.export import cached_export

    onnx_path = cached_export(checkpoint)
    log.info("running checkpoint %s through its ONNX export %s", checkpoint, onnx_path)
    return onnx_path
