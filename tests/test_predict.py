"""dfstream predict: per-face scores and a verdict for an image or a video; clear errors."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import SHARED_DATA, needs_shared_data
from train.common import save_checkpoint

DATA = SHARED_DATA
needs_data = needs_shared_data


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_detector(path: Path, size: int = 64) -> Path:
    from train.detector import DEFAULTS, make_metadata
    from engines.networks import build_model

    arch = {"family": "detector", "backbone": "mobilenetv3_small_050", "pretrained": False, "drop_rate": 0.0}
    return save_checkpoint(path, build_model(arch), arch, make_metadata(dict(DEFAULTS, input_size=size, name="tiny-test")))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_detector(tmp_path_factory.mktemp("model") / "tiny.pt")


@needs_data
def test_predict_scores_each_face_of_an_image_with_two_people(model):
    from dfstream.cli.detector import predict_command

    image = DATA / "real/face_recognition_examples/two_people.jpg"
    result = CliRunner().invoke(predict_command, [str(image), "-m", str(model), "--engine", "torch", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["type"] == "image" and len(out["faces"]) == 2
    assert all(0.0 <= f["score"] <= 1.0 and f["verdict"] in ("real", "fake") for f in out["faces"])
    assert out["verdict"] in ("real", "fake")


@needs_data
def test_predict_video_gives_per_frame_face_scores_and_a_verdict(model):
    from dfstream.cli.detector import predict_command

    video = DATA / "real/liveportrait_driving_videos/d0.mp4"
    result = CliRunner().invoke(predict_command, [str(video), "-m", str(model), "--engine", "torch",
                                                  "--every-n-frames", "10", "--max-frames", "3"])
    assert result.exit_code == 0, result.output
    assert "frame" in result.output and "verdict:" in result.output
    frames = [line for line in result.output.splitlines() if line.strip().startswith("frame")]
    assert 1 <= len(frames) <= 3


def test_predict_on_a_text_file_is_one_clear_line(tmp_path, model):
    from dfstream.cli.detector import predict_command

    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    result = CliRunner().invoke(predict_command, [str(bad), "-m", str(model)])
    assert result.exit_code != 0
    assert "not an image or a video" in result.output and len(result.output.strip().splitlines()) == 1


def test_predict_on_a_missing_file_is_one_clear_line(model):
    from dfstream.cli.detector import predict_command

    result = CliRunner().invoke(predict_command, ["/nonexistent/clip.mp4", "-m", str(model)])
    assert result.exit_code != 0 and "no such file" in result.output


def test_predict_on_a_folder_points_to_eval_in_one_line(tmp_path, model):
    from dfstream.cli.detector import predict_command

    result = CliRunner().invoke(predict_command, [str(tmp_path), "-m", str(model)])
    assert result.exit_code != 0
    assert "is a folder" in result.output and "dfstream eval" in result.output
    assert len(result.output.strip().splitlines()) == 1


@needs_data
def test_predict_calls_a_score_between_the_models_lines_uncertain(tmp_path):
    from dataclasses import replace

    from click.testing import CliRunner

    from dfstream.cli.detector import predict_command
    from engines.metadata import read_metadata, write_onnx_metadata
    from engines.registry import resolve
    import shutil

    image = DATA / "real/face_recognition_examples/two_people.jpg"
    shipped = read_metadata(resolve("detector"))

    def verdicts(real_below, threshold):
        model = tmp_path / f"lines_{real_below}_{threshold}.onnx"
        shutil.copyfile(resolve("detector"), model)
        write_onnx_metadata(model, replace(shipped, real_below=real_below, threshold=threshold))
        result = CliRunner().invoke(predict_command, [str(image), "-m", str(model), "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        return out["verdict"], [f["verdict"] for f in out["faces"]], out["score"]

    verdict, faces, score = verdicts(0.0, 1.0)  # every score between the lines
    assert verdict == "uncertain" and set(faces) == {"uncertain"}
    assert verdicts(0.0, score)[0] == "fake" and verdicts(score, 1.0)[0] == "real"
