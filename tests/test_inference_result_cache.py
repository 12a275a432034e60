"""Kept AI results (`ichviewer.inference.result_cache`): same voxels and models give the findings back
without running the models; anything that changes the numbers misses; a damaged cache is a miss."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
from inference_fixtures import add_member, make_volume, write_manifest

from ichviewer.inference import load_ensemble, run_study
from ichviewer.inference.result_cache import ResultCache, result_key


@pytest.fixture
def ensemble_dir(tmp_path):
    d = tmp_path / "ens"
    e1, _ = add_member(d, "alpha", seed=1, degree=3)
    e2, _ = add_member(d, "beta", seed=2, degree=1)
    write_manifest(d, [e1, e2])
    return d


def _head(seed: int = 0, n: int = 6):
    rng = np.random.default_rng(seed)
    hu = rng.integers(-40, 90, size=(n, 24, 32)).astype(np.int16)
    hu[:, [0, -1], :] = hu[:, :, [0, -1]] = 1200
    return make_volume(hu, spacing=(5.0, 3.0, 3.0), series_uid=f"1.2.{seed}", study_uid="1.2")


def test_a_kept_result_comes_back_with_the_same_numbers_and_says_when_it_was_computed(tmp_path, ensemble_dir):
    ensemble = load_ensemble(ensemble_dir)
    volume = _head()
    fresh = run_study(volume, ensemble)
    cache = ResultCache(tmp_path / "kept")
    key = cache.key(volume, ensemble)
    assert cache.load(key, volume, ensemble) is None  # nothing kept yet
    assert cache.store(key, fresh) is not None and len(cache) == 1

    # A new session: the same voxels read again into a new volume object, the models loaded again.
    again = replace(volume)
    ensemble2 = load_ensemble(ensemble_dir)
    key2 = ResultCache(tmp_path / "kept").key(again, ensemble2)
    assert key2 == key
    kept = ResultCache(tmp_path / "kept").load(key2, again, ensemble2, request_id=7)
    assert kept is not None and kept.complete and kept.request_id == 7
    np.testing.assert_array_equal(kept.slice_probabilities, fresh.slice_probabilities)
    np.testing.assert_array_equal(kept.member_probabilities, fresh.member_probabilities)
    assert kept.triage == fresh.triage and kept.provider == fresh.provider and kept.seconds == pytest.approx(fresh.seconds)
    assert kept.head_check is not None and kept.head_check.applicable == fresh.head_check.applicable
    assert len(kept.restored) == len("2026-12-07 11:40") and not fresh.restored
    assert kept.to_dict()["case"] == fresh.to_dict()["case"]
    # A kept result is never kept again as if it had been computed now.
    assert cache.store(key, kept) is None


def test_anything_that_changes_the_numbers_changes_the_key(tmp_path, ensemble_dir):
    ensemble = load_ensemble(ensemble_dir)
    volume = _head()
    key = result_key(volume, ensemble)
    hu = np.array(volume.hu)
    hu[2, 5, 5] += 1
    assert result_key(replace(volume, hu=hu), ensemble) != key  # one voxel
    assert result_key(replace(volume, spacing=(5.0, 2.5, 2.5)), ensemble) != key  # pixel size
    origins = np.array(volume.slice_origins)
    origins[:, 2] *= 0.2
    assert result_key(replace(volume, slice_origins=origins), ensemble) != key  # 1 mm apart, not 5
    assert result_key(replace(volume, series_description="OTHER"), ensemble) == key  # not the numbers
    # Another model file (its checksum in the manifest) or another manifest.
    manifest = json.loads((ensemble_dir / "manifest.json").read_text())
    manifest["models"][1]["weight"] = 3.0
    (ensemble_dir / "manifest.json").write_text(json.dumps(manifest))
    assert result_key(volume, load_ensemble(ensemble_dir)) != key


def test_a_damaged_or_foreign_entry_is_a_miss_and_is_removed(tmp_path, ensemble_dir, caplog):
    ensemble = load_ensemble(ensemble_dir)
    volume = _head()
    cache = ResultCache(tmp_path / "kept")
    key = cache.key(volume, ensemble)
    path = cache.store(key, run_study(volume, ensemble))
    path.write_bytes(path.read_bytes()[:40])  # truncated on a full disk
    with caplog.at_level(logging.WARNING):
        assert cache.load(key, volume, ensemble) is None
    assert "cannot be used" in caplog.text and str(path) in caplog.text and not path.exists()
    # An entry for a series of another length (a key collision, or a file copied by hand) is not used.
    other = _head(n=4)
    cache.store(key, run_study(other, ensemble))
    assert cache.load(key, volume, ensemble) is None and not path.exists()


def test_partial_results_are_not_kept_and_a_cache_that_cannot_be_written_is_only_a_miss(tmp_path, ensemble_dir, caplog):
    ensemble = load_ensemble(ensemble_dir)
    volume = _head()
    result = run_study(volume, ensemble)
    cache = ResultCache(tmp_path / "kept")
    assert cache.store("k", replace(result, complete=False)) is None
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        assert ResultCache(blocker / "kept").store("k", result) is None
    assert "not kept" in caplog.text


def test_the_least_recently_used_entries_go_beyond_the_limit(tmp_path, ensemble_dir):
    import os

    ensemble = load_ensemble(ensemble_dir)
    cache = ResultCache(tmp_path / "kept", max_entries=2)
    volumes = [_head(seed) for seed in range(3)]
    keys = [cache.key(v, ensemble) for v in volumes]
    for i, (k, v) in enumerate(zip(keys[:2], volumes[:2], strict=True)):
        path = cache.store(k, run_study(v, ensemble))
        os.utime(path, (1000 + i, 1000 + i))
    assert cache.load(keys[0], volumes[0], ensemble) is not None  # used: now the newest
    cache.store(keys[2], run_study(volumes[2], ensemble))
    assert len(cache) == 2
    assert cache.load(keys[1], volumes[1], ensemble) is None  # the least recently used went
    assert cache.load(keys[0], volumes[0], ensemble) is not None and cache.load(keys[2], volumes[2], ensemble) is not None


def test_usage_counts_what_is_kept_and_clear_removes_it_all(tmp_path, ensemble_dir):
    ensemble = load_ensemble(ensemble_dir)
    cache = ResultCache(tmp_path / "kept")
    assert cache.usage() == (0, 0) and cache.clear() == 0  # no folder yet
    volumes = [_head(seed) for seed in range(2)]
    paths = [cache.store(cache.key(v, ensemble), run_study(v, ensemble)) for v in volumes]
    (tmp_path / "kept" / ".half-written.tmp.npz").write_bytes(b"x")  # a write cut short
    count, size = cache.usage()
    assert count == 2 and size == sum(p.stat().st_size for p in paths)
    assert cache.clear() == 2
    assert cache.usage() == (0, 0) and list((tmp_path / "kept").iterdir()) == []
    assert cache.load(cache.key(volumes[0], ensemble), volumes[0], ensemble) is None


def test_the_folder_is_listed_only_when_the_limit_may_be_passed(tmp_path, ensemble_dir, monkeypatch):
    """`store` counted the folder after every result; now it lists it once, then only when its count
    passes the limit (and after `clear`)."""
    ensemble = load_ensemble(ensemble_dir)
    cache = ResultCache(tmp_path / "kept", max_entries=3)
    listed = []
    real_prune = ResultCache._prune
    monkeypatch.setattr(ResultCache, "_prune", lambda self: (listed.append(1), real_prune(self)))
    volumes = [_head(seed) for seed in range(5)]
    results = [run_study(v, ensemble) for v in volumes]
    keys = [cache.key(v, ensemble) for v in volumes]
    for k, r in zip(keys[:3], results[:3], strict=True):
        cache.store(k, r)
    assert len(listed) == 1 and len(cache) == 3  # the first store counted; the next two did not list
    cache.store(keys[0], results[0])  # the same entry again: no new file, no listing
    assert len(listed) == 1
    cache.store(keys[3], results[3])  # the fourth passes the limit: listed and pruned
    assert len(listed) == 2 and len(cache) == 3
    cache.clear()
    cache.store(keys[4], results[4])
    assert len(listed) == 3 and len(cache) == 1
