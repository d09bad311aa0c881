"""Blinks along a face track (engines.blinks) and the blink rate as a held-out-family cue
(train.blinks, `dfstream lofo blinks`)."""
import numpy as np
import pytest

from engines.blinks import MIN_SECONDS, BlinkRate, blink_rate, count_blinks, eye_aspect_ratio
from pipeline.config import AnnotateConfig
from tests.conftest import needs_shared_data
from tests.test_lofo import _names_in_bucket
from train import lofo


def test_a_blink_is_a_closing_under_three_quarters_of_the_usual_opening_counted_once_until_the_eyes_reopen():
    open_, shut = 0.30, 0.08
    series = [open_] * 10 + [shut] * 3 + [open_] * 10  # one blink
    series += [0.20, 0.24, 0.20, 0.24] + [open_] * 10  # a slow half-closing with jitter: one more, not two
    assert count_blinks(series) == 2
    assert count_blinks([open_ * (1 + 0.08 * np.sin(k)) for k in range(200)]) == 0  # landmark jitter alone
    assert count_blinks([np.nan, open_, np.nan, shut, open_, open_]) == 1  # frames without a face are skipped
    assert count_blinks([]) == 0 and count_blinks([np.nan, np.nan]) == 0


def test_the_rate_is_per_minute_of_frames_with_a_face_and_none_when_seen_too_briefly():
    seen = [0.3] * 50 + [0.05] * 2 + [0.3] * 48 + [np.nan] * 100  # one blink in 100 frames with a face
    rate = blink_rate(seen, fps=25.0)
    assert rate == BlinkRate(blinks=1, seconds=4.0) and rate.per_minute == pytest.approx(15.0)
    assert BlinkRate(blinks=0, seconds=MIN_SECONDS - 0.1).per_minute is None


def _eye_points(height: float) -> np.ndarray:
    """68 points whose eyes (36-47) are 30 px wide and ``height`` px open; the rest do not matter."""
    points = np.zeros((68, 2))
    for start, x0 in ((36, 100.0), (42, 160.0)):
        points[start:start + 6] = [(x0, 0), (x0 + 10, -height / 2), (x0 + 20, -height / 2), (x0 + 30, 0),
                                   (x0 + 20, height / 2), (x0 + 10, height / 2)]
    return points


def test_eye_aspect_ratio_is_the_lid_gap_over_the_eye_width():
    assert eye_aspect_ratio(_eye_points(9.0)) == pytest.approx(9.0 / 30.0, rel=1e-4)
    assert eye_aspect_ratio(_eye_points(1.0)) < 0.25 * eye_aspect_ratio(_eye_points(9.0))


@needs_shared_data
def test_real_speakers_blink_and_heads_animated_from_one_photo_do_not(tmp_path):
    from tests.conftest import SHARED_DATA

    reals = sorted((SHARED_DATA / "real" / "ffpp_c23_originals").glob("*.mp4"))[:2]  # 12 s news clips
    fakes = sorted((SHARED_DATA / "fake" / "talking_head_edtalk").glob("*.mp4"))[:2]  # 10 s, from one photo
    rows = [f"{p}\treal\t-\t{g}" for p, g in zip(reals, _names_in_bucket("test", 2, "person"))]
    rows += [f"{p}\tfake\ttalking_head\tedtalk_{k}" for k, p in enumerate(fakes)]
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    result = lofo.blink_cue(manifest)
    files = result["files"]
    assert all(files[str(p)]["blinks"] >= 2 and files[str(p)]["seconds"] >= 9 for p in reals)
    assert all(files[str(p)]["blinks"] == 0 for p in fakes)
    assert result["roc_auc"][lofo.BLINK_CUE]["talking_head"] == 1.0
    assert result["scored_fake_real"][lofo.BLINK_CUE]["talking_head"] == [2, 2]
    assert "blinks" in lofo.format_baselines(result, title="blinks")
    # named as lofo score names files, so that lofo fuse joins the two on the same videos
    assert set(result["seeds"][0]["families"]["talking_head"]["video_scores"]) == {str(p.resolve()) for p in reals + fakes}


def test_the_max_rule_flags_a_video_by_its_most_suspect_cue_and_reads_a_cues_scores_as_logits():
    from tests.test_lofo import _scored

    reals = {f"r{i}": (0, 0.4 + 0.02 * i) for i in range(6)}
    # the model catches pasted faces only; blinks (minus the rate, already a logit-like score) only heads
    model = _scored("model", [0.4, 0.45, 0.5], {"paste": {**reals, "p1": (1, 0.9)},
                                                "heads": {**reals, "h1": (1, 0.41), "h2": (1, 0.42)}})
    rate = {f"r{i}": (0, -20.0 + i) for i in range(6)}  # real people blink 15-20 times a minute
    blinks = _scored("blinks", [-25.0, -20.0, -15.0], {"paste": {**rate, "p1": (1, -18.0)},
                                                       "heads": {**rate, "h1": (1, 0.0), "h2": (1, -1.0)}})
    blinks["seeds"][0]["scores_are_logits"] = True
    del blinks["seeds"][0]["families"]["heads"]["video_scores"]["h2"]  # seen too briefly: no rate
    fused = lofo.fuse([model, blinks], ci_resamples=0, rule="max")
    auc = {f: fused["families"][f]["video_level"]["roc_auc_mean"] for f in ("paste", "heads")}
    assert auc["paste"] == 1.0  # the model's catch survives the cue that misses it
    heads = fused["seeds"][0]["families"]["heads"]["video_scores"]
    assert heads["h1"] > max(heads[r] for r in reals)  # no blink at all: flagged by the cue that sees it
    mean = lofo.fuse([model, blinks], ci_resamples=0)["seeds"][0]["families"]["heads"]["video_scores"]
    assert heads["h2"] == mean["h2"]  # no rate: the model's z alone, under either rule
    assert fused["seeds"][0]["rule"] == "max" and " max " in fused["seeds"][0]["model"]
    with pytest.raises(ValueError, match="fusion rule 'median'"):
        lofo.fuse([model, blinks], rule="median")
    elsewhere = _scored("elsewhere", [0.4, 0.45, 0.5], {f: {"/other/" + p: v for p, v in files.items()}
                                                       for f, files in (("paste", reals), ("heads", reals))})
    with pytest.raises(ValueError, match="no video in common"):
        lofo.fuse([model, elsewhere])


@needs_shared_data
def test_reading_every_third_frame_covers_the_same_seconds_and_a_face_height_is_refused(tmp_path):
    from stages.faces import Degradation
    from tests.conftest import SHARED_DATA
    from train.blinks import BlinkMeter

    clip = sorted((SHARED_DATA / "real" / "ffpp_c23_originals").glob("*.mp4"))[0]
    meter = BlinkMeter()
    every, third = meter.measure(clip), meter.measure(clip, every=3)
    assert third.seconds == pytest.approx(every.seconds, abs=0.15) and every.seconds >= 9
    assert third.blinks <= every.blinks + 1
    with pytest.raises(ValueError, match="face height"):
        meter.measure(clip, degradation=Degradation(face_height=60))
    with pytest.raises(ValueError, match="at least 1"):
        meter.measure(clip, every=0)


@needs_shared_data
def test_a_video_is_read_for_the_span_a_run_judges_a_tracks_blinks_over_and_no_longer():
    from engines.blinks import WINDOW_S
    from tests.conftest import SHARED_DATA
    from train.blinks import BlinkMeter

    clip = sorted((SHARED_DATA / "real" / "ffpp_c23_originals").glob("*.mp4"))[0]  # 12 s of one face
    meter = BlinkMeter()
    whole, first_four = meter.measure(clip), meter.measure(clip, max_seconds=4.0)
    assert WINDOW_S > whole.seconds >= 12 and first_four.seconds == pytest.approx(4.0, abs=0.1)


# -- in the pipeline: each track's last minute --------------------------------------------------

def test_recent_blinks_keep_the_last_minute_and_do_not_count_time_the_face_was_away():
    from engines.blinks import RecentBlinks

    eyes = RecentBlinks(window_s=60.0)
    t = 0.0
    for second in range(30):  # 30 s at 10 readings a second, a blink at each 10th second
        for tenth in range(10):
            eyes.add(t, 0.08 if second % 10 == 5 and tenth < 2 else 0.3)
            t += 0.1
    rate = eyes.rate()
    assert rate.blinks == 3 and rate.seconds == pytest.approx(29.9) and rate.per_minute == pytest.approx(6.0, rel=0.01)
    eyes.add(t + 120.0, 0.3)  # two minutes away: the old readings leave the window
    eyes.add(t + 120.1, 0.3)
    assert eyes.rate().blinks == 0 and eyes.rate().seconds == pytest.approx(0.1)


def test_a_track_reports_blinks_per_minute_once_seen_long_enough_and_holds_it_between_detections():
    from stages.tracking import FaceTracker
    from tests.test_tracking import _message

    tracker = FaceTracker(AnnotateConfig())
    rates = []
    for seq in range(0, 25 * 6, 3):  # six seconds at 25 fps, the eyes read every 3rd frame; one blink
        message = _message(seq, [(0, 0, 100, 100)])
        message.faces[0].eye_opening = 0.05 if seq in (60, 63) else 0.3
        tracker.update(message)
        rates.append(message.faces[0].blinks_per_minute)
        between = _message(seq + 1, [], detected=False)
        tracker.update(between)
        assert between.faces[0].blinks_per_minute == rates[-1]
    assert rates[0] is None and rates[-1] == pytest.approx(60 / (147 / 25), rel=0.01)  # one blink in 5.9 s
    assert tracker.summary()[0]["blinks_per_minute"] == rates[-1]
    quiet = FaceTracker(AnnotateConfig())
    quiet.update(_message(0, [(0, 0, 100, 100)]))  # eyes not read (--blinks off): nothing to say
    assert quiet.summary()[0]["blinks_per_minute"] is None


def test_a_landmark_model_that_is_not_one_is_refused_when_the_infer_stage_opens(tiny_detector):
    from pipeline.config import InferConfig
    from pipeline.stage import StageError
    from stages.infer import InferStage

    with pytest.raises(StageError, match="eye landmarks: .*yunet"):
        InferStage(InferConfig(model_path=str(tiny_detector), engine="onnxruntime", eye_landmarks="yunet")).open()


@needs_shared_data
def test_a_default_run_counts_a_real_speakers_blinks_and_none_on_an_animated_photo_and_scores_them(tmp_path):
    import json

    from tests.conftest import SHARED_DATA
    from tests.live_helpers import run_cli

    clips = {"real": sorted((SHARED_DATA / "real" / "ffpp_c23_originals").glob("*.mp4"))[0],
             "head": sorted((SHARED_DATA / "fake" / "talking_head_edtalk").glob("*.mp4"))[0]}
    last = {}
    for name, clip in clips.items():
        events, report = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-report"
        # no --blinks: the default detector's score uses them
        result = run_cli(["run", "-s", clip, "--events", events, "--report", report, "--no-progress"], timeout=180)
        assert result.returncode == 0, result.stderr[-2000:]
        rows = [json.loads(line) for line in events.read_text().splitlines()]
        rates = [r["blinks_per_minute"] for r in rows if r.get("track_id") == 1]
        assert rates[0] is None  # not before two seconds of the face
        last[name] = rates[-1]
        raised = [r for r in rows if r.get("track_id") == 1 and r["blink_score"] is not None]
        assert raised and all(r["smoothed_score"] >= r["blink_score"] for r in raised)
        last[name + " blink score"] = raised[-1]["blink_score"]
        people = json.loads((report / "report.json").read_text())["participants"]
        assert people[0]["blinks_per_minute"] == last[name]
        assert "blinks / min" in (report / "report.html").read_text()
    assert last["head"] == 0.0 and last["real"] >= 5.0
    assert last["head blink score"] > last["real blink score"]


def speaker_and_head(tmp_path):
    """A real speaker who blinks, a talking head that never does, and a list file labelling them."""
    from tests.conftest import SHARED_DATA

    real = sorted((SHARED_DATA / "real" / "ffpp_c23_originals").glob("*.mp4"))[0]
    head = sorted((SHARED_DATA / "fake" / "talking_head_edtalk").glob("*.mp4"))[0]
    listed = tmp_path / "list.tsv"
    listed.write_text(f"{real}\t0\n{head}\t1\n")
    return real, head, listed


@needs_shared_data
def test_eval_with_blinks_reports_the_blink_rate_alone_beside_the_models_score(tmp_path):
    from stages.faces import Degradation
    from train.evaluate import evaluate

    real, head, listed = speaker_and_head(tmp_path)
    report = evaluate([str(listed)], output=None, ci_resamples=0, blinks=True, max_frames=4)
    by_name = {f["path"]: f for f in report["files"]}
    # read every 3rd frame (the cadence a run reads at) a blink is sometimes missed: the speaker shows at least one
    assert by_name[str(head)]["blinks_per_minute"] == 0.0 and by_name[str(real)]["blinks"] >= 1
    assert report["blinks_every_n_frames"] == 3
    assert report["blinks"]["roc_auc"] == 1.0 and report["blinks"]["videos"] == 2
    assert "fewer blinks alone (video ROC-AUC): 1.000" in report["text"]
    with pytest.raises(ValueError, match="face-height"):
        evaluate([str(listed)], output=None, blinks=True, degradation=Degradation(face_height=60))
