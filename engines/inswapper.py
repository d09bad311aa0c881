"""insightface inswapper-style one-shot swapper behind the dfstream :class:`Engine` interface.

dfstream ships no such model; a user who has one (``inswapper_128.onnx`` or any ONNX
with the same signature) supplies it together with an ArcFace-style embedding model
and a photo (or photos) of the source face:

* swapper ONNX: input 0 ``target`` N x 3 x S x S (RGB, pixels / 255), input 1
  ``source`` N x 512 (the source identity's latent); output N x 3 x S x S in [0, 1].
  As in insightface, the last initializer of the graph is ``emap`` (E x 512), which
  maps a normalised ArcFace embedding to the latent.
* embedding ONNX: N x 3 x 112 x 112 aligned face (ArcFace layout) -> N x E.

Neither file carries dfstream metadata, so it is synthesised here from the ONNX input
shapes: kind ``swapper``, output ``image``, RGB, mean 0 / std 1 (pixels in [0, 1]),
and the crop geometry insightface uses for S = 128 (ArcFace template scaled by
S/128 and moved 8*S/128 px right).  dfstream's template (scaled about the crop
centre by ``crop_margin``) matches it exactly in scale and x at margin 128/112; it
sits 8*S/128 px lower, and :meth:`InswapperEngine.run_tensor` shifts rows by that
much on the way in and back on the way out.  So the detect stage cuts crops for this
engine as for any other swapper: size and margin from the metadata.

The source face is found and aligned by the pipeline's own detect stage
(:func:`stages.faces.load_inswapper`, 112 x 112 at margin 1.0 == insightface's ``norm_crop``);
the engine is handed those crops.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from engines.base import Engine
from engines.metadata import KIND_SWAPPER, ModelMetadata

log = logging.getLogger(__name__)

ARCFACE_SIZE = 112


class InswapperError(ValueError):
    """The files given do not look like an inswapper-style model, an embedding model or a source face."""


def _static(dim, default: int | None = None) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else default


def _onnx_session(path: Path, threads: int | None):
    import onnxruntime as ort

    from engines.onnxruntime_engine import PREFERRED_PROVIDERS, model_source, session_options

    if not path.is_file():
        raise InswapperError(f"model file not found: {path}")
    available = ort.get_available_providers()
    providers = [p for p in PREFERRED_PROVIDERS if p in available and p != "TensorrtExecutionProvider"]
    try:
        return ort.InferenceSession(model_source(path), sess_options=session_options(threads), providers=providers)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InswapperError(f"{path} is not a loadable ONNX model: {type(exc).__name__}: {first}") from None


def _read_emap(path: Path) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=True)
    if not model.graph.initializer:
        raise InswapperError(f"{path} has no initializers, so no emap: not an inswapper-style model")
    emap = numpy_helper.to_array(model.graph.initializer[-1])
    if emap.ndim != 2:
        raise InswapperError(f"{path}: the last initializer (emap) is {emap.shape}, not a 2-D embedding -> latent map")
    return emap.astype(np.float32)


def is_inswapper_onnx(path: str | Path) -> bool:
    """True if ``path`` is an ONNX model with the inswapper signature (image + 2-D latent inputs)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:
        return False
    initializer_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    if len(inputs) != 2:
        return False
    ranks = [len(i.type.tensor_type.shape.dim) for i in inputs]
    return ranks == [4, 2]


class EmbeddingModel:
    """ArcFace-style ONNX: aligned 112 x 112 BGR uint8 faces -> L2-normalised embeddings."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnx

        self.path = Path(path)
        self.session = _onnx_session(self.path, threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise InswapperError(f"{self.path} is not an embedding model: expected one N x 3 x H x W input")
        shape = inputs[0].shape
        self.input_name = inputs[0].name
        self.input_size = (_static(shape[2], ARCFACE_SIZE), _static(shape[3], ARCFACE_SIZE))
        self.fixed_batch = _static(shape[0])
        # insightface's rule: models that normalise inside the graph (mxnet exports start with
        # Sub and Mul nodes) take raw pixels; the others take (pixel - 127.5) / 127.5.
        nodes = onnx.load(str(self.path), load_external_data=False).graph.node[:8]
        has_sub = any(n.name.startswith(("Sub", "_minus")) for n in nodes)
        has_mul = any(n.name.startswith(("Mul", "_mul")) for n in nodes)
        self.mean, self.std = (0.0, 1.0) if (has_sub and has_mul) else (127.5, 127.5)

    def embed(self, faces_bgr: np.ndarray) -> np.ndarray:
        if faces_bgr.ndim == 3:
            faces_bgr = faces_bgr[None]
        if tuple(faces_bgr.shape[1:3]) != self.input_size:
            import cv2

            faces_bgr = np.stack([cv2.resize(f, self.input_size[::-1], interpolation=cv2.INTER_AREA) for f in faces_bgr])
        x = (faces_bgr[..., ::-1].astype(np.float32) - self.mean) / self.std
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if self.fixed_batch == 1:
            out = np.concatenate([self.session.run(None, {self.input_name: x[i : i + 1]})[0] for i in range(len(x))])
        else:
            out = self.session.run(None, {self.input_name: x})[0]
        out = out.reshape(len(x), -1).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class InswapperEngine(Engine):
    """One-shot swapper: every target crop gets the source face's identity."""

    backend = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        embedder_path: str | Path | None = None,
        source_images=None,
        source_embedding: np.ndarray | None = None,
        threads: int | None = None,
        source_faces: Callable[[], np.ndarray] | None = None,
    ):
        """``source_faces``: the source photos' aligned ARCFACE_SIZE crops (N x 112 x 112 x 3 BGR); it is
        called only once the model has been checked, so a bad model is reported before the photos
        are searched.  ``source_images`` names those photos in the metadata."""
        self.model_path = Path(model_path)
        self.session = _onnx_session(self.model_path, threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 2 or len(inputs[0].shape) != 4 or len(inputs[1].shape) != 2:
            raise InswapperError(
                f"{self.model_path} is not an inswapper-style model: expected inputs N x 3 x S x S and N x 512, "
                f"got {', '.join(str(i.shape) for i in inputs)}"
            )
        self.target_name, self.source_name = inputs[0].name, inputs[1].name
        shape = inputs[0].shape
        size = _static(shape[2], 128)
        if _static(shape[3], size) != size:
            raise InswapperError(f"{self.model_path}: non-square input {shape}")
        self.fixed_batch = _static(shape[0])
        self.latent_dim = _static(inputs[1].shape[1])
        self.emap = _read_emap(self.model_path)
        if self.latent_dim is not None and self.emap.shape[1] != self.latent_dim:
            raise InswapperError(f"{self.model_path}: emap {self.emap.shape} does not map to the {self.latent_dim}-d latent input")
        # insightface geometry: sizes divisible by 112 use the plain template, others the 128-px layout
        if size % 112 == 0:
            margin, self.row_shift = 1.0, 0
        else:
            margin, self.row_shift = 128.0 / 112.0, int(round(8.0 * size / 128.0))

        if source_embedding is None:
            if embedder_path is None or source_faces is None:
                raise InswapperError("an inswapper model needs the source face: give an embedding model and source image(s), or an embedding")
            embedder = EmbeddingModel(embedder_path, threads)
            embeddings = embedder.embed(source_faces())
            source_embedding = embeddings.mean(0)  # several photos of one person: average identity
        source_embedding = np.asarray(source_embedding, np.float32).reshape(-1)
        if source_embedding.shape[0] != self.emap.shape[0]:
            raise InswapperError(f"source embedding has {source_embedding.shape[0]} values; {self.model_path}'s emap expects {self.emap.shape[0]}")
        self.latent = self.latent_for(source_embedding)

        super().__init__(
            ModelMetadata(
                kind=KIND_SWAPPER,
                name=self.model_path.stem,
                input_size=(size, size),
                color_order="RGB",
                mean=(0.0, 0.0, 0.0),
                std=(1.0, 1.0, 1.0),
                crop_margin=margin,
                output="image",
                labels=(),
                architecture="inswapper",
                extra={
                    "source": [str(s) for s in ([source_images] if isinstance(source_images, (str, Path)) else source_images or [])],
                    "embedder": str(embedder_path) if embedder_path else "",
                    "row_shift": self.row_shift,
                    "synthesised": True,
                },
            )
        )

    def latent_for(self, embedding: np.ndarray) -> np.ndarray:
        """Normalised embedding -> the model's source latent (insightface: ``normed @ emap``, normalised)."""
        embedding = embedding / max(float(np.linalg.norm(embedding)), 1e-12)
        latent = embedding.reshape(1, -1) @ self.emap
        return (latent / max(float(np.linalg.norm(latent)), 1e-12)).astype(np.float32)

    def _shift_rows(self, x: np.ndarray, rows: int) -> np.ndarray:
        """Move image content ``rows`` up (positive) or down (negative), replicating the edge row."""
        if rows == 0:
            return x
        out = np.empty_like(x)
        if rows > 0:
            out[:, :, :-rows] = x[:, :, rows:]
            out[:, :, -rows:] = x[:, :, -1:]
        else:
            out[:, :, -rows:] = x[:, :, :rows]
            out[:, :, :-rows] = x[:, :, :1]
        return out

    def run_tensor(self, batch: np.ndarray) -> np.ndarray:
        target = np.ascontiguousarray(self._shift_rows(batch.astype(np.float32), self.row_shift))
        if self.fixed_batch == 1 or self.fixed_batch is None and len(target) == 1:
            outs = [self.session.run(None, {self.target_name: target[i : i + 1], self.source_name: self.latent})[0] for i in range(len(target))]
            out = np.concatenate(outs)
        else:
            try:
                out = self.session.run(None, {self.target_name: target, self.source_name: np.repeat(self.latent, len(target), 0)})[0]
            except Exception:  # a model exported with batch 1 but an unnamed batch dimension
                outs = [self.session.run(None, {self.target_name: target[i : i + 1], self.source_name: self.latent})[0] for i in range(len(target))]
                out = np.concatenate(outs)
        out = self._shift_rows(np.asarray(out, np.float32), -self.row_shift)
        if self.row_shift:  # the rows the model never saw keep the input's pixels
            out[:, :, : self.row_shift] = batch[:, :, : self.row_shift]
        return out

    def close(self) -> None:
        self.session = None
