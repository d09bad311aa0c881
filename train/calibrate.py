"""``dfstream calibrate``: a detector's P(fake) made to mean what it says, and its default threshold.

Both are fitted on validation data of the leave-one-family-out protocol (:mod:`train.lofo`),
never on the people the model is measured on:

* **Platt scaling** (``sigmoid(a * logit(p) + b)``, fitted by logistic regression on the
  frame scores, each video weighing as much as any other of its family, each fake family
  alike, and both classes alike) on the
  real files of the *val* bucket and the fakes of every family the model was not trained
  on.  Its worth is measured by cross-fitting: for each family, scaling fitted without it
  and scored on it (its fakes against the test people's real videos), as expected
  calibration error (ECE, reals and fakes weighing alike: the prior the scaling is fitted
  for) before and after.  Platt scaling is monotonic: it changes no
  ROC-AUC, only what a score of 0.8 means.
* **The threshold**: the lowest calibrated score at which at most ``false_alarm_rate`` of
  the val bucket's real videos, and at most that share of its real photos, are called fake
  (each file scored as ``dfstream eval`` scores it).  The rate it gives on the test people
  is reported beside it.

* **The detail floors** (``min_face_detail``, ``min_surroundings_detail``, :mod:`train.detail_floor`),
  first: read off the model's size floor on the val bucket's real faces; a face below the first,
  in surroundings below the second, is ``unscorable`` and left out of everything that follows, as
  it is in use.
* **The uncertain band** (``uncertain_band``): how far a real face's live score wanders on its own.
  Each val real video is scored as a run scores it (its largest face on every classify-th frame,
  its first ``BAND_FRAMES`` scores, calibrated) and smoothed as the tracker smooths a track
  (:func:`stages.tracking.moving_average`); the band is the ``BAND_QUANTILE`` quantile of how far
  that average strays from the video's mean score, each video weighing alike.  A live face is drawn
  fake or real only where its smoothed score is farther from the threshold than that.
* **Blinks** (``blinks=True``, :class:`engines.blinks.BlinkEvidence`): real people's blink rates
  fitted on the train bucket's real videos tied to no family (no fold's test people), their eyes
  read every ``blink_every`` frames (a run's classify cadence: what a run sees), put on the
  model's scale by its calibrated video scores on the val people's real videos. The threshold,
  its false alarms and the calibration error are then those of the raised video scores.

The result is a copy of the model file with ``calibration``, ``threshold``, the detail floors,
``uncertain_band`` (and ``blinks``) in its metadata; every engine applies the scaling to the network's output.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.config import CLASSIFY_EVERY, AnnotateConfig, VerdictRule
from train.metrics import logit

log = logging.getLogger(__name__)

ECE_BINS = 10
BAND_QUANTILE = 0.95  # of a real track's wander: how sure a live verdict must be
BAND_FRAMES = 300  # scores of each val real video the band is read on (~30 s at a run's cadence)


def platt_fit(scores, labels, weights=None) -> tuple[float, float]:
    """(a, b) of ``sigmoid(a * logit(p) + b)`` by weighted logistic regression (scikit-learn, no penalty).
    Refused when the fit would turn the scores round (a <= 0): the model ranks these fakes below the reals."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels, int)
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs real and fake scores")
    fit = LogisticRegression(C=np.inf, max_iter=1000).fit(logit(scores)[:, None], y, sample_weight=weights)
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if a <= 0:
        raise ValueError("the model scores these fakes lower than these reals on the whole: scaling would reverse "
                         "its ranking, so it is not calibrated on them")
    return a, b


def platt_apply(scores, a: float, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(a * logit(scores) + b)))


def expected_calibration_error(probs, labels, bins: int = ECE_BINS, balanced: bool = False) -> float:
    """Mean |share of fakes - mean P(fake)| over equal-width bins of P(fake), weighted by their counts.
    ``balanced``: reals and fakes weigh alike, the prior the scaling is fitted for (P(fake) 0.5 = even
    evidence), whatever the share of fakes in the set measured."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, np.float64)
    w = np.ones_like(p)
    if balanced and 0 < y.sum() < len(y):
        w = np.where(y == 1, 0.5 / y.sum(), 0.5 / (len(y) - y.sum()))
    w = w / w.sum()
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for k in range(bins):
        inside = which == k
        if inside.any():
            wk = w[inside]
            ece += wk.sum() * abs(np.average(y[inside], weights=wk) - np.average(p[inside], weights=wk))
    return float(ece)


def threshold_for_false_alarms(real_scores, rate: float) -> float:
    """The lowest threshold at which at most ``rate`` of ``real_scores`` reach it (score >= threshold is fake)."""
    s = np.sort(np.asarray(real_scores, np.float64))
    if len(s) == 0:
        raise ValueError("no real scores to set a threshold on")
    allowed = int(np.floor(rate * len(s)))  # how many may be flagged
    above = s[len(s) - allowed - 1]  # the highest score that must stay below the threshold
    return float(np.nextafter(above, 1.0))


def _weighted_order(values, weights) -> tuple[np.ndarray, np.ndarray]:
    """``values`` sorted, and the share of the whole weight that lies at or before each of them."""
    values, weights = np.asarray(values, np.float64), np.asarray(weights, np.float64)
    order = np.argsort(values, kind="stable")
    return values[order], np.cumsum(weights[order]) / weights.sum()


def real_line(fake_scores, families, rate: float) -> float:
    """The highest score at or under which at most ``rate`` of the fakes lie, each family weighing alike:
    a face scored under it is called real with at most that share of the known fakes called so too."""
    families = np.asarray(families)
    if len(families) == 0:
        raise ValueError("no fake videos scored to set the line for real on")
    values, share = _weighted_order(fake_scores, [1.0 / np.sum(families == f) for f in families])
    over = np.flatnonzero(share > rate + 1e-12)[0]  # the first fake the line may not reach
    return float(np.nextafter(values[over], -np.inf))


def uncertain_band(score_runs, alpha: float, min_scores: int, quantile: float = BAND_QUANTILE) -> float:
    """How far a real face's smoothed score strays from its own mean: the ``quantile`` of
    |moving average - mean| over ``score_runs`` (each one face's scores in order, as a run reads them),
    from the ``min_scores``-th score on (before it a track has no verdict), each run weighing alike."""
    from stages.tracking import moving_average

    wander, weight = [], []
    for scores in score_runs:
        scores = np.asarray(scores, np.float64)
        if len(scores) < min_scores:
            continue
        average, run = None, []
        for score in scores:
            average = moving_average(average, float(score), alpha)
            run.append(average)
        strayed = np.abs(np.array(run[min_scores - 1:]) - scores.mean())
        wander.append(strayed)
        weight.append(np.full(len(strayed), 1.0 / len(strayed)))
    if not wander:
        raise ValueError(f"no real video with {min_scores} or more scores to read the uncertain band on")
    values, share = _weighted_order(np.concatenate(wander), np.concatenate(weight))
    return float(values[min(int(np.searchsorted(share, quantile)), len(values) - 1)])


def _frames(files: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame scores, labels and weights: each file weighs the same within its class and fake family,
    each fake family the same (the largest family must not decide what a score means), the two
    classes alike."""
    s = np.array([v for f in files for v in f["frame_scores"]], np.float64)
    y = np.array([f["label"] for f in files for _ in f["frame_scores"]], int)
    key = [f"fake:{f['family']}" if f["label"] else "real" for f in files for _ in f["frame_scores"]]
    w = np.array([1.0 / len(f["frame_scores"]) for f in files for _ in f["frame_scores"]], np.float64)
    key = np.array(key)
    fake_families = sorted({k for k in key if k != "real"})
    for k in set(key):
        share = 0.5 if k == "real" else 0.5 / len(fake_families)
        w[key == k] *= share * len(y) / w[key == k].sum()
    return s, y, w


def _video_scores(files: list[dict], a: float | None = None, b: float | None = None, evidence=None) -> np.ndarray:
    """Each file's score as eval gives it (the mean of its frames), through the scaling when given, raised
    to its blinks' score by ``evidence`` (a BlinkEvidence) where eval counted them."""
    from engines.blinks import BlinkRate

    scores = []
    for f in files:
        score = float(np.mean(platt_apply(f["frame_scores"], a, b) if a is not None else f["frame_scores"]))
        if evidence is not None and f.get("blinks") is not None:
            score = evidence.raise_score(score, BlinkRate(f["blinks"], f["blinks_seconds"]))
        scores.append(score)
    return np.array(scores)


def _blink_evidence(real_blinks: dict, real_videos: list[dict], a: float, b: float):
    """BlinkEvidence from real people's blink rates (:func:`fit_real_blinks`: shape, scale, the cadence they
    were read at) and the scaled video scores of ``real_videos``."""
    from engines.blinks import BlinkEvidence

    scale = logit(_video_scores(real_videos, a, b))
    if len(scale) < 3:
        raise ValueError(f"{len(scale)} val real videos scored: too few to put blinks on the model's scale")
    return BlinkEvidence(real_blinks["shape"], real_blinks["scale_per_s"], float(scale.mean()), float(scale.std(ddof=1)),
                         every_n_frames=real_blinks["every_n_frames"])


def fit_real_blinks(items, every: int, progress=None) -> dict:
    """Real people's blink rates (:func:`train.blinks.fit_blink_counts`) on the train bucket's real videos
    tied to no family (no fold's test people, no family's sources), their eyes read every ``every`` frames."""
    from stages.faces import is_video
    from train import lofo
    from train.blinks import BlinkMeter, fit_blink_counts

    videos = [i for i in lofo.untied_train_reals(items) if is_video(i.path)]
    meter = BlinkMeter()
    rates = [meter.measure(i.path, every=every)
             for i in (progress(videos, desc="blinks of train reals") if progress else videos)]
    shape, scale = fit_blink_counts(rates)
    return {"shape": shape, "scale_per_s": scale, "mean_per_minute": 60 * shape * scale,
            "videos": len(videos), "groups": len({i.group for i in videos}), "blinks": sum(r.blinks for r in rates),
            "seconds": round(sum(r.seconds for r in rates), 1), "every_n_frames": every}


def calibrate(model: str, output: str | Path, manifest: str | Path | None = None, false_alarm_rate: float = 0.05,
              trained_on: tuple[str, ...] = (), set_detail_floor: bool = True, min_face_px: int | None = None,
              blinks: bool = False, blink_every: int = CLASSIFY_EVERY, progress=None, **eval_options) -> dict:
    """Fit the scaling and the threshold (module docstring); write the calibrated copy of ``model`` to ``output``."""
    from engines.metadata import read_metadata, write_onnx_metadata
    from engines.registry import resolve
    from train import lofo
    from train.datasets import read_list_file, write_list_file
    from train.evaluate import evaluate
    from stages.faces import is_video

    if not 0 < false_alarm_rate < 0.5:
        raise ValueError(f"--false-alarm-rate {false_alarm_rate}: a share between 0 and 0.5")
    source = Path(resolve(model)) if not Path(model).is_file() else Path(model)
    if source.suffix != ".onnx":
        raise ValueError(f"{model}: calibrate writes ONNX models; export the checkpoint first (dfstream export)")
    metadata = read_metadata(source)
    if metadata.calibration:
        raise ValueError(f"{model} is already calibrated: calibrate the model it was made from")
    items = read_list_file(manifest or lofo.DEFAULT_MANIFEST)
    unknown = set(trained_on) - set(lofo.families(items))
    if unknown:
        raise ValueError(f"--trained-on {', '.join(sorted(unknown))}: no such family in the manifest")
    split = lofo.final_split(items)
    fakes = [i for i in items if i.label == 1 and i.family not in trained_on and is_video(i.path)]
    if not fakes:
        raise ValueError("no fake family the model was not trained on: nothing to calibrate on")
    wanted = {"val": [i for i in split.val if i.label == 0], "test": [i for i in split.test if i.label == 0], "fake": fakes}
    if min_face_px is not None:
        if min_face_px < 0:
            raise ValueError(f"--min-face-px {min_face_px}: a height in pixels, 0 or more")
        metadata = replace(metadata, min_face_px=int(min_face_px))
    floor = {"floor": float(metadata.min_face_detail), "surroundings_floor": float(metadata.min_surroundings_detail),
             "set": False}
    if set_detail_floor:
        from train.detail_floor import detail_floor

        floor = detail_floor([i.path for i in wanted["val"]], metadata, progress=progress,
                             face_detector=eval_options.get("face_detector", "auto"))
        floor["set"] = True
        metadata = replace(metadata, min_face_detail=floor["floor"], min_surroundings_detail=floor["surroundings_floor"])
    with tempfile.TemporaryDirectory(prefix="dfstream-calibrate-") as tmp:
        floored = Path(tmp) / source.name  # the model as it will be used: its faces below the floor left out
        shutil.copyfile(source, floored)
        write_onnx_metadata(floored, metadata)
        everything = {str(i.path.resolve()): i for group in wanted.values() for i in group}
        listed = write_list_file(list(everything.values()), Path(tmp) / "all.tsv")
        report = evaluate([str(listed)], model=str(floored), output=None, ci_resamples=0, blinks=blinks,
                          blink_every=blink_every, **eval_options)
        # the val real videos again as a run reads a face: every classify-th frame, one face, in order
        val_videos = write_list_file([i for i in wanted["val"] if is_video(i.path)], Path(tmp) / "band.tsv")
        runs = evaluate([str(val_videos)], model=str(floored), output=None, ci_resamples=0, blinks=False,
                        **{**eval_options, "every_n_frames": CLASSIFY_EVERY, "max_frames": BAND_FRAMES, "max_faces": 1})
    real_blinks = fit_real_blinks(items, blink_every, progress) if blinks else None
    by_path = {f["path"]: f for f in report["files"]}
    scored = {name: [by_path[str(i.path.resolve())] for i in group if str(i.path.resolve()) in by_path]
              for name, group in wanted.items()}
    val_real, test_real, fake = scored["val"], scored["test"], scored["fake"]
    test_real_videos = [f for f in test_real if is_video(f["path"])]
    val_real_videos = [f for f in val_real if is_video(f["path"])]
    # cross-fitted: each family's calibration error with the scaling fitted without it
    families, ece_before, ece_after, called_real = sorted({f["family"] for f in fake}), [], [], []
    for family in families:
        fit_files = val_real + [f for f in fake if f["family"] != family]
        a, b = platt_fit(*_frames(fit_files))
        evidence = _blink_evidence(real_blinks, val_real_videos, a, b) if real_blinks else None
        held = test_real_videos + [f for f in fake if f["family"] == family]
        labels = [f["label"] for f in held]
        ece_before.append(expected_calibration_error(_video_scores(held), labels, balanced=True))
        ece_after.append(expected_calibration_error(_video_scores(held, a, b, evidence), labels, balanced=True))
        others = [f for f in fake if f["family"] != family]
        line = real_line(_video_scores(others, a, b, evidence), [f["family"] for f in others], false_alarm_rate)
        called_real.append(float(np.mean(_video_scores([f for f in fake if f["family"] == family], a, b, evidence) <= line)))
    a, b = platt_fit(*_frames(val_real + fake))
    evidence = _blink_evidence(real_blinks, val_real_videos, a, b) if real_blinks else None
    # videos and photos each keep to the rate: a threshold set on photos alone can flag a quarter of the videos
    kinds = [val_real_videos, [f for f in val_real if not is_video(f["path"])]]
    threshold = max(threshold_for_false_alarms(_video_scores(files, a, b, evidence), false_alarm_rate)
                    for files in kinds if files)
    test_scores = _video_scores(test_real, a, b, evidence)
    below = real_line(_video_scores(fake, a, b, evidence), [f["family"] for f in fake], false_alarm_rate)
    band = uncertain_band([platt_apply(f["frame_scores"], a, b) for f in runs["files"]], AnnotateConfig.ema_alpha,
                          VerdictRule.min_scores)
    result = {
        "model": str(model),
        "method": "platt",
        "a": a,
        "b": b,
        "fitted_on": {"real_val_files": len(val_real), "fake_videos": len(fake), "families": families,
                      "manifest": str(manifest or lofo.DEFAULT_MANIFEST)},
        "ece_cross_fitted": {"per_family": dict(zip(families, ece_after)), "mean": float(np.mean(ece_after)),
                             "mean_before": float(np.mean(ece_before)), "bins": ECE_BINS},
        "detail_floor": floor,
        "threshold": threshold,
        "false_alarm_rate_target": false_alarm_rate,
        "false_alarms_val": float(np.mean(_video_scores(val_real, a, b, evidence) >= threshold)),
        "false_alarms_val_videos": float(np.mean(_video_scores(kinds[0], a, b, evidence) >= threshold)) if kinds[0] else None,
        "false_alarms_test": {"files": len(test_real), "flagged": float(np.mean(test_scores >= threshold)),
                              "videos": float(np.mean(_video_scores(test_real_videos, a, b, evidence) >= threshold))
                              if test_real_videos else None},
        "blinks": None if evidence is None else {**real_blinks, **evidence.to_dict(), "val_real_videos": len(val_real_videos)},
        "uncertain_band": band,
        "real_below": below,
        "fakes_called_real_cross_fitted": {"per_family": dict(zip(families, called_real)),
                                           "mean": float(np.mean(called_real))},
        "uncertain_band_fit": {"val_real_videos": len(runs["files"]), "every_n_frames": CLASSIFY_EVERY,
                               "max_scores": BAND_FRAMES, "quantile": BAND_QUANTILE, "ema_alpha": AnnotateConfig.ema_alpha},
    }
    calibration = {k: result[k] for k in ("method", "a", "b", "fitted_on", "ece_cross_fitted", "detail_floor", "false_alarm_rate_target",
                                          "false_alarms_val", "false_alarms_test", "blinks", "uncertain_band_fit",
                                          "fakes_called_real_cross_fitted")}
    calibrated = replace(metadata, calibration=calibration, threshold=threshold, uncertain_band=band, real_below=below,
                         blinks={} if evidence is None else evidence.to_dict())
    output = Path(output)
    if output.resolve() == source.resolve():
        raise ValueError("--output must be a new file: the calibrated copy keeps the original beside it")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    shutil.copyfile(source, partial)
    write_onnx_metadata(partial, calibrated)
    partial.replace(output)
    result["output"] = str(output)
    return result


def format_result(r: dict) -> str:
    ece = r["ece_cross_fitted"]
    per = ", ".join(f"{k} {v:.3f}" for k, v in ece["per_family"].items())
    test = r["false_alarms_test"]
    return "\n".join([
        f"Platt scaling: P = sigmoid({r['a']:.3f} * logit(p) + {r['b']:.3f}), fitted on {r['fitted_on']['real_val_files']} "
        f"real val files and {r['fitted_on']['fake_videos']} fake videos",
        f"expected calibration error (classes weighed alike), cross-fitted by family: {ece['mean_before']:.3f} before, {ece['mean']:.3f} after ({per})",
        f"threshold {r['threshold']:.4f}: {100 * r['false_alarms_val']:.1f} % of the val real files flagged (target "
        f"<= {100 * r['false_alarm_rate_target']:.0f} %); on the test people {100 * test['flagged']:.1f} % of "
        f"{test['files']} real files" + (f" ({100 * test['videos']:.1f} % of their videos)" if test["videos"] is not None else ""),
        detail_line(r["detail_floor"]),
        blinks_line(r.get("blinks")),
        band_line(r),
        f"written: {r['output']}",
    ])


def blinks_line(blinks: dict | None) -> str:
    if not blinks:
        return "blinks: not part of the score"
    return (f"blinks: real people's rates fitted on {blinks['videos']} train real videos of {blinks['groups']} groups "
            f"(gamma shape {blinks['shape']:.3f}, mean {blinks['mean_per_minute']:.1f} a minute, eyes read every "
            f"{blinks.get('every_n_frames', 1)} frame(s)), on the model's scale "
            f"by {blinks['val_real_videos']} val real videos: a video's score is raised to its blinks' where higher")


def band_line(r: dict) -> str:
    fit, missed = r["uncertain_band_fit"], r["fakes_called_real_cross_fitted"]
    rule = VerdictRule(threshold=r["threshold"], uncertain_band=r["uncertain_band"], real_below=r["real_below"])
    per = ", ".join(f"{k} {100 * v:.0f} %" for k, v in missed["per_family"].items())
    return "\n".join([
        f"line for real {r['real_below']:.4f}: at most {100 * r['false_alarm_rate_target']:.0f} % of the fake videos (families "
        f"alike) score at or under it; cross-fitted, the share of each family's fakes under it: {per} (mean "
        f"{100 * missed['mean']:.0f} %)",
        f"uncertain band ±{r['uncertain_band']:.3f} (the {100 * fit['quantile']:.0f}th percentile of how far a real face's "
        f"smoothed score strays from its mean, {fit['val_real_videos']} val real videos): live, a face is drawn fake "
        f"from {rule.fake_from:.3f} and real at or under {rule.real_up_to:.3f}"])


def detail_line(floor: dict) -> str:
    if not floor.get("set"):
        return f"detail floors: kept as they were ({floor['floor']:.4f} face, {floor['surroundings_floor']:.4f} surroundings)"
    if not floor["floor"]:
        return (f"detail floor: none (model without a size floor, or {floor['faces']} val faces large enough to "
                "measure it: too few)")
    return (f"detail floors {floor['floor']:.4f} (face) and {floor['surroundings_floor']:.4f} (its surroundings): the "
            f"{100 * floor['quantile']:.0f}th percentiles of {floor['faces']} val faces shrunk to the {floor['min_face_px']} px "
            "size floor; a face with less detail, in surroundings with less too, is unscorable")


def write_report(result: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=1))
