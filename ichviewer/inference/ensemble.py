"""A loaded ensemble: the manifest, its checked ONNX members, and the provider that really runs them."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ichviewer.inference.manifest import EnsembleManifest, default_models_dir, load_manifest
from ichviewer.inference.model import LoadedModel, ModelInfo, load_model
from ichviewer.inference.providers import CPU, resolve_providers

#: Feature maps kept per volume for attention maps (switching label on a slice is then free).
FEATURE_CACHE_SLICES = 16


@dataclass(eq=False)
class Ensemble:
    """Loaded members in manifest order; use `load_ensemble` to make one.

    `provider` is what ONNX Runtime actually runs (e.g. "CPUExecutionProvider"),
    `requested_providers` what was asked for, `notes` why they differ.
    """

    manifest: EnsembleManifest
    models: tuple[LoadedModel, ...]
    requested_providers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    _features: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def directory(self) -> Path:
        return self.manifest.directory

    @property
    def provider(self) -> str:
        """The provider that runs the members ("A, B" if members ended up on different ones)."""
        seen: list[str] = []
        for m in self.models:
            if m.provider not in seen:
                seen.append(m.provider)
        return ", ".join(seen)

    @property
    def on_gpu(self) -> bool:
        return any(m.provider != CPU for m in self.models)

    @property
    def infos(self) -> tuple[ModelInfo, ...]:
        return tuple(m.info for m in self.models)

    @property
    def weights(self) -> np.ndarray:
        """Ensemble weights normalised to sum 1 (equal by default; Kang et al. weighted allowed)."""
        w = np.asarray([m.spec.weight for m in self.models], dtype=np.float64)
        return w / w.sum()

    def model(self, name: str) -> LoadedModel:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model named {name!r} in ensemble '{self.name}' (has {[m.name for m in self.models]})")

    @property
    def cam_model(self) -> LoadedModel | None:
        spec = self.manifest.cam_model
        return self.model(spec.name) if spec is not None else None

    def cached_features(self, volume: Any, model: LoadedModel, slice_index: int, compute) -> tuple[np.ndarray, np.ndarray]:
        """(logits, features) of one original slice, cached per volume (weakly) for a few slices."""
        key = (model.name, int(slice_index))
        with self._lock:
            try:
                per_volume = self._features.get(volume)
            except TypeError:
                per_volume = None
            if per_volume is not None and key in per_volume:
                per_volume.move_to_end(key)
                return per_volume[key]
        value = compute()
        with self._lock:
            try:
                per_volume = self._features.setdefault(volume, OrderedDict())
            except TypeError:  # not weak-referenceable: nothing to key a cache on
                return value
            per_volume[key] = value
            while len(per_volume) > FEATURE_CACHE_SLICES:
                per_volume.popitem(last=False)
        return value


def load_ensemble(
    path: str | Path | None = None,
    *,
    providers: str | Sequence[str] | None = None,
    threads: int | None = None,
    probe: bool = True,
) -> Ensemble:
    """Load `path` (an ensemble directory or its manifest.json; default: the bundled `models/default`).

    Raises EnsembleNotFoundError / ManifestError for a missing or invalid manifest and
    ModelContractError naming the first member that breaks the contract. `providers`:
    None/"auto", "cpu", "cuda", or provider names (see `providers.resolve_providers`).
    """
    manifest = load_manifest(path if path is not None else default_models_dir())
    wanted, notes = resolve_providers(providers)
    models = tuple(load_model(spec, manifest.directory, wanted, threads=threads, probe=probe) for spec in manifest.models)
    notes = list(notes)
    asked = [p for p in wanted if p != CPU]
    on_cpu = [m.name for m in models if m.provider == CPU]
    if asked and on_cpu:
        who = "all models" if len(on_cpu) == len(models) else "models " + ", ".join(on_cpu)
        notes.append(f"{', '.join(asked)} could not start here; {who} run on {CPU}")
    return Ensemble(manifest=manifest, models=models, requested_providers=tuple(wanted), notes=tuple(notes))
