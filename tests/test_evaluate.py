"""dfstream eval: metrics agree with scikit-learn; labelled folders and list files; clear errors."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

from tests.conftest import SHARED_DATA, needs_shared_data
from train.common import save_checkpoint
from train.datasets import read_list_file
from train.metrics import compute_metrics, equal_error_rate, rank_auc, roc_auc_interval

DATA = SHARED_DATA
needs_data = needs_shared_data


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_detector(path: Path, size: int = 64, kind: str = "detector") -> Path:
    from train.detector import DEFAULTS, make_metadata
    from engines.networks import build_model

    arch = {"family": "detector", "backbone": "mobilenetv3_small_050", "pretrained": False, "drop_rate": 0.0}
    model = build_model(arch)
    meta = make_metadata(dict(DEFAULTS, input_size=size, name="tiny-test")).to_dict()
    meta["kind"] = kind
    return save_checkpoint(path, model, arch, meta)


def test_metrics_match_sklearn_on_known_scores():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2, 0.6, 0.9])
    m = compute_metrics(y, s, threshold=0.5)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, s))
    assert m["log_loss"] == pytest.approx(log_loss(y, s))
    assert m["f1"] == pytest.approx(f1_score(y, s >= 0.5))
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["n_real"] == 4 and m["n_fake"] == 4 and m["threshold"] == 0.5


def test_equal_error_rate_is_zero_for_separated_scores_and_half_for_inverted_ties():
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[0] == 0.0
    assert equal_error_rate([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])[0] == pytest.approx(0.5)


def test_ranking_metrics_are_none_with_one_class():
    m = compute_metrics([1, 1, 1], [0.2, 0.9, 0.7])
    assert m["roc_auc"] is None and m["eer"] is None and m["recall"] == pytest.approx(2 / 3)


def test_rank_auc_is_sklearns_roc_auc_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.5, 1.0), 1)  # rounded: many ties
    assert rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_the_auc_interval_holds_the_auc_and_narrows_with_more_clips():
    rng = np.random.default_rng(1)

    def clips(n):
        y = np.repeat([0, 1], n)
        return y, rng.normal(y * 1.0, 1.0)

    few, many = clips(8), clips(200)
    low, high = roc_auc_interval(*few)
    assert low <= roc_auc_score(*few) <= high
    low_many, high_many = roc_auc_interval(*many)
    assert low_many <= roc_auc_score(*many) <= high_many
    assert high_many - low_many < (high - low) / 2
    assert roc_auc_interval([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (1.0, 1.0)
    assert roc_auc_interval([0, 1, 1], [0.1, 0.8, 0.9]) is None  # one real clip: nothing to resample


def test_frames_resampled_by_video_give_a_wider_interval_than_frames_taken_as_independent():
    rng = np.random.default_rng(2)
    videos = np.repeat(np.arange(12), 30)  # 12 clips of 30 frames, each clip with its own offset
    y = (videos % 2).astype(int)
    s = rng.normal(0.5 * y + rng.normal(0, 1.0, 12)[videos], 0.2)
    low, high = roc_auc_interval(y, s, groups=videos)
    naive_low, naive_high = roc_auc_interval(y, s)
    assert high - low > 2 * (naive_high - naive_low)


def test_list_file_reads_relative_paths_and_labels(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "list.txt").write_text("# comment\na.mp4\treal\n/abs/b.mp4\tfake\nc.jpg 1\n")
    items = read_list_file(tmp_path / "list.txt")
    assert [i.label for i in items] == [0, 1, 1]
    assert items[0].path == tmp_path / "a.mp4"
    (tmp_path / "bad.txt").write_text("a.mp4\tmaybe\n")
    with pytest.raises(ValueError, match="unknown label"):
        read_list_file(tmp_path / "bad.txt")


@needs_data
def test_eval_command_writes_json_metrics_and_plots(tmp_path):
    from dfstream.cli.detector import eval_command

    for label, files in (("real", ["face_recognition_examples/obama3.jpg", "face_recognition_examples/train__obama__obama.jpg"]),
                         ("fake", ["../fake/dfdc_train/lynaeydofd_fr0.jpg", "face_recognition_examples/train__biden__biden.jpg"])):
        (tmp_path / "set" / label).mkdir(parents=True)
        for f in files:
            (tmp_path / "set" / label / Path(f).name).symlink_to(DATA / "real" / f)
    model = tiny_detector(tmp_path / "tiny.pt")
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(eval_command, [str(tmp_path / "set"), "-m", str(model), "--engine", "torch",
                                               "-o", str(out), "--plot", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["video_level"]["n"] == 4 and report["frame_level"]["n_fake"] == 2
    scores = [f["video_score"] for f in report["files"]]
    labels = [f["label"] for f in report["files"]]
    assert report["video_level"]["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    low, high = report["video_level"]["roc_auc_ci"]
    assert low <= report["video_level"]["roc_auc"] <= high and report["video_level"]["ci_level"] == 0.95
    assert "roc_auc=" in result.output and "threshold" in result.output and "95% CI" in result.output
    assert (tmp_path / "plots" / "roc.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "hist_video.png").is_file()


def test_eval_of_a_missing_file_is_one_clear_line(tmp_path):
    from dfstream.cli.detector import eval_command

    (tmp_path / "list.txt").write_text("nowhere.mp4\treal\n")
    result = CliRunner().invoke(eval_command, [str(tmp_path / "list.txt"), "-m", "whatever.onnx"])
    assert result.exit_code != 0
    assert "no such file" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@needs_data
def test_eval_refuses_a_model_of_the_wrong_kind(tmp_path):
    from dfstream.cli.detector import eval_command

    model = tiny_detector(tmp_path / "swapper.pt", kind="swapper")
    (tmp_path / "list.txt").write_text(f"{DATA / 'real/face_recognition_examples/obama3.jpg'}\treal\n")
    result = CliRunner().invoke(eval_command, [str(tmp_path / "list.txt"), "-m", str(model), "--engine", "torch"])
    assert result.exit_code != 0
    assert "swapper" in result.output and "Traceback" not in result.output


def test_list_file_keeps_optional_family_and_group_columns(tmp_path):
    (tmp_path / "list.tsv").write_text("a.mp4\tfake\tlipsync\tperson_a\nb.mp4\treal\t-\tperson_b\nc.mp4\treal\n"
                                       "d.mp4\treal\t\tperson_d\n")
    with pytest.raises(ValueError, match="expected 'path<TAB>label"):  # an empty column is a mistake, not a default
        read_list_file(tmp_path / "list.tsv")
    (tmp_path / "list.tsv").write_text("a.mp4\tfake\tlipsync\tperson_a\nb.mp4\treal\t-\tperson_b\nc.mp4\treal\n")
    items = read_list_file(tmp_path / "list.tsv")
    assert [(i.family, i.group) for i in items] == [("lipsync", "person_a"), ("-", "person_b"), ("-", "")]


def test_a_labelled_folders_fakes_take_their_subfolder_as_family(tmp_path):
    from train.datasets import NO_FAMILY, gather

    for name in ("real/people/a.mp4", "real/b.mp4", "fake/anitalker/c.mp4", "fake/anitalker/more/d.mp4",
                 "fake/hallo/e.mp4", "fake/f.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    families = {i.path.name: (i.label, i.family) for i in gather([tmp_path])}
    assert families == {"a.mp4": (0, NO_FAMILY), "b.mp4": (0, NO_FAMILY), "c.mp4": (1, "anitalker"),
                        "d.mp4": (1, "anitalker"), "e.mp4": (1, "hallo"), "f.mp4": (1, NO_FAMILY)}


def test_a_labelled_folders_fake_named_as_a_real_file_shares_its_group(tmp_path):
    from train.datasets import gather

    for name in ("real/cam1.mp4", "real/cam2.mp4", "real/alone.mp4", "fake/cam1.mp4", "fake/live/cam2.mp4",
                 "fake/other.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    groups = {str(i.path.relative_to(tmp_path)): i.group for i in gather([tmp_path])}
    assert groups == {"real/cam1.mp4": "cam1", "real/cam2.mp4": "cam2", "real/alone.mp4": "",
                      "fake/cam1.mp4": "cam1", "fake/live/cam2.mp4": "cam2", "fake/other.mp4": ""}


def test_paired_view_counts_fakes_above_their_own_originals_only():
    from train.evaluate import format_paired, paired_view

    def rec(label, group, score):
        return {"label": label, "group": group, "video_score": score}

    # the fake of a is above its original, b's below and c's tied; the unpaired real at 0.99 is never compared
    files = [rec(0, "a", 0.2), rec(1, "a", 0.6), rec(0, "b", 0.7), rec(1, "b", 0.3), rec(0, "c", 0.5),
             rec(1, "c", 0.5), rec(0, "", 0.99), rec(1, "d", 0.9)]
    view = paired_view(files)
    assert (view["fake_above"], view["ties"], view["pairs"], view["groups"]) == (1, 1, 3, 3)
    assert view["auc"] == pytest.approx(1.5 / 3)
    assert "higher in 1 of 3 pairs" in format_paired(view)
    assert paired_view([rec(0, "a", 0.1), rec(1, "b", 0.9)]) is None  # no group holds both


def test_family_table_scores_each_family_against_every_real_file():
    from train.evaluate import by_face_size, by_family

    def rec(label, family, scores, px):
        return {"label": label, "family": family, "video_score": float(np.mean(scores)), "frame_scores": scores,
                "frame_face_px": [px] * len(scores)}

    files = [rec(0, "-", [0.1, 0.2], 200), rec(0, "-", [0.3, 0.2], 80), rec(0, "-", [0.2], 300),
             rec(1, "swap", [0.9, 0.8], 200), rec(1, "swap", [0.7], 90),  # caught
             rec(1, "lipsync", [0.1, 0.15], 200), rec(1, "lipsync", [0.25], 300)]  # missed
    rows = {r["family"]: r for r in by_family(files, 0.5, ci_resamples=200)}
    assert rows["swap"]["video_level"]["roc_auc"] == 1.0 and rows["swap"]["n_real"] == 3
    assert rows["lipsync"]["video_level"]["roc_auc"] < 0.5 and rows["lipsync"]["video_level"]["recall"] == 0.0
    assert rows["swap"]["frame_level"]["roc_auc_ci"] is not None
    sizes = {r["face_px"]: r for r in by_face_size(files, 0.5)}
    assert sizes["60-120px"]["n"] == 3 and sizes["60-120px"]["n_fake"] == 1
    assert sizes[">=240px"]["n"] == 2


def test_degradation_shrinks_and_compresses_frames_and_refuses_nonsense():
    from stages.faces import Degradation

    frame = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    out = Degradation(scale=0.25, jpeg_quality=30).apply(frame)
    assert out.shape == (90, 160, 3)
    assert not Degradation().active and Degradation(jpeg_quality=90).active
    with pytest.raises(ValueError, match="frame scale"):
        Degradation(scale=2.0)


def test_a_dim_room_keeps_the_brightness_and_adds_more_noise_the_less_light_there_is():
    from stages.faces import Degradation

    grey = np.full((120, 160, 3), 128, np.uint8)
    grey[:, 80:] = 200
    noise = {}
    for light in (0.5, 0.05):
        out = Degradation(low_light=light).apply(grey, index=3)
        assert out.shape == grey.shape
        assert abs(float(out[:, :80].mean()) - 128) < 4 and abs(float(out[:, 80:].mean()) - 200) < 4  # the gain's job
        noise[light] = float((out.astype(int) - grey).std())
    assert noise[0.05] > 2.5 * noise[0.5] > 0, noise  # shot noise: relative spread grows as 1/sqrt(light)
    dim = Degradation(low_light=0.1)
    assert np.array_equal(dim.apply(grey, 7), dim.apply(grey, 7))  # the same frame, the same noise ...
    assert not np.array_equal(dim.apply(grey, 7), dim.apply(grey, 8))  # ... and fresh noise the next frame
    assert dim.active
    with pytest.raises(ValueError, match="low light"):
        Degradation(low_light=1.5)


def test_a_face_height_becomes_each_files_own_scale_and_never_enlarges():
    from stages.faces import Degradation

    at_100 = Degradation(face_height=100, jpeg_quality=50)
    assert at_100.active
    assert at_100.for_face(400).scale == 0.25 and at_100.for_face(400).face_height is None
    assert at_100.for_face(400).jpeg_quality == 50  # the rest of the degradation stays
    assert at_100.for_face(50).scale == 1.0 and at_100.for_face(None).scale == 1.0
    assert Degradation(jpeg_quality=50).for_face(400).scale == 1.0  # no face height: nothing to do
    with pytest.raises(ValueError, match="one size at a time"):
        Degradation(scale=0.5, face_height=100)


def _eval_two_clips(tmp_path: Path, model, name: str, *options: str) -> dict:
    """``dfstream eval`` of a real studio clip and a DFDC fake, three frames each, with ``options``: its JSON report."""
    from dfstream.cli.detector import eval_command

    listed = tmp_path / "list.tsv"
    listed.write_text(f"{DATA / 'real/grid_lipnet/GRID_bbaf2n.mpg'}\treal\n{DATA / 'fake/dfdc_train/widuwuoiur.mp4'}\tfake\n")
    out = tmp_path / f"{name}.json"
    result = CliRunner().invoke(eval_command, [str(listed), "-m", str(model), "--max-frames", "3", "-o", str(out),
                                               "--ci-resamples", "0", *options])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    report["output"] = result.output
    return report


@needs_data
def test_eval_at_one_face_height_brings_large_faces_down_to_it(tmp_path, tiny_detector):
    heights = {}
    for option in ([], ["--face-height", "64"]):
        report = _eval_two_clips(tmp_path, tiny_detector, f"eval{len(option)}", *option)
        heights[len(option)] = {Path(f["path"]).name: max(f["frame_face_px"]) for f in report["files"]}
    assert report["degradation"]["face_height"] == 64
    for name, before in heights[0].items():  # each file's faces now about 64 px, however large they were
        assert heights[2][name] <= 64 * 1.3, (name, before, heights[2][name])
    assert max(heights[0].values()) > 64 * 1.5  # at least one file had larger faces to bring down


def test_an_h264_stream_degrades_more_at_a_lower_bitrate_and_gives_every_frame_back():
    from stages.faces import Degradation

    base = cv2.resize(np.random.default_rng(1).integers(0, 256, (45, 80, 3), dtype=np.uint8), (320, 181))
    frames = [np.roll(base, 2 * i, axis=1) for i in range(20)]  # a panning shot with an odd height
    errors = {}
    for kbps in (50, 2000):
        recoder = Degradation(scale=0.5, h264_kbps=kbps).recoder(25.0)
        out = [recoder.apply(f) for f in frames]
        assert all(o.shape == (90, 160, 3) for o in out)  # scaled, cut to even sides for 4:2:0
        small = [cv2.resize(f, (160, 90), interpolation=cv2.INTER_AREA) for f in frames]
        errors[kbps] = float(np.mean([np.abs(o.astype(int) - f).mean() for o, f in zip(out[5:], small[5:])]))
    assert errors[50] > errors[2000] + 1.0, errors
    assert Degradation(h264_kbps=300).active and Degradation().recoder(25.0) is None
    with pytest.raises(ValueError, match="one codec at a time"):
        Degradation(jpeg_quality=50, h264_kbps=300)


@needs_data
def test_eval_at_webcam_grade_scores_smaller_faces(tmp_path, tiny_detector):
    sizes = {}
    for scale in ("1.0", "0.5"):
        report = _eval_two_clips(tmp_path, tiny_detector, f"eval-{scale}", "--frame-scale", scale, "--jpeg-quality", "40")
        sizes[scale] = np.mean([px for f in report["files"] for px in f["frame_face_px"]])
        assert report["degradation"]["jpeg_quality"] == 40
    assert sizes["0.5"] == pytest.approx(sizes["1.0"] / 2, rel=0.25)
    assert "by face size" in report["output"]


@needs_data
def test_eval_through_an_h264_stream_still_finds_the_faces_and_records_the_bitrate(tmp_path, tiny_detector):
    from dfstream.cli.detector import eval_command

    report = _eval_two_clips(tmp_path, tiny_detector, "eval", "--h264-kbps", "150")
    assert report["degradation"]["h264_kbps"] == 150
    assert all(f["frame_face_px"] for f in report["files"]), [f["frame_face_px"] for f in report["files"]]
    dark_report = _eval_two_clips(tmp_path, tiny_detector, "dark", "--h264-kbps", "150", "--low-light", "0.05")
    assert dark_report["degradation"]["low_light"] == 0.05
    # the noise reaches the detector: the untrained model's scores move
    assert [f["frame_scores"] for f in dark_report["files"]] != [f["frame_scores"] for f in report["files"]]
    both = CliRunner().invoke(eval_command, [str(tmp_path / "list.tsv"), "-m", str(tiny_detector),
                                             "--h264-kbps", "150", "--jpeg-quality", "40"])
    assert both.exit_code != 0 and "one codec at a time" in both.output
