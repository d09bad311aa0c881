"""Shared test fixtures: where the shared data is, and small models built on the fly.

Tests read real clips, images and face detectors from ``../shared/data`` (or
``$DFSTREAM_DATA``); nothing from there is ever copied into the repository.
Tests that need it skip, saying why, when it is absent.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# PyAV before anything imports OpenCV: the screen-source tests grab the X screen in this
# process, and x11grab crashes on OpenCV's copy of libxcb-shm (see stages/screen.py)
import av  # noqa: F401
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DFSTREAM_DATA", REPO.parent / "shared" / "data")).resolve()
SHARED_MODELS = SHARED_DATA / "models"

needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared test data not found at {SHARED_DATA}")


def shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared test file missing: {path}")
    return path


@pytest.fixture(autouse=True, scope="session")
def _model_search_path(tmp_path_factory):
    """Models come from the shared folder, then from the user's $DFSTREAM_MODELS and own model
    cache (read only: dlib's network, which `make test` fetches from PyPI, is in no shared
    folder); the cache the tests write to is a private temp dir. Session-wide, so module-scoped
    fixtures (which run before function-scoped ones) see it too."""
    from engines.registry import search_dirs

    search = [str(SHARED_MODELS)] if SHARED_MODELS.is_dir() else []
    search += [str(d) for d in search_dirs()]  # read before XDG_CACHE_HOME moves below
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DFSTREAM_MODELS", os.pathsep.join(search))
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="module")
def rtsp_ready():
    """Skips the module's live RTSP tests, saying why, where GStreamer's RTSP server is missing."""
    from tests.live_helpers import missing
    from tests.rtsp_server import unavailable_reason

    reason = unavailable_reason()
    if reason:
        missing(reason)


@pytest.fixture(scope="session")
def dlib_network() -> Path:
    """dlib's face-recognition network file, or a skip that says how to install it."""
    from engines.registry import ModelNotFoundError, resolve

    try:
        return resolve("dlib-face-resnet")
    except ModelNotFoundError as exc:
        pytest.skip(f"dlib's face-recognition network is not installed ({exc})")


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared machine: one thread is faster than oversubscribed cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def export_untrained(directory: Path, name: str, architecture: dict, metadata) -> Path:
    """Save an untrained model of ``architecture`` as a dfstream checkpoint and export it to ONNX."""
    import torch

    from engines.export import export_checkpoint
    from engines.networks import CHECKPOINT_FORMAT, build_model

    torch.manual_seed(0)
    model = build_model(architecture).eval()
    checkpoint = directory / f"{name}.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "metadata": metadata.to_dict(), "architecture": architecture,
                "state_dict": model.state_dict()}, checkpoint)
    onnx_path = directory / f"{name}.onnx"
    export_checkpoint(checkpoint, onnx_path)
    return onnx_path


def make_detector_onnx(directory: Path, name: str = "tiny", input_size=(64, 64), backbone="mobilenetv3_small_050") -> Path:
    """An untrained detector, exported with its metadata: exercises the plumbing, not accuracy."""
    from engines.metadata import ModelMetadata

    architecture = {"family": "detector", "backbone": backbone, "pretrained": False}
    metadata = ModelMetadata(kind="detector", name=name, input_size=input_size, crop_margin=1.3, architecture=backbone)
    return export_untrained(directory, name, architecture, metadata)


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory) -> Path:
    return make_detector_onnx(tmp_path_factory.mktemp("models"))


def run_dfstream(*args, env_extra: dict | None = None, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a separate process, output captured."""
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "dfstream", *map(str, args)],
        cwd=kwargs.pop("cwd", REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def processes_with_env(marker: str) -> list[int]:
    """PIDs of live processes whose environment carries ``marker`` (to find strays)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def make_swapper_onnx(directory: Path, name: str = "tiny-swapper", size: int = 64) -> Path:
    """An untrained face swapper, exported with its metadata: its output is not a face,
    which makes the swap easy to see in a test."""
    from engines.metadata import ModelMetadata

    architecture = {"family": "swapper", "input_size": size, "encoder_channels": [16, 32, 64, 64], "latent": 64}
    metadata = ModelMetadata(kind="swapper", name=name, input_size=(size, size), crop_margin=1.0, output="image",
                             extra={"identities": ["a", "b"], "target": "b"})
    return export_untrained(directory, name, architecture, metadata)


@pytest.fixture(scope="session")
def tiny_swapper(tmp_path_factory) -> Path:
    return make_swapper_onnx(tmp_path_factory.mktemp("swapper"))
