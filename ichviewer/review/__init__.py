"""Review database: reads, difficult-case queues, expert panels and agreement statistics (no Qt).

Typical use::

    from ichviewer.review import ReviewStore, Read
    with ReviewStore("review.sqlite") as store:
        me = store.add_reader("Dr Kim", "attending")
        read_id = store.log_read(me, Read("1.2.3.4", {"ANY": "present", "SDH": "present"}))
"""

from ichviewer.review.agreement import (
    DiagnosticMetrics,
    cohen_kappa,
    diagnostic_metrics,
    fleiss_kappa,
    ratings_to_counts,
)
from ichviewer.review.export import export_json, reads_csv, write_reads_csv
from ichviewer.review.imports import (
    LabelImport,
    RunImport,
    import_infer_json,
    import_labels_csv,
    read_labels_csv,
    record_study_result,
)
from ichviewer.review.panels import (
    CaseView,
    ConsensusOutcome,
    ConsensusRule,
    Panel,
    add_member,
    cases_hidden_from,
    cast_vote,
    close_panel,
    create_panel,
    evaluate_consensus,
    get_panel,
    list_panels,
    member_view,
    members,
    panel_cases,
    summarize_panel,
)
from ichviewer.review.queues import (
    QUEUE_KINDS,
    QueueItem,
    QueueData,
    QueueThresholds,
    build_queue,
    build_queues,
    difficult_for_ai,
    difficult_for_humans,
    discordant,
    load_queue_data,
    queue_counts,
)
from ichviewer.review.schema import AI_ACTIONS, READ_STATUSES, ROLES, VOTE_VALUES
from ichviewer.review.statistics import compare_read_with_reference, compute_statistics, describe_comparison
from ichviewer.review.store import LabelVersion, ModelCall, Read, Reader, ReviewError, ReviewStore, open_store

__all__ = [
    "AI_ACTIONS", "QUEUE_KINDS", "READ_STATUSES", "ROLES", "VOTE_VALUES",
    "CaseView", "ConsensusOutcome", "ConsensusRule", "DiagnosticMetrics", "LabelImport", "LabelVersion",
    "ModelCall", "Panel", "QueueData", "QueueItem", "QueueThresholds", "Read", "Reader", "ReviewError", "ReviewStore", "RunImport",
    "add_member", "build_queue", "build_queues", "cast_vote", "close_panel", "cohen_kappa", "compare_read_with_reference",
    "compute_statistics", "describe_comparison",
    "create_panel", "diagnostic_metrics", "difficult_for_ai", "difficult_for_humans", "discordant",
    "evaluate_consensus", "export_json", "fleiss_kappa", "get_panel", "import_infer_json",
    "cases_hidden_from", "import_labels_csv", "list_panels", "load_queue_data", "member_view", "members", "open_store", "panel_cases",
    "queue_counts", "ratings_to_counts", "read_labels_csv", "reads_csv", "record_study_result", "summarize_panel",
    "write_reads_csv",
]
