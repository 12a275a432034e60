"""Agreement and accuracy measures: Fleiss' and Cohen's kappa, sensitivity, specificity, accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class DiagnosticMetrics:
    """Counts and rates of binary decisions against a reference (None when undefined)."""

    n: int
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float | None
    specificity: float | None
    accuracy: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def diagnostic_metrics(truth: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray) -> DiagnosticMetrics:
    """Sensitivity TP/(TP+FN), specificity TN/(TN+FP) and accuracy of 0/1 decisions."""
    t = np.asarray(truth, dtype=np.int64).ravel()
    p = np.asarray(predicted, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"truth and predicted differ in length ({t.size} vs {p.size})")
    if t.size and (not np.isin(t, (0, 1)).all() or not np.isin(p, (0, 1)).all()):
        raise ValueError("truth and predicted must contain only 0 and 1")
    tp = int(np.sum((t == 1) & (p == 1)))
    fn = int(np.sum((t == 1) & (p == 0)))
    tn = int(np.sum((t == 0) & (p == 0)))
    fp = int(np.sum((t == 0) & (p == 1)))
    n = int(t.size)
    return DiagnosticMetrics(
        n=n, tp=tp, fp=fp, tn=tn, fn=fn,
        sensitivity=tp / (tp + fn) if tp + fn else None,
        specificity=tn / (tn + fp) if tn + fp else None,
        accuracy=(tp + tn) / n if n else None,
    )


def fleiss_kappa(counts: np.ndarray | Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from a subjects x categories table of how many raters chose each category.

    Every row must sum to the same number of raters n >= 2 (Fleiss 1971):
    P_i = (sum_j n_ij^2 - n) / (n (n - 1)), P_bar = mean P_i,
    p_j = sum_i n_ij / (N n), P_e = sum_j p_j^2, kappa = (P_bar - P_e) / (1 - P_e).
    Returns nan when P_e == 1 (all ratings in one category).
    """
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError("counts must be a non-empty 2-D table (subjects x categories)")
    if (table < 0).any():
        raise ValueError("counts must be non-negative")
    raters = table.sum(axis=1)
    n = raters[0]
    if not np.all(raters == n):
        raise ValueError("every subject must be rated by the same number of raters")
    if n < 2:
        raise ValueError("Fleiss' kappa needs at least two raters per subject")
    n_subjects = table.shape[0]
    p_i = (np.sum(table * table, axis=1) - n) / (n * (n - 1))
    p_bar = p_i.mean()
    p_j = table.sum(axis=0) / (n_subjects * n)
    p_e = float(np.sum(p_j * p_j))
    if p_e == 1.0:
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def ratings_to_counts(ratings: np.ndarray | Sequence[Sequence[object]], categories: Sequence[object] | None = None) -> np.ndarray:
    """subjects x raters matrix of category values -> subjects x categories count table."""
    arr = np.asarray(ratings, dtype=object)
    if arr.ndim != 2:
        raise ValueError("ratings must be a 2-D table (subjects x raters)")
    cats = list(categories) if categories is not None else sorted(set(arr.ravel().tolist()), key=str)
    index = {c: i for i, c in enumerate(cats)}
    counts = np.zeros((arr.shape[0], len(cats)), dtype=np.int64)
    for i, row in enumerate(arr):
        for value in row:
            if value not in index:
                raise ValueError(f"rating {value!r} is not one of the categories {cats}")
            counts[i, index[value]] += 1
    return counts


def cohen_kappa(a: Sequence[object] | np.ndarray, b: Sequence[object] | np.ndarray, categories: Sequence[object] | None = None) -> float:
    """Cohen's kappa of two raters: (p_o - p_e) / (1 - p_e), p_e from the two marginals (Cohen 1960).

    Returns nan when p_e == 1 (both raters used one and the same category throughout).
    """
    x = np.asarray(a)
    y = np.asarray(b)
    if x.shape != y.shape:
        raise ValueError(f"the two raters rated different numbers of subjects ({x.size} vs {y.size})")
    if x.size and categories is None and x.dtype.kind in "iu" and y.dtype.kind in "iu" and min(x.min(), y.min()) >= 0:
        # Fast path for integer codes 0..k-1 (the database's statistics use it).
        return _kappa_from_codes(x.ravel().astype(np.int64), y.ravel().astype(np.int64),
                                 int(max(x.max(), y.max())) + 1)
    x = np.asarray(a, dtype=object).ravel()
    y = np.asarray(b, dtype=object).ravel()
    if x.shape != y.shape:
        raise ValueError(f"the two raters rated different numbers of subjects ({x.size} vs {y.size})")
    if x.size == 0:
        raise ValueError("Cohen's kappa needs at least one subject")
    cats = list(categories) if categories is not None else sorted(set(x.tolist()) | set(y.tolist()), key=str)
    index = {c: i for i, c in enumerate(cats)}
    try:
        xi = np.fromiter((index[v] for v in x), dtype=np.int64, count=x.size)
        yi = np.fromiter((index[v] for v in y), dtype=np.int64, count=y.size)
    except KeyError as exc:
        raise ValueError(f"rating {exc.args[0]!r} is not one of the categories {cats}") from None
    return _kappa_from_codes(xi, yi, len(cats))


def _kappa_from_codes(xi: np.ndarray, yi: np.ndarray, k: int) -> float:
    confusion = np.bincount(xi * k + yi, minlength=k * k).reshape(k, k).astype(np.float64)
    total = confusion.sum()
    p_o = np.trace(confusion) / total
    p_e = float(np.sum(confusion.sum(axis=1) * confusion.sum(axis=0))) / (total * total)
    if p_e == 1.0:
        return float("nan")
    return float((p_o - p_e) / (1.0 - p_e))
