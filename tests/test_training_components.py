"""Training recipe parts: Lee et al. Eq. 2-3 weights, Eq. 4 interpolation, augmentation, networks, data sources."""

from __future__ import annotations

import dataclasses

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ichviewer import LABELS
from ichviewer.core.phantom import generate_case
from ichviewer.training.augmentation import (
    AugmentParams,
    affine_warp,
    augment_images,
    draw_augmentation,
    draw_beta,
    interpolate_slices,
    median3x3,
    translation_px,
)
from ichviewer.training.data import (
    LESION_MAP_STRIDE,
    MAP_CHANNELS,
    SPLITS,
    add_twin_negatives,
    concat_caches,
    subset_cases,
    CaseRecord,
    SliceCache,
    TrainingDataError,
    build_dicom_cache,
    build_phantom_cache,
    plan_phantom_cases,
    plans_fingerprint,
    read_training_labels,
    split_by_patient,
)
from ichviewer.training.losses import class_weights, noisy_or_any_bce_per_sample, weighted_bce
from ichviewer.training.networks import FAMILIES, build_network


# --------------------------------------------------------------------------- Eq. 2-3


def test_class_weights_match_lee_eq3_by_hand():
    # 10 slices: IPH 2 positives, IVH 5, SDH 1, EDH none, SAH 9, ANY 6.
    y = np.zeros((10, 6))
    y[:2, 0] = 1
    y[:5, 1] = 1
    y[:1, 2] = 1
    y[:9, 4] = 1
    y[:6, 5] = 1
    ap, an = class_weights(y)
    # alpha_P = (|P|+|N|) / (2|P|), alpha_N = (|P|+|N|) / (2|N|)
    assert ap[0] == pytest.approx(10 / 4) and an[0] == pytest.approx(10 / 16)
    assert ap[1] == pytest.approx(1.0) and an[1] == pytest.approx(1.0)
    assert ap[2] == pytest.approx(10 / 2) and an[2] == pytest.approx(10 / 18)
    assert ap[4] == pytest.approx(10 / 18) and an[4] == pytest.approx(10 / 2)
    assert ap[5] == pytest.approx(10 / 12) and an[5] == pytest.approx(10 / 8)
    # no positive EDH: Eq. 3 is undefined, both weights fall back to 1
    assert ap[3] == 1.0 and an[3] == 1.0


def test_weighted_bce_is_lee_eq2_summed_over_labels():
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.0, -0.5, 1.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.6, 1.0]])  # 0.6: an Eq. 4 soft label
    ap = torch.tensor([2.0, 1.0, 3.0, 1.0, 1.5, 0.8])
    an = torch.tensor([0.5, 1.0, 0.6, 1.0, 0.7, 1.2])
    p = 1 / (1 + np.exp(-logits.numpy()[0]))
    t, a_p, a_n = targets.numpy()[0], ap.numpy(), an.numpy()
    by_hand = -np.sum(a_p * t * np.log(p) + a_n * (1 - t) * np.log(1 - p))
    assert float(weighted_bce(logits, targets, ap, an)) == pytest.approx(by_hand, rel=1e-5)


def test_noisy_or_any_loss_is_weighted_bce_of_one_minus_the_product():
    z = torch.tensor([[0.3, -1.2, 2.0, -4.0, -0.5], [-6.0, -7.0, -5.5, -8.0, -6.5], [-30.0] * 5], dtype=torch.float32)
    y = torch.tensor([1.0, 0.0, 1.0])
    known = torch.tensor([1.0, 1.0, 0.0])
    got = noisy_or_any_bce_per_sample(z, y, 2.0, 0.5, known).numpy()
    p = 1 / (1 + np.exp(-z.numpy().astype(np.float64)))
    q = 1 - np.prod(1 - p, axis=1)  # the noisy-OR ANY of apply_any_rule
    by_hand = -(2.0 * y.numpy() * np.log(q) + 0.5 * (1 - y.numpy()) * np.log(1 - q)) * known.numpy()
    np.testing.assert_allclose(got, by_hand, rtol=1e-4)
    # all subtypes near 0 for a positive: large but finite, and its gradient raises them
    zz = torch.full((1, 5), -30.0, requires_grad=True)
    loss = noisy_or_any_bce_per_sample(zz, torch.tensor([1.0]), 1.0, 1.0).sum()
    assert torch.isfinite(loss)
    zz2 = torch.full((1, 5), -3.0, requires_grad=True)
    noisy_or_any_bce_per_sample(zz2, torch.tensor([1.0]), 1.0, 1.0).sum().backward()
    assert (zz2.grad < 0).all()  # descending the loss raises every subtype logit


# --------------------------------------------------------------------------- Eq. 4


def test_slice_interpolation_images_and_labels_follow_eq4():
    rng = np.random.default_rng(1)
    x, lo, hi = (rng.random((2, 3, 4, 4)).astype(np.float32) for _ in range(3))
    y = np.array([[1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]], np.float32)
    y_lo = np.array([[0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 1]], np.float32)
    y_hi = np.array([[1, 0, 0, 0, 1, 1], [0, 1, 0, 0, 0, 1]], np.float32)
    beta, beta2 = 0.7, 0.9
    imgs, labs = interpolate_slices(x, y, lo, y_lo, hi, y_hi, np.array([False, True]), beta, beta2)
    assert imgs.shape == (6, 3, 4, 4) and labs.shape == (6, 6)
    np.testing.assert_array_equal(imgs[:2], x)
    np.testing.assert_allclose(imgs[2], beta * x[0] + (1 - beta) * lo[0], rtol=1e-6)
    np.testing.assert_allclose(imgs[4], beta * x[0] + (1 - beta) * hi[0], rtol=1e-6)
    np.testing.assert_allclose(labs[2], beta * y[0] + (1 - beta) * y_lo[0], rtol=1e-6)
    np.testing.assert_allclose(labs[4], beta * y[0] + (1 - beta) * y_hi[0], rtol=1e-6)
    # an end slice: its two interpolations use two different ratios
    np.testing.assert_allclose(imgs[3], beta * x[1] + (1 - beta) * lo[1], rtol=1e-6)
    np.testing.assert_allclose(imgs[5], beta2 * x[1] + (1 - beta2) * hi[1], rtol=1e-6)
    np.testing.assert_allclose(labs[5], beta2 * y[1] + (1 - beta2) * y_hi[1], rtol=1e-6)


def test_beta_is_drawn_strictly_inside_half_to_one():
    rng = np.random.default_rng(0)
    betas = np.array([draw_beta(rng) for _ in range(2000)])
    assert betas.min() > 0.5 and betas.max() < 1.0
    assert betas.std() > 0.1  # spread over the range, not a constant


def _cache(n_per_case: list[int]) -> SliceCache:
    n = sum(n_per_case)
    cases, start = [], 0
    for i, k in enumerate(n_per_case):
        cases.append(CaseRecord(f"c{i}", start, start + k, [0] * 6))
        start += k
    lab = np.zeros((n, 6), np.float32)
    return SliceCache(np.zeros((n, 3, 4, 4), np.uint8), lab, np.ones_like(lab), cases, 4)


def test_neighbours_stay_inside_each_case_and_ends_reuse_their_neighbour():
    cache = _cache([3, 4])
    lower, upper, edge = cache.neighbours(np.arange(7))
    # case 0 = rows 0..2, case 1 = rows 3..6; no neighbour crosses from one case to the other
    np.testing.assert_array_equal(lower, [1, 0, 1, 4, 3, 4, 5])
    np.testing.assert_array_equal(upper, [1, 2, 1, 4, 5, 6, 5])
    np.testing.assert_array_equal(edge, [True, False, True, True, False, False, True])


def test_sampled_interpolation_gives_one_image_per_slice_drawn_from_the_three():
    from ichviewer.training.trainer import TrainConfig, _slice_batch

    n = 6
    cases, start = [], 0
    for i in range(2):
        cases.append(CaseRecord(f"c{i}", start, start + 3, [0] * 6))
        start += 3
    images = (np.arange(n, dtype=np.uint8)[:, None, None, None] * 40 + np.zeros((n, 3, 2, 2), np.uint8))
    lab = np.zeros((n, 6), np.float32)
    lab[1] = 1
    cache = SliceCache(images, lab, np.ones_like(lab), cases, 2)
    rows = np.array([0, 1, 2, 3, 4, 5] * 20)
    x_all, y_all, _, _ = _slice_batch(cache, rows, TrainConfig("m", "vgg", interpolate=True), np.random.default_rng(3))
    assert x_all.shape[0] == 3 * rows.size
    x, y, k, _ = _slice_batch(cache, rows, TrainConfig("m", "vgg", interpolation="sample"), np.random.default_rng(3))
    assert x.shape[0] == y.shape[0] == k.shape[0] == rows.size
    # each image is one of the three (original or an Eq. 4 interpolation) made for its own slice
    for i in range(rows.size):
        candidates = x_all[[i, i + rows.size, i + 2 * rows.size]]
        assert any(np.array_equal(x[i], c) for c in candidates)
    originals = sum(np.array_equal(x[i], x_all[i]) for i in range(rows.size))
    assert 0 < originals < rows.size  # a mix, not always the original
    assert TrainConfig("m", "vgg", interpolation="sample").images_per_slice == 1
    with pytest.raises(ValueError, match="interpolation must be"):
        TrainConfig("m", "vgg", interpolation="some")


# --------------------------------------------------------------------------- augmentation


def _head_like(n: int = 4, size: int = 32) -> torch.Tensor:
    yy, xx = np.mgrid[:size, :size]
    disk = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).astype(np.float32)
    img = np.stack([disk * 0.5, disk * 0.8, disk]).astype(np.float32)
    return torch.from_numpy(np.repeat(img[None], n, axis=0))


def test_augmentation_keeps_shape_and_range_and_moves_the_head():
    x = _head_like(64)
    params = draw_augmentation(64, 32, np.random.default_rng(3))
    assert set(np.unique(params.rotation_deg)) <= set(range(-10, 11))
    assert params.scale.min() >= 0.9 and params.scale.max() <= 1.0
    assert np.abs(params.shift_px).max() <= translation_px(32)
    out = augment_images(x, params)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6
    moved = [not torch.allclose(out[i], x[i], atol=1e-3) for i in range(64)]
    assert sum(moved) > 48  # most draws change the image


def test_identity_augmentation_is_identity_and_shift_moves_content():
    x = _head_like(2)
    ident = AugmentParams(np.zeros(2), np.ones(2), np.zeros((2, 2)), np.zeros(2, bool))
    torch.testing.assert_close(augment_images(x, ident), x, atol=1e-5, rtol=0)
    shift = AugmentParams(np.zeros(2), np.ones(2), np.array([[2.0, 0.0], [0.0, 3.0]]), np.zeros(2, bool))
    out = augment_images(x, shift)
    torch.testing.assert_close(out[0, :, :, 2:], x[0, :, :, :-2], atol=1e-5, rtol=0)  # +x moves right
    torch.testing.assert_close(out[1, :, 3:, :], x[1, :, :-3, :], atol=1e-5, rtol=0)  # +y moves down
    # scale 0.9 shrinks the head: fewer bright pixels
    small = augment_images(x, AugmentParams(np.zeros(2), np.full(2, 0.9), np.zeros((2, 2)), np.zeros(2, bool)))
    assert float(small.sum()) < 0.9 * float(x.sum())


def test_translation_scales_with_input_size():
    assert translation_px(512) == 12 and translation_px(128) == 3 and translation_px(160) == 4


def test_median_filter_equals_a_sort_based_median_with_replicated_edges():
    import torch.nn.functional as F

    rng = np.random.default_rng(5)
    # continuous values, and small integers (many ties, where a selection shortcut could slip)
    for x in (rng.random((3, 2, 9, 7)), rng.integers(0, 3, (3, 2, 9, 7))):
        x = torch.from_numpy(x.astype(np.float32))
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        sort_based = F.unfold(padded, kernel_size=3).view(3, 2, 9, 63).median(dim=2).values.view(3, 2, 9, 7)
        torch.testing.assert_close(median3x3(x), sort_based, rtol=0, atol=0)


def test_median_filter_removes_salt_noise_and_keeps_flat_regions():
    img = torch.full((1, 3, 8, 8), 0.4)
    noisy = img.clone()
    noisy[0, :, 3, 4] = 1.0
    torch.testing.assert_close(median3x3(noisy), img)


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize("family", FAMILIES)
def test_networks_end_in_gap_linear_six_logits(family):
    net = build_network(family, width=4).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = net(x)
        assert logits.shape == (2, len(LABELS))
        assert feats.ndim == 4 and feats.shape[1] == net.classifier.in_features
        # logits are exactly linear(GAP(features)): what CAM (Lee et al. Eq. 5) relies on
        torch.testing.assert_close(logits, net.classifier(feats.mean(dim=(2, 3))))


@pytest.mark.parametrize("family", FAMILIES)
def test_input_stem_takes_twice_the_input_and_gives_the_same_feature_grid(family):
    plain = build_network(family, width=4).eval()
    stemmed = build_network(family, width=4, input_stem=True).eval()
    with torch.no_grad():
        _, f_plain = plain(torch.rand(2, 3, 32, 32))
        logits, f_stem = stemmed(torch.rand(2, 3, 64, 64))
    assert f_stem.shape == f_plain.shape  # CAM and atlas features keep their size
    torch.testing.assert_close(logits, stemmed.classifier(f_stem.mean(dim=(2, 3))))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_wide_stem_feeds_all_its_channels_to_the_network(family):
    from ichviewer.training.networks import STEM_CHANNELS

    narrow = build_network(family, width=4, input_stem=True).eval()
    wide = build_network(family, width=4, input_stem=True, wide_stem=True).eval()
    assert isinstance(narrow.body[0][-1], torch.nn.Conv2d) and narrow.body[0][-1].out_channels == 3
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in wide.body[0])
    assert next(m for m in wide.body[1].modules() if isinstance(m, torch.nn.Conv2d)).in_channels == STEM_CHANNELS
    with torch.no_grad():
        _, f_narrow = narrow(torch.rand(2, 3, 64, 64))
        logits, f_wide = wide(torch.rand(2, 3, 64, 64))
    assert f_wide.shape == f_narrow.shape  # CAM and atlas features keep their size
    torch.testing.assert_close(logits, wide.classifier(f_wide.mean(dim=(2, 3))))


def test_a_wide_stem_needs_the_input_stem():
    with pytest.raises(ValueError, match="input stem"):
        build_network("vgg", width=4, wide_stem=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_body_taps_name_the_last_block_at_each_stride(family):
    from ichviewer.training.networks import body_taps

    net = build_network(family, width=4, input_stem=True).train()
    taps = body_taps(net, 64)
    assert net.training  # the dry pass leaves the mode as it found it
    assert set(taps) == {2, 4, 8, 16}
    assert taps[16] == (len(net.body) - 1, net.n_features)  # the coarsest is the last features
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for stride, (index, channels) in taps.items():
            out = net.eval().body[: index + 1](x)
            assert out.shape[1:] == (channels, 64 // stride, 64 // stride)
            if index + 1 < len(net.body):  # the next block is at a coarser stride: this is the last at this one
                assert net.body[: index + 2](x).shape[-1] < out.shape[-1]


def test_unknown_family_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="vgg, resnet, inception, mobilenet"):
        build_network("alexnet")


# --------------------------------------------------------------------------- phantom plans


def test_phantom_splits_never_share_a_case_and_cover_the_mix():
    plans = {s: plan_phantom_cases(40, s, seed=0) for s in SPLITS}
    seeds = {s: {p.seed for p in ps} for s, ps in plans.items()}
    assert not (seeds["train"] & seeds["validation"]) and not (seeds["train"] & seeds["test"])
    assert not (seeds["validation"] & seeds["test"])
    other_run = {p.seed for p in plan_phantom_cases(40, "train", seed=1)}
    assert not (other_run & seeds["train"])
    train = plans["train"]
    assert {p.subtype for p in train} >= {"IPH", "IVH", "SDH", "EDH", "SAH", "mixed", "none"}
    assert {p.mimic for p in train if p.subtype == "none"} >= {"calcification", "metal", "beam-hardening"}
    assert {p.age for p in train} == {"adult", "child"} and {p.slice_mm for p in train} == {1.0, 5.0}
    assert sum(p.subtype != "none" for p in train) == 20  # balanced
    assert plan_phantom_cases(40, "train", seed=0) == train  # reproducible
    assert {p.thickness_planes for p in train} == {1}  # the generator's centre plane by default


def test_thickness_planes_reach_the_5mm_plans_their_twins_and_the_cache():
    from ichviewer.training.data import add_twin_negatives

    plans = add_twin_negatives(plan_phantom_cases(20, "train", seed=0, thickness_planes=5))
    assert {p.thickness_planes for p in plans if p.slice_mm == 5.0} == {5}
    assert {p.thickness_planes for p in plans if p.slice_mm == 1.0} == {1}  # thin slices are thin already
    twins = [p for p in plans if p.kind.endswith("twin")]
    assert twins and all(t.thickness_planes == (5 if t.slice_mm == 5.0 else 1) for t in twins)
    one = [p for p in plans if p.slice_mm == 5.0][:1]
    flat = [dataclasses.replace(one[0], thickness_planes=1)]
    a, b = build_phantom_cache(one, input_size=32, matrix=64), build_phantom_cache(flat, input_size=32, matrix=64)
    assert a.images.shape == b.images.shape and not np.array_equal(a.images, b.images)
    assert plans_fingerprint(one, 32, 64) != plans_fingerprint(flat, 32, 64)


def test_thickness_planes_can_be_mixed_per_case():
    from ichviewer.commands.phantom import thickness_planes_arg
    from ichviewer.training.data import add_twin_negatives, thickness_plane_choices

    plans = add_twin_negatives(plan_phantom_cases(120, "train", seed=0, thickness_planes=(1, 3)))
    thick = [p for p in plans if p.slice_mm == 5.0 and not p.kind.endswith("twin")]
    got = [p.thickness_planes for p in thick]
    assert set(got) == {1, 3} and 0.3 < got.count(3) / len(got) < 0.7  # drawn per case, about half each
    # not tied to the subtype cycle: bleeds and normal heads both come in both kinds
    for bleeds in (True, False):
        assert {p.thickness_planes for p in thick if (p.subtype != "none") == bleeds} == {1, 3}
    assert {p.thickness_planes for p in plans if p.slice_mm == 1.0} == {1}
    twins = {p.seed: p.thickness_planes for p in plans if p.kind.endswith("twin")}
    assert all(twins[p.seed] == p.thickness_planes for p in plans if p.seed in twins and not p.kind.endswith("twin"))
    assert plan_phantom_cases(120, "train", seed=0, thickness_planes=(1, 3)) == plan_phantom_cases(
        120, "train", seed=0, thickness_planes=[1, 3])  # reproducible
    # one value is the old behaviour, as int or as text
    assert plan_phantom_cases(30, "train", seed=0, thickness_planes=(3,)) == plan_phantom_cases(30, "train", seed=0, thickness_planes=3)
    assert thickness_planes_arg("3") == 3 and thickness_planes_arg("1, 3") == (1, 3)
    assert thickness_plane_choices("1,5") == (1, 5)
    for bad, words in (("1,x", "integers separated by commas"), ("0", "thickness_planes"), ("", "integers")):
        with pytest.raises(ValueError, match=words):
            thickness_plane_choices(bad)


def test_phantom_cache_matches_the_phantom_labels_and_inference_preprocessing():
    from ichviewer.core.windowing import LEE_WINDOWS
    from ichviewer.inference.preprocessing import geometry_for, preprocess_slices

    plans = [p for p in plan_phantom_cases(3, "train", seed=7)]
    cache = build_phantom_cache(plans, input_size=32, matrix=64)
    assert [c.case_id for c in cache.cases] == [f"phantom-{p.seed}" for p in plans]
    case = generate_case(plans[0].seed, subtype=plans[0].subtype, mimic=plans[0].mimic, matrix=64)
    c0 = cache.cases[0]
    assert c0.n_slices == case.volume.n_slices
    expected_labels = np.array([[d[lab] for lab in LABELS] for d in case.slice_labels])
    np.testing.assert_array_equal(cache.labels[c0.start : c0.stop], expected_labels)
    x = preprocess_slices(case.volume.hu, geometry_for(case.volume, (32, 32)), LEE_WINDOWS)
    # the cache holds the engine's own model inputs, quantised to 8 bits like the paper's window images
    assert np.abs(cache.float_images(np.arange(c0.start, c0.stop)) - x).max() <= 0.5 / 255 + 1e-6
    assert cache.cases[0].labels == list(expected_labels.max(axis=0))


def test_invisible_positive_slice_labels_can_be_left_out_of_the_loss():
    # Departure 24: SDH 2 mL, seed 0, matrix 128 has 5 slices with visible blood and 1 whose blood
    # lies wholly in the inner table's partial-volume edge.
    from ichviewer.core.phantom import visible_blood_by_slice
    from ichviewer.training.data import CasePlan, invisible_positive_mask

    plan = CasePlan(0, "SDH", volume_ml=2.0, kind="SDH")
    plain = build_phantom_cache([plan], input_size=32, matrix=128)
    cleaned = build_phantom_cache([plan], input_size=32, matrix=128, ignore_invisible=True)
    np.testing.assert_array_equal(cleaned.labels, plain.labels)  # labels, and so case labels, unchanged
    assert cleaned.cases[0].labels == plain.cases[0].labels and plain.known.all()
    case = generate_case(0, subtype="SDH", volume_ml=2.0, matrix=128)
    expected = invisible_positive_mask(plain.labels, visible_blood_by_slice(case))
    np.testing.assert_array_equal(cleaned.known == 0, expected)
    sdh, any_ = LABELS.index("SDH"), LABELS.index("ANY")
    assert expected[:, sdh].sum() == 1 and expected[:, any_].sum() == 1  # the one invisible slice
    assert (plain.labels[:, sdh] * cleaned.known[:, sdh]).sum() == 5  # the visible ones stay positive and known
    assert cleaned.meta["ignore_invisible"] is True and "ignore_invisible" not in plain.meta
    key = plans_fingerprint([plan], 32, 128)
    assert plans_fingerprint([plan], 32, 128, ignore_invisible=True) != key  # never read from the other cache


# --------------------------------------------------------------------------- lesion maps (departure 19)


def test_lesion_maps_mark_each_subtype_where_the_blood_is():
    from ichviewer.core.windowing import INPUT_WINDOW_SETS

    size = 64
    plans = add_twin_negatives([p for p in plan_phantom_cases(8, "train", seed=11) if p.subtype not in (None, "none")][:3])
    cache = build_phantom_cache(plans, size, matrix=128, windows=INPUT_WINDOW_SETS["brain-subdural-bone"], crop="head",
                                with_maps=True)
    m = size // LESION_MAP_STRIDE
    assert cache.maps.shape == (cache.n_slices, 5, m, m) and cache.maps.dtype == np.uint8
    # a subtype's map is non-zero exactly on the slices labelled with it
    np.testing.assert_array_equal(cache.maps.max(axis=(2, 3)) > 0, cache.labels[:, :5] > 0)
    # and where it is non-zero is where the image differs from the same head without the bleed (its twin)
    by_id = {c.case_id: c for c in cache.cases}
    checked = 0
    for c in cache.cases:
        twin = by_id.get(f"{c.case_id}-twin")
        if twin is None:
            continue
        for r in range(c.n_slices):
            if cache.labels[c.start + r, 5] == 0:
                continue
            diff = np.abs(cache.images[c.start + r].astype(int) - cache.images[twin.start + r].astype(int)).max(axis=0)
            cells = diff.reshape(m, LESION_MAP_STRIDE, m, LESION_MAP_STRIDE).max(axis=(1, 3))
            iy, ix = np.unravel_index(np.argmax(cells), cells.shape)
            assert cache.maps[c.start + r, :, iy, ix].max() > 0
            checked += 1
    assert checked >= 3


def test_mimic_maps_add_a_sixth_channel_where_the_mimic_is():
    """Departure 33: the mimic's map follows its mask on the input grid; the subtypes' maps are unchanged."""
    from ichviewer.training.data import lesion_maps

    size = 64
    plans = [p for p in plan_phantom_cases(60, "train", seed=11) if p.mimic and p.slice_mm == 5.0][:3]
    assert {p.mimic for p in plans} and len(plans) == 3
    plain = build_phantom_cache(plans, size, matrix=128, with_maps=True)
    cache = build_phantom_cache(plans, size, matrix=128, with_maps=True, with_mimic=True)
    m = size // LESION_MAP_STRIDE
    assert MAP_CHANNELS[-1] == "mimic" and cache.has_mimic_maps and not plain.has_mimic_maps
    assert cache.maps.shape == (cache.n_slices, 6, m, m)
    np.testing.assert_array_equal(cache.maps[:, :5], plain.maps)
    assert cache.fingerprint() != plain.fingerprint()
    assert plans_fingerprint(plans, size, 128, with_maps=True, with_mimic=True) != plans_fingerprint(plans, size, 128, with_maps=True)
    for rec, plan in zip(cache.cases, plans):
        case = plan.generate(128)
        on = case.mimic_mask.any(axis=(1, 2))
        # non-zero on exactly the slices the mimic is on (a grazed slice may round to 0 on the coarse grid)
        mapped = cache.maps[rec.start : rec.stop, 5].max(axis=(1, 2)) > 0
        assert not (mapped & ~on).any() and mapped.sum() >= max(1, on.sum() // 2)
    # a case without a mimic has an empty mimic channel
    clean = [p for p in plan_phantom_cases(20, "train", seed=11) if not p.mimic][:1]
    assert lesion_maps(clean[0].generate(128), size, with_mimic=True)[:, 5].max() == 0


def test_lesion_maps_survive_save_load_subset_and_concat(tmp_path):
    plain = _cache([2, 3])
    m = 16 // LESION_MAP_STRIDE
    cache = SliceCache(np.zeros((5, 3, 16, 16), np.uint8), plain.labels, plain.known, plain.cases, 16,
                       maps=np.random.default_rng(0).integers(0, 256, (5, 5, m, m)).astype(np.uint8))
    cache.save(tmp_path / "c.npz")
    back = SliceCache.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.maps, cache.maps)
    np.testing.assert_array_equal(subset_cases(cache, [1]).maps, cache.maps[2:])
    np.testing.assert_array_equal(concat_caches([cache, cache]).maps, np.concatenate([cache.maps, cache.maps]))
    other = _cache([1])
    other = SliceCache(np.zeros((1, 3, 16, 16), np.uint8), other.labels, other.known, other.cases, 16)
    assert concat_caches([cache, other]).maps is None  # a part without maps: none
    with pytest.raises(ValueError, match="maps must be uint8"):
        SliceCache(cache.images, cache.labels, cache.known, cache.cases, 16, maps=cache.maps[:, :, :1])
    six = np.concatenate([cache.maps, cache.maps[:, :1]], axis=1)  # with the mimic channel (departure 33)
    back = SliceCache(cache.images, cache.labels, cache.known, cache.cases, 16, maps=six)
    back.save(tmp_path / "m.npz")
    assert SliceCache.load(tmp_path / "m.npz").has_mimic_maps and not cache.has_mimic_maps
    with pytest.raises(ValueError, match="maps must be uint8"):
        SliceCache(cache.images, cache.labels, cache.known, cache.cases, 16, maps=np.concatenate([six, six], axis=1))


def test_a_lesion_map_moves_with_its_image_under_augmentation():
    image = torch.zeros(1, 1, 64, 64)
    image[0, 0, 16:24, 24:32] = 1.0  # map cell (2, 3) at stride 8
    lesion = torch.zeros(1, 1, 8, 8)
    lesion[0, 0, 2, 3] = 1.0
    shift = AugmentParams(np.zeros(1), np.ones(1), np.array([[8.0, -16.0]]), np.zeros(1, bool))
    moved_image = augment_images(image, shift)
    moved_map = affine_warp(lesion, shift, (64, 64))
    assert float(moved_image[0, 0, 0:8, 32:40].min()) > 0.99 and float(moved_image.sum()) == pytest.approx(64.0)
    assert float(moved_map[0, 0, 0, 4]) == pytest.approx(1.0) and float(moved_map.sum()) == pytest.approx(1.0)
    # with rotation and scale too, the map's peak stays on the image's block
    params = AugmentParams(np.array([7.0]), np.array([0.93]), np.array([[5.0, -3.0]]), np.zeros(1, bool))
    cells = augment_images(image, params)[0, 0].reshape(8, 8, 8, 8).sum(dim=(1, 3))
    peak = np.unravel_index(int(torch.argmax(affine_warp(lesion, params, (64, 64))[0, 0])), (8, 8))
    assert peak == np.unravel_index(int(torch.argmax(cells)), (8, 8))


def test_lesion_map_loss_weighs_blood_and_background_equally_and_any_is_the_union():
    from ichviewer.training.trainer import lesion_map_loss, lesion_map_targets

    maps = torch.zeros(2, 5, 4, 4)
    maps[0, 2, 1, 1] = 1.0  # one SDH cell
    maps[1, 0, 3, 3] = 0.5  # half an IPH cell
    t = lesion_map_targets(maps, (2, 2))
    assert t.shape == (2, 6, 2, 2)
    assert float(t[0, 2, 0, 0]) == 1.0 and float(t[1, 0, 1, 1]) == 0.5
    torch.testing.assert_close(t[:, 5], t[:, :5].max(dim=1).values)
    z = torch.zeros(2, 6, 2, 2)  # every cell at p = 0.5: each mean is ln 2
    ln2 = math.log(2.0)
    # SDH and ANY (1.5 cells of blood): ln 2 + ln 2; IPH: less than one cell of blood counts by
    # its mass (0.5 ln 2), plus the background's ln 2; IVH, EDH, SAH: background only
    expected = (2 * ln2 * 2 + 1.5 * ln2 + ln2 * 3) / 6
    assert float(lesion_map_loss(z, t)) == pytest.approx(expected, rel=1e-6)
    # one blood cell weighs as much as all the background: raising only it lowers the loss by half its term
    z2 = z.clone()
    z2[0, 2, 0, 0] = 20.0
    assert float(lesion_map_loss(z, t) - lesion_map_loss(z2, t)) == pytest.approx(ln2 / 6, rel=1e-3)


def test_the_mimic_map_loss_reads_the_head_s_last_channel_against_the_mimic_map():
    from ichviewer.training.trainer import TrainConfig, auxiliary_map_loss, lesion_map_loss, lesion_map_targets

    maps = torch.zeros(2, 6, 4, 4)
    maps[0, 2, 1, 1] = 1.0  # one SDH cell
    maps[1, 5, 2, 2] = 1.0  # one calcification cell
    z = torch.randn(2, 7, 2, 2)
    base = dict(name="t", family="resnet", width=4, input_size=32)
    both = TrainConfig(**base, lesion_map_weight=3.0, mimic_map_weight=0.5)
    mimic = torch.nn.functional.adaptive_max_pool2d(maps[:, 5:], (2, 2))
    expected = 3.0 * lesion_map_loss(z[:, :6], lesion_map_targets(maps[:, :5], (2, 2))) + 0.5 * lesion_map_loss(z[:, 6:], mimic)
    assert float(auxiliary_map_loss(z, maps, both)) == pytest.approx(float(expected), rel=1e-6)
    only = TrainConfig(**base, mimic_map_weight=2.0)  # a head of one channel, the mimic's
    assert float(auxiliary_map_loss(z[:, 6:], maps, only)) == pytest.approx(float(2.0 * lesion_map_loss(z[:, 6:], mimic)), rel=1e-6)
    assert float(mimic[1, 0, 1, 1]) == 1.0 and float(mimic[0].sum()) == 0.0
    assert only.uses_maps and not TrainConfig(**base).uses_maps
    assert "mimic_map_weight" not in TrainConfig(**base).fingerprint()  # older checkpoints still resume
    with pytest.raises(ValueError, match="mimic map weight"):
        TrainConfig(**base, mimic_map_weight=-1.0)
    TrainConfig(**base, mimic_map_weight=1.0, input_stem=True, lesion_map_stride=8)  # a stride needs either weight


# --------------------------------------------------------------------------- DICOM + CSV


def _write_studies(tmp_path: Path, seeds_subtypes) -> tuple[Path, list]:
    from ichviewer.commands.phantom import write_phantom

    root = tmp_path / "dicom"
    cases = []
    for seed, subtype in seeds_subtypes:
        case = generate_case(seed, subtype=subtype, matrix=64)
        write_phantom(root / f"case{seed}", case)
        cases.append(case)
    return root, cases


def test_dicom_folder_with_per_slice_csv_trains_on_slice_labels(tmp_path):
    root, cases = _write_studies(tmp_path, [(11, "SDH"), (12, "none")])
    csv_path = tmp_path / "labels.csv"
    lines = ["Series_UID,slice_index,ANY,IPH,IVH,SDH,EDH,SAH"]
    for case in cases:
        for i, d in enumerate(case.slice_labels):
            lines.append(",".join([case.volume.series_uid, str(i)] + [str(d[k]) for k in ("ANY", "IPH", "IVH", "SDH", "EDH", "SAH")]))
    csv_path.write_text("\n".join(lines) + "\n")
    cache = build_dicom_cache(root, csv_path, input_size=32)
    assert cache.slice_labelled and len(cache.cases) == 2
    by_uid = {c.case_id: c for c in cache.cases}
    for case in cases:
        rec = by_uid[case.volume.series_uid]
        expected = np.array([[d[lab] for lab in LABELS] for d in case.slice_labels])
        np.testing.assert_array_equal(cache.labels[rec.start : rec.stop], expected)


def test_dicom_folder_with_study_csv_is_study_labelled_and_subtypes_unknown(tmp_path):
    root, cases = _write_studies(tmp_path, [(21, "IPH")])
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(f"study_uid,any\n{cases[0].volume.study_uid},1\n")
    cache = build_dicom_cache(root, csv_path, input_size=32)
    assert not cache.slice_labelled
    assert cache.cases[0].labels[LABELS.index("ANY")] == 1
    np.testing.assert_array_equal(cache.known[0], [0, 0, 0, 0, 0, 1])  # only ANY is known


def test_dicom_training_refuses_to_save_its_cache_on_a_full_disk(tmp_path, monkeypatch):
    import shutil as shutil_module

    from ichviewer.training import recipe

    root, cases = _write_studies(tmp_path, [(31, "SDH")])
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(f"study_uid,any\n{cases[0].volume.study_uid},1\n")
    config = recipe.RecipeConfig(
        out=tmp_path / "out", work_dir=tmp_path / "work", source="dicom", data_dir=root, labels_csv=csv_path, input_size=32
    )
    full = shutil_module.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(recipe.shutil, "disk_usage", lambda path: full)
    with pytest.raises(TrainingDataError, match=r"cache: the training caches need about 0\.\d GB and the disk has 0\.0 GB free"):
        recipe.load_data(config)
    assert not list((tmp_path / "work" / "cache").iterdir())


def test_labels_csv_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "l.csv"
    bad.write_text("series_uid,slice_index,any\n1.2.3,0,1\n1.2.3,x,0\n")
    with pytest.raises(TrainingDataError, match=r"l\.csv, line 3, column slice_index"):
        read_training_labels(bad)
    bad.write_text("series_uid,iph\n1.2.3,1\n")
    with pytest.raises(TrainingDataError, match="no 'any' column"):
        read_training_labels(bad)
    bad.write_text("series_uid,any\n1.2.3,2\n")
    with pytest.raises(TrainingDataError, match="expected 0 or 1"):
        read_training_labels(bad)


def test_split_by_patient_keeps_each_patient_in_one_split():
    n_cases = 40
    cases, start = [], 0
    for i in range(n_cases):
        lab = [0] * 5 + [i % 2]
        cases.append(CaseRecord(f"s{i}", start, start + 2, lab, patient_id=f"p{i // 2}"))
        start += 2
    lab = np.zeros((start, 6), np.float32)
    cache = SliceCache(np.zeros((start, 3, 4, 4), np.uint8), lab, np.ones_like(lab), cases, 4)
    parts = split_by_patient(cache, seed=0)
    owners = {}
    for split, part in parts.items():
        for c in part.cases:
            owners.setdefault(c.patient_id, set()).add(split)
    assert all(len(s) == 1 for s in owners.values())
    assert sum(len(p.cases) for p in parts.values()) == n_cases
    assert len(parts["train"].cases) > len(parts["validation"].cases) > 0
    assert math.isclose(sum(len(p.cases) for p in parts.values()), n_cases)


def test_stratified_sampler_keeps_the_expected_loss_of_uniform_sampling():
    from ichviewer.training.trainer import StratifiedSampler

    # 100 slices, 10 with haemorrhage: batches are half positive, weights undo the enrichment
    n = 100
    lab = np.zeros((n, 6), np.float32)
    lab[:10, 5] = 1
    cache = SliceCache(np.zeros((n, 3, 4, 4), np.uint8), lab, np.ones_like(lab), [CaseRecord("c", 0, n, [0] * 6)], 4)
    sampler = StratifiedSampler(cache, np.arange(n), 0.5, np.random.default_rng(0))
    rows, w = sampler.batch(16)
    assert (lab[rows, 5] == 1).sum() == 8
    np.testing.assert_allclose(w[lab[rows, 5] == 1], 0.1 / 0.5)
    np.testing.assert_allclose(w[lab[rows, 5] == 0], 0.9 / 0.5)
    # over many batches, the weighted share of positives equals their share of the data
    rows_all, w_all = zip(*(sampler.batch(16) for _ in range(200)))
    rows_all, w_all = np.concatenate(rows_all), np.concatenate(w_all)
    assert float((w_all * lab[rows_all, 5]).sum() / w_all.sum()) == pytest.approx(0.1)
    # every negative slice is drawn once before any is drawn twice
    fresh = StratifiedSampler(cache, np.arange(n), 0.5, np.random.default_rng(1))
    drawn = np.concatenate([fresh.batch(16)[0] for _ in range(12)])
    neg = drawn[lab[drawn, 5] == 0][:90]
    assert sorted(neg) == list(range(10, 100))
    uniform = StratifiedSampler(cache, np.arange(n), 0.0, np.random.default_rng(0))
    rows_u, w_u = uniform.batch(16)
    assert np.all(w_u == 1)


def test_case_balanced_positives_give_every_bleeding_case_the_same_share():
    from ichviewer.training.trainer import StratifiedSampler, case_balanced_probabilities

    # three bleeding cases of 10 slices with 1, 4 and 9 positive slices (a punctate, a small
    # and a large bleed), and three normal cases
    lab = np.zeros((60, 6), np.float32)
    cases = []
    for i in range(6):
        cases.append(CaseRecord(f"c{i}", 10 * i, 10 * i + 10, [0] * 5 + [int(i < 3)]))
    lab[0:1, 5] = 1
    lab[10:14, 5] = 1
    lab[20:29, 5] = 1
    cache = SliceCache(np.zeros((60, 3, 4, 4), np.uint8), lab, np.ones_like(lab), cases, 4)
    pos = np.flatnonzero(lab[:, 5] == 1)
    p = case_balanced_probabilities(cache, pos)
    np.testing.assert_allclose([p[pos < 10].sum(), p[(pos >= 10) & (pos < 20)].sum(), p[pos >= 20].sum()], [1 / 3] * 3)

    def shares(mode):
        sampler = StratifiedSampler(cache, np.arange(60), 0.5, np.random.default_rng(0), positive_sampling=mode)
        rows, w = zip(*(sampler.batch(16) for _ in range(300)))
        rows, w = np.concatenate(rows), np.concatenate(w)
        drawn = rows[lab[rows, 5] == 1]
        # the importance weights are the stratified sampler's in both modes
        np.testing.assert_allclose(np.unique(w[lab[rows, 5] == 1]), (14 / 60) / 0.5)
        return np.bincount(drawn // 10, minlength=3)[:3] / drawn.size

    by_slice, by_case = shares("slice"), shares("case")
    np.testing.assert_allclose(by_slice, [1 / 14, 4 / 14, 9 / 14], atol=0.01)  # the punctate bleed: 7 %
    np.testing.assert_allclose(by_case, [1 / 3] * 3, atol=0.03)  # every case a third
    with pytest.raises(ValueError, match="positive sampling"):
        StratifiedSampler(cache, np.arange(60), 0.5, np.random.default_rng(0), positive_sampling="lesion")
    # a checkpoint made before the option existed (no key) still matches the default
    from ichviewer.training.trainer import TrainConfig

    assert "positive_sampling" not in TrainConfig("m", "vgg").fingerprint()
    assert TrainConfig("m", "vgg", positive_sampling="case").fingerprint()["positive_sampling"] == "case"


def _thin_and_thick_cache():
    """A thin SAH case (30 slabs, 24 bleeding), a thin normal case (10), three 5 mm cases with 2, 3 and 1
    bleeding slices, and four 5 mm normal cases (10 each): 24 of 30 positive slices thin, 16 of 80
    negative slices thin. Returns (cache, labels, number of slices)."""
    sizes = [(30, 24, 1.0), (10, 0, 1.0), (10, 2, 5.0), (10, 3, 5.0), (10, 1, 5.0), (10, 0, 5.0), (10, 0, 5.0), (10, 0, 5.0), (10, 0, 5.0)]
    n = sum(size for size, _, _ in sizes)
    lab = np.zeros((n, 6), np.float32)
    cases, start = [], 0
    for i, (size, bleeding, mm) in enumerate(sizes):
        lab[start:start + bleeding, 5] = 1
        cases.append(CaseRecord(f"c{i}", start, start + size, [0] * 5 + [int(bleeding > 0)], slice_mm=mm))
        start += size
    cache = SliceCache(np.zeros((n, 3, 4, 4), np.uint8), lab, np.ones_like(lab), cases, 4)
    return cache, lab, n


def test_thickness_matched_positives_make_thin_slices_as_common_among_positives_as_among_negatives():
    """Departure 31: a thin series' bleed spans many slabs, so thin slices crowd the positive draws;
    matched, their share of the positives is the negatives' share, with the same importance weights."""
    from ichviewer.training.trainer import StratifiedSampler, thickness_matched_probabilities

    cache, lab, n = _thin_and_thick_cache()
    thin = np.zeros(n, bool)
    thin[:40] = True
    pos, neg = np.flatnonzero(lab[:, 5] == 1), np.flatnonzero(lab[:, 5] == 0)
    assert thin[pos].mean() == pytest.approx(0.8) and thin[neg].mean() == pytest.approx(0.2)
    p = thickness_matched_probabilities(cache, pos, neg)
    assert p[thin[pos]].sum() == pytest.approx(0.2) and np.ptp(p[thin[pos]]) == 0 and np.ptp(p[~thin[pos]]) == 0

    def thin_share_of_positive_draws(mode):
        sampler = StratifiedSampler(cache, np.arange(n), 0.5, np.random.default_rng(0), positive_sampling=mode)
        rows, w = zip(*(sampler.batch(16) for _ in range(400)))
        rows, w = np.concatenate(rows), np.concatenate(w)
        positive = lab[rows, 5] == 1
        np.testing.assert_allclose(np.unique(w[positive]), (30 / n) / 0.5)  # the sampler's weights either way
        return thin[rows[positive]].mean(), thin[rows[~positive]].mean()

    as_they_come, matched = thin_share_of_positive_draws("slice"), thin_share_of_positive_draws("thickness")
    assert as_they_come[0] == pytest.approx(0.8, abs=0.02) and as_they_come[1] == pytest.approx(0.2, abs=0.02)
    assert matched[0] == pytest.approx(0.2, abs=0.03) and matched[1] == pytest.approx(0.2, abs=0.02)
    # nothing to match: every positive of one thickness
    only_thick = pos[~thin[pos]]
    np.testing.assert_allclose(thickness_matched_probabilities(cache, only_thick, neg), 1 / only_thick.size)


def test_thickness_weighted_positives_draw_as_they_come_and_weight_thin_positives_to_the_negatives_share():
    """Departure 32: the same draws as "slice"; thin positives' weights scaled by the odds ratio, so the
    weighted thin share of the positives is the negatives'; 5 mm positives and all negatives untouched."""
    from ichviewer.training.trainer import StratifiedSampler, thin_positive_weight_factor, thin_rows

    cache, lab, n = _thin_and_thick_cache()
    thin = thin_rows(cache)
    assert thin[:40].all() and not thin[40:].any()
    pos, neg = np.flatnonzero(lab[:, 5] == 1), np.flatnonzero(lab[:, 5] == 0)
    f = thin_positive_weight_factor(thin[pos], thin[neg])
    assert f == pytest.approx((0.2 / 0.8) / (0.8 / 0.2))  # odds of thin among negatives / among positives
    assert f * 0.8 / (f * 0.8 + 0.2) == pytest.approx(0.2)

    def draws(mode):
        sampler = StratifiedSampler(cache, np.arange(n), 0.5, np.random.default_rng(0), positive_sampling=mode)
        rows, w = zip(*(sampler.batch(16) for _ in range(400)))
        return np.concatenate(rows), np.concatenate(w)

    (rows_slice, w_slice), (rows, w) = draws("slice"), draws("thickness-weight")
    np.testing.assert_array_equal(rows, rows_slice)  # draw for draw the recipe's rows
    positive = lab[rows, 5] == 1
    base = (30 / n) / 0.5
    np.testing.assert_allclose(w[positive & thin[rows]], base * f, rtol=1e-6)
    np.testing.assert_allclose(w[positive & ~thin[rows]], base, rtol=1e-6)
    np.testing.assert_array_equal(w[~positive], w_slice[~positive])
    weighted_thin_share = w[positive & thin[rows]].sum() / w[positive].sum()
    assert weighted_thin_share == pytest.approx(thin[rows[~positive]].mean(), abs=0.03)
    # nothing to match: positives (or negatives) all of one thickness
    assert thin_positive_weight_factor(thin[pos][~thin[pos]], thin[neg]) == 1.0
    assert thin_positive_weight_factor(thin[pos], np.zeros(5, bool)) == 1.0


def test_hard_example_draws_follow_the_last_loss_and_the_walk_still_covers_every_slice():
    from ichviewer.training.trainer import StratifiedSampler

    n = 100
    lab = np.zeros((n, 6), np.float32)
    lab[:10, 5] = 1
    cache = SliceCache(np.zeros((n, 3, 4, 4), np.uint8), lab, np.ones_like(lab), [CaseRecord("c", 0, n, [0] * 6)], 4)
    sampler = StratifiedSampler(cache, np.arange(n), 0.5, np.random.default_rng(0), hard_fraction=0.5)
    # before anything is seen, no draw is by loss: the first pass is the plain walk
    first = np.concatenate([sampler.batch(16)[0] for _ in range(12)])
    assert sorted(first[lab[first, 5] == 0][:90]) == list(range(10, 100))
    # every row seen: negative 42 had a loss 10,000x the others, positive 3 likewise
    losses = np.full(n, 0.01, np.float32)
    losses[42], losses[3] = 100.0, 100.0
    sampler.record(np.arange(n), losses)
    rows = np.concatenate([sampler.batch(16)[0] for _ in range(50)])
    # the hard share (4 of 8 negatives, 4 of 8 positives per batch) goes almost all to the hard rows
    assert (rows == 42).sum() > 0.9 * 50 * 4
    assert (rows == 3).sum() > 0.9 * 50 * 4
    # the walk goes on: the other negatives keep coming
    assert len(set(rows[lab[rows, 5] == 0].tolist())) > 80
    # a loss per image (3 images per slice with --interpolation all) is averaged per row
    sampler.record(np.array([42, 43]), np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert sampler.loss[42] == pytest.approx(3.0) and sampler.loss[43] == pytest.approx(4.0)
    # the losses survive a checkpoint round trip
    again = StratifiedSampler(cache, np.arange(n), 0.5, np.random.default_rng(5), hard_fraction=0.5)
    again.restore(sampler.state())
    np.testing.assert_array_equal(again.loss, sampler.loss)
    with pytest.raises(ValueError, match="hard-example fraction"):
        StratifiedSampler(cache, np.arange(n), 0.5, np.random.default_rng(0), hard_fraction=1.0)


def test_hard_negative_mining_leaves_the_positives_walk_alone():
    """--hard-stratum negative: the negatives' quota has its hard share, the positives' none."""
    from ichviewer.training.trainer import StratifiedSampler, TrainConfig

    n = 100
    lab = np.zeros((n, 6), np.float32)
    lab[:10, 5] = 1
    cache = SliceCache(np.zeros((n, 3, 4, 4), np.uint8), lab, np.ones_like(lab), [CaseRecord("c", 0, n, [0] * 6)], 4)
    sampler = StratifiedSampler(cache, np.arange(n), 0.5, np.random.default_rng(0), hard_fraction=0.5,
                                hard_stratum="negative")
    losses = np.full(n, 0.01, np.float32)
    losses[42], losses[3] = 100.0, 100.0
    sampler.record(np.arange(n), losses)
    rows = np.concatenate([sampler.batch(16)[0] for _ in range(50)])
    pos = rows[lab[rows, 5] == 1]
    # negatives: half of 8 per batch go to the hard row; positives: the plain walk, each of the 10 alike
    assert (rows == 42).sum() > 0.9 * 50 * 4
    assert np.bincount(pos, minlength=10)[:10].tolist() == [40] * 10
    with pytest.raises(ValueError, match="hard-example stratum"):
        StratifiedSampler(cache, np.arange(n), 0.5, np.random.default_rng(0), hard_fraction=0.5, hard_stratum="positive")
    # a checkpoint made before the option existed (no key) still matches the default
    assert "hard_stratum" not in TrainConfig("m", "vgg").fingerprint()
    assert TrainConfig("m", "vgg", hard_stratum="negative").fingerprint()["hard_stratum"] == "negative"


def test_twin_negatives_are_the_same_heads_without_the_bleed():
    from ichviewer.training.data import TWIN_TAG, add_twin_negatives

    plans = plan_phantom_cases(4, "train", seed=5)  # IPH, none, SDH, none+calcification
    with_twins = add_twin_negatives(plans)
    assert [p.kind for p in with_twins] == [
        "IPH 5mm", f"none 5mm {TWIN_TAG}", "none 5mm", "SDH 5mm", f"none 5mm {TWIN_TAG}", "none 5mm calcification"
    ]
    twin = with_twins[1]
    assert (twin.seed, twin.subtype, twin.volume_ml) == (plans[0].seed, "none", None)
    cache = build_phantom_cache(with_twins[:2], input_size=32, matrix=64)
    pos, neg = cache.cases
    assert pos.labels[LABELS.index("ANY")] == 1 and neg.labels == [0] * len(LABELS)
    assert neg.case_id == f"{pos.case_id}-{TWIN_TAG}" and neg.patient_id == pos.patient_id
    # the same scan: only the pixels of the bleed (and its edges) differ
    a = cache.images[pos.start : pos.stop].astype(int)
    b = cache.images[neg.start : neg.stop].astype(int)
    assert a.shape == b.shape and 0 < (a != b).mean() < 0.1
    bleed_free = cache.labels[pos.start : pos.stop, LABELS.index("ANY")] == 0
    assert np.abs(a[bleed_free] - b[bleed_free]).mean() < 0.5


def test_paired_batches_hold_the_twin_of_each_bleeding_slice():
    from ichviewer.training.data import add_twin_negatives
    from ichviewer.training.trainer import StratifiedSampler, twin_partners

    plans = add_twin_negatives(plan_phantom_cases(2, "train", seed=6))  # IPH, its twin, none
    cache = build_phantom_cache(plans, input_size=32, matrix=64)
    partners = twin_partners(cache)
    pos_case, twin_case, _ = cache.cases
    bleeding = np.flatnonzero(cache.labels[:, LABELS.index("ANY")] >= 0.5)
    assert bleeding.size and np.all(partners[bleeding] == bleeding - pos_case.start + twin_case.start)
    assert np.all(partners[np.setdiff1d(np.arange(cache.n_slices), bleeding)] == -1)
    sampler = StratifiedSampler(cache, np.arange(cache.n_slices), 0.5, np.random.default_rng(0), partners)
    rows, w = sampler.batch(8)
    assert rows.size == w.size == 8
    rows, w = sampler.batch(16)
    # the twins of the first four positives fill half of the eight negatives; the rest are drawn as usual
    np.testing.assert_array_equal(rows[8:12], partners[rows[:4]])
    assert np.all(cache.labels[rows[8:], LABELS.index("ANY")] == 0)
    assert twin_partners(build_phantom_cache(plans[2:], input_size=32, matrix=64)) is None


def test_a_paired_twin_is_shown_in_its_bleeding_slices_pose():
    """Departure 27: with the twin rank loss a paired twin gets its bleeding slice's Eq. 4 blend and augmentation."""
    from ichviewer.training.trainer import StratifiedSampler, TrainConfig, _image_pairs, _share_augmentation, _slice_batch, twin_partners

    plans = add_twin_negatives(plan_phantom_cases(2, "train", seed=6))  # IPH, its twin, none
    cache = build_phantom_cache(plans, input_size=32, matrix=64)
    partners = twin_partners(cache)
    sampler = StratifiedSampler(cache, np.arange(cache.n_slices), 0.5, np.random.default_rng(0), partners)
    config = TrainConfig(name="t", family="resnet", input_size=32, interpolation="sample", pair_twins=True, twin_rank_weight=1.0)
    rows, _ = sampler.batch(16)
    pairs = sampler.last_pairs
    bleeding, twin = pairs
    assert bleeding.size == 4 and np.array_equal(rows[twin], partners[rows[bleeding]])

    def augmented(with_pairs: bool, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x, _, _, _ = _slice_batch(cache, rows, config, rng, False, pairs if with_pairs else None)
        aug = draw_augmentation(x.shape[0], 32, rng)
        if with_pairs:
            _share_augmentation(aug, *_image_pairs(pairs, rows.size, 1))
        return augment_images(torch.from_numpy(x), aug).numpy()

    for seed in range(3):
        posed, own = augmented(True, seed), augmented(False, seed)
        # the same draws either way; posed, the two images differ only where the blood is
        assert np.abs(posed[bleeding] - posed[twin]).mean() < 0.25 * np.abs(own[bleeding] - own[twin]).mean()
        assert np.array_equal(np.delete(posed, twin, axis=0), np.delete(own, twin, axis=0))
    # with Eq. 4's "all" a row's three images are n_rows apart
    b, t = _image_pairs((np.array([0, 2]), np.array([5, 6])), 8, 3)
    assert b.tolist() == [0, 2, 8, 10, 16, 18] and t.tolist() == [5, 6, 13, 14, 21, 22]


def test_twin_rank_loss_ranks_the_bleeding_slices_noisy_or_above_its_twins():
    from ichviewer.training.losses import noisy_or_any_logit, twin_rank_loss_per_pair

    rng = np.random.default_rng(4)
    z = torch.from_numpy(rng.normal(0.0, 2.0, (7, 5)))
    q = 1.0 - np.prod(1.0 - 1.0 / (1.0 + np.exp(-z.numpy())), axis=1)
    np.testing.assert_allclose(noisy_or_any_logit(z).numpy(), np.log(q / (1.0 - q)), rtol=1e-6)
    assert torch.isfinite(noisy_or_any_logit(torch.tensor([[-40.0] * 5, [40.0] * 5]))).all()
    np.testing.assert_allclose(twin_rank_loss_per_pair(z, z).numpy(), math.log(2.0), rtol=1e-9)
    higher = z + 1.0
    assert (twin_rank_loss_per_pair(higher, z) < math.log(2.0)).all() and (twin_rank_loss_per_pair(z, higher) > math.log(2.0)).all()
    bleeding, twin = z.clone().requires_grad_(), z.clone().requires_grad_()
    twin_rank_loss_per_pair(bleeding, twin).sum().backward()
    assert (bleeding.grad < 0).all() and (twin.grad > 0).all()  # raise the bleeding slice, lower its twin


def test_one_interpolation_per_slice_equals_picking_from_all_three():
    from ichviewer.training.augmentation import interpolate_one_per_slice, interpolate_slices

    rng = np.random.default_rng(3)
    n = 40
    x, lo, up = (rng.random((n, 3, 6, 5)).astype(np.float32) for _ in range(3))
    y, ylo, yup = (rng.random((n, 6)).astype(np.float32) for _ in range(3))
    edge = rng.random(n) < 0.3
    which = rng.integers(0, 3, n)
    beta, beta2 = 0.61, 0.83
    all_x, all_y = interpolate_slices(x, y, lo, ylo, up, yup, edge, beta, beta2)
    take = which * n + np.arange(n)
    partner = np.where(which[:, None, None, None] == 1, lo, np.where(which[:, None, None, None] == 2, up, x))
    ypartner = np.where(which[:, None] == 1, ylo, np.where(which[:, None] == 2, yup, y))
    one_x, one_y = interpolate_one_per_slice(x, y, partner, ypartner, which, edge, beta, beta2)
    assert np.array_equal(one_x, all_x[take]) and np.array_equal(one_y, all_y[take])
    assert one_x.dtype == np.float32 and one_y.dtype == np.float32


# The RSNA Intracranial Hemorrhage Detection challenge's names, in its CSV's order per image.
RSNA_ORDER = (("epidural", "EDH"), ("intraparenchymal", "IPH"), ("intraventricular", "IVH"),
              ("subarachnoid", "SAH"), ("subdural", "SDH"), ("any", "ANY"))


def _sop_uids(root: Path, series_uid: str) -> list[str]:
    from ichviewer.io import load_path

    vol = next(v for v in load_path(root).volumes if v.series_uid == series_uid)
    return list(vol.metadata["sop_instance_uids"])


def test_dicom_folder_with_the_rsna_challenge_csv_trains_on_image_labels(tmp_path):
    # The challenge's own form: `ID,Label`, one row per image and label, `ID_<SOPInstanceUID>_<subtype>`.
    # Rows are written in shuffled order with one image repeated (the challenge's file repeats a few).
    root, cases = _write_studies(tmp_path, [(41, "SDH"), (42, "IVH")])
    rows = []
    for case in cases:
        for uid, d in zip(_sop_uids(root, case.volume.series_uid), case.slice_labels):
            rows += [f"{uid}_{name},{d[lab]}" for name, lab in RSNA_ORDER]
    rows.append(rows[0])
    np.random.default_rng(0).shuffle(rows)
    csv_path = tmp_path / "stage_2_train.csv"
    csv_path.write_text("ID,Label\n" + "\n".join(rows) + "\n")
    table = read_training_labels(csv_path)
    assert table.key == "sop_instance_uid" and table.per_slice and table.labels_present == LABELS
    cache = build_dicom_cache(root, csv_path, input_size=32)
    assert cache.slice_labelled and len(cache.cases) == 2 and cache.meta["labels_key"] == "sop_instance_uid"
    by_uid = {c.case_id: c for c in cache.cases}
    for case in cases:
        rec = by_uid[case.volume.series_uid]
        expected = np.array([[d[lab] for lab in LABELS] for d in case.slice_labels])
        assert expected[:, LABELS.index("ANY")].any()
        np.testing.assert_array_equal(cache.labels[rec.start : rec.stop], expected)
    # Each phantom is its own patient (PatientID PHANTOM<seed>), which the split unit follows.
    assert sorted(c.patient_id for c in cache.cases) == ["PatientID PHANTOM41", "PatientID PHANTOM42"]


def test_per_image_csv_with_rsna_column_names_and_partly_listed_series(tmp_path):
    root, cases = _write_studies(tmp_path, [(43, "EDH")])
    case = cases[0]
    uids = _sop_uids(root, case.volume.series_uid)
    header = "SOPInstanceUID," + ",".join(name for name, _ in RSNA_ORDER)
    lines = [header] + [u + "," + ",".join(str(d[lab]) for _, lab in RSNA_ORDER) for u, d in zip(uids, case.slice_labels)]
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    cache = build_dicom_cache(root, csv_path, input_size=32)
    np.testing.assert_array_equal(cache.labels, np.array([[d[lab] for lab in LABELS] for d in case.slice_labels]))
    # A series the CSV names only in part is refused, naming the series and an unlisted image.
    csv_path.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(TrainingDataError, match=rf"series {case.volume.series_uid} .* 2 of them are not in the CSV \(the first: {uids[-2]}\)"):
        build_dicom_cache(root, csv_path, input_size=32)


@pytest.mark.parametrize("text, message", [
    ("ID,Label\nID_a_any,1\nID_a_subdurall,0\n", r"r\.csv, line 3: ID 'ID_a_subdurall' is not <image>_<label>"),
    ("ID,Label\nID_a_any,1\nID_a_subdural,1\nID_a_subdural,0\n", r"r\.csv, line 4: ID_a_subdural is 0 here and 1 on line 3"),
    ("ID,Label\nID_a_any,1\nID_a_subdural,1\nID_b_any,0\n", "image ID_b has no row for subdural"),
    ("ID,Label\nID_a_subdural,1\n", "no '_any' rows"),
    ("ID,Label\nID_a_any,0.5\n", r"line 2, column Label: expected 0 or 1, got '0\.5'"),
    ("series_uid,any,sdh,subdural\n1.2,1,1,1\n", "columns 'sdh' and 'subdural' both give SDH"),
])
def test_rsna_csv_errors_name_the_file_and_line(tmp_path, text, message):
    bad = tmp_path / "r.csv"
    bad.write_text(text)
    with pytest.raises(TrainingDataError, match=message):
        read_training_labels(bad)


def test_one_patient_id_for_every_study_leaves_each_study_its_own_split_unit(tmp_path):
    from ichviewer.training.data import _dicom_patient_ids

    class V:  # a scanned series: its study and its first header
        def __init__(self, study, patient):
            self.study_uid, self.datasets = study, [{"PatientID": patient}]

    assert _dicom_patient_ids([V("s1", "ANON"), V("s2", "ANON")]) == {}
    assert _dicom_patient_ids([V("s1", ""), V("s2", "")]) == {}
    assert _dicom_patient_ids([V("s1", "P1"), V("s2", "P1"), V("s3", "P2")]) == {"s1": "P1", "s2": "P1", "s3": "P2"}


def test_model_inputs_made_a_few_slices_at_a_time_equal_the_whole_series_at_once():
    from ichviewer.core.windowing import INPUT_WINDOW_SETS
    from ichviewer.inference.preprocessing import geometry_for, preprocess_slices, slab_slices
    from ichviewer.training.data import INPUT_CHUNK_SLICES, volume_to_inputs

    windows = INPUT_WINDOW_SETS["brain-blood-subdural-bone"]
    vol = generate_case(7, subtype="SDH", slice_mm=1.0, matrix=64).volume
    assert vol.n_slices > 2 * INPUT_CHUNK_SLICES and vol.n_slices % INPUT_CHUNK_SLICES  # several chunks, a short last one
    for slab in (5.0, None):
        geom = geometry_for(vol, (32, 32), "head")
        hu = slab_slices(vol, np.arange(vol.n_slices), slab) if slab else vol.hu
        whole = np.rint(np.clip(preprocess_slices(hu, geom, windows), 0.0, 1.0) * 255.0).astype(np.uint8)
        np.testing.assert_array_equal(volume_to_inputs(vol, 32, windows, "head", slab), whole)


def test_a_series_that_cannot_be_read_is_reported_and_the_others_are_cached(tmp_path):
    import pydicom

    root, cases = _write_studies(tmp_path, [(51, "SDH"), (52, "none")])
    for f in (tmp_path / "dicom" / "case52").rglob("*"):  # one series is not CT (as if an MR slipped in)
        if f.is_file() and f.name != "labels.json":
            ds = pydicom.dcmread(f)
            ds.Modality = "MR"
            ds.save_as(f)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("series_uid,any\n" + "".join(f"{c.volume.series_uid},{i == 0:d}\n" for i, c in enumerate(cases)))
    cache = build_dicom_cache(root, csv_path, input_size=32)
    assert [c.case_id for c in cache.cases] == [cases[0].volume.series_uid]
    assert cache.images.shape[0] == cases[0].volume.n_slices
    assert cache.meta["missing_in_folder"] == [cases[1].volume.series_uid]
    assert cache.meta["failed_series_count"] == 1 and "is not CT" in cache.meta["failed_series"][0]["reason"]
