"""Exceptions of the inference engine: bad manifests, models that break the contract, cancellation."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class InferenceError(Exception):
    """Base class of everything the inference engine raises on purpose."""


class ManifestError(InferenceError, ValueError):
    """An ensemble manifest is missing, unreadable or invalid; the message names the file and field."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class EnsembleNotFoundError(ManifestError, FileNotFoundError):
    """No ensemble directory (or no manifest.json in it) where one was expected."""


class ModelContractError(InferenceError, ValueError):
    """A model file does not honour its manifest entry (checksum, inputs, outputs, head) or cannot be loaded.

    `model` is the manifest's model name, `file` the model file, `problem` what is wrong.
    """

    def __init__(self, model: str, file: str | Path | None, problem: str) -> None:
        self.model = model
        self.file = str(file) if file is not None else None
        self.problem = problem
        where = f" ({self.file})" if self.file else ""
        super().__init__(f"model '{model}'{where}: {problem}")


class Cancelled(Exception):  # noqa: N818 - reads naturally at the raise site: `raise Cancelled(...)`
    """A study run stopped because `is_cancelled()` turned true.

    `partial` holds the StudyResult with the slices finished before the stop
    (the others are NaN). Not an InferenceError: a cancel is not a failure.
    """

    def __init__(self, partial: Any = None) -> None:
        self.partial = partial
        done = getattr(partial, "slices_done", None)
        total = getattr(partial, "n_slices", None)
        super().__init__(f"inference cancelled after {done}/{total} slices" if partial is not None else "inference cancelled")
