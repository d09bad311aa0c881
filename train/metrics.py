"""Detection metrics (scikit-learn): ROC-AUC, AP, EER, accuracy, precision, recall, F1, log loss."""
from __future__ import annotations

import numpy as np


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


def format_metrics(title: str, m: dict) -> str:
    def f(v):
        return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    keys = ("roc_auc", "average_precision", "eer", "accuracy", "precision", "recall", "f1", "log_loss")
    head = f"{title}: n={m.get('n')} (real {m.get('n_real')}, fake {m.get('n_fake')}), threshold {m.get('threshold'):.3f}"
    return head + "\n  " + "  ".join(f"{k}={f(m.get(k))}" for k in keys)
