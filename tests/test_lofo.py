"""Leave-one-family-out: groups never straddle a split, a family's sources go with it, buckets are stable."""
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.conftest import needs_shared_data
from train import lofo
from train.datasets import LabelledMedia, read_list_file


def media(name: str, label: str, family: str = "-", group: str = "") -> LabelledMedia:
    return LabelledMedia(Path(name), 1 if label == "fake" else 0, family, group or name)


def toy_manifest() -> list[LabelledMedia]:
    return [
        media("swap1.mp4", "fake", "swap", "person_a"), media("swap2.mp4", "fake", "swap", "person_b"),
        media("a_original.mp4", "real", "swap", "person_a"),
        media("a_other_clip.mp4", "real", "-", "person_a"),  # same person, no family of its own
        media("lipsync.mp4", "fake", "lipsync", "person_c"), media("c_original.mp4", "real", "lipsync", "person_c"),
    ] + [media(f"real{k}.mp4", "real", "-", f"someone{k}") for k in range(40)]


def test_held_out_family_takes_its_fakes_sources_and_their_people_to_test():
    fold = lofo.fold(toy_manifest(), "swap")
    test = {i.path.name for i in fold.test}
    assert {"swap1.mp4", "swap2.mp4", "a_original.mp4", "a_other_clip.mp4"} <= test
    train = {i.path.name for i in fold.train}
    assert {"lipsync.mp4", "c_original.mp4"} <= train  # a training family keeps its real source beside it
    assert not test & train


def test_no_group_is_on_two_sides_of_any_fold():
    items = toy_manifest()
    for family in lofo.families(items) + [None]:
        fold = lofo.fold(items, family)
        sides = [{i.group for i in getattr(fold, name)} for name in ("train", "val", "test")]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        assert sum(len(getattr(fold, n)) for n in ("train", "val", "test")) == len(items)


def test_untied_real_groups_fall_in_the_same_bucket_in_every_fold():
    items = toy_manifest()
    buckets = [{i.group: name for name in ("train", "val", "test") for i in getattr(lofo.fold(items, fam), name)
                if i.family == "-" and i.group.startswith("someone")} for fam in ("swap", "lipsync", None)]
    assert buckets[0] == buckets[1] == buckets[2]
    assert set(buckets[0].values()) == {"train", "val", "test"}  # 40 groups reach all three


def test_unknown_family_and_missing_group_are_clear_errors():
    with pytest.raises(ValueError, match="no fake family 'gan'"):
        lofo.fold(toy_manifest(), "gan")
    with pytest.raises(ValueError, match="no group"):
        lofo.fold([LabelledMedia(Path("x.mp4"), 0)], None)


def test_written_fold_lists_read_back_with_family_and_group(tmp_path):
    fold = lofo.fold(toy_manifest(), "lipsync")
    paths = fold.write(tmp_path)
    back = read_list_file(paths["test"])
    assert {(i.path.name, i.family, i.group) for i in back} == {(i.path.name, i.family, i.group) for i in fold.test}


@needs_shared_data
def test_shared_manifest_lists_every_family_and_files_that_exist():
    items = read_list_file(lofo.DEFAULT_MANIFEST)
    assert {"ffpp", "dfdc", "oneshot_swap", "lipsync", "talking_head"} <= set(lofo.families(items))
    assert all(i.path.is_file() for i in items)
    # fakes that share a real source are grouped with it (../shared/README.md)
    zzww = {i.path.name for i in items if i.group == "zzww"}
    assert {"zzww_original.mp4", "1.mp4", "wav2lip.mp4"} <= zzww
    for family in lofo.families(items):
        fold = lofo.fold(items, family)
        assert any(i.label == 1 for i in fold.test) and any(i.label == 0 for i in fold.test)


def _names_in_bucket(bucket: str, n: int, prefix: str) -> list[str]:
    names = (f"{prefix}{k}" for k in range(1000))
    return [name for name in names if lofo.bucket(name) == bucket][:n]


def _small_manifest(tmp_path: Path) -> tuple[Path, list[Path]]:
    """Two families of two 'fakes' each against three test people's clips, a test photo, a train and a val clip."""
    from tests.conftest import SHARED_DATA

    clips = sorted((SHARED_DATA / "real" / "grid_lipnet").glob("*.mpg"))[:8]  # 3 s studio clips: quick to score
    photo = SHARED_DATA / "real" / "face_recognition_examples" / "obama3.jpg"
    test_people = _names_in_bucket("test", 4, "person")
    rows = [f"{p}\treal\t-\t{g}" for p, g in zip(clips[:3], test_people)]
    rows += [f"{photo}\treal\t-\t{test_people[3]}"]  # a photo: the false-alarm line, not the family table
    rows += [f"{clips[3]}\treal\t-\t{_names_in_bucket('train', 1, 'person')[0]}"]
    rows += [f"{clips[0]}\treal\t-\t{_names_in_bucket('val', 1, 'person')[0]}"]  # read for fuse()'s scale only
    rows += [f"{clips[4]}\tfake\tswap\tswap_a", f"{clips[5]}\tfake\tswap\tswap_b",
             f"{clips[6]}\tfake\tlipsync\tlip_a", f"{clips[7]}\tfake\tlipsync\tlip_b"]
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest, clips


QUICK = dict(engine="onnxruntime", every_n_frames=25, max_frames=2)


@needs_shared_data
def test_score_gives_each_held_out_family_its_own_fakes_against_the_test_people(tmp_path, tiny_detector):
    manifest, clips = _small_manifest(tmp_path)
    quick = QUICK
    result = lofo.score([str(tiny_detector), str(tiny_detector)], manifest, ci_resamples=50, **quick)
    assert set(result["families"]) == {"lipsync", "swap"}
    assert len(result["seeds"]) == 2 and len(result["mean_video_roc_auc_per_seed"]) == 2
    for family, row in result["families"].items():
        assert row["n_fake"] == 2 and row["n_real"] == 3  # videos only; the train-bucket person is never a test file
    assert result["seeds"][0]["real_photos"]["n"] == 1 and result["real_photos_flagged"] in (0.0, 1.0)
    seed = result["seeds"][0]["families"]["swap"]["video_level"]
    assert 0.0 <= seed["roc_auc"] <= 1.0
    assert list(result["seeds"][0]["val_real_video_scores"]) == [str(clips[0].resolve())]
    assert sorted(result["seeds"][0]["families"]["swap"]["video_labels"].values()) == [0, 0, 0, 1, 1]
    assert result["seeds"][0]["families"]["swap"]["paired"] == {"auc": None, "pairs": 0, "groups": 0, "fake_above": 0,
                                                                "ties": 0}  # no fake's source is here
    # per-fold models: {family} names the model trained without that family
    for family in ("swap", "lipsync"):
        (tmp_path / f"fold-{family}.onnx").symlink_to(tiny_detector)
    per_fold = lofo.score([str(tmp_path / "fold-{family}.onnx")], manifest, ci_resamples=0, **quick)
    assert per_fold["families"]["lipsync"]["video_level"]["roc_auc_mean"] is not None
    assert "held-out family" in lofo.format_table(per_fold)
    with pytest.raises(ValueError, match="no fake family 'gan'"):
        lofo.score([str(tiny_detector)], manifest, ["gan"], **quick)


def test_real_only_training_files_are_outside_every_folds_test_and_every_familys_sources():
    items = toy_manifest()
    reals = lofo.untied_train_reals(items)
    assert reals and all(i.label == 0 and i.family == "-" for i in reals)
    for family in lofo.families(items):
        test = {i.group for i in lofo.fold(items, family).test}
        assert not test & {i.group for i in reals}
    assert "a_other_clip.mp4" not in {i.path.name for i in reals}  # person_a is a swap family's source


def _scored(model: str, val: list[float], families: dict[str, dict[str, tuple[int, float]]]) -> dict:
    """A minimal one-seed `lofo.score` result: per family {path: (label, video score)}."""
    rows = {f: {"video_scores": {p: v for p, (_, v) in files.items()}, "video_labels": {p: y for p, (y, _) in files.items()},
                "n_fake": 0, "n_real": 0} for f, files in families.items()}
    return {"seeds": [{"model": model, "families": rows, "real_photos": {"n": 0, "flagged": 0},
                       "val_real_video_scores": {f"val{i}": v for i, v in enumerate(val)}}],
            "families": dict.fromkeys(families)}


def test_fusing_two_detectors_catches_what_each_catches_on_a_scale_fixed_on_val_reals():
    reals = {f"r{i}": (0, 0.2 + 0.05 * i) for i in range(6)}
    # A separates pasted faces and misses generated ones; B the other way round, on a different scale
    a = _scored("a", [0.2, 0.3, 0.4], {"paste": {**reals, "p1": (1, 0.9), "p2": (1, 0.8)},
                                       "generated": {**reals, "g1": (1, 0.25), "g2": (1, 0.3)}})
    b_reals = {p: (0, 0.01) for p in reals}
    b = _scored("b", [0.008, 0.01, 0.012], {"paste": {**b_reals, "p1": (1, 0.01), "p2": (1, 0.011)},
                                           "generated": {**b_reals, "g1": (1, 0.2), "g2": (1, 0.3)}})
    fused = lofo.fuse([a, b], ci_resamples=0)
    alone = {f: lofo.fuse([a, a], ci_resamples=0)["families"][f]["video_level"]["roc_auc_mean"] for f in ("paste", "generated")}
    both = {f: fused["families"][f]["video_level"]["roc_auc_mean"] for f in ("paste", "generated")}
    assert alone["generated"] < 0.7 and both["generated"] == 1.0
    assert both["paste"] >= alone["paste"] == 1.0
    val_logits = np.log(np.array([0.008, 0.01, 0.012]) / (1 - np.array([0.008, 0.01, 0.012])))
    assert np.allclose(fused["seeds"][0]["scales"][1], [val_logits.mean(), val_logits.std(ddof=1)])  # from val reals only
    assert "n/a" in lofo.format_table(fused)  # video level only


def test_a_familys_table_shows_which_of_its_generators_it_sees_and_which_it_misses():
    reals = {f"/d/real/people/r{i}.mp4": (0, 0.2 + 0.1 * i) for i in range(4)}  # 0.2 ... 0.5
    seen = {f"/d/fake/blinkless/b{i}.mp4": (1, 0.9) for i in range(2)}
    missed = {f"/d/fake/blinking/k{i}.mp4": (1, 0.1) for i in range(3)}
    scored = _scored("m", [0.2, 0.3, 0.4], {"heads": {**reals, **seen, **missed}, "swaps": {**reals, **seen}})
    for seed in scored["seeds"]:
        for row in seed["families"].values():
            row.update(video_level={"roc_auc": 0.5}, frame_level={"roc_auc": None}, paired=None)
    table = lofo.summarise(scored["seeds"], ["heads", "swaps"])
    folders = table["families"]["heads"]["by_folder"]
    assert folders["blinkless"] == {"n_fake": 2, "roc_auc_mean": 1.0, "roc_auc_sd": 0.0}
    assert folders["blinking"]["roc_auc_mean"] == 0.0 and folders["blinking"]["n_fake"] == 3
    assert table["families"]["swaps"]["by_folder"] == {}  # one folder: the family's own row says it
    assert "heads by folder of its fakes" in lofo.format_table(table) and "swaps by folder" not in lofo.format_table(table)


def test_fuse_refuses_scores_without_val_reals_or_with_unpaired_seeds():
    files = {"paste": {"r": (0, 0.2), "f": (1, 0.8)}}
    a, b = _scored("a", [0.2, 0.3, 0.4], files), _scored("b", [], files)
    with pytest.raises(ValueError, match="val real videos"):
        lofo.fuse([a, b])
    two = _scored("c", [0.2, 0.3, 0.4], files)
    two["seeds"] *= 2
    three = _scored("d", [0.2, 0.3, 0.4], files)
    three["seeds"] *= 3
    with pytest.raises(ValueError, match="seed counts"):
        lofo.fuse([two, three])
    with pytest.raises(ValueError, match="at least two"):
        lofo.fuse([a])


@needs_shared_data
def test_score_with_a_temporal_model_per_seed_takes_the_video_score_from_it(tmp_path, tiny_detector):
    import torch

    from engines.metadata import KIND_TEMPORAL, ModelMetadata
    from engines.networks import build_model
    from train.common import save_checkpoint

    manifest, _ = _small_manifest(tmp_path)
    architecture = {"family": "temporal", "backbone": "mobilenetv3_small_050", "hidden": 4, "layers": 1,
                    "freeze_backbone": True}
    meta = ModelMetadata(kind=KIND_TEMPORAL, name="tiny-temporal", input_size=(64, 64), crop_margin=1.3,
                         extra={"seq_len": 2, "every_n_frames": QUICK["every_n_frames"]})
    torch_model = build_model(architecture)
    with torch.no_grad():
        torch_model.head[1].bias.fill_(3.0)  # an untrained head that leans to 'fake': sigmoid(3) = 0.95
        torch_model.head[1].weight.zero_()
    temporal = save_checkpoint(tmp_path / "temporal.pt", torch_model, architecture, meta)
    frames_only = lofo.score([str(tiny_detector)], manifest, ["swap"], ci_resamples=0, **QUICK)
    with_temporal = lofo.score([str(tiny_detector)], manifest, ["swap"], ci_resamples=0, temporal=[str(temporal)], **QUICK)
    assert with_temporal["seeds"][0]["temporal"] == str(temporal)
    assert frames_only["real_photos_flagged"] is not None and with_temporal["real_photos_flagged"] is None  # see score()
    scores = with_temporal["seeds"][0]["families"]["swap"]["video_scores"]
    assert scores.keys() == frames_only["seeds"][0]["families"]["swap"]["video_scores"].keys()
    assert all(abs(v - 0.95257) < 1e-3 for v in scores.values())  # the temporal head's, not the frames' mean
    with pytest.raises(ValueError, match="one per seed"):
        lofo.score([str(tiny_detector)] * 2, manifest, ["swap"], temporal=[str(temporal)], **QUICK)


@needs_shared_data
def test_capture_baselines_show_a_family_told_apart_by_its_files_frame_size_alone(tmp_path):
    from tests.conftest import SHARED_DATA

    reals = sorted((SHARED_DATA / "real" / "grid_lipnet").glob("*.mpg"))[:3]  # 360x288 studio clips
    fakes = sorted((SHARED_DATA / "fake" / "dfdc_train").glob("*.mp4"))[:2]  # 1080p
    people = _names_in_bucket("test", 3, "person")
    rows = [f"{p}\treal\t-\t{g}" for p, g in zip(reals, people)]
    rows += [f"{p}\tfake\tdfdc\tdfdc_{k}" for k, p in enumerate(fakes)]
    rows += [f"{reals[0]}\tfake\tlipsync\tlip_a", f"{reals[1]}\tfake\tlipsync\tlip_b"]  # the reals' own files
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    result = lofo.capture_baselines(manifest)
    assert result["roc_auc"]["frame width"]["dfdc"] == 1.0  # a 1080p fake against 360 px reals: told apart by size
    assert result["roc_auc"]["frame width"]["lipsync"] == 0.5  # the same files on both sides: nothing to tell
    facts = result["files"][str(fakes[0])]
    assert {facts["frame width"], facts["frame height"]} == {1080.0, 1920.0}  # DFDC films portrait and landscape
    assert result["files"][str(reals[0])]["bits per pixel"] > 0
    table = lofo.format_baselines(result)
    assert "frame width" in table and "dfdc" in table
    with pytest.raises(ValueError, match="no fake family 'gan'"):
        lofo.capture_baselines(manifest, ["gan"])


def test_paired_auc_compares_each_fake_only_with_its_own_source():
    from train.metrics import paired_auc

    # two sources filmed differently: every score of source b is higher than every score of source a
    labels = [0, 1, 1, 0, 1, 0]
    scores = [0.1, 0.2, 0.05, 0.8, 0.9, 0.95]
    groups = ["a", "a", "a", "b", "b", "person_c"]  # person_c has no fake: no pair
    result = paired_auc(labels, scores, groups)
    assert result["pairs"] == 3 and result["groups"] == 2
    assert result["auc"] == pytest.approx(2 / 3)  # a: 0.2 > 0.1 yes, 0.05 > 0.1 no; b: 0.9 > 0.8 yes
    assert roc_auc_score(labels, scores) == pytest.approx(1 / 3)  # across sources the capture decides instead
    assert paired_auc([0, 1], [0.5, 0.5], ["a", "a"])["auc"] == 0.5  # a tie counts a half
    assert paired_auc([0, 1], [0.1, 0.9], ["a", "b"]) == {"auc": None, "pairs": 0, "groups": 0, "fake_above": 0, "ties": 0}


def test_fuse_keeps_the_paired_figure_when_the_scores_carry_their_groups():
    files = {"swap": {"src": (0, 0.30), "fake": (1, 0.35), "other_person": (0, 0.9)}}
    a, b = _scored("a", [0.2, 0.3, 0.4], files), _scored("b", [0.2, 0.3, 0.4], files)
    assert "paired" not in lofo.fuse([a, b], ci_resamples=0)["seeds"][0]["families"]["swap"]  # old results: none
    for r in (a, b):
        r["seeds"][0]["families"]["swap"]["video_groups"] = {"src": "clip1", "fake": "clip1", "other_person": "p2"}
    fused = lofo.fuse([a, b], ci_resamples=0)
    row = fused["families"]["swap"]
    assert row["video_level"]["roc_auc_mean"] == 0.5  # the other person's clip outscores the fake
    assert row["paired"]["roc_auc_mean"] == 1.0 and row["paired"]["pairs"] == 1  # its own source does not
    assert "1 pairs" in lofo.format_table(fused)


@needs_shared_data
def test_capture_baselines_paired_view_is_blind_to_a_fakes_file_facts_beside_its_source(tmp_path):
    from tests.conftest import SHARED_DATA

    reals = sorted((SHARED_DATA / "real" / "grid_lipnet").glob("*.mpg"))[:2]  # 360x288
    fake = sorted((SHARED_DATA / "fake" / "dfdc_train").glob("*.mp4"))[0]  # 1080p
    people = _names_in_bucket("test", 2, "person")
    rows = [f"{p}\treal\t-\t{g}" for p, g in zip(reals, people)]
    rows += [f"{fake}\tfake\tdfdc\tdfdc_0", f"{fake}\treal\tdfdc\tdfdc_0"]  # the fake beside a source of its own capture
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    result = lofo.capture_baselines(manifest)
    assert result["roc_auc"]["frame width"]["dfdc"] > 0.6  # against other people's 360 px clips, size tells
    assert result["paired_roc_auc"]["frame width"]["dfdc"] == 0.5  # against its own source it cannot
    assert "paired" in lofo.format_baselines(result)
