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

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from train.datasets import NO_FAMILY, LabelledMedia

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
        written = {}
        for name in ("train", "val", "test"):
            lines = [f"# {name} split, held-out family: {self.family or 'none (the shipped model)'}"]
            lines += [f"{i.path.resolve()}\t{'fake' if i.label else 'real'}\t{i.family}\t{i.group}"
                      for i in getattr(self, name)]
            written[name] = folder / f"{name}.tsv"
            written[name].write_text("\n".join(lines) + "\n")
        return written


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
