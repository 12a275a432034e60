"""Atlas and prediction basis: training examples that explain each finding (Lee et al. 2019, Methods and Eq. 5-7). No Qt.

Typical use::

    from ichviewer.atlas import build_atlas, open_atlas, retrieve, PhantomSource
    summary = build_atlas(ensemble, PhantomSource(range(40)), "models/default/resnet50.atlas.sqlite")
    with open_atlas(summary.path) as atlas:
        basis = retrieve(volume, slice_index, "SDH", atlas, ensemble)
        basis.examples          # by Eq. 7 distance, closest first
        basis.pooled_examples   # by pooled-feature nearest neighbours, for comparison
"""

from ichviewer.atlas.build import AtlasSummary, build_atlas, explainable_blocks, explaining_member
from ichviewer.atlas.relevance import DEFAULT_FRACTION, Selection, filter_relevance, relevance_counts, select_filters
from ichviewer.atlas.retrieval import Retrieval, RetrievedExample, feature_distances, pooled_neighbours, retrieve
from ichviewer.atlas.sources import AtlasDataError, DicomSource, LabelledStudy, PhantomSource, source_from_spec
from ichviewer.atlas.store import (
    ATLAS_FORMAT_VERSION,
    Atlas,
    AtlasEntry,
    AtlasError,
    AtlasMismatchError,
    Provenance,
    atlas_path_for,
    open_atlas,
)

__all__ = [
    "ATLAS_FORMAT_VERSION", "Atlas", "AtlasDataError", "AtlasEntry", "AtlasError", "AtlasMismatchError", "AtlasSummary",
    "DEFAULT_FRACTION", "DicomSource", "LabelledStudy", "PhantomSource", "Provenance", "Retrieval", "RetrievedExample",
    "Selection", "atlas_path_for", "build_atlas", "explainable_blocks", "explaining_member", "feature_distances",
    "filter_relevance", "open_atlas", "pooled_neighbours", "relevance_counts", "retrieve", "select_filters",
    "source_from_spec",
]
