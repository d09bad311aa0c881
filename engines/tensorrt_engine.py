"""TensorRT backend: engines built with torch-tensorrt (or TensorRT's ONNX parser), cached, reloaded.

Build (needs CUDA and the ``tensorrt`` extra, ``pip install dfstream[tensorrt]``):

* a checkpoint is rebuilt with ``engines.networks.load_checkpoint`` (``weights_only``),
  traced with ``torch.export.export`` with a dynamic batch ``Dim``, and compiled with
  ``torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine`` given a
  ``torch_tensorrt.Input(min_shape, opt_shape, max_shape, dtype)``: the documented
  torch-tensorrt path to a self-contained TensorRT engine;
* an ONNX file goes through ``tensorrt.OnnxParser`` with one optimisation profile
  over the same batch range (torch-tensorrt does not read ONNX).

FP16: torch-tensorrt releases that build weakly typed networks take
``enabled_precisions={torch.float16}``; releases that default to
``use_explicit_typing=True`` reject that and take FP16 from the graph's own dtypes,
so there the model and its input are cast to half before export.

Save / reload: the engine bytes are written to ``<name>.engine`` with a JSON
sidecar ``<name>.engine.json`` holding the model metadata, the batch profile, the
source model's sha256 and the target it was built for (GPU name, compute
capability, TensorRT and torch-tensorrt versions).  Reloading deserialises the
plan with ``tensorrt.Runtime`` -- no recompilation, and, unlike
``torch_tensorrt.save``'s ExportedProgram (whose loader falls back to unpickling),
no pickle anywhere.  An engine whose recorded target differs from this machine is
rebuilt from its source model when that is at hand, and refused otherwise.

Cache: engines built on the fly by ``load_engine`` live under
``$XDG_CACHE_HOME/dfstream/tensorrt``, named by a key over the source sha256, the
target and the profile, so another GPU or version gets its own engine.

This module cannot run on the CPU-only machines dfstream is developed on; it was
written against the torch-tensorrt 2.x and TensorRT 10 Python documentation and its
tests are skipped without CUDA and torch-tensorrt.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.base import Engine
from engines.errors import EngineError, model_format
from engines.metadata import ModelMetadata, read_metadata
from engines.registry import cache_lock, cache_root, sha256_of, write_atomically

log = logging.getLogger(__name__)

TENSORRT_EXTRA_HINT = "torch-tensorrt is not installed (pip install dfstream[tensorrt])"
ENGINE_SUFFIX = ".engine"
SIDECAR_KEY = "tensorrt"  # the sidecar is ModelMetadata JSON plus this key (ignored by ModelMetadata.from_dict)


def _cuda_device_present() -> bool:
    """Whether torch sees a CUDA device -- without importing torch (3 s of a stage's
    start-up) on machines that could not run TensorRT anyway."""
    if "torch" not in sys.modules and importlib.util.find_spec("torch_tensorrt") is None:
        gpus = Path("/proc/driver/nvidia/gpus")
        return gpus.is_dir() and any(gpus.iterdir())
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def tensorrt_missing() -> list[str]:
    """What this machine lacks to build or run TensorRT engines; empty when nothing."""
    missing = []
    if not _cuda_device_present():
        missing.append("no CUDA device")
    if importlib.util.find_spec("torch_tensorrt") is None:
        missing.append(TENSORRT_EXTRA_HINT)
    elif importlib.util.find_spec("tensorrt") is None:
        missing.append("the tensorrt package is not installed (it comes with torch-tensorrt)")
    return missing


def cuda_and_trt_available() -> bool:
    return not tensorrt_missing()


@dataclass(frozen=True)
class BuildProfile:
    """The batch range an engine accepts and the size it is tuned for."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    fp16: bool = True

    def __post_init__(self):
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise EngineError(f"batch sizes must satisfy 1 <= min ({self.min_batch}) <= opt ({self.opt_batch}) "
                         f"<= max ({self.max_batch})")

    @classmethod
    def up_to(cls, max_batch: int | None, fp16: bool = True) -> "BuildProfile":
        """The profile load_engine builds: batch 1..max_batch (default 32), tuned for 8 or less."""
        top = max_batch or cls.max_batch
        return cls(min_batch=1, opt_batch=min(cls.opt_batch, top), max_batch=top, fp16=fp16)

    def shapes(self, metadata: ModelMetadata) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        height, width = metadata.input_size
        return tuple((b, 3, height, width) for b in (self.min_batch, self.opt_batch, self.max_batch))


@dataclass(frozen=True)
class TargetInfo:
    """What a serialized TensorRT engine is only valid for."""

    gpu: str
    compute_capability: str
    tensorrt: str
    torch_tensorrt: str

    @classmethod
    def current(cls, device_index: int | None = None) -> "TargetInfo":
        import tensorrt
        import torch
        import torch_tensorrt

        index = torch.cuda.current_device() if device_index is None else device_index
        major, minor = torch.cuda.get_device_capability(index)
        return cls(gpu=torch.cuda.get_device_name(index), compute_capability=f"{major}.{minor}",
                   tensorrt=tensorrt.__version__, torch_tensorrt=torch_tensorrt.__version__)

    def describe(self) -> str:
        return (f"{self.gpu} (sm {self.compute_capability}), TensorRT {self.tensorrt}, "
                f"torch-tensorrt {self.torch_tensorrt}")


def engine_cache_dir() -> Path:
    return cache_root() / "tensorrt"


def cache_key(source_sha256: str, target: TargetInfo, profile: BuildProfile, metadata: ModelMetadata) -> str:
    """Engines differ by source content, GPU, versions, batch range, precision and input size."""
    blob = json.dumps({"source": source_sha256, "target": dataclasses.asdict(target),
                       "profile": dataclasses.asdict(profile), "input_size": list(metadata.input_size)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def sidecar_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_suffix(engine_path.suffix + ".json")


# ---------------------------------------------------------------------------- build

def _trt_logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def _explicit_typing_by_default(function) -> bool:
    """Whether this torch-tensorrt builds strongly typed networks unless told otherwise."""
    parameter = inspect.signature(function).parameters.get("use_explicit_typing")
    return bool(parameter is not None and parameter.default is True)


def _plan_from_checkpoint(path: Path, metadata: ModelMetadata, profile: BuildProfile, device_index: int) -> bytes:
    import torch
    import torch_tensorrt

    from engines.networks import load_checkpoint

    model, _ = load_checkpoint(path)  # torch.load(weights_only=True)
    convert = torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine
    dtype, precision = torch.float32, {}
    if profile.fp16:
        if _explicit_typing_by_default(convert):
            model, dtype = model.half(), torch.float16  # strongly typed: FP16 comes from the graph
        else:
            precision = {"enabled_precisions": {torch.float16, torch.float32}}
    device = torch.device("cuda", device_index)
    model = model.to(device).eval()
    min_shape, opt_shape, max_shape = profile.shapes(metadata)
    # torch.export specialises a dimension whose example size is 1, so trace with at least 2.
    example = torch.randn(min(max(2, profile.opt_batch), profile.max_batch), *opt_shape[1:], device=device,
                          dtype=dtype)
    dynamic = None
    if profile.max_batch > 1:
        dynamic = ({0: torch.export.Dim("batch", min=profile.min_batch, max=profile.max_batch)},)
    with torch.no_grad():
        exported = torch.export.export(model, (example,), dynamic_shapes=dynamic)
    spec = [torch_tensorrt.Input(min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape, dtype=dtype)]
    parameters = inspect.signature(convert).parameters
    # Releases before ``arg_inputs`` called it ``inputs``; ``device`` defaults to the GPU current at import.
    options = {"arg_inputs" if "arg_inputs" in parameters else "inputs": spec, **precision}
    if "device" in parameters:
        options["device"] = torch_tensorrt.Device(gpu_id=device_index)
    plan = convert(exported, **options)
    if not plan:
        raise EngineError(f"torch-tensorrt produced no engine for {path} (see its log above)")
    return bytes(plan)


def _plan_from_onnx(path: Path, metadata: ModelMetadata, profile: BuildProfile) -> bytes:
    if metadata.extra.get("int8"):  # caught here too for `dfstream build-engine`, which skips the loader
        raise EngineError(f"{path} is an int8 model quantised for CPUs (uint8 activations), which TensorRT does "
                          "not read: build the engine from the fp32 export of its checkpoint")
    import tensorrt as trt

    logger = _trt_logger()
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # explicit batch is the only mode from TensorRT 10 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {path}: {errors or 'unknown error'}")
    if network.num_inputs != 1:
        raise EngineError(f"{path} has {network.num_inputs} inputs; dfstream models take one batch of crops")
    config = builder.create_builder_config()
    if profile.fp16:
        if hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        else:  # a TensorRT without weak typing: an fp32 ONNX stays fp32
            log.warning("this TensorRT has no FP16 builder flag; building %s in the ONNX file's own precision", path)
    optimisation = builder.create_optimization_profile()
    optimisation.set_shape(network.get_input(0).name, *profile.shapes(metadata))
    config.add_optimization_profile(optimisation)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"TensorRT could not build an engine from {path} (see the TensorRT log above)")
    return bytes(plan)


def build_plan(source: Path, metadata: ModelMetadata, profile: BuildProfile, device_index: int | None = None) -> bytes:
    """Serialized TensorRT engine for a checkpoint or an ONNX file."""
    import torch

    index = torch.cuda.current_device() if device_index is None else device_index
    fmt = model_format(source)
    started = time.perf_counter()
    if fmt == "tensorrt":
        raise EngineError(f"{source} is already a TensorRT engine; build from its ONNX or checkpoint")
    try:
        with torch.cuda.device(index):
            if fmt == "checkpoint":
                plan = _plan_from_checkpoint(source, metadata, profile, index)
            else:
                plan = _plan_from_onnx(source, metadata, profile)
    except EngineError:
        raise
    except Exception as exc:
        # torch-tensorrt logs the converter's traceback itself; the caller gets one line.
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise EngineError(f"building a TensorRT engine from {source} failed: {type(exc).__name__}: {first_line}") from exc
    log.info("built TensorRT engine for %s in %.1f s (batch %d..%d, opt %d, %s)", source,
             time.perf_counter() - started, profile.min_batch, profile.max_batch, profile.opt_batch,
             "fp16" if profile.fp16 else "fp32")
    return plan


def write_engine(plan: bytes, path: Path, metadata: ModelMetadata, profile: BuildProfile, target: TargetInfo,
                 source: Path, source_sha256: str) -> Path:
    """Engine file plus sidecar, each written to a temporary name and renamed, sidecar last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = metadata.to_dict()
    sidecar[SIDECAR_KEY] = {
        "format": "dfstream-tensorrt-v1",
        "engine_sha256": hashlib.sha256(plan).hexdigest(),
        "target": dataclasses.asdict(target),
        "profile": dataclasses.asdict(profile),
        "source": {"path": str(source.resolve()), "sha256": source_sha256},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_atomically(path, lambda f: f.write(plan))
    write_atomically(sidecar_path(path), lambda f: f.write(json.dumps(sidecar, indent=2, sort_keys=True).encode()))
    return path


# ---------------------------------------------------------------------------- run

def _torch_dtype(trt_dtype):
    import tensorrt as trt
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    for name, torch_dtype in (("bfloat16", torch.bfloat16), ("int64", torch.int64)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = torch_dtype
    if trt_dtype not in table:
        raise EngineError(f"TensorRT tensor type {trt_dtype} is not supported by dfstream")
    return table[trt_dtype]


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(self, plan: bytes, metadata: ModelMetadata, device_index: int | None = None, name: str = ""):
        import tensorrt as trt
        import torch

        super().__init__(metadata)
        with contextlib.suppress(ImportError):
            import torch_tensorrt  # noqa: F401  registers the plugins torch-tensorrt engines may use
        self.device = torch.device("cuda", torch.cuda.current_device() if device_index is None else device_index)
        logger = _trt_logger()
        trt.init_libnvinfer_plugins(logger, "")
        # The runtime must outlive the engines it deserialised, so it is kept.
        self._runtime = trt.Runtime(logger)
        with torch.cuda.device(self.device):
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise EngineError(f"TensorRT could not load engine {name or ''}: it was built for another GPU or "
                             f"TensorRT version, or the file is damaged")
            self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not self._outputs:
            raise EngineError(f"engine {name} has {len(inputs)} inputs and {len(self._outputs)} outputs; "
                         f"expected one input batch and at least one output")
        self._input = inputs[0]
        self._input_dtype = _torch_dtype(self._engine.get_tensor_dtype(self._input))
        self._output_dtypes = [_torch_dtype(self._engine.get_tensor_dtype(n)) for n in self._outputs]
        low, _, high = self._engine.get_tensor_profile_shape(self._input, 0)
        self.min_batch, self.max_batch = int(low[0]), int(high[0])
        self.backend = f"tensorrt[{torch.cuda.get_device_name(self.device)}]"

    # -- constructors

    @classmethod
    def from_file(cls, path: str | Path, device_index: int | None = None) -> "TensorRTEngine":
        """Load a built engine; one built for another GPU or version is rebuilt from its source, or refused."""
        path = Path(path)
        sidecar = sidecar_path(path)
        if not sidecar.is_file():
            raise EngineError(f"{path} has no {sidecar.name} beside it; build engines with `dfstream build-engine`")
        info = json.loads(sidecar.read_text())
        metadata = ModelMetadata.from_dict(info)
        build = info.get(SIDECAR_KEY) or {}
        target = TargetInfo.current(device_index)
        built_for = TargetInfo(**build["target"]) if "target" in build else None
        if built_for != target:
            return cls._rebuild_elsewhere(path, build, built_for, target, device_index)
        plan = path.read_bytes()
        if build.get("engine_sha256") and hashlib.sha256(plan).hexdigest() != build["engine_sha256"]:
            raise EngineError(f"{path} does not match the sha256 recorded in {sidecar.name}; refusing a damaged engine")
        engine = cls(plan, metadata, device_index=device_index, name=str(path))
        log.info("loaded TensorRT engine %s (batch %d..%d) without rebuilding", path, engine.min_batch,
                 engine.max_batch)
        return engine

    @classmethod
    def _rebuild_elsewhere(cls, path: Path, build: dict, built_for: TargetInfo | None, target: TargetInfo,
                           device_index: int | None) -> "TensorRTEngine":
        where = built_for.describe() if built_for else "an unknown target"
        source = Path(build.get("source", {}).get("path", ""))
        expected = build.get("source", {}).get("sha256")
        if source.is_file() and expected and sha256_of(source) == expected:
            log.warning("%s was built for %s; this machine has %s: rebuilding from %s", path, where,
                        target.describe(), source)
            profile = BuildProfile(**build["profile"]) if "profile" in build else BuildProfile()
            return cls.from_source(source, profile=profile, device_index=device_index)
        raise EngineError(f"{path} was built for {where}, not for this {target.describe()}; rebuild it with "
                     f"`dfstream build-engine` from its ONNX or checkpoint")

    @classmethod
    def from_source(cls, source: str | Path, fp16: bool = True, max_batch: int | None = None,
                    profile: BuildProfile | None = None, device_index: int | None = None) -> "TensorRTEngine":
        """Engine for a checkpoint or ONNX file, from the cache when this machine built one before."""
        source = Path(source)
        profile = profile or BuildProfile.up_to(max_batch, fp16=fp16)
        metadata = read_metadata(source)
        digest = sha256_of(source)
        target = TargetInfo.current(device_index)
        path = engine_cache_dir() / f"{source.stem}-{cache_key(digest, target, profile, metadata)[:20]}{ENGINE_SUFFIX}"
        with cache_lock(path):
            if path.is_file() and sidecar_path(path).is_file():
                try:
                    return cls.from_file(path, device_index=device_index)
                except Exception as exc:  # a damaged cache entry is rebuilt, never trusted
                    log.warning("cached engine %s unusable (%s); rebuilding", path, exc)
            plan = build_plan(source, metadata, profile, device_index)
            write_engine(plan, path, metadata, profile, target, source, digest)
        log.info("cached TensorRT engine for %s as %s", source, path)
        return cls(plan, metadata, device_index=device_index, name=str(path))

    # -- running

    def run_tensor(self, batch: np.ndarray) -> np.ndarray:
        """Run a float32 NCHW batch of any size: split above the engine's max batch, padded below its min."""
        import torch

        pieces = []
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start:start + self.max_batch]
            count = len(chunk)
            if count < self.min_batch:
                chunk = np.concatenate([chunk, np.zeros((self.min_batch - count, *chunk.shape[1:]), chunk.dtype)])
            pieces.append(self._execute(torch.from_numpy(np.ascontiguousarray(chunk)))[:count])
        return np.concatenate(pieces) if pieces else np.zeros((0,), np.float32)

    def _execute(self, batch_cpu) -> np.ndarray:
        import torch

        with torch.cuda.device(self.device):
            x = batch_cpu.to(self.device).to(self._input_dtype).contiguous()
            if not self._context.set_input_shape(self._input, tuple(x.shape)):
                raise EngineError(f"engine rejected input shape {tuple(x.shape)}")
            outputs = []
            for name, dtype in zip(self._outputs, self._output_dtypes):
                out = torch.empty(tuple(self._context.get_tensor_shape(name)), dtype=dtype, device=self.device)
                self._context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            self._context.set_tensor_address(self._input, x.data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise EngineError("TensorRT execution failed")
            stream.synchronize()
            return outputs[0].float().cpu().numpy()

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None
