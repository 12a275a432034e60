"""Class-weighted binary cross-entropy (Lee et al. 2019, Eq. 2-3) and its per-label weights."""

from __future__ import annotations

import numpy as np


def class_weights(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-label (alpha_P, alpha_N) from training labels (n, L) of 0/1 (soft labels are rounded).

    Lee et al. 2019, Eq. 3: alpha_P = (|P| + |N|) / (2 |P|), alpha_N = (|P| + |N|) / (2 |N|),
    so a rare label's positives weigh as much in total as its negatives. A label with no
    positive (or no negative) training example gets weight 1 on both sides: Eq. 3 is
    undefined there and the missing side contributes no loss anyway.
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"labels must be a non-empty (n, labels) array, got shape {y.shape}")
    pos = (y >= 0.5).sum(axis=0).astype(np.float64)
    neg = y.shape[0] - pos
    total = pos + neg
    ok = (pos > 0) & (neg > 0)
    alpha_p = np.where(ok, total / (2.0 * np.maximum(pos, 1.0)), 1.0)
    alpha_n = np.where(ok, total / (2.0 * np.maximum(neg, 1.0)), 1.0)
    return alpha_p, alpha_n


def weighted_bce_per_sample(logits, targets, alpha_p, alpha_n, known=None):
    """Lee et al. 2019, Eq. 2 for each sample (torch tensor (n,)): the loss summed over labels.

    L = -sum_c [alpha_P^c y^c ln s(z^c) + alpha_N^c (1 - y^c) ln(1 - s(z^c))]. Written with
    log-sigmoid of the logits z for numerical stability; `targets` may be soft (Eq. 4
    interpolated labels). `known` (same shape, 0/1) drops labels a study CSV does not give.
    """
    import torch.nn.functional as F

    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    per_label = -(alpha_p * targets * log_p + alpha_n * (1.0 - targets) * log_not_p)
    if known is not None:
        per_label = per_label * known
    return per_label.sum(dim=1)


def weighted_bce(logits, targets, alpha_p, alpha_n, known=None, sample_weight=None):
    """Lee et al. 2019, Eq. 2, summed over labels and averaged over the batch (torch tensors).

    `sample_weight` (n,) are importance weights of a stratified sample (mean 1 in expectation),
    so the expected loss stays Eq. 2 over the whole training set.
    """
    per_sample = weighted_bce_per_sample(logits, targets, alpha_p, alpha_n, known)
    if sample_weight is not None:
        per_sample = per_sample * sample_weight
    return per_sample.mean()


def _noisy_or_logs(subtype_logits):
    """(ln q, ln(1 - q)) per sample for the noisy-OR q = 1 - prod_s (1 - s(z_s)) of (n, 5) torch logits."""
    import torch
    import torch.nn.functional as F

    log_not_q = F.logsigmoid(-subtype_logits).sum(dim=1)
    # -expm1(x) for x -> 0- underflows to 0; clamp keeps the log finite (its gradient then vanishes).
    log_q = torch.log(torch.clamp(-torch.expm1(log_not_q), min=1e-12))
    return log_q, log_not_q


def noisy_or_any_bce_per_sample(subtype_logits, any_targets, alpha_p, alpha_n, known=None):
    """Class-weighted BCE of the noisy-OR ANY against the ANY label, per sample (torch (n,)).

    The bundled ensemble reads ANY as q = 1 - prod_s (1 - s(z_s)) over the five subtype logits
    (`ichviewer.inference.findings.apply_any_rule`), but Eq. 2 trains each subtype head alone,
    and the larger Eq. 3 weights of rare subtypes lift their probabilities on normal slices
    (EDH 0.6-0.7 on the highest slice of normal studies), which the noisy-OR multiplies into
    ANY 0.9+ on negatives (models/EXPERIMENTS.md, stop 21). This term trains the quantity the
    app ranks studies by: -[alpha_P y ln q + alpha_N (1 - y) ln(1 - q)], written with
    ln(1 - q) = sum_s ln s(-z_s) and ln q = ln(-expm1(ln(1 - q))) for numerical stability.
    `alpha_p`, `alpha_n` are ANY's Eq. 3 weights; `known` (n,) drops samples without an ANY label.
    """
    log_q, log_not_q = _noisy_or_logs(subtype_logits)
    per_sample = -(alpha_p * any_targets * log_q + alpha_n * (1.0 - any_targets) * log_not_q)
    if known is not None:
        per_sample = per_sample * known
    return per_sample


def noisy_or_any_logit(subtype_logits):
    """The logit of the subtypes' noisy-OR, ln q - ln(1 - q) with q = 1 - prod_s (1 - s(z_s)) (torch (n,)).

    The score the bundled ensemble's ANY is read by (`--any-rule noisy-or`), computed from the
    logits as `noisy_or_any_bce_per_sample` does, so it stays finite where q is near 0 or 1.
    """
    log_q, log_not_q = _noisy_or_logs(subtype_logits)
    return log_q - log_not_q


def twin_rank_loss_per_pair(bleeding_subtype_logits, twin_subtype_logits):
    """Departure 27: ln(1 + exp(a_twin - a_bleed)) per pair (torch (pairs,)), a = `noisy_or_any_logit`.

    A bleeding slice and its counterfactual twin (the same head without the bleed, in the same
    pose) differ only by the blood; the loss is small when the bleeding slice's noisy-OR ANY
    outranks its twin's by a margin and grows linearly when the twin outranks it (the logistic
    pairwise loss of RankNet, Burges et al. 2005, on the score studies are ranked by).
    """
    import torch.nn.functional as F

    return F.softplus(noisy_or_any_logit(twin_subtype_logits) - noisy_or_any_logit(bleeding_subtype_logits))
