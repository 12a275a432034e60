"""ICH Viewer: a head-CT workstation for intracranial haemorrhage with an explainable local AI ensemble."""

__version__ = "0.1.0"

#: Output label order used everywhere in the project (models, JSON, CSV, GUI).
LABELS: tuple[str, ...] = ("IPH", "IVH", "SDH", "EDH", "SAH", "ANY")
#: The five haemorrhage subtypes (LABELS without ANY).
SUBTYPES: tuple[str, ...] = LABELS[:5]
