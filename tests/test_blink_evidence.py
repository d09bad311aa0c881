"""Blinks in the score (engines.blinks.BlinkEvidence): a real person's blink count over the seconds a
face was seen, read as a surprise and put on the detector's scale; a video's or a track's score is
raised to it where it is the more suspect."""
import json
import shutil

import numpy as np
import pytest
from scipy import stats

from engines.blinks import BlinkEvidence, BlinkRate, raise_score
from pipeline.config import AnnotateConfig
from tests.conftest import needs_shared_data

EVIDENCE = BlinkEvidence(shape=1.05, scale_per_s=0.25, score_logit_mean=-0.1, score_logit_sd=0.25, every_n_frames=3)


def test_the_chance_of_as_few_blinks_is_the_negative_binomial_of_the_seconds_seen():
    for blinks, seconds in [(0, 3.0), (0, 10.0), (2, 10.0), (0, 60.0), (12, 60.0)]:
        expected = stats.nbinom.cdf(blinks, 1.05, 1 / (1 + 0.25 * seconds))
        assert EVIDENCE.p_as_few(BlinkRate(blinks, seconds)) == pytest.approx(expected, rel=1e-9)
    assert EVIDENCE.p_as_few(BlinkRate(0, 1.9)) is None and EVIDENCE.score(BlinkRate(0, 1.9)) is None


def test_no_blink_is_more_suspect_the_longer_the_face_was_seen_and_many_blinks_are_not_suspect():
    no_blink = [EVIDENCE.score(BlinkRate(0, s)) for s in (3.0, 10.0, 30.0, 60.0)]
    assert no_blink == sorted(no_blink) and no_blink[0] < no_blink[-1]
    assert EVIDENCE.score(BlinkRate(20, 60.0)) < EVIDENCE.score(BlinkRate(2, 60.0)) < EVIDENCE.score(BlinkRate(0, 60.0))
    # a count as likely as not for a real person sits at the real videos' median score
    median_count = BlinkRate(int(stats.nbinom.median(1.05, 1 / (1 + 0.25 * 60.0))), 60.0)
    assert EVIDENCE.score(median_count) == pytest.approx(1 / (1 + np.exp(0.1)), abs=0.03)


def test_a_score_is_raised_to_its_blinks_and_never_lowered():
    assert raise_score(0.3, 0.6) == 0.6 and raise_score(0.7, 0.6) == 0.7
    assert raise_score(0.3, None) == 0.3 and raise_score(None, 0.6) is None
    suspect = BlinkRate(0, 60.0)
    assert EVIDENCE.raise_score(0.2, suspect) == EVIDENCE.score(suspect) and EVIDENCE.raise_score(0.9, suspect) == 0.9
    assert EVIDENCE.raise_score(0.2, None) == 0.2


def test_blink_evidence_round_trips_through_the_models_metadata_and_refuses_nonsense():
    from engines.blinks import blink_evidence
    from engines.metadata import KIND_DETECTOR, ModelMetadata

    meta = ModelMetadata(kind=KIND_DETECTOR, name="m", input_size=(224, 224), blinks=EVIDENCE.to_dict())
    assert blink_evidence(ModelMetadata.from_json(meta.to_json())) == EVIDENCE
    assert blink_evidence(ModelMetadata(kind=KIND_DETECTOR, name="m", input_size=(224, 224))) is None
    with pytest.raises(ValueError, match="positive"):
        BlinkEvidence(shape=0.0, scale_per_s=0.25, score_logit_mean=0.0, score_logit_sd=0.25)
    with pytest.raises(ValueError, match="at least 1"):
        BlinkEvidence(shape=1.0, scale_per_s=0.25, score_logit_mean=0.0, score_logit_sd=0.25, every_n_frames=0)


def test_evidence_calibrated_before_the_cadence_was_recorded_reads_the_eyes_on_every_frame():
    older = {k: v for k, v in EVIDENCE.to_dict().items() if k != "every_n_frames"}
    assert BlinkEvidence.from_dict(older).every_n_frames == 1


def test_eval_and_predict_count_blinks_at_the_cadence_the_models_counts_were_fitted_at():
    from engines.metadata import KIND_DETECTOR, ModelMetadata
    from pipeline.config import CLASSIFY_EVERY
    from train.blinks import blink_plan

    blinking = ModelMetadata(kind=KIND_DETECTOR, name="m", input_size=(224, 224), blinks=EVIDENCE.to_dict())
    plain = ModelMetadata(kind=KIND_DETECTOR, name="m", input_size=(224, 224))
    assert blink_plan(blinking, True) == (EVIDENCE, True, 3)
    assert blink_plan(plain, True) == (None, True, CLASSIFY_EVERY)  # a run's cadence
    assert blink_plan(plain, True, every=1) == (None, True, 1)
    with pytest.raises(ValueError, match="every 3 frame"):
        blink_plan(blinking, True, every=1)


def test_the_fit_recovers_the_blink_rates_of_simulated_people():
    from train.blinks import fit_blink_counts

    rng = np.random.default_rng(0)
    rates = rng.gamma(shape=2.0, scale=0.15, size=2000)  # blinks per second, 18 a minute on average
    seconds = rng.uniform(3.0, 12.0, size=2000)
    shape, scale = fit_blink_counts([BlinkRate(int(n), float(s)) for n, s in zip(rng.poisson(rates * seconds), seconds)])
    assert shape * scale * 60 == pytest.approx(18.0, rel=0.1) and shape == pytest.approx(2.0, rel=0.4)
    with pytest.raises(ValueError, match="too few"):
        fit_blink_counts([BlinkRate(1, 5.0)] * 5)


def _tracker_over(seconds: float, blink_every_s: float | None, score: float):
    """A track scored ``score`` on each analysed frame (25 fps, every 3rd), its eyes closing every
    ``blink_every_s`` seconds (None: never); the last analysed message."""
    from stages.tracking import FaceTracker
    from tests.test_tracking import _message

    tracker = FaceTracker(AnnotateConfig(blink_evidence=EVIDENCE.to_dict()))
    for seq in range(0, int(25 * seconds), 3):
        message = _message(seq, [(0, 0, 100, 100)], scores=[score])
        t = seq / 25
        closed = blink_every_s is not None and (t % blink_every_s) < 0.15
        message.faces[0].eye_opening = 0.05 if closed else 0.3
        tracker.update(message)
    return tracker, message


def test_a_track_that_never_blinks_is_raised_to_its_blinks_score_and_one_that_blinks_is_not():
    still, last = _tracker_over(40.0, None, score=0.45)
    face = last.faces[0]
    assert face.blinks_per_minute == 0.0 and face.blink_score > 0.45
    assert face.smoothed_score == pytest.approx(face.blink_score)
    summary = still.summary()[0]
    assert summary["score"] == pytest.approx(face.blink_score) and summary["mean_score"] == pytest.approx(0.45)
    lively, last = _tracker_over(40.0, 3.0, score=0.45)
    face = last.faces[0]
    assert face.blinks_per_minute >= 15 and face.blink_score < 0.45 and face.smoothed_score == pytest.approx(0.45)
    brief, last = _tracker_over(1.5, None, score=0.45)  # under two seconds: no blink evidence yet
    assert last.faces[0].blink_score is None and last.faces[0].smoothed_score == pytest.approx(0.45)


def test_the_call_report_judges_a_participant_by_its_score_raised_to_its_blinks():
    from pipeline.config import SinkConfig, StreamInfo
    from stages.call_report import CallReport
    from tests.test_tracking import _message

    stream = StreamInfo(stream_id=0, url="x.mp4", kind="file", live=False, name="x", width=1, height=1, fps=25.0,
                        time_base=(1, 25), frame_count=None)
    report = CallReport(SinkConfig(report_path="unused"), {0: stream})
    for seq in range(0, 30, 3):
        message = _message(seq, [(0, 0, 100, 100)], scores=[0.4])
        message.faces[0].track_id, message.faces[0].blink_score = 1, 0.7
        report.add(message)
    person = report.document(final=True)["participants"][0]
    assert person["mean_score"] == pytest.approx(0.4) and person["score"] == pytest.approx(0.7)
    assert person["verdict"] == "fake" and person["blink_score"] == pytest.approx(0.7)


def test_a_run_reads_the_eyes_when_the_models_score_uses_blinks_and_not_when_told_otherwise(tiny_detector, monkeypatch):
    from dataclasses import replace

    from engines.metadata import read_metadata
    from pipeline.config import StreamInfo
    from runtime import run_config
    from runtime.run_config import build_run_config

    monkeypatch.setattr(run_config, "landmarks_installed", lambda: True)
    stream = StreamInfo(stream_id=0, url="x.mp4", kind="file", live=False, name="x", width=640, height=480, fps=25.0,
                        time_base=(1, 25), frame_count=None)
    plain = read_metadata(tiny_detector)
    blinking = replace(plain, blinks=EVIDENCE.to_dict())

    def config(metadata, **options):
        return build_run_config([stream], str(tiny_detector), metadata, ("haar", None), **options)

    on = config(blinking)
    assert on.infer.eye_landmarks == "pfld68" and on.annotate.blink_evidence == EVIDENCE.to_dict()
    off = config(blinking, blinks=False)
    assert off.infer.eye_landmarks is None and off.annotate.blink_evidence == {}
    assert config(plain).infer.eye_landmarks is None  # a model whose score does not use them
    seen = config(plain, blinks=True)  # eyes read to show the rate, nothing to raise the score with
    assert seen.infer.eye_landmarks == "pfld68" and seen.annotate.blink_evidence == {}
    cameras = [replace(stream, stream_id=k, live=True, kind="rtsp", name=f"cam{k}") for k in range(2)]
    several = build_run_config(cameras, str(tiny_detector), blinking, ("haar", None))
    assert several.infer.eye_landmarks is None  # two live streams in one run: frames alone unless --blinks
    assert build_run_config(cameras, str(tiny_detector), blinking, ("haar", None), blinks=True).infer.eye_landmarks
    monkeypatch.setattr(run_config, "landmarks_installed", lambda: False)
    assert config(blinking).infer.eye_landmarks is None  # said in a warning; the frames alone score


def test_a_run_that_reads_the_eyes_at_another_cadence_than_the_model_was_fitted_at_says_so(tiny_detector, monkeypatch,
                                                                                          caplog):
    from dataclasses import replace

    from engines.metadata import read_metadata
    from pipeline.config import StreamInfo
    from runtime import run_config
    from runtime.run_config import build_run_config

    monkeypatch.setattr(run_config, "landmarks_installed", lambda: True)
    stream = StreamInfo(stream_id=0, url="x.mp4", kind="file", live=False, name="x", width=640, height=480, fps=25.0,
                        time_base=(1, 25), frame_count=None)
    blinking = replace(read_metadata(tiny_detector), blinks=EVIDENCE.to_dict())
    with caplog.at_level("WARNING", logger="runtime.run_config"):
        build_run_config([stream], str(tiny_detector), blinking, ("haar", None))
        assert "another footing" not in caplog.text  # the defaults read every 3rd frame, as fitted
        build_run_config([stream], str(tiny_detector), blinking, ("haar", None), detect_every=1, classify_every=1)
    assert "every 3 frame(s); this run reads them every 1" in caplog.text


def test_the_default_detector_carries_its_blink_evidence_fitted_on_real_people():
    from engines.blinks import blink_evidence
    from engines.metadata import read_metadata
    from engines.registry import resolve

    meta = read_metadata(resolve("detector"))
    evidence = blink_evidence(meta)
    assert evidence is not None and 8 <= 60 * evidence.shape * evidence.scale_per_s <= 25
    from pipeline.config import CLASSIFY_EVERY

    assert evidence.every_n_frames == CLASSIFY_EVERY  # counted as a run with the defaults counts them
    fit = meta.calibration["blinks"]
    assert fit["videos"] >= 50 and fit["val_real_videos"] >= 10
    # at the threshold: no val real video flagged once blinks are part of the score
    assert meta.calibration["false_alarms_val"] == 0.0


@needs_shared_data
def test_eval_and_predict_raise_a_video_that_never_blinks_with_the_default_detector(tmp_path):
    from tests.test_blinks import speaker_and_head
    from train.evaluate import evaluate
    from train.predict import predict

    real, head, listed = speaker_and_head(tmp_path)
    report = evaluate([str(listed)], output=None, ci_resamples=0, max_frames=4)
    files = {f["path"]: f for f in report["files"]}
    for f in files.values():
        assert f["video_score"] == max(f["frames_video_score"], f["blink_score"])
    assert files[str(head)]["blinks"] == 0 and files[str(head)]["blink_score"] > files[str(real)]["blink_score"]
    assert report["blink_evidence"] is not None and "blinks" in report["video_score"]
    alone = evaluate([str(listed)], output=None, ci_resamples=0, max_frames=4, blinks=False)
    assert all("blink_score" not in f for f in alone["files"]) and alone["blink_evidence"] is None
    assert [f["video_score"] for f in alone["files"]] == [f["frames_video_score"] for f in report["files"]]
    predicted = predict(head, max_frames=4)
    assert predicted["blinks"] == 0
    assert predicted["score"] == pytest.approx(max(predicted["frames_score"], predicted["blink_score"]), abs=1e-4)


def test_the_run_summary_says_when_a_tracks_score_comes_from_its_blinks():
    from dfstream.cli.main import _score_origin

    raised = {"scores": 59, "mean_score": 0.48, "score": 0.50, "blink_score": 0.50, "blinks_per_minute": 0.0}
    assert _score_origin(raised) == "its blinks (0 a minute); the mean of 59 scores 0.48"
    kept = {"scores": 100, "mean_score": 0.63, "score": 0.63, "blink_score": 0.45, "blinks_per_minute": 20.0}
    assert _score_origin(kept) == "mean of 100 scores"
    assert _score_origin({"scores": 3, "mean_score": 0.4, "score": 0.4, "blink_score": None}) == "mean of 3 scores"
