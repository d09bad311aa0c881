"""``dfstream predict``: an image or a video -> per-face P(fake) and a verdict.

Faces are found and cut by the pipeline's own stages with the model's metadata.
For a video, faces are sampled every ``every_n_frames`` frames; the media score is
the mean over sampled frames of the highest face score in each frame (as in
``dfstream eval``), raised to the video's blinks' score where the model's metadata makes
blinks part of its score and they are more suspect, and the verdict is "fake" when it
reaches the model's threshold; "real" only at or under the model's line for real (set on
validation by ``dfstream calibrate``: few known fakes score under it), "uncertain" between —
the lines a run's summary judges a whole track by.
"""
from __future__ import annotations

from pathlib import Path

from engines.blinks import raise_score
from runtime.run_config import verdict_rule
from stages.tracking import verdict_of
from train.blinks import BlinkMeter, blink_plan
from train.evaluate import aggregate, frame_scores, load_detector, score_media
from stages.faces import FaceCropper, default_detect_config, is_image, is_video


def predict(media: str | Path, model: str = "detector", engine: str = "auto", threshold: float | None = None,
            every_n_frames: int = 5, max_frames: int = 60, max_faces: int = 8, threads: int | None = None,
            face_detector: str = "auto", blinks: bool | None = None) -> dict:
    """``blinks``: count the video's blinks (None: when the model's score uses them; see train.blinks.blink_plan)."""
    path = Path(media)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: predict scores one image or video; "
                                "`dfstream eval` scores a labelled folder")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if not (is_image(path) or is_video(path)):
        raise ValueError(f"{path} is not an image or a video file")
    det = load_detector(model, engine, threads)
    meta = det.metadata
    rule = verdict_rule(meta, threshold).for_means()
    evidence, count_blinks, blink_every = blink_plan(meta, blinks) if is_video(path) else (None, False, None)
    cropper = FaceCropper(default_detect_config(tuple(meta.input_size), meta.crop_margin, face_detector))
    faces = score_media(det, cropper, path, every_n_frames, max_frames, max_faces)
    for f in faces:
        f.pop("crop", None)
        if f["score"] is None:
            f["verdict"] = "unscorable"
            continue
        f["score"] = round(f["score"], 4)
        f["verdict"] = verdict_of(f["score"], 1, rule)
    frames = frame_scores(faces)
    score = aggregate([frames[k] for k in sorted(frames)]) if frames else None
    blink_facts = {}
    if count_blinks:
        rate = BlinkMeter(face_detector).measure(path, every=blink_every)
        blink_facts = {"blinks": rate.blinks, "blinks_seconds": round(rate.seconds, 2),
                       "blinks_per_minute": None if rate.per_minute is None else round(rate.per_minute, 2)}
        if evidence is not None:
            blink_score = evidence.score(rate)
            blink_facts.update(frames_score=None if score is None else round(score, 4),
                               blink_score=None if blink_score is None else round(blink_score, 4))
            score = raise_score(score, blink_score)
    return {
        "media": str(path),
        "type": "video" if is_video(path) else "image",
        "model": meta.name,
        "threshold": rule.threshold,
        "faces": faces,
        "frames_with_faces": len(frames),
        "score": None if score is None else round(score, 4),
        "min_face_px": int(meta.min_face_px),
        "min_face_detail": float(meta.min_face_detail),
        "min_surroundings_detail": float(meta.min_surroundings_detail),
        "real_up_to": rule.real_up_to,
        "verdict": ("unscorable" if faces else "no face found") if score is None else verdict_of(score, 1, rule),
        **blink_facts,
    }


def format_prediction(result: dict) -> str:
    lines = [f"{result['media']} ({result['type']}, model {result['model']}: fake from {result['threshold']:.3f}, real at or "
             f"under {result['real_up_to']:.3f})"]
    faces = result["faces"]
    shown = faces if len(faces) <= 20 else faces[:20]
    for f in shown:
        where = f"frame {f['frame']:5d} " if result["type"] == "video" else ""
        box = ",".join(f"{v:.0f}" for v in f["box"])
        p_fake = "  n/a " if f["score"] is None else f"{f['score']:.3f}"
        lines.append(f"  {where}face {f['face']}  box [{box}]  P(fake) {p_fake}  {f['verdict']}")
    if len(faces) > len(shown):
        lines.append(f"  ... {len(faces) - len(shown)} more faces (use --json for all)")
    if result["score"] is None and faces:
        lines.append(f"verdict: UNSCORABLE (every face smaller than {result['min_face_px']} px or too blurred: nothing to judge)")
    elif result["score"] is None:
        lines.append("verdict: no face found")
    else:
        lines.append(f"verdict: {result['verdict'].upper()} (score {result['score']:.3f} over {result['frames_with_faces']} frame(s))")
    if result.get("blinks_per_minute") is not None:
        raised = result.get("blink_score") is not None and result["blink_score"] > (result.get("frames_score") or 0)
        lines.append(f"blinks: {result['blinks']} in {result['blinks_seconds']:.1f} s ({result['blinks_per_minute']:.0f} a minute)"
                     + (f"; as suspect as a score of {result['blink_score']:.3f}, which the score was raised to" if raised else ""))
    return "\n".join(lines)
