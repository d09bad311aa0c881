"""The model registry: lookup order, sha256 and kind checks, fetch, and the `models` command."""
from __future__ import annotations

import hashlib
import os

import pytest
from click.testing import CliRunner

import engines.registry as registry
from engines.loader import EngineError, load_engine
from engines.registry import ModelIntegrityError, ModelNotFoundError, RegistryEntry, fetch, resolve
from dfstream.cli.models import models_group
from tests.engine_fixtures import make_metadata_only_checkpoint

PAYLOAD = b"\x08\x07fake onnx bytes for the registry tests" * 64


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache, no $DFSTREAM_MODELS, downloads disabled and the network unreachable."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DFSTREAM_MODELS", raising=False)
    monkeypatch.setenv("DFSTREAM_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(registry.urllib.request, "urlopen", no_network)


@pytest.fixture
def entry(monkeypatch):
    """A registered face-detector-like model whose sha256 is that of PAYLOAD."""
    e = RegistryEntry(name="fake", kind="face_detector", filename="fake_model.onnx",
                      sha256=hashlib.sha256(PAYLOAD).hexdigest(), description="test model",
                      url="https://example.invalid/fake_model.onnx")
    monkeypatch.setitem(registry.REGISTRY, e.name, e)
    return e


def put(folder, name="fake_model.onnx", data=PAYLOAD):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def tamper(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_resolve_order_is_explicit_path_then_dfstream_models_then_cache(tmp_path, monkeypatch, entry):
    in_cache = put(registry.cache_dir())
    assert resolve("fake") == in_cache
    env_dir = tmp_path / "models"
    in_env = put(env_dir / "nested")  # searched recursively
    monkeypatch.setenv("DFSTREAM_MODELS", os.pathsep.join([str(tmp_path / "absent"), str(env_dir)]))
    assert resolve("fake") == in_env
    explicit = put(tmp_path / "mine", name="anything.onnx", data=b"user's own file")
    assert resolve(str(explicit)) == explicit  # an explicit path is the user's choice: not hash-checked


def test_resolve_refuses_a_tampered_file(entry):
    installed = put(registry.cache_dir())
    tamper(installed)
    with pytest.raises(ModelIntegrityError, match="does not match the registered sha256 of model 'fake'"):
        resolve("fake")


def test_load_engine_by_name_refuses_a_tampered_file_in_one_line(entry):
    tamper(put(registry.cache_dir()))
    with pytest.raises(EngineError, match="refusing to use it") as info:
        load_engine("fake")
    assert "\n" not in str(info.value)


def test_resolve_says_how_to_install_a_missing_model(entry):
    with pytest.raises(ModelNotFoundError, match="dfstream models fetch fake"):
        resolve("fake")


def test_unknown_names_and_missing_paths_are_clear():
    with pytest.raises(ModelNotFoundError, match="unknown model 'nonesuch'"):
        resolve("nonesuch")
    with pytest.raises(ModelNotFoundError, match="model file not found: nope/model.onnx"):
        resolve("nope/model.onnx")


def test_fetch_from_a_folder_installs_a_verified_copy(tmp_path, entry):
    put(tmp_path / "downloads" / "sub")
    installed = fetch("fake", tmp_path / "downloads")
    assert installed == registry.cache_dir() / entry.filename
    assert installed.read_bytes() == PAYLOAD
    assert resolve("fake") == installed


def test_fetch_refuses_a_tampered_source_and_installs_nothing(tmp_path, entry):
    tamper(put(tmp_path / "downloads"))
    with pytest.raises(ModelIntegrityError):
        fetch("fake", tmp_path / "downloads")
    assert not any(registry.cache_dir().iterdir())  # not even a partial file


def test_fetch_never_downloads_when_offline(entry):
    with pytest.raises(ModelNotFoundError, match="downloads are disabled"):
        fetch("fake")


@pytest.fixture
def archived_entry(tmp_path, monkeypatch):
    """A model published as one member of a .tar.gz (as the dlib network is, inside a PyPI sdist),
    served from a file: URL through the real urlopen."""
    import tarfile
    import urllib.request

    opener = urllib.request.build_opener()  # urlopen itself is the no-network stub here; file: URLs need no network
    monkeypatch.setattr(registry.urllib.request, "urlopen", lambda url, timeout=None: opener.open(url, timeout=timeout))
    put(tmp_path / "pkg-1.0" / "pkg" / "models")
    put(tmp_path / "pkg-1.0", name="README", data=b"not the model")
    archive = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "pkg-1.0", arcname="pkg-1.0")
    e = RegistryEntry(name="packed", kind="backbone", filename="fake_model.onnx",
                      sha256=hashlib.sha256(PAYLOAD).hexdigest(), description="test model in an archive",
                      url=archive.as_uri(), archive_member="pkg-1.0/pkg/models/fake_model.onnx")
    monkeypatch.setitem(registry.REGISTRY, e.name, e)
    return e


def test_fetch_takes_a_model_out_of_its_registered_archive_and_verifies_it(archived_entry):
    installed = fetch("packed")
    assert installed.read_bytes() == PAYLOAD
    assert resolve("packed") == installed


def test_fetch_of_an_archive_without_the_model_says_so_and_installs_nothing(archived_entry, monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, "packed",
                        RegistryEntry(**{**archived_entry.__dict__, "archive_member": "pkg-1.0/elsewhere.onnx"}))
    with pytest.raises(ModelNotFoundError, match="holds no pkg-1.0/elsewhere.onnx"):
        fetch("packed")
    assert not any(registry.cache_dir().iterdir())


def test_a_registered_model_file_of_the_wrong_kind_is_refused(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    swapper = make_metadata_only_checkpoint(tmp_path / "src" / "default_detector.pt", kind="swapper")
    e = RegistryEntry(name="det", kind="detector", filename="default_detector.pt",
                      sha256=registry.sha256_of(swapper), description="a detector")
    monkeypatch.setitem(registry.REGISTRY, e.name, e)
    with pytest.raises(ModelIntegrityError, match="is a swapper model, not a detector model"):
        fetch("det", tmp_path / "src")


def test_models_list_shows_each_model_and_where_it_is(entry):
    result = CliRunner().invoke(models_group, ["list"])
    assert result.exit_code == 0
    assert "fake" in result.output and "not installed" in result.output
    installed = put(registry.cache_dir())
    assert str(installed) in CliRunner().invoke(models_group, ["list"]).output


def test_models_fetch_and_verify_commands(tmp_path, entry):
    put(tmp_path / "downloads")
    runner = CliRunner()
    fetched = runner.invoke(models_group, ["fetch", "fake", "--from", str(tmp_path / "downloads")])
    assert fetched.exit_code == 0, fetched.output
    verified = runner.invoke(models_group, ["verify", "fake"])
    assert verified.exit_code == 0 and "sha256 ok" in verified.output


def test_models_fetch_if_missing_keeps_a_verified_copy_and_refuses_a_tampered_one(tmp_path, entry):
    runner = CliRunner()
    assert runner.invoke(models_group, ["fetch", "fake", "--if-missing"]).exit_code == 1  # offline: nothing to fetch from
    installed = put(registry.cache_dir())
    kept = runner.invoke(models_group, ["fetch", "fake", "--if-missing"])  # would download (and fail) if it fetched
    assert kept.exit_code == 0 and "already installed" in kept.output
    tamper(installed)
    refused = runner.invoke(models_group, ["fetch", "fake", "--if-missing"])
    assert refused.exit_code == 1 and "does not match the registered sha256" in refused.stderr


def test_models_verify_refuses_a_tampered_file_with_one_line(tmp_path, entry):
    path = put(tmp_path)
    tamper(path)
    result = CliRunner().invoke(models_group, ["verify", str(path)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match the registered sha256" in lines[0]


def test_models_fetch_of_an_unknown_model_fails_clearly():
    result = CliRunner().invoke(models_group, ["fetch", "nonesuch"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: unknown model 'nonesuch'")


def test_auto_face_detector_prefers_onnx_runtime_yunet_then_opencv_yunet_then_haar(monkeypatch):
    from tests.conftest import SHARED_MODELS

    shared_yunet = SHARED_MODELS / "face" / "libfacedetection_train"
    if not shared_yunet.is_dir():
        pytest.skip(f"shared face detectors not found at {shared_yunet}")
    assert registry.auto_face_detector() == ("haar", None)  # nothing installed
    fetch("yunet-opencv", from_dir=shared_yunet)  # a cache filled before the ONNX Runtime export was the default
    assert registry.auto_face_detector() == ("yunet", str(registry.cache_dir() / "face_detection_yunet_2023mar.onnx"))
    fetch("yunet", from_dir=shared_yunet)
    assert registry.auto_face_detector() == ("yunet", str(registry.cache_dir() / "yunet_s_dynamic.onnx"))
