"""Detection metrics (scikit-learn): ROC-AUC, AP, EER, accuracy, precision, recall, F1, log loss;
bootstrap confidence intervals of the ROC-AUC (scipy)."""
from __future__ import annotations

import numpy as np


def logit(p) -> np.ndarray:
    """log(p / (1 - p)) of probabilities, clipped to [1e-6, 1 - 1e-6] so that 0 and 1 stay finite."""
    q = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def equal_error_rate(labels, scores) -> tuple[float, float]:
    """EER and the score threshold where the false-positive and false-negative rates meet."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    eer = float((fpr[i] + fnr[i]) / 2)
    return eer, float(min(thresholds[i], 1.0))


def compute_metrics(labels, scores, threshold: float = 0.5) -> dict:
    """All metrics for P(fake) ``scores`` against 0/1 ``labels``; ranking metrics are None with one class."""
    from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, log_loss, precision_score,
                                 recall_score, roc_auc_score)

    y = np.asarray(labels, dtype=int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    out = {"n": int(len(y)), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()), "threshold": float(threshold)}
    if len(y) == 0:
        return out
    pred = (s >= threshold).astype(int)
    out["accuracy"] = float(accuracy_score(y, pred))
    out["precision"] = float(precision_score(y, pred, zero_division=0))
    out["recall"] = float(recall_score(y, pred, zero_division=0))
    out["f1"] = float(f1_score(y, pred, zero_division=0))
    out["log_loss"] = float(log_loss(y, np.clip(s, 1e-7, 1 - 1e-7), labels=[0, 1]))
    if len(np.unique(y)) == 2:
        out["roc_auc"] = float(roc_auc_score(y, s))
        out["average_precision"] = float(average_precision_score(y, s))
        out["eer"], out["eer_threshold"] = equal_error_rate(y, s)
    else:
        out["roc_auc"] = out["average_precision"] = out["eer"] = out["eer_threshold"] = None
    return out


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney rank statistic (ties count a half): what sklearn's roc_auc_score
    returns, without its input checks, which cost more than the sum in a 2000-fold bootstrap."""
    from scipy.stats import rankdata

    positive = labels == 1
    n_fake, n_real = int(positive.sum()), int((~positive).sum())
    return float((rankdata(scores)[positive].sum() - n_fake * (n_fake + 1) / 2) / (n_fake * n_real))


def paired_auc(labels, scores, groups) -> dict:
    """ROC-AUC within groups: each fake compared only with the real videos of its own group (its source
    clip, the same person), pooled over every such pair (ties count a half).  A fake and its own source
    share camera, light, resolution and codec, so what tells them apart is the manipulation, never how
    the file was made -- the question a user asks of a swap beside its original.  ``auc`` is None where
    no group holds both a real and a fake; ``fake_above`` and ``ties`` count the pairs a fake won and tied."""
    y = np.asarray(labels, dtype=int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    above, ties, pairs, paired_groups = 0, 0, 0, 0
    for group in np.unique(g):
        member = g == group
        fake, real = s[member & (y == 1)], s[member & (y == 0)]
        if len(fake) and len(real):
            above += int((fake[:, None] > real[None, :]).sum())
            ties += int((fake[:, None] == real[None, :]).sum())
            pairs += len(fake) * len(real)
            paired_groups += 1
    return {"auc": (above + 0.5 * ties) / pairs if pairs else None, "pairs": pairs, "groups": paired_groups,
            "fake_above": above, "ties": ties}


def roc_auc_interval(labels, scores, groups=None, confidence: float = 0.95, resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float] | None:
    """Bootstrap confidence interval of the ROC-AUC, or None when a class has fewer than two units.

    Real and fake units are resampled separately (a stratified bootstrap: each resample keeps
    the class sizes, so the AUC is always defined).  A unit is one item, or with ``groups``
    every item of one group: the frames of one video are not independent draws, so a
    frame-level interval must resample whole videos or it comes out far too narrow.
    Percentile interval: with a few dozen clips the AUC's bootstrap distribution often sits
    against 1.0, where BCa's corrections break down.
    """
    from scipy.stats import bootstrap

    y = np.asarray(labels, dtype=int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.unique(np.arange(len(y)) if groups is None else np.asarray(groups).ravel(), return_inverse=True)[1]
    members = [np.nonzero(g == unit)[0] for unit in range(g.max() + 1)] if len(g) else []
    units = [np.unique(g[y == label]) for label in (0, 1)]
    if any(len(u) < 2 for u in units):
        return None

    def auc(real_units, fake_units):
        idx = np.concatenate([members[int(u)] for u in np.concatenate([real_units, fake_units])])
        return rank_auc(y[idx], s[idx])

    result = bootstrap((units[0], units[1]), auc, vectorized=False, paired=False, n_resamples=resamples,
                       confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def format_metrics(title: str, m: dict) -> str:
    def f(v):
        return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    keys = ("roc_auc", "average_precision", "eer", "accuracy", "precision", "recall", "f1", "log_loss")
    head = f"{title}: n={m.get('n')} (real {m.get('n_real')}, fake {m.get('n_fake')}), threshold {m.get('threshold'):.3f}"
    values = [f"{k}={f(m.get(k))}" for k in keys]
    if m.get("roc_auc_ci"):
        low, high = m["roc_auc_ci"]
        values[0] += f" ({100 * m['ci_level']:.0f}% CI {low:.2f}-{high:.2f})"
    return head + "\n  " + "  ".join(values)
