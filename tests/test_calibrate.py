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
