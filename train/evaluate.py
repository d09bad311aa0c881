"""``dfstream eval``: frame-level and video-level metrics of a detector on labelled media.

Inputs: folders with ``real/`` and ``fake/`` inside, or list files of
``path<TAB>label[<TAB>family[<TAB>group]]`` lines (label real/fake or 0/1), images and
videos mixed.  With two or more fake families named, the report adds a table with one row
per family (its fakes against every real file: what leave-one-family-out reads,
:mod:`train.lofo`); it always breaks frame-level scores down by the scored face's size.
A file that cannot be decoded is skipped with a warning and listed in the JSON.

Faces: the pipeline's own decode + detect stages (:mod:`stages.faces`), cut with
the model's metadata (input size, crop margin).  Scores:

* **frame score** = the highest P(fake) among the faces of that frame (an image is
  one frame); frame-level metrics use every sampled frame that has a face, with
  the label of its file;
* **video score** = the mean of its frame scores (``--video-agg mean``, default)
  or the mean of the top quarter (``topk``); with ``--temporal`` it is the
  temporal model's mean P(fake) over windows of the largest face's crop sequence.
  An image counts as a one-frame video.  Files where no face was found are listed
  and left out of the metrics.

ROC-AUCs come with a 95 % bootstrap confidence interval (``--ci-resamples``; frame level
resampled by whole videos, :func:`train.metrics.roc_auc_interval`): on a few dozen clips
the interval, not the point value, says what a test can tell apart.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from engines.blinks import raise_score
from train.datasets import gather
from stages.faces import Degradation, FaceCropper, default_detect_config, is_image, is_video
from train.metrics import compute_metrics, format_metrics, roc_auc_interval

log = logging.getLogger(__name__)

CI_LEVEL = 0.95  # of the ROC-AUC confidence intervals


def load_detector(model: str, engine: str = "auto", threads: int | None = None):
    from engines.loader import load_engine
    from engines.metadata import KIND_DETECTOR

    return load_engine(model, engine=engine, threads=threads, kind=KIND_DETECTOR)


def aggregate(scores, how: str = "mean") -> float:
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    if len(s) == 0:
        return float("nan")
    if how == "topk":
        return float(s[: max(1, int(np.ceil(len(s) / 4)))].mean())
    return float(s.mean())


def score_media(engine, cropper: FaceCropper, path: Path, every_n_frames: int, max_frames: int, max_faces: int,
                batch: int = 16) -> list[dict]:
    """Per-face records {frame, face, score, box} of one image or video; a face smaller than the model's
    ``min_face_px`` or with less detail than its ``min_face_detail`` gets ``score`` None and ``unscorable``
    True (never a guess)."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if not (is_video(path) or is_image(path)):
        raise ValueError(f"{path} is not an image or a video file")
    faces = list(cropper.crops_from(path, every_n_frames=every_n_frames, max_frames=max_frames, max_faces=max_faces))
    out = []
    for start in range(0, len(faces), batch):
        chunk = faces[start:start + batch]
        judged = [engine.metadata.scorable(f.box, f.crop) for f in chunk]
        scored = iter(engine.run(np.stack([f.crop for f, ok in zip(chunk, judged) if ok])) if any(judged) else ())
        for f, ok in zip(chunk, judged):
            out.append({"frame": int(f.frame_index), "face": int(f.face_index),
                        "score": float(next(scored)) if ok else None, "unscorable": not ok,
                        "box": [round(float(v), 1) for v in f.box], "crop": f.crop})
    return out


def frame_scores(faces: list[dict]) -> dict[int, float]:
    """Each frame's most suspicious scored face (frames whose faces were all unscorable are left out)."""
    frames: dict[int, float] = {}
    for f in faces:
        if f["score"] is not None:
            frames[f["frame"]] = max(frames.get(f["frame"], 0.0), f["score"])
    return frames


def plot(plot_dir: str | Path, results: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(5, 5))
    for level, (y, s) in results.items():
        if len(np.unique(y)) == 2:
            fpr, tpr, _ = roc_curve(y, s)
            from sklearn.metrics import roc_auc_score

            ax.plot(fpr, tpr, label=f"{level} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(plot_dir / "roc.png", dpi=100)
    plt.close(fig)
    written.append(str(plot_dir / "roc.png"))
    for level, (y, s) in results.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        y, s = np.asarray(y), np.asarray(s)
        bins = np.linspace(0, 1, 26)
        ax.hist(s[y == 0], bins=bins, alpha=0.6, label="real", color="tab:green")
        ax.hist(s[y == 1], bins=bins, alpha=0.6, label="fake", color="tab:red")
        ax.set_xlabel("P(fake)")
        ax.set_ylabel(f"{level}s")
        ax.set_title(f"{level}-level scores")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot_dir / f"hist_{level}.png", dpi=100)
        plt.close(fig)
        written.append(str(plot_dir / f"hist_{level}.png"))
    return written


FACE_SIZE_BINS = (0, 60, 120, 240)  # px, box height of a frame's scored face: webcam calls sit in 60-120


def face_size_bin(height: float) -> str:
    edges = FACE_SIZE_BINS + (float("inf"),)
    for low, high in zip(edges, edges[1:]):
        if low <= height < high:
            return f"{low}-{high}px" if high != float("inf") else f">={low}px"
    return f"<{FACE_SIZE_BINS[1]}px"


def level_metrics(files: list[dict], threshold: float, ci_resamples: int) -> tuple[dict, dict]:
    """Frame- and video-level metrics of per-file records (``label``, ``frame_scores``, ``video_score``),
    with the ROC-AUCs' bootstrap intervals (frames resampled by whole videos)."""
    frame_y = [f["label"] for f in files for _ in f["frame_scores"]]
    frame_s = [v for f in files for v in f["frame_scores"]]
    frame_video = [k for k, f in enumerate(files) for _ in f["frame_scores"]]
    video_y = [f["label"] for f in files]
    video_s = [f["video_score"] for f in files]
    frame_m = compute_metrics(frame_y, frame_s, threshold)
    video_m = compute_metrics(video_y, video_s, threshold)
    if ci_resamples:
        for m, groups, y, s in ((frame_m, frame_video, frame_y, frame_s), (video_m, None, video_y, video_s)):
            m["ci_level"], m["ci_resamples"] = CI_LEVEL, int(ci_resamples)
            m["roc_auc_ci"] = roc_auc_interval(y, s, groups=groups, confidence=CI_LEVEL, resamples=ci_resamples)
    return frame_m, video_m


def by_family(files: list[dict], threshold: float, ci_resamples: int) -> list[dict]:
    """One row per fake family (the list file's third column): its fakes against every real file.
    Leave-one-family-out reads this table (train.lofo)."""
    reals = [f for f in files if f["label"] == 0]
    rows = []
    for family in sorted({f["family"] for f in files if f["label"] == 1}):
        fakes = [f for f in files if f["label"] == 1 and f["family"] == family]
        frame_m, video_m = level_metrics(reals + fakes, threshold, ci_resamples)
        rows.append({"family": family, "n_fake": len(fakes), "n_real": len(reals), "frame_level": frame_m,
                     "video_level": video_m})
    return rows


def by_face_size(files: list[dict], threshold: float) -> list[dict]:
    """Frame-level metrics per size of the scored face (``FACE_SIZE_BINS``): where small faces stop being judged."""
    bins: dict[str, tuple[list, list]] = {}
    for f in files:
        for score, height in zip(f["frame_scores"], f["frame_face_px"]):
            y, s = bins.setdefault(face_size_bin(height), ([], []))
            y.append(f["label"])
            s.append(score)
    order = [face_size_bin(low) for low in FACE_SIZE_BINS]
    return [{"face_px": name, **compute_metrics(*bins[name], threshold)} for name in order if name in bins]


def paired_view(files: list[dict]) -> dict | None:
    """Each fake against the real files of its own group (a list file's fourth column: its source clip or
    person; in a labelled folder, the real file of the same name): how often the fake scores above its own
    original -- the question a user asks of a swap beside its original, where camera, light and codec are
    shared. None when no group holds both a real and a fake video."""
    from train.metrics import paired_auc

    grouped = [f for f in files if f.get("group")]
    if not grouped:
        return None
    view = paired_auc([f["label"] for f in grouped], [f["video_score"] for f in grouped], [f["group"] for f in grouped])
    return view if view["auc"] is not None else None


def format_paired(view: dict) -> str:
    return (f"paired (each fake against the real files of its own group): the fake scored higher in {view['fake_above']} "
            f"of {view['pairs']} pairs ({view['ties']} ties) over {view['groups']} groups, ROC-AUC {view['auc']:.3f}")


def format_family_table(rows: list[dict]) -> str:
    def auc(m):
        if m.get("roc_auc") is None:
            return "n/a"
        ci = m.get("roc_auc_ci")
        return f"{m['roc_auc']:.3f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")

    lines = [f"{'family':<16} {'fake':>4} {'real':>4}  {'video ROC-AUC (95% CI)':<24} {'frame ROC-AUC (95% CI)':<24} recall"]
    for r in rows:
        lines.append(f"{r['family']:<16} {r['n_fake']:>4} {r['n_real']:>4}  {auc(r['video_level']):<24} "
                     f"{auc(r['frame_level']):<24} {r['video_level'].get('recall', float('nan')):.2f}")
    return "\n".join(lines)


def format_face_sizes(rows: list[dict]) -> str:
    cells = []
    for r in rows:
        auc = "n/a" if r.get("roc_auc") is None else f"{r['roc_auc']:.3f}"
        cells.append(f"{r['face_px']}: {r['n']} frames (real {r['n_real']}, fake {r['n_fake']}), ROC-AUC {auc}")
    return "frame-level by face size: " + "; ".join(cells)


def blink_metrics(per_file: list[dict], ci_resamples: int) -> dict:
    """The blink rate alone as a video score (minus blinks per minute: fewer = fake), on the videos
    seen long enough to have one."""
    from sklearn.metrics import roc_auc_score

    rated = [f for f in per_file if f.get("blinks_per_minute") is not None]
    labels = np.array([f["label"] for f in rated])
    scores = -np.array([f["blinks_per_minute"] for f in rated])
    both = 0 < labels.sum() < len(labels)
    result = {"videos": len(rated), "fake": int(labels.sum()), "real": int(len(labels) - labels.sum()),
              "roc_auc": float(roc_auc_score(labels, scores)) if both else None,
              "median_per_minute": {name: float(np.median([f["blinks_per_minute"] for f in rated if f["label"] == label]))
                                    if any(f["label"] == label for f in rated) else None
                                    for name, label in (("real", 0), ("fake", 1))}}
    if both and ci_resamples:
        interval = roc_auc_interval(labels, scores, resamples=ci_resamples)
        result["roc_auc_ci"] = list(interval) if interval else None
    return result


def format_blink_metrics(m: dict) -> str:
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
    if m.get("roc_auc_ci"):
        auc += f" [{m['roc_auc_ci'][0]:.2f}-{m['roc_auc_ci'][1]:.2f}]"
    medians = ", ".join(f"{name} {'-' if v is None else format(v, '.0f')}" for name, v in m["median_per_minute"].items())
    return (f"fewer blinks alone (video ROC-AUC): {auc} on {m['videos']} videos ({m['fake']} fake, {m['real']} real) "
            f"seen for 2 s or more; median blinks a minute: {medians}")


def evaluate(inputs: list[str], model: str = "detector", engine: str = "auto", temporal: str | None = None,
             threshold: float | None = None, every_n_frames: int = 10, max_frames: int = 32, max_faces: int = 4,
             video_agg: str = "mean", threads: int | None = None, output: str | Path | None = "eval.json",
             plot_dir: str | Path | None = None, face_detector: str = "auto", ci_resamples: int = 2000,
             degradation: Degradation | None = None, blinks: bool | None = None, blink_every: int | None = None) -> dict:
    """``blinks``: count each video's blinks (train.blinks: its first minute, the eyes read every
    ``blink_every`` frames: by default at the cadence the model's blink evidence was fitted at, or a
    run's). None: when the model's metadata makes them part of its video score
    (:class:`engines.blinks.BlinkEvidence`); True: also report the blink rate alone as a video score
    (fewer = fake) beside the model's; False: the model's frames alone."""
    items = gather(inputs)
    if not items:
        raise ValueError("nothing to evaluate")
    for item in items:
        if not item.path.is_file():
            raise FileNotFoundError(f"no such file: {item.path}")
        if not (is_video(item.path) or is_image(item.path)):
            raise ValueError(f"{item.path} is not an image or a video file")
    det = load_detector(model, engine, threads)
    meta = det.metadata
    thr = float(meta.threshold if threshold is None else threshold)
    from train.blinks import blink_plan

    evidence, read_blinks, blink_every = blink_plan(meta, blinks, degradation, blink_every)
    if temporal:  # the evidence is on the frame model's scale
        evidence, read_blinks = None, bool(blinks)
    temporal_model = None
    if temporal:
        from train.temporal import load_temporal

        temporal_model = load_temporal(temporal, expect_input=tuple(meta.input_size))
        if temporal_model.every_n_frames not in (None, every_n_frames):
            log.warning("%s learnt on frames %d apart but is given frames %d apart (--every-n-frames): its flicker "
                        "and motion cues are read at another pace", temporal, temporal_model.every_n_frames, every_n_frames)
    cropper = FaceCropper(default_detect_config(tuple(meta.input_size), meta.crop_margin, face_detector), degradation)
    per_file, no_face, unreadable, unscorable = [], [], [], []
    unscorable_faces = 0  # faces smaller than the model's min_face_px: left out, not guessed
    from pipeline.stage import StageError
    from train.common import progress

    meter = None
    if read_blinks:
        from train.blinks import BlinkMeter

        meter = BlinkMeter(face_detector)
    for item in progress(items, desc="eval"):
        try:
            faces = score_media(det, cropper, item.path, every_n_frames, max_frames, max_faces)
        except (StageError, ValueError, OSError) as exc:  # one bad file does not void a folder's evaluation
            log.warning("skipped %s: %s", item.path, exc)
            unreadable.append({"path": str(item.path), "error": str(exc)})
            continue
        unscorable_faces += sum(f["unscorable"] for f in faces)
        frames = frame_scores(faces)
        if not frames:
            (unscorable if faces else no_face).append(str(item.path))
            continue
        scored_face = {}  # frame -> height of its most suspicious face
        for f in faces:
            if f["score"] is not None and f["score"] >= frames[f["frame"]] and f["frame"] not in scored_face:
                scored_face[f["frame"]] = f["box"][3] - f["box"][1]
        fs = [frames[k] for k in sorted(frames)]
        if temporal_model is not None:
            seq = [f["crop"] for f in sorted(faces, key=lambda f: f["frame"]) if f["face"] == 0 and f["score"] is not None]
            vscore = temporal_model.score_sequence(np.stack(seq))
        else:
            vscore = aggregate(fs, video_agg)
        per_file.append({"path": str(item.path), "label": item.label, "family": item.family, "group": item.group,
                         "video_score": vscore, "frames": len(fs), "faces": len(faces),
                         "frame_scores": [round(v, 4) for v in fs],
                         "frame_face_px": [round(float(scored_face[k]), 1) for k in sorted(frames)]})
        if meter is not None and is_video(item.path):
            rate = meter.measure(item.path, degradation=degradation, every=blink_every)
            per_file[-1]["blinks"], per_file[-1]["blinks_seconds"] = rate.blinks, round(rate.seconds, 2)
            per_file[-1]["blinks_per_minute"] = None if rate.per_minute is None else round(rate.per_minute, 2)
            if evidence is not None:
                per_file[-1]["frames_video_score"] = vscore
                per_file[-1]["blink_score"] = blink_score = evidence.score(rate)
                per_file[-1]["video_score"] = raise_score(vscore, blink_score)
    frame_m, video_m = level_metrics(per_file, thr, ci_resamples)
    paired = paired_view(per_file)
    families = by_family(per_file, thr, ci_resamples) if len({f["family"] for f in per_file if f["label"]}) > 1 else []
    sizes = by_face_size(per_file, thr)
    how = "temporal model (CNN+LSTM) over the largest face's crops" if temporal_model is not None else (
        "mean of frame scores" if video_agg == "mean" else "mean of the top quarter of frame scores")
    if evidence is not None:
        how += ", raised to the score as surprising for a real person as the video's blinks where that is higher"
    report = {
        "model": str(model),
        "model_name": meta.name,
        "temporal": temporal,
        "threshold": thr,
        "frame_score": "max P(fake) over the faces of a frame",
        "video_score": how,
        "sampling": {"every_n_frames": every_n_frames, "max_frames": max_frames, "max_faces": max_faces},
        # every field of the degradation, its scale named as the option that sets it
        "degradation": None if degradation is None else {"frame_scale" if k == "scale" else k: v
                                                         for k, v in dataclasses.asdict(degradation).items()},
        "frame_level": frame_m,
        "video_level": video_m,
        "by_family": families,
        "paired": paired,
        "by_face_size": sizes,
        "files": per_file,
        "no_face_found": no_face,
        "unscorable": {"files": unscorable, "faces": unscorable_faces, "min_face_px": int(meta.min_face_px),
                       "min_face_detail": float(meta.min_face_detail),
                       "min_surroundings_detail": float(meta.min_surroundings_detail)},
        "unreadable": unreadable,
    }
    text = [format_metrics("frame-level", frame_m), format_metrics("video-level", video_m), f"video score: {how}"]
    if paired:
        text.append(format_paired(paired))
    if families:
        text.append("by fake family (each family's fakes against every real file):\n" + format_family_table(families))
    if sizes:
        text.append(format_face_sizes(sizes))
    if no_face:
        text.append(f"no face found in {len(no_face)} file(s), left out: " + ", ".join(Path(p).name for p in no_face))
    if unscorable:
        text.append(f"every face too small (< {meta.min_face_px} px) or too blurred to judge in {len(unscorable)} file(s), left out: "
                    + ", ".join(Path(p).name for p in unscorable))
    if unreadable:
        text.append(f"could not read {len(unreadable)} file(s), left out: " + ", ".join(Path(u["path"]).name for u in unreadable))
    report["blink_evidence"] = None if evidence is None else evidence.to_dict()
    report["blinks_every_n_frames"] = blink_every if read_blinks else None  # the eyes' reading cadence
    if blinks:
        report["blinks"] = blink_metrics(per_file, ci_resamples)
        text.append(format_blink_metrics(report["blinks"]))
    report["text"] = "\n".join(text)
    if plot_dir:
        report["plots"] = plot(plot_dir, {
            "frame": ([f["label"] for f in per_file for _ in f["frame_scores"]], [v for f in per_file for v in f["frame_scores"]]),
            "video": ([f["label"] for f in per_file], [f["video_score"] for f in per_file])})
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps({k: v for k, v in report.items() if k != "text"}, indent=1))
    return report
