"""The model registry: dfstream's default models by name, with their sha256.

A model is found by explicit path first, then in the folders of
``$DFSTREAM_MODELS`` (``os.pathsep``-separated, searched recursively by file
name), then in the user cache (``$XDG_CACHE_HOME/dfstream/models``).  Models
that ship inside the package (the default detector) are found there first.
A named model whose file does not match its registered sha256 is refused: a
tampered or truncated download must never be run.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PACKAGED_DIR = Path(__file__).resolve().parent / "weights"


class ModelNotFoundError(FileNotFoundError):
    pass


class ModelIntegrityError(ValueError):
    pass


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    kind: str  # "face_detector", "detector", "swapper"
    filename: str
    sha256: str
    description: str
    license: str = ""
    url: str | None = None  # where a machine with internet may fetch it
    packaged: bool = False  # ships inside engines/weights/
    detector_type: str = ""  # for face detectors: yunet, scrfd


REGISTRY: dict[str, RegistryEntry] = {
    entry.name: entry
    for entry in (
        RegistryEntry(
            name="yunet",
            kind="face_detector",
            detector_type="yunet",
            filename="face_detection_yunet_2023mar.onnx",
            sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            description="YuNet 2023mar, OpenCV's default face detector (box + 5 landmarks)",
            license="MIT",
            url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
        ),
        RegistryEntry(
            name="scrfd",
            kind="face_detector",
            detector_type="scrfd",
            filename="scrfd_500m_bnkps.onnx",
            sha256="",  # filled in from a known copy by `dfstream models hash`; unverified when empty
            description="SCRFD-0.5G with 5 landmarks (insightface; non-commercial weights)",
            license="non-commercial research",
        ),
    )
}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dfstream" / "models"


def search_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("DFSTREAM_MODELS", "").split(os.pathsep) if p]
    return dirs + [cache_dir()]


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, entry: RegistryEntry) -> Path:
    if entry.sha256 and sha256_of(path) != entry.sha256:
        raise ModelIntegrityError(f"{path} does not match the registered sha256 of model {entry.name!r}; refusing to use it")
    return path


def _find_file(filename: str) -> Path | None:
    for directory in search_dirs():
        if not directory.is_dir():
            continue
        direct = directory / filename
        if direct.is_file():
            return direct
        for candidate in sorted(directory.rglob(filename)):
            if candidate.is_file():
                return candidate
    return None


def resolve(name_or_path: str | Path) -> Path:
    """Path of a model given by explicit path or by registry name."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    entry = REGISTRY.get(str(name_or_path))
    if entry is None:
        if path.suffix or os.sep in str(name_or_path):
            raise ModelNotFoundError(f"model file not found: {name_or_path}")
        raise ModelNotFoundError(f"unknown model {name_or_path!r}: not a file and not one of {', '.join(sorted(REGISTRY))}")
    if entry.packaged and (PACKAGED_DIR / entry.filename).is_file():
        return verify(PACKAGED_DIR / entry.filename, entry)
    found = _find_file(entry.filename)
    if found is None:
        raise ModelNotFoundError(
            f"model {entry.name!r} ({entry.filename}) is not installed: run `dfstream models fetch {entry.name}` "
            f"(add --from DIR to copy it from a local folder) or set DFSTREAM_MODELS"
        )
    return verify(found, entry)


def fetch(name: str, from_dir: str | Path | None = None) -> Path:
    """Install a registered model into the user cache, from a folder or its URL; sha256-checked."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise ModelNotFoundError(f"unknown model {name!r}: expected one of {', '.join(sorted(REGISTRY))}")
    target = cache_dir() / entry.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        if from_dir is not None:
            source = next((p for p in sorted(Path(from_dir).rglob(entry.filename)) if p.is_file()), None)
            if source is None:
                raise ModelNotFoundError(f"{entry.filename} not found under {from_dir}")
            shutil.copyfile(source, tmp_path)
        elif entry.url:
            with urllib.request.urlopen(entry.url, timeout=60) as response, open(tmp_path, "wb") as out:
                shutil.copyfileobj(response, out)
        else:
            raise ModelNotFoundError(f"model {name!r} has no download address; use --from DIR")
        verify(tmp_path, entry)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
    return target
