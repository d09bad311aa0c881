"""Calibration: Platt scaling fitted and applied by every engine; thresholds for a stated false-alarm rate."""
import numpy as np
import pytest

from train.calibrate import expected_calibration_error, platt_apply, platt_fit, threshold_for_false_alarms


def test_platt_scaling_brings_overconfident_scores_to_their_frequencies():
    rng = np.random.default_rng(0)
    true_p = np.clip(rng.choice([0.3, 0.7], 4000) + rng.normal(0, 0.05, 4000), 0.01, 0.99)
    y = (rng.random(4000) < true_p).astype(int)  # a face with evidence 0.7 is fake 70 % of the time ...
    overconfident = 1 / (1 + np.exp(-4 * np.log(true_p / (1 - true_p))))  # ... the model says ~97 %
    a, b = platt_fit(overconfident, y)
    before = expected_calibration_error(overconfident, y)
    after = expected_calibration_error(platt_apply(overconfident, a, b), y)
    assert before > 0.2 and after < 0.05 and 0 < a < 1


def test_expected_calibration_error_is_zero_when_scores_are_frequencies():
    y = np.array([0] * 8 + [1] * 2 + [0] * 2 + [1] * 8)
    p = np.array([0.2] * 10 + [0.8] * 10)
    assert expected_calibration_error(p, y) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(20, 0.5), y) == pytest.approx(0.0)  # half are fake: 0.5 is honest
    assert expected_calibration_error(1 - p, y) == pytest.approx(0.6)


@pytest.mark.parametrize("rate, flagged", [(0.05, 0), (0.1, 1), (0.25, 2), (0.3, 3)])
def test_threshold_flags_at_most_the_stated_share_of_real_scores(rate, flagged):
    reals = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.9])
    t = threshold_for_false_alarms(reals, rate)
    assert int((reals >= t).sum()) == flagged
    assert (reals >= t).mean() <= rate


def test_every_engine_applies_the_models_calibration(tmp_path, tiny_detector):
    import shutil
    from dataclasses import replace

    from engines.loader import load_engine
    from engines.metadata import read_metadata, write_onnx_metadata

    crops = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    plain = load_engine(str(tiny_detector), engine="onnxruntime", kind="detector").run(crops)
    calibrated_file = tmp_path / "calibrated.onnx"
    shutil.copyfile(tiny_detector, calibrated_file)
    meta = read_metadata(tiny_detector)
    write_onnx_metadata(calibrated_file, replace(meta, calibration={"method": "platt", "a": 2.0, "b": -1.0}, threshold=0.3))
    engine = load_engine(str(calibrated_file), engine="onnxruntime", kind="detector")
    assert engine.metadata.threshold == 0.3
    np.testing.assert_allclose(engine.run(crops), platt_apply(plain, 2.0, -1.0), atol=1e-5)


def test_a_fit_that_would_reverse_the_ranking_is_refused():
    with pytest.raises(ValueError, match="reverse"):
        platt_fit([0.9, 0.8, 0.7, 0.2, 0.1, 0.3], [0, 0, 0, 1, 1, 1])


def test_balanced_calibration_error_weighs_reals_and_fakes_alike():
    y = np.array([0] * 90 + [1] * 10)
    p = np.full(100, 0.1)  # right for this 10 % mix, wrong for an even one
    assert expected_calibration_error(p, y) == pytest.approx(0.0)
    assert expected_calibration_error(p, y, balanced=True) == pytest.approx(0.4)


def test_with_blinks_a_videos_score_is_raised_by_its_blinks_on_the_scale_of_the_val_real_videos():
    from train.calibrate import _blink_evidence, _video_scores

    val_real = [{"frame_scores": [s, s]} for s in (0.3, 0.4, 0.5, 0.6)]
    fit = {"shape": 1.0, "scale_per_s": 0.25, "every_n_frames": 3}
    evidence = _blink_evidence(fit, val_real, 1.0, 0.0)  # Platt a=1, b=0: scores as they are
    assert evidence.every_n_frames == 3  # the cadence the counts were read at travels with them
    logits = np.log(np.array([0.3, 0.4, 0.5, 0.6]) / (1 - np.array([0.3, 0.4, 0.5, 0.6])))
    assert evidence.score_logit_mean == pytest.approx(logits.mean()) and evidence.score_logit_sd == pytest.approx(logits.std(ddof=1))
    still = {"frame_scores": [0.3, 0.3], "blinks": 0, "blinks_seconds": 60.0}
    lively = {"frame_scores": [0.55, 0.55], "blinks": 20, "blinks_seconds": 60.0}
    photo = {"frame_scores": [0.3]}
    raised, kept, alone = _video_scores([still, lively, photo], 1.0, 0.0, evidence)
    assert raised > 0.6 and kept == pytest.approx(0.55) and alone == pytest.approx(0.3)
    with pytest.raises(ValueError, match="too few"):
        _blink_evidence(fit, val_real[:2], 1.0, 0.0)


def test_the_uncertain_band_is_how_far_a_real_faces_smoothed_score_strays_from_its_mean():
    from train.calibrate import uncertain_band

    rng = np.random.default_rng(0)
    steady = [np.full(50, 0.4), np.full(80, 0.55)]
    assert uncertain_band(steady, alpha=0.3, min_scores=2) == pytest.approx(0.0)
    quiet = [0.45 + rng.normal(0, 0.02, 200) for _ in range(5)]
    noisy = [0.45 + rng.normal(0, 0.08, 200) for _ in range(5)]
    quiet_band, noisy_band = uncertain_band(quiet, 0.3, 2), uncertain_band(noisy, 0.3, 2)
    assert 0 < quiet_band < noisy_band
    # the moving average of N(0, sd) scores has sd * sqrt(alpha / (2 - alpha)); 95 % of it lies within 1.96 of those
    assert noisy_band == pytest.approx(1.96 * 0.08 * np.sqrt(0.3 / 1.7), rel=0.2)
    # heavier smoothing, narrower band
    assert uncertain_band(noisy, 0.1, 2) < noisy_band


def test_the_uncertain_band_weighs_each_video_alike_and_skips_scores_before_a_verdict():
    from train.calibrate import uncertain_band

    rng = np.random.default_rng(1)
    long_noisy = 0.5 + rng.normal(0, 0.1, 2000)
    quiet = [np.full(20, 0.3) for _ in range(29)]
    # one long noisy video among 29 quiet ones is a 30th of the evidence (under the 5 % the band leaves out),
    # though it holds three quarters of the scores
    assert uncertain_band(quiet + [long_noisy], 0.3, 2) == pytest.approx(0.0)
    assert uncertain_band([long_noisy], 0.3, 2) > 0.05
    # the first score is the average itself, so it never strays; a track with too few scores has no say
    assert uncertain_band([[0.9, 0.1, 0.1, 0.1], [0.5]], 1.0, 2) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no real video"):
        uncertain_band([[0.5]], 0.3, 2)


def test_the_line_for_real_leaves_at_most_the_stated_share_of_fakes_under_it_each_family_alike():
    from train.calibrate import real_line

    scores = [0.30, 0.40, 0.50, 0.60] + [0.55] * 16
    families = ["small"] * 4 + ["large"] * 16
    line = real_line(scores, families, 0.2)
    # "small" weighs half though it has 4 of 20 fakes: one of its four is an eighth, two a quarter (> 20 %)
    assert 0.30 <= line < 0.40
    assert real_line(scores, families, 0.05) < 0.30  # not even the lowest fake may be called real
    assert real_line([0.2, 0.2, 0.8], ["a", "a", "b"], 0.3) < 0.2  # ties go together


def test_the_verdict_lines_keep_real_under_the_threshold_and_a_band_from_either_line():
    from pipeline.config import VerdictRule
    from stages.tracking import VERDICT_FAKE, VERDICT_REAL, VERDICT_UNSURE, verdict_of

    rule = VerdictRule(threshold=0.58, uncertain_band=0.03, real_below=0.45)
    assert verdict_of(0.61, 2, rule) == VERDICT_FAKE and verdict_of(0.42, 2, rule) == VERDICT_REAL
    assert verdict_of(0.5, 2, rule) == VERDICT_UNSURE and verdict_of(0.99, 1, rule) == VERDICT_UNSURE  # too few scores
    strong = VerdictRule(threshold=0.5, uncertain_band=0.05, real_below=0.7)  # fakes all score over the threshold
    assert strong.real_up_to == pytest.approx(0.45)


def test_the_default_detector_carries_its_verdict_lines_set_on_validation():
    from engines.metadata import read_metadata
    from engines.registry import resolve
    from runtime.run_config import verdict_rule

    meta = read_metadata(resolve("detector"))
    rule = verdict_rule(meta)
    assert 0 < meta.uncertain_band < 0.1 and meta.real_below < meta.threshold
    assert rule.real_up_to < meta.real_below < meta.threshold < rule.fake_from
    fit = meta.calibration["uncertain_band_fit"]
    assert fit["val_real_videos"] >= 10 and fit["every_n_frames"] == 3
    assert meta.calibration["fakes_called_real_cross_fitted"]["mean"] <= 0.25
