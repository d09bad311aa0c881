"""Face packs: the faces a detector trains on, in one file that travels without the media.

A GPU machine lent for training (``dfstream`` issue #26, item 8) gets the repository and at
most 64 MiB beside it: not ``../shared``, and no PyAV to decode video with.  A pack holds
what :func:`train.datasets.cache_faces` (and :func:`train.datasets.cache_dense_landmarks`)
make of the media -- each face's wide aligned crop (``CACHE_SIZE`` px at ``CACHE_MARGIN``),
its 5 landmarks, its frame index and its 68 dense landmarks -- with each source file's path
and label, so that ``dfstream train detector --pack FILE`` trains there exactly as it would
on the media here, split by source file the same way.

The crops are stored as JPEG (``quality``; 90 keeps a 224 px crop near 17 kB, so the 381
real files of the leave-one-family-out train bucket fit in about 40 MB): self-blends are cut
from the decoded crops, so real and synthesised fakes carry the same JPEG traces, and neither
label can be told by them.  One ``.npz`` of plain arrays (no pickled objects).
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np

from engines.registry import write_atomically
from train.datasets import CACHE_MARGIN, CACHE_SIZE, excluded, sbi_landmark_model

PACK_VERSION = 1


def write_pack(records: list[dict], path: str | Path, quality: int = 90, landmark_model: str | None = None,
               every_n_frames: int | None = None, progress=None) -> dict:
    """Write the cached ``records`` (``{"path", "label", "file"[, "dense"]}``) to one pack at ``path``;
    returns its summary (files, faces, bytes). ``every_n_frames``: the stride the faces were cut at (a
    temporal model trains on frames a multiple of it apart)."""
    if not 50 <= quality <= 100:
        raise ValueError(f"--quality {quality}: JPEG quality from 50 to 100")
    jpegs, owner, landmarks, frames, dense = [], [], [], [], []
    sources = []
    with_dense = all("dense" in r for r in records) and bool(records)
    for index, record in enumerate(progress(records, desc="packing") if progress else records):
        with np.load(record["file"]) as z:
            crops, lms, idx = z["crops"], z["landmarks"], z["frames"]
        for crop in crops:
            ok, buffer = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
            if not ok:
                raise ValueError(f"could not encode a crop of {record['path']} as JPEG")
            jpegs.append(buffer.reshape(-1))
        owner.append(np.full(len(crops), index, np.int32))
        landmarks.append(lms.astype(np.float32))
        frames.append(idx.astype(np.int64))
        if with_dense:
            dense.append(np.load(record["dense"]).astype(np.float32))
        sources.append({"path": record["path"], "label": int(record["label"])})
    if not jpegs:
        raise ValueError("no faces to pack")
    header = {"version": PACK_VERSION, "crop_size": CACHE_SIZE, "margin": CACHE_MARGIN, "quality": int(quality),
              "landmark_model": landmark_model if with_dense else None, "every_n_frames": every_n_frames,
              "sources": sources}
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode(), np.uint8),
        "jpeg": np.concatenate(jpegs),
        "jpeg_end": np.cumsum([len(j) for j in jpegs]).astype(np.int64),
        "source": np.concatenate(owner),
        "landmarks": np.concatenate(landmarks).reshape(-1, 5, 2),
        "frames": np.concatenate(frames),
    }
    if with_dense:
        arrays["dense"] = np.concatenate(dense)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: np.savez(f, **arrays))
    return {"path": str(path), "files": len(sources), "faces": int(len(jpegs)), "bytes": path.stat().st_size,
            "dense_landmarks": header["landmark_model"], "quality": int(quality)}


def read_pack_header(path: str | Path) -> dict:
    if not Path(path).is_file():
        raise FileNotFoundError(f"--pack: no such file: {path}")
    try:
        with np.load(path) as z:
            header = json.loads(z["header"].tobytes().decode()) if "header" in z.files else {}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a dfstream face pack: {exc}") from None
    if header.get("version") != PACK_VERSION:
        raise ValueError(f"{path} is not a dfstream face pack (version {PACK_VERSION})")
    return header


def landmark_model_for(packs, asked: str | None) -> str | None:
    """The 68-point model a trainer uses with ``packs``: ``auto`` takes the packs' own points when they all
    carry one model's (then no landmark model is needed on this machine); otherwise as without packs."""
    packed = {read_pack_header(pack)["landmark_model"] for pack in packs}
    if asked == "auto" and len(packed) == 1 and None not in packed:
        return packed.pop()
    return sbi_landmark_model(asked)


def unpack(path: str | Path, cache_dir: str | Path) -> list[dict]:
    """The pack's faces as cache records (:func:`train.datasets.load_cached` reads them), decoded once
    into ``cache_dir``; each record keeps its source file's path and label as they were packed."""
    path = Path(path)
    header = read_pack_header(path)
    if (header["crop_size"], header["margin"]) != (CACHE_SIZE, CACHE_MARGIN):
        raise ValueError(f"{path} holds {header['crop_size']} px crops at margin {header['margin']}; this dfstream "
                         f"caches {CACHE_SIZE} px at {CACHE_MARGIN}: pack the media again")
    digest = hashlib.sha1(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    folder = Path(cache_dir) / f"pack-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    with np.load(path) as z:
        source, ends = z["source"], z["jpeg_end"]
        starts = np.concatenate([[0], ends[:-1]])
        jpeg, landmarks, frames = z["jpeg"], z["landmarks"], z["frames"]
        dense = z["dense"] if "dense" in z.files else None
        for index, info in enumerate(header["sources"]):
            rows = np.flatnonzero(source == index)
            target = folder / f"{index:05d}.npz"
            if not target.is_file():
                crops = [cv2.imdecode(jpeg[starts[r]:ends[r]], cv2.IMREAD_COLOR) for r in rows]
                crops = np.asarray(crops, np.uint8).reshape(-1, CACHE_SIZE, CACHE_SIZE, 3)
                write_atomically(target, lambda f: np.savez(f, crops=crops, landmarks=landmarks[rows],
                                                            frames=frames[rows]))
            record = {"path": info["path"], "label": int(info["label"]), "file": str(target)}
            if dense is not None:
                points = folder / f"{index:05d}-dense.npy"
                if not points.is_file():
                    write_atomically(points, lambda f: np.save(f, dense[rows]))
                record["dense"] = str(points)
            records.append(record)
    return records


def unpack_all(packs, cache_dir: str | Path, exclude: tuple[str, ...] = ()) -> list[dict]:
    """The cache records of every pack in ``packs`` (:func:`unpack`), less the files ``exclude`` matches."""
    return [r for pack in packs for r in unpack(pack, cache_dir) if not excluded(r["path"], exclude)]


def pack_media(inputs: dict, output: str | Path, exclude: tuple[str, ...] = (), every_n_frames: int = 4,
               max_frames: int | None = 100, max_faces: int = 2, face_detector: str = "auto",
               landmark_model: str | None = "auto", cache_dir: str | Path | None = None, quality: int = 90,
               progress=None) -> dict:
    """Find and cut the faces of ``inputs`` (``{"data": [...], "real": [...], "fake": [...]}``, as
    ``dfstream train detector`` takes them) as the trainer does, and write them to one pack."""
    from train import common
    from train.datasets import cache_dense_landmarks, cache_faces, sbi_landmark_model, training_media

    items = training_media(inputs.get("data"), inputs.get("real"), inputs.get("fake"), exclude)
    if not items:
        raise ValueError("nothing to pack: give --data, --real or --fake")
    landmark_model = sbi_landmark_model(landmark_model)
    cache_dir = Path(cache_dir) if cache_dir else common.cache_root() / "faces"
    records = cache_faces(items, cache_dir, every_n_frames, max_frames, max_faces, face_detector, progress=progress)
    if landmark_model:
        records = cache_dense_landmarks(records, landmark_model, progress=progress)
    return write_pack(records, output, quality=quality, landmark_model=landmark_model, every_n_frames=every_n_frames,
                      progress=progress)
