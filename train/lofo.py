"""Leave-one-family-out: the protocol every detector choice is judged by.

A detector is only as good as its score on fakes made in a way it has never seen, of people
it has never seen.  The manifest (a list file with family and group columns,
``train/data/shared_clips.tsv`` for ``../shared/data``) names for every clip its label, its
*family* (how a fake was made; for a real clip, the family it is the source of) and its
*group* (one person, or one source clip together with the fakes made from it).

For a held-out family F, :func:`fold` splits the manifest into

* ``test``: F's fakes, every clip of a group tied to F (their sources, the same people), and
  the real groups of the fixed *test* bucket (people no fold ever trains on);
* ``val``: the real groups of the fixed *val* bucket (thresholds and calibration);
* ``train``: every other fake family, the real sources tied to them (so that a real clip
  and its fakes, same capture, teach the difference and not the camera), and the real
  groups of the *train* bucket.

A group is never split, so no person or source clip is on both sides.  Real groups not tied
to any family fall in a bucket by a stable hash of their name (:func:`bucket`), the same in
every fold and every run.  :func:`final_split` is the split the shipped model trains on:
every family, with the same val and test buckets.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.datasets import NO_FAMILY, LabelledMedia, write_list_file

DEFAULT_MANIFEST = Path(__file__).parent / "data" / "shared_clips.tsv"
TEST_SHARE = 0.25  # of the untied real groups: held out of every fold and of the shipped model
VAL_SHARE = 0.15  # of the untied real groups: thresholds and calibration, never trained on


def bucket(group: str) -> str:
    """``train``, ``val`` or ``test`` for a real group tied to no family: a stable hash of its name."""
    u = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < TEST_SHARE else ("val" if u < TEST_SHARE + VAL_SHARE else "train")


def families(items: list[LabelledMedia]) -> list[str]:
    """The fake families of a manifest, sorted."""
    return sorted({i.family for i in items if i.label == 1})


def tied_families(items: list[LabelledMedia]) -> dict[str, set[str]]:
    """Each group's families: a fake's own, and the family a real clip is the source of."""
    tied: dict[str, set[str]] = {}
    for item in items:
        if not item.group:
            raise ValueError(f"{item.path}: no group in the manifest (4th column): the protocol splits by group")
        fams = tied.setdefault(item.group, set())
        if item.family != NO_FAMILY:
            fams.add(item.family)
    return tied


@dataclass
class Fold:
    family: str | None  # the held-out family; None for the shipped model's split
    train: list[LabelledMedia] = field(default_factory=list)
    val: list[LabelledMedia] = field(default_factory=list)
    test: list[LabelledMedia] = field(default_factory=list)

    def write(self, folder: str | Path) -> dict[str, Path]:
        """``train.tsv``, ``val.tsv``, ``test.tsv`` in ``folder`` (absolute paths, all four columns)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return {name: write_list_file(getattr(self, name), folder / f"{name}.tsv",
                                      f"{name} split, held-out family: {self.family or 'none (the shipped model)'}")
                for name in ("train", "val", "test")}


def fold(items: list[LabelledMedia], family: str | None) -> Fold:
    """The split that holds ``family`` out (see the module docstring); ``None``: hold no family out."""
    known = families(items)
    if family is not None and family not in known:
        raise ValueError(f"no fake family {family!r} in the manifest (families: {', '.join(known)})")
    tied = tied_families(items)
    out = Fold(family)
    for item in items:
        fams = tied[item.group]
        if family is not None and family in fams:
            out.test.append(item)
        elif fams:  # a training family's fakes and their real sources
            out.train.append(item)
        else:
            getattr(out, bucket(item.group)).append(item)
    return out


def final_split(items: list[LabelledMedia]) -> Fold:
    return fold(items, None)


def untied_train_reals(items: list[LabelledMedia]) -> list[LabelledMedia]:
    """The real files of the train bucket tied to no family: what a model that learns from real faces alone
    (self-blends, the sharpness reference) trains on, so that it is fit for every fold at once -- no fold's
    test people and no family's sources are among them."""
    tied = tied_families(items)
    return [i for i in items if i.label == 0 and not tied[i.group] and bucket(i.group) == "train"]


# ---------------------------------------------------------------- scoring a recipe

FAMILY_PLACEHOLDER = "{family}"


def fold_items(fold_: Fold, family: str) -> list[LabelledMedia]:
    """What a held-out family is measured on: its fake videos against the fold's real test videos
    (like against like: photos would be an easy 'real' that says nothing of a family's videos)."""
    from stages.faces import is_video

    return [i for i in fold_.test if (i.label == 0 or i.family == family) and is_video(i.path)]


def real_val_videos(items: list[LabelledMedia]) -> list[LabelledMedia]:
    """The val people's real videos: where a model's scores on real faces are read (to put two models'
    scores on one scale, :func:`fuse`), never what a family is measured on."""
    from stages.faces import is_video

    return [i for i in final_split(items).val if i.label == 0 and is_video(i.path)]


def real_test_photos(items: list[LabelledMedia]) -> list[LabelledMedia]:
    """The real photos no fold trains on: where the false-alarm rate on photos is measured."""
    from stages.faces import is_image

    return [i for i in final_split(items).test if i.label == 0 and is_image(i.path)]


def score(models: list[str], manifest: str | Path = DEFAULT_MANIFEST, families_: list[str] | None = None,
          ci_resamples: int = 2000, progress=None, temporal: list[str] | None = None, **eval_options) -> dict:
    """The leave-one-family-out table of one recipe: ``models`` are its seeds (one model each), or
    patterns with ``{family}`` for a model trained per fold; ``temporal``, when given, pairs each seed
    with a temporal model (same order, ``{family}`` alike) whose score is the video's.  Each held-out family's fakes are scored
    against its fold's real test files; the table gives each family's video and frame ROC-AUC as the
    mean and spread over the seeds, with each seed's bootstrap interval, and the mean over families
    (the figure every detector choice is made on)."""
    import tempfile

    from train.datasets import read_list_file
    from train.evaluate import evaluate, level_metrics
    from train.metrics import paired_auc

    items = read_list_file(manifest)
    chosen = families_ or families(items)
    unknown = sorted(set(chosen) - set(families(items)))
    if unknown:
        raise ValueError(f"no fake family {', '.join(map(repr, unknown))} in {manifest} (families: {', '.join(families(items))})")
    if not models:
        raise ValueError("no model to score: give one per seed")
    if temporal and len(temporal) != len(models):
        raise ValueError(f"{len(temporal)} temporal model(s) for {len(models)} frame model(s): give one per seed, in the same order")
    temporal = list(temporal or [None] * len(models))
    folds = {family: fold(items, family) for family in chosen}
    photos_scored = real_test_photos(items)
    photo_paths = {str(i.path.resolve()) for i in photos_scored}
    val_videos = real_val_videos(items)
    val_paths = {str(i.path.resolve()) for i in val_videos}
    seeds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dfstream-lofo-") as tmp:
        for k, (model, sequence_model) in enumerate(zip(models, temporal)):
            per_family: dict[str, list[dict]] = {}
            if FAMILY_PLACEHOLDER in model + (sequence_model or ""):  # one model per fold: each fold's test files with its own
                for family in chosen:
                    listed = write_list_file(fold_items(folds[family], family), Path(tmp) / f"{k}-{family}.tsv")
                    report = evaluate([str(listed)], model=model.replace(FAMILY_PLACEHOLDER, family), output=None,
                                      temporal=sequence_model and sequence_model.replace(FAMILY_PLACEHOLDER, family),
                                      ci_resamples=0, **eval_options)
                    per_family[family] = report["files"]
            else:  # one model for every fold: score the union once
                union = {str(i.path): i for family in chosen for i in fold_items(folds[family], family)}
                union.update({str(i.path): i for i in photos_scored + val_videos})
                listed = write_list_file(list(union.values()), Path(tmp) / f"{k}-all.tsv")
                report = evaluate([str(listed)], model=model, temporal=sequence_model, output=None, ci_resamples=0,
                                  **eval_options)
                by_path = {f["path"]: f for f in report["files"]}
                for family in chosen:
                    per_family[family] = [by_path[str(i.path.resolve())] for i in fold_items(folds[family], family)
                                          if str(i.path.resolve()) in by_path]
            rows = {}
            for family, files in per_family.items():
                frame_m, video_m = level_metrics(files, report["threshold"], ci_resamples)
                rows[family] = {"video_level": video_m, "frame_level": frame_m,
                                "n_fake": sum(f["label"] for f in files), "n_real": sum(1 - f["label"] for f in files),
                                "video_scores": {f["path"]: round(f["video_score"], 5) for f in files},
                                "video_labels": {f["path"]: int(f["label"]) for f in files},
                                "video_groups": {f["path"]: f["group"] for f in files},
                                "paired": paired_auc([f["label"] for f in files], [f["video_score"] for f in files],
                                                     [f["group"] for f in files])}
            # a temporal model's "video" of a photo is one frame repeated, judged at the frame model's threshold:
            # no false-alarm figure for photos at all rather than a meaningless one
            photos = [f for f in report["files"] if f["path"] in photo_paths] if sequence_model is None else []
            flagged = sum(f["video_score"] >= report["threshold"] for f in photos)
            seeds.append({"model": model, "temporal": sequence_model, "threshold": report["threshold"], "families": rows,
                          "real_photos": {"n": len(photos), "flagged": int(flagged)},
                          # per-fold models have no one scale to read off: fuse() needs one model per seed
                          "val_real_video_scores": {f["path"]: round(f["video_score"], 5) for f in report["files"]
                                                    if f["path"] in val_paths}})
            if progress:
                progress(k + 1, len(models))
    return summarise(seeds, chosen)


CAPTURE_STATISTICS = ("frame width", "frame height", "bits per pixel")


def capture_statistics(path: str | Path) -> dict[str, float]:
    """Facts of a video file that say nothing of its faces: frame size, and the bits its file spends per pixel."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        fps = float(stream.average_rate or 25)
        seconds = (container.duration / 1e6 if container.duration else
                   float(stream.duration * stream.time_base) if stream.duration else (stream.frames or 1) / fps)
    bits = Path(path).stat().st_size * 8
    return {"frame width": float(width), "frame height": float(height),
            "bits per pixel": bits / max(seconds * fps * width * height, 1.0)}


def capture_baselines(manifest: str | Path = DEFAULT_MANIFEST, families_: list[str] | None = None) -> dict:
    """What each held-out family's table would read if a 'detector' scored a video by a fact of its file
    alone (:func:`capture_statistics`, higher = fake): the floor a detector's family score must clear to
    be evidence of more than how the fakes were filed.  An AUC far from 0.5 either way means the fold's
    fakes and real videos differ in that fact."""
    from train.datasets import read_list_file

    items = read_list_file(manifest)
    chosen = _chosen_families(items, families_, manifest)
    facts: dict[str, dict[str, float]] = {}
    for family in chosen:
        for item in fold_items(fold(items, family), family):
            if str(item.path) not in facts:
                facts[str(item.path)] = capture_statistics(item.path)
    return _fact_tables(items, chosen, facts, CAPTURE_STATISTICS)


def _chosen_families(items: list[LabelledMedia], families_: list[str] | None, manifest) -> list[str]:
    chosen = families_ or families(items)
    unknown = sorted(set(chosen) - set(families(items)))
    if unknown:
        raise ValueError(f"no fake family {', '.join(map(repr, unknown))} in {manifest}")
    return chosen


def _fact_tables(items: list[LabelledMedia], chosen: list[str], facts: dict[str, dict[str, float | None]],
                 names) -> dict:
    """Each held-out family's video ROC-AUC (and its paired view) with one fact per file as the score,
    higher = fake; a file whose fact is None is left out."""
    from sklearn.metrics import roc_auc_score

    from train.metrics import paired_auc

    table: dict[str, dict[str, float | None]] = {name: {} for name in names}
    paired: dict[str, dict[str, float | None]] = {name: {} for name in names}
    counts: dict[str, dict[str, list[int]]] = {name: {} for name in names}
    for family in chosen:
        files = fold_items(fold(items, family), family)
        for name in names:
            kept = [i for i in files if facts[str(i.path)].get(name) is not None]
            labels = np.array([i.label for i in kept])
            values = np.array([facts[str(i.path)][name] for i in kept])
            table[name][family] = float(roc_auc_score(labels, values)) if 0 < labels.sum() < len(labels) else None
            paired[name][family] = paired_auc(labels, values, [i.group for i in kept])["auc"]
            counts[name][family] = [int(labels.sum()), int(len(labels) - labels.sum())]
    means = {name: float(np.mean([a for a in row.values() if a is not None])) for name, row in table.items()}
    return {"families": chosen, "roc_auc": table, "paired_roc_auc": paired, "mean": means,
            "scored_fake_real": counts, "files": facts}


BLINK_CUE = "fewer blinks"


def blink_cue(manifest: str | Path = DEFAULT_MANIFEST, families_: list[str] | None = None, progress=None,
              degradation=None, every_n_frames: int = 1) -> dict:
    """The blink rate (:mod:`train.blinks`) as a detector with no training: each held-out family's video
    ROC-AUC with minus the blinks per minute as the score (fewer blinks = more fake). Videos seen for
    under :data:`engines.blinks.MIN_SECONDS` are left out. The val people's real videos are measured too,
    and the result carries a ``seeds`` entry shaped like :func:`score`'s (scores as logits), so that
    :func:`fuse` can join the cue with a model."""
    from stages.faces import is_video
    from train.blinks import BlinkMeter, check_degradation
    from train.datasets import read_list_file

    check_degradation(degradation)
    items = read_list_file(manifest)
    chosen = _chosen_families(items, families_, manifest)
    val = real_val_videos(items)
    held_out = {family: fold_items(fold(items, family), family) for family in chosen}
    paths = list(dict.fromkeys([str(i.path) for files in held_out.values() for i in files if is_video(i.path)]
                               + [str(i.path) for i in val]))
    meter, facts = BlinkMeter(), {}
    for path in (progress(paths, desc="blinks") if progress else paths):
        rate = meter.measure(path, degradation=degradation, every=every_n_frames)
        facts[path] = {BLINK_CUE: None if rate.per_minute is None else -rate.per_minute,
                       "blinks": rate.blinks, "seconds": round(rate.seconds, 2)}
    for files in held_out.values():  # photos have no blinks: not part of this table
        for item in files:
            facts.setdefault(str(item.path), {BLINK_CUE: None})
    result = _fact_tables(items, chosen, facts, (BLINK_CUE,))

    def key(item):  # as score() names files, so that fuse() finds the same file under one name
        return str(item.path.resolve())

    def scored(files):
        return {key(i): facts[str(i.path)][BLINK_CUE] for i in files if facts[str(i.path)][BLINK_CUE] is not None}

    rows = {}
    for family, files in held_out.items():
        files = [i for i in files if facts[str(i.path)][BLINK_CUE] is not None]
        rows[family] = {"video_scores": scored(files), "video_labels": {key(i): i.label for i in files},
                        "video_groups": {key(i): i.group for i in files}}
    result["seeds"] = [{"model": "blinks", "scores_are_logits": True, "families": rows,
                        "val_real_video_scores": scored(val)}]
    result["degradation"] = None if degradation is None or not degradation.active else dataclasses.asdict(degradation)
    result["every_n_frames"] = every_n_frames
    return result


def format_baselines(result: dict, title: str = "video ROC-AUC of a fact of the file alone (higher = fake)") -> str:
    chosen = result["families"]
    lines = [f"{title}, per held-out family:",
             f"{'statistic':<16} " + " ".join(f"{f[:12]:>12}" for f in chosen) + f" {'mean':>6}"]
    for name, row in result["roc_auc"].items():
        cells = " ".join(f"{'n/a' if row[f] is None else format(row[f], '.3f'):>12}" for f in chosen)
        lines.append(f"{name:<16} {cells} {result['mean'][name]:>6.3f}")
    for name, row in result.get("scored_fake_real", {}).items():
        lines.append(f"{'  videos scored':<16} " + " ".join(f"{'%d / %d' % tuple(row[f]):>12}" for f in chosen)
                     + "  (fake / real)")
    lines.append("the same, each fake against the real videos of its own source/person only (paired):")
    for name, row in result.get("paired_roc_auc", {}).items():
        lines.append(f"{name:<16} " + " ".join(f"{'n/a' if row[f] is None else format(row[f], '.3f'):>12}" for f in chosen))
    return "\n".join(lines)


FUSION_RULES = ("mean", "max")


def fuse(results: list[dict], ci_resamples: int = 2000, rule: str = "mean") -> dict:
    """Two or more scored recipes (:func:`score` results, or a cue's such as :func:`blink_cue`) as one
    detector: per video, the mean (``rule="max"``: the largest) of each model's z = (logit(video score)
    - m) / s, where m and s are that model's mean and spread over the val people's real videos -- a
    scale fixed on val, never on the test files.  ``max`` suits cues that aim at different fakes: a
    video is as suspect as its most suspect cue.  A file one model left unscored (under its size or
    detail floor, or seen too briefly to count blinks) takes the others'.  Seeds pair up in order; a
    recipe with one seed pairs with every seed of the others.  Video level only."""
    from train.metrics import compute_metrics, logit, paired_auc, roc_auc_interval

    if len(results) < 2:
        raise ValueError("fusing needs at least two scored recipes")
    if rule not in FUSION_RULES:
        raise ValueError(f"fusion rule {rule!r}: one of {', '.join(FUSION_RULES)}")
    combine = np.mean if rule == "mean" else np.max

    def logits(member, values):  # a cue's scores (blink_cue) are logits already
        return np.asarray(values, np.float64) if member.get("scores_are_logits") else logit(values)

    if any(not isinstance(r, dict) or not r.get("seeds") or "families" not in r for r in results):
        raise ValueError("not a dfstream lofo score result (no seeds or families)")
    n_seeds = max(len(r["seeds"]) for r in results)
    if any(len(r["seeds"]) not in (1, n_seeds) for r in results):
        raise ValueError(f"seed counts {[len(r['seeds']) for r in results]}: each recipe needs one seed or {n_seeds}")
    chosen = [f for f in results[0]["families"] if all(f in r["families"] for r in results)]
    seeds = []
    for k in range(n_seeds):
        members = [r["seeds"][k if len(r["seeds"]) > 1 else 0] for r in results]
        scales = []
        for m in members:
            val = logits(m, list(m.get("val_real_video_scores", {}).values()))
            if len(val) < 3 or val.std(ddof=1) == 0:
                raise ValueError(f"{m['model']}: fewer than 3 scored val real videos (or all alike): score it again "
                                 "with this version of dfstream lofo score")
            scales.append((val.mean(), val.std(ddof=1)))
        rows = {}
        for family in chosen:
            per_model = [m["families"][family]["video_scores"] for m in members]
            if any(not set(a) & set(b) for a, b in zip(per_model, per_model[1:])):
                raise ValueError(f"{family}: the recipes scored no video in common (files named differently?)")
            paths = sorted(set().union(*per_model))
            labels_of, groups_of = {}, {}
            for m in members:
                labels_of.update(m["families"][family].get("video_labels", {}))
                groups_of.update(m["families"][family].get("video_groups", {}))
            if any(p not in labels_of for p in paths):
                raise ValueError(f"{family}: the scores carry no labels: score the recipes again with this version "
                                 "of dfstream lofo score")
            fused = [float(combine([(logits(m, scores[p]) - mean) / sd
                                    for m, scores, (mean, sd) in zip(members, per_model, scales) if p in scores]))
                     for p in paths]
            labels = np.array([labels_of[p] for p in paths])
            probabilities = 1 / (1 + np.exp(-np.asarray(fused)))
            video = compute_metrics(labels, probabilities, 0.5)
            interval = roc_auc_interval(labels, probabilities, resamples=ci_resamples) if ci_resamples else None
            if interval:
                video["roc_auc_ci"] = list(interval)
            rows[family] = {"video_level": video, "frame_level": {"roc_auc": None},
                            "n_fake": int(labels.sum()), "n_real": int(len(labels) - labels.sum()),
                            "video_scores": dict(zip(paths, np.round(fused, 5).tolist())),
                            "video_labels": {p: int(y) for p, y in zip(paths, labels)}}
            if all(p in groups_of for p in paths):  # results scored before groups were kept have no paired figure
                rows[family]["video_groups"] = {p: groups_of[p] for p in paths}
                rows[family]["paired"] = paired_auc(labels, fused, [groups_of[p] for p in paths])
        seeds.append({"model": f" {'+' if rule == 'mean' else 'max'} ".join(m["model"] for m in members),
                      "threshold": None, "families": rows, "rule": rule,
                      "real_photos": {"n": 0, "flagged": 0}, "scales": [list(map(float, sc)) for sc in scales]})
    return summarise(seeds, chosen)


def by_folder(rows: list[dict]) -> dict:
    """A family's video ROC-AUC per folder of its fakes (in ``../shared`` a folder is one generator, e.g. the
    talking heads' AniTalker, EDTalk ...), each folder's fakes against all of the fold's real videos; mean and
    spread over the seeds (``rows``: one seed's family row each). Empty when the fakes are in one folder."""
    from sklearn.metrics import roc_auc_score

    folders = sorted({Path(p).parent.name for p, label in rows[0]["video_labels"].items() if label})
    if len(folders) < 2:
        return {}
    result = {}
    for folder in folders:
        aucs = []
        for row in rows:
            kept = [p for p, label in row["video_labels"].items() if not label or Path(p).parent.name == folder]
            labels = [row["video_labels"][p] for p in kept]
            if 0 < sum(labels) < len(labels):
                aucs.append(float(roc_auc_score(labels, [row["video_scores"][p] for p in kept])))
        n_fake = sum(1 for p, label in rows[0]["video_labels"].items() if label and Path(p).parent.name == folder)
        result[folder] = {"n_fake": n_fake, "roc_auc_mean": float(np.mean(aucs)) if aucs else None,
                          "roc_auc_sd": float(np.std(aucs)) if aucs else None}
    return result


def summarise(seeds: list[dict], chosen: list[str]) -> dict:
    table = {}
    for family in chosen:
        entry = {}
        for level in ("video_level", "frame_level"):
            aucs = [s["families"][family][level]["roc_auc"] for s in seeds]
            aucs = [a for a in aucs if a is not None]
            entry[level] = {"roc_auc_mean": float(np.mean(aucs)) if aucs else None,
                            "roc_auc_sd": float(np.std(aucs)) if aucs else None,
                            "roc_auc_per_seed": aucs,
                            "roc_auc_ci_per_seed": [s["families"][family][level].get("roc_auc_ci") for s in seeds]}
        paired = [s["families"][family].get("paired") for s in seeds]
        aucs = [p["auc"] for p in paired if p and p["auc"] is not None]
        entry["paired"] = {"roc_auc_mean": float(np.mean(aucs)) if aucs else None,
                           "roc_auc_sd": float(np.std(aucs)) if aucs else None, "roc_auc_per_seed": aucs,
                           "pairs": paired[0]["pairs"] if paired[0] else 0, "groups": paired[0]["groups"] if paired[0] else 0}
        entry["n_fake"] = seeds[0]["families"][family]["n_fake"]
        entry["n_real"] = seeds[0]["families"][family]["n_real"]
        entry["by_folder"] = by_folder([s["families"][family] for s in seeds])
        table[family] = entry
    means = {level: [table[f][level]["roc_auc_mean"] for f in chosen if table[f][level]["roc_auc_mean"] is not None]
             for level in ("video_level", "frame_level")}
    # the recipe's figure per seed: its mean over families; the spread of that over the seeds
    per_seed = [float(np.mean([s["families"][f]["video_level"]["roc_auc"] for f in chosen
                               if s["families"][f]["video_level"]["roc_auc"] is not None])) for s in seeds]
    photos = [s["real_photos"] for s in seeds if s["real_photos"]["n"]]
    return {"seeds": seeds, "families": table,
            "real_photos_flagged": float(np.mean([p["flagged"] / p["n"] for p in photos])) if photos else None,
            "mean_video_roc_auc": float(np.mean(means["video_level"])) if means["video_level"] else None,
            "mean_frame_roc_auc": float(np.mean(means["frame_level"])) if means["frame_level"] else None,
            "mean_video_roc_auc_per_seed": per_seed,
            "mean_video_roc_auc_sd": float(np.std(per_seed)) if per_seed else None}


def format_table(result: dict) -> str:
    def cell(level):
        m = level["roc_auc_mean"]
        if m is None:
            return "n/a"
        cis = [c for c in level["roc_auc_ci_per_seed"] if c]
        ci = f" [{np.mean([c[0] for c in cis]):.2f}-{np.mean([c[1] for c in cis]):.2f}]" if cis else ""
        return f"{m:.3f} ± {level['roc_auc_sd']:.3f}{ci}"

    def paired_cell(row):
        paired = row.get("paired") or {}
        if paired.get("roc_auc_mean") is None:
            return "n/a"
        return f"{paired['roc_auc_mean']:.3f} ({paired['pairs']} pairs, {paired['groups']} sources)"

    n = len(result["seeds"])
    lines = [f"leave-one-family-out, {n} seed(s): ROC-AUC mean ± sd over seeds [mean 95% CI bounds]; "
             "paired: video ROC-AUC of each fake against the real videos of its own source/person only",
             f"{'held-out family':<16} {'fake':>4} {'real':>4}  {'video':<28} {'frame':<28} paired"]
    for family, row in result["families"].items():
        lines.append(f"{family:<16} {row['n_fake']:>4} {row['n_real']:>4}  {cell(row['video_level']):<28} "
                     f"{cell(row['frame_level']):<28} {paired_cell(row)}")
    frame_mean = result["mean_frame_roc_auc"]
    lines.append(f"{'mean':<16} {'':>4} {'':>4}  {result['mean_video_roc_auc']:.3f} ± {result['mean_video_roc_auc_sd']:.3f}"
                 f"{'':<15} {'n/a' if frame_mean is None else f'{frame_mean:.3f}'}")
    if result["real_photos_flagged"] is not None:
        n = result["seeds"][0]["real_photos"]["n"]
        lines.append(f"real photos of the test people flagged fake at the model's threshold: "
                     f"{100 * result['real_photos_flagged']:.1f} % of {n}")
    for family, folders in ((f, row.get("by_folder")) for f, row in result["families"].items()):
        if folders:  # which generators of a family it sees and which it misses
            cells = ", ".join(f"{name} {'n/a' if v['roc_auc_mean'] is None else format(v['roc_auc_mean'], '.3f')} "
                              f"({v['n_fake']})" for name, v in folders.items())
            lines.append(f"{family} by folder of its fakes (video ROC-AUC against the fold's real videos): {cells}")
    return "\n".join(lines)
