"""Training data: labelled media -> cached wide face crops -> model crops (real, fake, self-blended).

Faces come only from :class:`stages.faces.FaceCropper` (the pipeline's own decode
and detect stages).  Each face is cached once as a *wide* aligned crop
(``CACHE_SIZE`` px at ``CACHE_MARGIN``) with its 5 landmarks in crop
coordinates, in one ``.npz`` per media file under a cache folder outside the
repository; epochs never run face detection again.  A training sample is then:

1. the wide crop, self-blended (SBI) when a fake is wanted from a real face,
2. re-aligned to the model's ``input_size`` / ``crop_margin`` with the same
   5-point template the detect stage uses (plus a little jitter), so the model
   sees crops framed exactly as the running pipeline cuts them,
3. augmented identically for both labels (flip, JPEG re-compression, blur, noise).

Sources: ``real/`` and ``fake/`` folders (images and videos, the Kaggle layout),
or a list file of ``path<TAB>label`` lines (label ``real``/``fake`` or 0/1).
"""
from __future__ import annotations


import fnmatch
import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from engines.alignment import alignment_matrix, template_points
from engines.registry import write_atomically
from stages.faces import FaceCropper, default_detect_config, is_image, is_video, list_media

log = logging.getLogger(__name__)

CACHE_SIZE = 224
CACHE_MARGIN = 2.0
CACHE_VERSION = 1
LABELS = {"real": 0, "fake": 1, "0": 0, "1": 1, "original": 0, "manipulated": 1, "pristine": 0}


NO_FAMILY = "-"


@dataclass
class LabelledMedia:
    path: Path
    label: int  # 0 real, 1 fake
    # optional list-file columns: a fake's family (how it was made; for a real clip, the family it is the
    # source of, or NO_FAMILY) and its group (one person, or one source clip and its fakes), which the
    # leave-one-family-out protocol (train.lofo) never lets straddle a split
    family: str = NO_FAMILY
    group: str = ""

    def to_dict(self) -> dict:
        out = {"path": str(self.path), "label": self.label}
        if self.family != NO_FAMILY or self.group:
            out.update(family=self.family, group=self.group)
        return out


def parse_label(text: str) -> int:
    key = str(text).strip().lower()
    if key not in LABELS:
        raise ValueError(f"unknown label {text!r} (expected real/fake or 0/1)")
    return LABELS[key]


def write_list_file(items: list[LabelledMedia], path: str | Path, comment: str | None = None) -> Path:
    """The list file :func:`read_list_file` reads back: absolute paths, label, family and group."""
    lines = [f"# {comment}"] if comment else []
    lines += [f"{i.path.resolve()}\t{'fake' if i.label else 'real'}\t{i.family}\t{i.group}" for i in items]
    path = Path(path)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def read_list_file(path: str | Path) -> list[LabelledMedia]:
    """``path<TAB>label[<TAB>family[<TAB>group]]`` lines (``#`` comments, blank lines ignored); relative
    paths are relative to the list.  Without tabs, ``path label`` split at the last blank."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file not found: {path}")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")] if "\t" in line else line.rsplit(None, 1)
        if not 2 <= len(parts) <= 4 or not all(parts):
            raise ValueError(f"{path}:{n}: expected 'path<TAB>label[<TAB>family[<TAB>group]]', got {line!r}")
        media = Path(parts[0])
        if not media.is_absolute():
            media = (path.parent / media)
        family = parts[2] if len(parts) > 2 else NO_FAMILY
        group = parts[3] if len(parts) > 3 else ""
        items.append(LabelledMedia(media, parse_label(parts[1]), family, group))
    return items


def labelled_folder(folder: str | Path) -> list[LabelledMedia]:
    """Media under ``folder/real`` (label 0) and ``folder/fake`` (label 1). A fake in a folder of its own
    under ``fake/`` (``fake/anitalker/x.mp4``) takes that folder's name as its family, so that ``eval`` of a
    folder tells one generator from another as a list file's family column does. A fake named as a real
    file (``real/cam07.mp4``, ``fake/cam07.mp4``) is taken as made from it: the two share a group (as a
    list file's group column says), so that ``eval`` can set each fake beside its own original."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    items = []
    for name, label in (("real", 0), ("fake", 1)):
        sub = folder / name
        if sub.is_dir():
            for p in list_media(sub):
                inner = p.relative_to(sub).parts
                family = inner[0] if label and len(inner) > 1 else NO_FAMILY
                items.append(LabelledMedia(p, label, family=family))
    if not items:
        raise ValueError(f"{folder} has no real/ or fake/ folder with images or videos")
    real_names = {i.path.stem for i in items if i.label == 0}
    fake_names = {i.path.stem for i in items if i.label == 1}
    shared = real_names & fake_names
    return [replace(i, group=i.path.stem) if i.path.stem in shared else i for i in items]


def excluded(path: str | Path, patterns: tuple[str, ...]) -> bool:
    """Whether ``path`` (whole, or its file name) matches one of the glob ``patterns``."""
    return any(fnmatch.fnmatch(str(path), pat) or fnmatch.fnmatch(Path(path).name, pat) for pat in patterns)


def gather(inputs: list[str | Path], default_label: int | None = None, exclude: tuple[str, ...] = ()) -> list[LabelledMedia]:
    """Labelled media from list files, labelled folders, or (with ``default_label``) plain folders/files."""
    items: list[LabelledMedia] = []
    for entry in inputs:
        p = Path(entry)
        if p.is_file() and p.suffix.lower() in (".txt", ".tsv", ".list", ".csv"):
            items += read_list_file(p)
        elif default_label is not None:
            items += [LabelledMedia(m, default_label) for m in list_media(p)]
        elif p.is_dir():
            items += labelled_folder(p)
        else:
            raise FileNotFoundError(f"{p}: not a labelled folder (real/, fake/) or a list file")
    if exclude:
        items = [i for i in items if not excluded(i.path, exclude)]
    return items


# ---------------------------------------------------------------- face cache

def _cache_key(path: Path, every_n_frames: int, max_frames: int | None, max_faces: int, detector: str) -> str:
    st = path.stat()
    key = json.dumps([str(path.resolve()), st.st_size, int(st.st_mtime), every_n_frames, max_frames, max_faces,
                      detector, CACHE_SIZE, CACHE_MARGIN, CACHE_VERSION])
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def cache_faces(items: list[LabelledMedia], cache_dir: str | Path, every_n_frames: int = 5, max_frames: int | None = 120,
                max_faces: int = 1, face_detector: str = "auto", progress=None) -> list[dict]:
    """Detect and cache wide aligned crops for each media file; returns one record per file
    ``{"path", "label", "file"}`` whose ``file`` is an ``.npz`` with ``crops`` (N x S x S x 3 uint8),
    ``landmarks`` (N x 5 x 2, crop coordinates) and ``frames`` (frame index per crop)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cropper = None
    records = []
    iterator = progress(items, desc="caching faces") if progress else items
    for item in iterator:
        if not item.path.is_file():
            raise FileNotFoundError(f"no such file: {item.path}")
        target = cache_dir / f"{item.path.stem[:40]}-{_cache_key(item.path, every_n_frames, max_frames, max_faces, face_detector)}.npz"
        if not target.is_file():
            if cropper is None:
                cropper = FaceCropper(default_detect_config((CACHE_SIZE, CACHE_SIZE), CACHE_MARGIN, face_detector))
            crops, lms, frames = [], [], []
            kwargs = dict(max_faces=max_faces)
            if is_video(item.path):
                kwargs.update(every_n_frames=every_n_frames, max_frames=max_frames)
            for face in cropper.crops_from(item.path, **kwargs):
                m = alignment_matrix(face.landmarks, (CACHE_SIZE, CACHE_SIZE), CACHE_MARGIN)
                lm = face.landmarks @ m[:, :2].T + m[:, 2]
                crops.append(face.crop)
                lms.append(lm.astype(np.float32))
                frames.append(face.frame_index)
            write_atomically(target, lambda f: np.savez(
                f, crops=np.asarray(crops, np.uint8).reshape(-1, CACHE_SIZE, CACHE_SIZE, 3),
                landmarks=np.asarray(lms, np.float32).reshape(-1, 5, 2), frames=np.asarray(frames, np.int64)))
        records.append({"path": str(item.path), "label": item.label, "file": str(target)})
    return records


def cache_aligned_fakes(folder: str | Path, cache_dir: str | Path, margin: float) -> dict:
    """A record for a folder of face images that are *already aligned crops* (samples of our
    DCGAN, swaps written by ``eval-swap``): no face detection -- such faces are often not
    found by a detector at all -- the template landmarks at ``margin`` stand in for detected ones."""
    files = [p for p in list_media(folder) if is_image(p)]
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    key = hashlib.sha1(json.dumps([[str(p), p.stat().st_size, int(p.stat().st_mtime)] for p in files]
                                  + [margin, CACHE_SIZE]).encode()).hexdigest()[:16]
    target = Path(cache_dir) / f"aligned-{Path(folder).name[:40]}-{key}.npz"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        crops = []
        for path in files:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{path} is not an image file")
            crops.append(cv2.resize(image, (CACHE_SIZE, CACHE_SIZE), interpolation=cv2.INTER_CUBIC))
        landmarks = np.repeat(template_landmarks((CACHE_SIZE, CACHE_SIZE), margin)[None].astype(np.float32), len(crops), 0)
        write_atomically(target, lambda f: np.savez(f, crops=np.asarray(crops, np.uint8), landmarks=landmarks,
                                                     frames=np.zeros(len(crops), np.int64)))
    return {"path": str(folder), "label": 1, "file": str(target)}


AUTO_SBI_LANDMARKS = "pfld68"


def sbi_landmark_model(name: str | None) -> str | None:
    """The landmark model that will shape the self-blending masks, or None for the 5-point polygon.
    ``auto``: the registered 68-point model when it is installed; a bad name fails here, before
    minutes of face caching."""
    from engines.registry import ModelNotFoundError, get_entry, resolve

    if name is None or str(name).lower() in ("", "none"):
        return None
    if name == "auto":
        try:
            resolve(AUTO_SBI_LANDMARKS)
        except ModelNotFoundError as exc:
            log.warning("self-blending masks fall back to the 5-point polygon: %s", exc)
            return None
        return AUTO_SBI_LANDMARKS
    if get_entry(name).landmark_input is None:
        raise ValueError(f"--sbi-landmarks {name}: not a landmark model")
    resolve(name)  # installed and intact, or a clear error now
    return name


def cache_dense_landmarks(records: list[dict], landmark_model: str, progress=None) -> list[dict]:
    """Add 68-point landmarks (crop coordinates) to cached records, computed once per record from
    its crops and 5-point landmarks and kept beside its ``.npz`` (``dense`` key of each record). A
    record that already has its points (a face pack's, :mod:`train.pack`) keeps them."""
    from engines.registry import get_entry

    # the entry's box and pixel settings are part of the key: changing them recomputes the points
    spec_key = hashlib.sha1(repr(get_entry(landmark_model).landmark_input).encode()).hexdigest()[:8]
    landmarker = None
    iterator = progress(records, desc="dense landmarks") if progress else records
    for rec in iterator:
        if "dense" in rec:
            continue
        target = Path(rec["file"]).with_name(f"{Path(rec['file']).stem}-{landmark_model}-{spec_key}.npy")
        if not target.is_file():
            if landmarker is None:
                from engines.landmarks import create_landmarker

                landmarker = create_landmarker(landmark_model)
            with np.load(rec["file"]) as z:
                dense = [landmarker.predict(crop, [lm])[0] for crop, lm in zip(z["crops"], z["landmarks"])]
            points = np.asarray(dense, np.float32).reshape(-1, landmarker.spec.points, 2)
            write_atomically(target, lambda f: np.save(f, points))
        rec["dense"] = str(target)
    return records


def training_media(data=(), real=(), fake=(), exclude: tuple[str, ...] = ()) -> list[LabelledMedia]:
    """The media a detector trains on, as ``dfstream train detector`` (and ``train pack``) take them: labelled
    folders or list files (``data``), real media, fake media, less those ``exclude`` matches."""
    items = gather(list(data), exclude=exclude) if data else []
    items += gather(list(real), default_label=0, exclude=exclude) if real else []
    items += gather(list(fake), default_label=1, exclude=exclude) if fake else []
    return items


def real_media(real: list[str], exclude: tuple[str, ...] = ()) -> list[LabelledMedia]:
    """The media a reference on real faces is measured on: refused if any is labelled fake, or if there is none."""
    items = gather(real, default_label=0, exclude=tuple(exclude))
    if any(i.label for i in items):
        raise ValueError("a reference is measured on real faces alone: a list file gave fake media")
    if not items:
        raise ValueError("no real media to measure a reference on")
    return items


def real_faces(real: list[str], exclude: tuple[str, ...] = (), every_n_frames: int = 4, max_frames: int = 100,
               face_detector: str = "auto", cache_dir: str | Path | None = None, progress=None,
               min_faces: int = 20) -> tuple[list[dict], dict]:
    """The faces of real media alone (the largest per frame), found and cached as training finds them:
    (records, :func:`load_cached` arrays) -- what a model's reference on real faces is measured on."""
    from train import common

    items = real_media(real, exclude)
    cache = Path(cache_dir) if cache_dir else common.cache_root() / "faces"
    records = cache_faces(items, cache, every_n_frames, max_frames, 1, face_detector, progress=progress)
    cached = load_cached(records)
    if len(cached["crops"]) < min_faces:
        raise ValueError(f"only {len(cached['crops'])} faces found in the real media: too few for a reference")
    return records, cached


def per_file_weights(source: np.ndarray) -> np.ndarray:
    """A weight per face such that every file weighs the same: a long clip must not stand for all real faces."""
    _, index, counts = np.unique(source, return_inverse=True, return_counts=True)
    return 1.0 / counts[index]


def load_cached(records: list[dict]) -> dict:
    """Concatenate cached records into arrays: crops, landmarks, labels, source id, frame index,
    and ``dense`` (68-point landmarks; NaN for records without them) when any record has them."""
    crops, lms, labels, src, frames, dense = [], [], [], [], [], []
    with_dense = any("dense" in rec for rec in records)
    for sid, rec in enumerate(records):
        with np.load(rec["file"]) as z:
            n = len(z["crops"])
            if n == 0:
                continue
            crops.append(z["crops"])
            lms.append(z["landmarks"])
            frames.append(z["frames"])
        labels.append(np.full(n, rec["label"], np.int64))
        src.append(np.full(n, sid, np.int64))
        if with_dense:
            dense.append(np.load(rec["dense"]) if "dense" in rec else np.full((n, 68, 2), np.nan, np.float32))
    if not crops:
        return {"crops": np.zeros((0, CACHE_SIZE, CACHE_SIZE, 3), np.uint8), "landmarks": np.zeros((0, 5, 2), np.float32),
                "labels": np.zeros(0, np.int64), "source": np.zeros(0, np.int64), "frames": np.zeros(0, np.int64)}
    cached = {"crops": np.concatenate(crops), "landmarks": np.concatenate(lms), "labels": np.concatenate(labels),
              "source": np.concatenate(src), "frames": np.concatenate(frames)}
    if with_dense:
        cached["dense"] = np.concatenate(dense)
    return cached


# ---------------------------------------------------------------- model crops

def model_crop(wide: np.ndarray, landmarks: np.ndarray, size: tuple[int, int], margin: float,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Re-align a wide cached crop to the model crop with the detect stage's template (+ jitter)."""
    lm = np.asarray(landmarks, np.float64)
    if rng is not None:
        face = max(np.ptp(lm[:, 0]), 8.0)
        lm = lm + rng.normal(0, 0.015 * face, lm.shape)  # landmark noise, like a real detector's
        scale = rng.uniform(0.93, 1.07)
        margin = margin * scale
    m = alignment_matrix(lm, size, margin)
    return cv2.warpAffine(wide, m, (size[1], size[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def edge_preserving_smooth(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bilateral filter of random strength: flat regions lose their fine texture, edges stay."""
    return cv2.bilateralFilter(np.ascontiguousarray(crop), 5, rng.uniform(20, 60), rng.uniform(2, 5))


WEBCAM_SHARE = 0.5  # of the crops, with webcam=True
WEBCAM_SCALE = (0.3, 0.7)  # a call's face: a fraction of the pixels the crop was cut from
WEBCAM_JPEG = (30, 60)  # and a stream codec's quality


def augment(crop: np.ndarray, rng: np.random.Generator, smooth: bool = False, return_flip: bool = False,
            webcam: bool = False):
    """Label-independent augmentation: flip, blur, noise, JPEG (video codecs), colour.

    ``smooth``: also, on a third of the crops, an edge-preserving (bilateral) filter -- the
    flat skin, sharp hair and contours that camera denoising, beauty filters and low-bitrate
    codecs leave -- so that a face smoother than its surroundings is not by itself "fake".
    ``return_flip``: also say whether the crop was mirrored (a blend map must follow it).
    ``webcam``: also, on :data:`WEBCAM_SHARE` of the crops, the degradation of a video call --
    shrunk to :data:`WEBCAM_SCALE` of its side, scaled back and JPEG-compressed at
    :data:`WEBCAM_JPEG` -- so that real and fake faces are learnt at the quality a call shows them."""
    x = crop
    flipped = bool(rng.random() < 0.5)
    if flipped:
        x = x[:, ::-1]
    if rng.random() < 0.3:
        x = np.clip((x.astype(np.float32) - 128) * rng.uniform(0.8, 1.2) + 128 + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        x = cv2.GaussianBlur(x, (3, 3), rng.uniform(0.3, 1.0))
    if rng.random() < 0.15:
        h, w = x.shape[:2]
        f = rng.uniform(0.5, 0.85)
        x = cv2.resize(cv2.resize(x, (int(w * f), int(h * f)), interpolation=cv2.INTER_AREA), (w, h))
    if smooth and rng.random() < 1 / 3:  # drawn only when asked: the plain recipe's draws stay as they were
        x = edge_preserving_smooth(x, rng)
    if webcam and rng.random() < WEBCAM_SHARE:  # drawn only when asked, as above
        h, w = x.shape[:2]
        f = rng.uniform(*WEBCAM_SCALE)
        small = cv2.resize(np.ascontiguousarray(x), (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*WEBCAM_JPEG))])
        x = cv2.resize(cv2.imdecode(buf, cv2.IMREAD_COLOR), (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.6:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(x), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 96))])
        x = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if rng.random() < 0.1:
        x = cv2.cvtColor(cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    x = np.ascontiguousarray(x)
    return (x, flipped) if return_flip else x


def blend_boundary(mask: np.ndarray) -> np.ndarray:
    """Face X-ray's boundary map 4 M (1 - M) of a blend mask M: 1 where two images mix half and half,
    0 where either is alone (all of a real face)."""
    m = np.clip(mask.astype(np.float32), 0.0, 1.0)
    return 4.0 * m * (1.0 - m)


def to_tensor(crops_bgr: np.ndarray, metadata) -> "torch.Tensor":
    import torch

    from engines.base import preprocess

    return torch.from_numpy(preprocess(np.asarray(crops_bgr), metadata))


class FaceDataset:
    """Map-style dataset over cached faces.

    ``sbi=True``: every real face yields two samples, itself (label 0) and a fresh
    self-blend of it (label 1); labelled fakes (if any) yield themselves (label 1).
    Returns uint8 BGR model crops and labels; convert with :func:`to_tensor`.

    ``pairs=True`` (training with self-blending): a real face and its blend are cut and
    augmented alike (one crop jitter, flip, JPEG quality, colour change per face and
    epoch) and :meth:`batches` puts them in the same batch, so the blend is the only
    difference the network sees between them -- as in the SBI paper, whose batches hold
    each frame beside its blend.  Set :attr:`epoch` before each epoch for fresh draws.

    ``inside``: every blend's soft edge stays inside the face hull (:func:`train.sbi.face_mask`).
    ``swap_share``: this share of the synthesised fakes are swap blends (:func:`train.swapblend.swap_blend`:
    a face of another source file rendered in) instead of self-blends, drawn per face and epoch.
    ``smooth``: :func:`augment` also applies edge-preserving smoothing, to real and fake alike.
    ``reconstruct`` / ``recon_share``: this share of the synthesised fakes are the real wide crop
    redrawn whole by a reconstruction autoencoder (:class:`train.recon.Reconstructor`), drawn first;
    with ``recon_paste``, only its inner face is kept, rendered in as a live swapper renders its
    generator's face (:func:`train.swapblend.swap_blend`, the redrawing as the donor): low resolution,
    colour-matched, a soft mask, the rest of the frame real.
    ``warp_share``: this share of the synthesised fakes are warp fakes (:func:`train.warpfake.warp_fake`:
    another frame of the same source file warped to this face's landmarks), drawn next.
    ``webcam``: :func:`augment` also degrades half the crops as a video call does, real and fake alike.
    ``blend_map``: each sample is (crop, label, map): the model crop's :func:`blend_boundary`, cut and
    mirrored like the crop (zeros for a real face; NaN for a labelled fake, whose blend is unknown).

    :attr:`blend_strength` (training): :func:`train.sbi.self_blend`'s ``strength`` for this
    epoch's blends; the trainer raises it early on (:func:`train.sbi.curriculum_strength`).
    """

    def __init__(self, cached: dict, size: tuple[int, int], margin: float, sbi: bool = True, train: bool = True, seed: int = 0,
                 pairs: bool = False, inside: bool = False, smooth: bool = False, blend_map: bool = False,
                 swap_share: float = 0.0, webcam: bool = False, reconstruct=None, recon_share: float = 0.0,
                 warp_share: float = 0.0, recon_paste: bool = False):
        self.c = cached
        self.size = tuple(size)
        self.margin = margin
        self.sbi = sbi
        self.train = train
        self.seed = seed
        self.pairs = pairs and sbi
        self.inside = inside
        self.smooth = smooth
        self.webcam = webcam
        self.blend_map = blend_map
        self.swap_share = float(swap_share) if sbi else 0.0
        self.reconstruct = reconstruct
        self.recon_share = float(recon_share) if sbi and reconstruct is not None else 0.0
        self.recon_paste = bool(recon_paste)
        self.warp_share = float(warp_share) if sbi else 0.0
        self.epoch = 0
        self.blend_strength = 1.0
        real = np.nonzero(cached["labels"] == 0)[0]
        fake = np.nonzero(cached["labels"] == 1)[0]
        self._real = real  # donors of swap blends
        if self.swap_share and len(np.unique(cached["source"][real])) < 2:
            raise ValueError("swap blends need real faces from at least two source files")
        self._frames_of: dict[int, np.ndarray] = {}  # source file -> its real faces: warp fakes' sources
        if self.warp_share:
            for sid in np.unique(cached["source"][real]):
                faces = real[cached["source"][real] == sid]
                # one face per frame only: with two people in a clip, "another frame" could be another person
                if len(np.unique(cached["frames"][faces])) == len(faces):
                    self._frames_of[int(sid)] = faces
            if max((len(f) for f in self._frames_of.values()), default=0) < 2:
                raise ValueError("warp fakes need videos of one person (two or more frames with one face each)")
        index = [(int(i), 0) for i in real] + [(int(i), 1) for i in fake]
        if sbi:
            index += [(int(i), 2) for i in real]  # 2: self-blended from a real face
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def labels(self) -> np.ndarray:
        return np.array([0 if kind == 0 else 1 for _, kind in self.index])

    def batches(self, batch_size: int, rng: np.random.Generator, drop_last: bool = True) -> list[list[int]]:
        """Shuffled batches of indices (a ``batch_sampler``); with :attr:`pairs`, each real face next to its blend."""
        groups: dict[int, list[int]] = {}
        for i, (face, kind) in enumerate(self.index):
            paired = self.pairs and kind != 1
            groups.setdefault(face if paired else -1 - i, []).append(i)
        members = list(groups.values())
        order = [i for g in rng.permutation(len(members)) for i in members[g]]
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
            batches.pop()
        return batches

    def __getitem__(self, i: int):
        from train.sbi import self_blend

        face, kind = self.index[i]
        wide = self.c["crops"][face]
        lm = self.c["landmarks"][face]
        if self.train:
            view_key = [self.seed, self.epoch, face] + ([] if self.pairs and kind != 1 else [kind])
            blend_rng = np.random.default_rng([self.seed, self.epoch, face, kind, 1])
        else:  # validation: a fixed blend per sample, no jitter or augmentation
            view_key = None
            blend_rng = np.random.default_rng(self.seed * 1_000_003 + i)
        mask = None
        if kind == 2:
            dense = self.c["dense"][face] if "dense" in self.c else None
            dense = dense if dense is not None and np.isfinite(dense).all() else None
            if self.recon_share and blend_rng.random() < self.recon_share:
                redrawn = self.reconstruct(wide, blend_rng)
                if self.recon_paste:  # the generator's face in the real frame: the same landmarks, so no warp
                    from train.swapblend import swap_blend

                    wide, mask = swap_blend(wide, lm, redrawn, lm, blend_rng, dense=dense, return_mask=True)
                else:
                    wide = redrawn  # redrawn whole: no seam, no mask
            elif self.warp_share and (warped := self._warp(face, wide, lm, dense, blend_rng)):
                wide, mask = warped
            elif self.swap_share and blend_rng.random() < self.swap_share:
                wide, mask = self._swap(face, wide, lm, dense, blend_rng)
            else:
                wide, mask = self_blend(wide, lm, blend_rng, dense=dense, strength=self.blend_strength if self.train else 1.0,
                                        inside=self.inside, return_mask=True)
        label = 0 if kind == 0 else 1
        if view_key is None:
            crop = model_crop(wide, lm, self.size, self.margin)
            flipped = False
        else:
            # a fresh generator from the same key: both members of a pair draw the same view
            crop = model_crop(wide, lm, self.size, self.margin, np.random.default_rng(view_key))
            crop, flipped = augment(crop, np.random.default_rng(view_key + [2]), smooth=self.smooth, return_flip=True,
                                    webcam=self.webcam)
        if not self.blend_map:
            return crop, label
        if kind == 1:
            target = np.full(self.size, np.nan, np.float32)
        elif mask is None:
            target = np.zeros(self.size, np.float32)
        else:  # the same generator key draws the same jitter, so the mask is cut exactly as the crop was
            target = blend_boundary(model_crop(mask, lm, self.size, self.margin,
                                               None if view_key is None else np.random.default_rng(view_key)))
            target = np.ascontiguousarray(target[:, ::-1]) if flipped else target
        return crop, label, target


    def _warp(self, face: int, wide: np.ndarray, lm: np.ndarray, dense, rng: np.random.Generator):
        """A warp fake of ``face`` from another frame of its video, as (fake, mask or None), this share of the
        time (:attr:`warp_share`). None -- a swap or self-blend instead -- when not drawn, when the face has no
        other frame (a photo; a clip showing two people), or when no frame tried moved enough, or moved too
        much (:func:`train.warpfake.choose_source`). The share is drawn only for faces with other frames."""
        from train.warpfake import SOURCE_TRIES, choose_source, warp_fake

        frames = self._frames_of.get(int(self.c["source"][face]), np.zeros(0, np.int64))
        frames = frames[frames != face]
        if not frames.size or rng.random() >= self.warp_share:
            return None
        frames = rng.choice(frames, min(SOURCE_TRIES, len(frames)), replace=False)
        all_dense = "dense" in self.c and dense is not None and all(np.isfinite(self.c["dense"][f]).all() for f in frames)
        points = dense if all_dense else lm
        candidates = [self.c["dense"][f] if all_dense else self.c["landmarks"][f] for f in frames]
        chosen = choose_source(points, candidates, rng)
        if chosen is None:
            return None
        source = int(frames[chosen])
        return warp_fake(wide, lm, self.c["crops"][source], candidates[chosen], points, rng, dense=dense, return_mask=True)

    def _swap(self, face: int, wide: np.ndarray, lm: np.ndarray, dense, rng: np.random.Generator):
        """A swap blend of ``face`` with a real face of another source file as the donor."""
        from train.swapblend import swap_blend

        source = self.c["source"]
        for _ in range(16):
            donor = int(self._real[rng.integers(len(self._real))])
            if source[donor] != source[face]:
                break
        return swap_blend(wide, lm, self.c["crops"][donor], self.c["landmarks"][donor], rng, dense=dense, return_mask=True)


def template_landmarks(size: tuple[int, int], margin: float) -> np.ndarray:
    return template_points(size, margin)
