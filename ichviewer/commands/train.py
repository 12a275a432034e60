"""The `ichviewer train` subcommand: train, export and describe an ensemble (needs the `train` extra)."""

from __future__ import annotations

import argparse
import sys

from ichviewer.commands.evaluate import add_triage_prevalence_argument
from ichviewer.commands.phantom import thickness_planes_arg

TRAIN_EXTRA_HINT = "install the train extra: pip install -e '.[train]'"
#: RecipeConfig's defaults and the trainer's choices, repeated so the CLI imports no training code
#: (tests/test_training_pipeline.py::test_train_cli_defaults_and_choices_are_the_recipes keeps them equal).
HARD_FRACTION_DEFAULT = 0.0
HARD_STRATA = ("all", "negative")
HARD_STRATUM_DEFAULT = "all"
PRECISIONS = ("fp32", "bf16")
PRECISION_DEFAULT = "fp32"
POSITIVE_SAMPLINGS = ("slice", "case", "thickness", "thickness-weight")
POSITIVE_SAMPLING_DEFAULT = "slice"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a four-model ensemble (synthetic phantoms or your own labelled DICOM)",
        description=(
            "Train the Lee et al. 2019 recipe (weighted BCE, multi-window input, slice interpolation, "
            "augmentation, model selection on validation mAP) for four small CNN families on the CPU, export "
            "them to ONNX (verified against PyTorch), fit ensemble weights and operating points on validation, "
            "and write DIR/manifest.json, DIR/SHA256SUMS and DIR/training_log.json. Caches and checkpoints go "
            "to DIR/work or --work (delete it when done). Needs PyTorch: " + TRAIN_EXTRA_HINT + "."
        ),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="ensemble directory to write")
    p.add_argument("--source", choices=("phantoms", "dicom"), default="phantoms", help="training data (default phantoms)")
    p.add_argument("--data", metavar="DIR", help="folder of DICOM studies (with --source dicom)")
    p.add_argument(
        "--labels",
        metavar="CSV",
        help="labels for --source dicom: series_uid or study_uid, optional slice_index (per-slice, ascending along "
        "the slice normal as `ichviewer info` lists them) and patient_id, 0/1 columns any (required), iph, ivh, "
        "sdh, edh, sah or RSNA's names (subdural, epidural, ...; case-insensitive); or per image, sop_instance_uid "
        "and those columns; or the RSNA challenge's own ID,Label file (ID_<SOPInstanceUID>_<subtype>). Without "
        "patient_id the split unit is the DICOM PatientID (when the studies carry more than one), else the study",
    )
    p.add_argument("--epochs", type=int, default=10, help="epochs per member (default 10)")
    p.add_argument("--seed", type=int, default=0, help="run seed: phantom seeds, splits, initialisation (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in DIR/work")
    p.add_argument(
        "--n-cases",
        type=int,
        nargs=2,
        metavar=("TRAIN", "VALIDATION"),
        default=(400, 100),
        help="phantom cases for training and validation (default 400 100)",
    )
    p.add_argument("--input-size", type=int, default=128, help="model input in pixels, square (default 128)")
    p.add_argument(
        "--windows",
        choices=("brain-subdural-bone", "lee", "brain-blood-subdural-bone"),
        default="brain-subdural-bone",
        help="input channel windows: brain/subdural/bone, Lee et al.'s tissue/brain/blood, or brain/blood/subdural/bone "
        "(four channels: Lee et al.'s narrow blood window added; default brain-subdural-bone)",
    )
    p.add_argument(
        "--crop", choices=("head", "none"), default="head", help="input framing: a square around the head, or the whole slice (default head)"
    )
    p.add_argument(
        "--interpolation",
        choices=("sample", "all"),
        default="sample",
        help="Eq. 4 in training: each slice as one random pick of itself and its two interpolations, or all three (default sample)",
    )
    p.add_argument(
        "--slab-mm",
        type=float,
        default=5.0,
        help="average thin slices into slabs of about this many mm before the model (0: never; default 5)",
    )
    p.add_argument(
        "--no-twins",
        action="store_true",
        help="do not add each training haemorrhage phantom's counterfactual twin (the same head without the bleed)",
    )
    p.add_argument(
        "--pair-twins",
        action="store_true",
        help="put each bleeding slice's twin in the same batch (up to half the negatives) instead of drawing twins like any negative",
    )
    p.add_argument("--width", type=int, default=16, help="channel width of the networks (default 16)")
    p.add_argument("--batch-size", type=int, default=32, help="slices per step, x3 with --interpolation all (default 32)")
    p.add_argument(
        "--steps-per-epoch", type=int, default=500, help="steps per epoch; 0 = one pass over the training slices (default 500)"
    )
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule (default 3e-3)")
    p.add_argument(
        "--positive-fraction",
        type=float,
        default=0.5,
        help="share of haemorrhage slices per batch, importance-weighted back to Eq. 2 (0: uniform; default 0.5)",
    )
    p.add_argument(
        "--hard-fraction",
        type=float,
        default=HARD_FRACTION_DEFAULT,
        help="share of each batch drawn by last training loss (hard-example mining; 0: off; default %(default)g)",
    )
    p.add_argument(
        "--hard-stratum",
        choices=HARD_STRATA,
        default=HARD_STRATUM_DEFAULT,
        help="which slices --hard-fraction mines: all, or the negatives only (positives keep their walk; "
        "default %(default)s)",
    )
    p.add_argument(
        "--positive-sampling",
        choices=POSITIVE_SAMPLINGS,
        default=POSITIVE_SAMPLING_DEFAULT,
        help="draw the batch's haemorrhage slices slice by slice; so that every bleeding case "
        "(a punctate one as much as a large one) gets the same share ('case'); or so that thin-series "
        "slices are as large a share of them as of the negatives ('thickness'); or as they come, with the thin ones' "
        "loss weighted down to the same share ('thickness-weight') (default %(default)s)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=PRECISION_DEFAULT,
        help="forward-pass arithmetic in training: bf16 autocast is ~1.35x faster on AVX-512-BF16 CPUs (default %(default)s)",
    )
    p.add_argument(
        "--input-stem",
        action="store_true",
        help="put a learned 2x downsampling stem in front of each network; use with twice the --input-size (e.g. 256)",
    )
    p.add_argument(
        "--wide-stem",
        action="store_true",
        help="with --input-stem: feed the stem's 16 feature channels to each network instead of a 1x1 projection "
        "to three channels",
    )
    p.add_argument(
        "--pooling", choices=("avg", "lse", "max"), default="avg",
        help="how each network's head pools its per-cell logits: avg (Lee et al.'s global average pooling; "
        "default), lse (log-sum-exp) or max, which let one cell of the last features carry a punctate bleed",
    )
    p.add_argument(
        "--ignore-invisible-positives",
        action="store_true",
        help="phantoms: leave out of the loss the positive slice labels whose blood no reader could see (all of it in "
        "the skull's partial-volume edge; departure 24)",
    )
    p.add_argument(
        "--lesion-map-weight",
        type=float,
        default=0.0,
        help="weight of an auxiliary loss that teaches each network where the blood is, from the phantoms' "
        "masks (phantoms only; not exported; 0: off, the default)",
    )
    p.add_argument(
        "--mimic-map-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="weight of an auxiliary loss that teaches each network where a mimic's dense or streaked voxels are "
        "(calcification, metal, beam hardening), from the phantoms' mimic masks (phantoms only; not exported; "
        "0: off, the default)",
    )
    p.add_argument(
        "--noisy-or-any-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="weight of a loss that trains the five subtypes' noisy-OR, 1 - prod(1 - p_s), against the ANY label: "
        "the ANY that --any-rule noisy-or ranks studies by (0: off, the default)",
    )
    p.add_argument(
        "--twin-rank-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="with --pair-twins: show each paired twin in its bleeding slice's pose and add W times a loss that ranks "
        "the bleeding slice's noisy-OR ANY above its twin's (phantoms; 0: off, the default)",
    )
    p.add_argument(
        "--context-slices",
        type=int,
        choices=(1, 3),
        default=1,
        help="slices each network reads at once: 1, the slice alone (the default, as Lee et al.); 3, the slice with "
        "its lower and upper neighbour as further channels (2.5D), so a one-slice sliver can be told from the "
        "partial-volume edge that runs through its neighbours",
    )
    p.add_argument(
        "--lesion-map-stride",
        type=int,
        default=None,
        metavar="PIXELS",
        help="input pixels per cell of the grid the lesion-map head reads (8 or 16 with --input-stem; default: "
        "the last features). A finer grid gives a punctate bleed a cell of its own",
    )
    p.add_argument("--matrix", type=int, default=256, help="phantom in-plane matrix (default 256)")
    p.add_argument(
        "--thin-every", type=int, default=1, help="keep every k-th planned 1 mm phantom thin, the rest 5 mm (default 1)"
    )
    p.add_argument(
        "--thickness-planes",
        type=thickness_planes_arg,
        default=1,
        help="build each 5 mm training phantom slice from this many planes across its thickness "
        "(partial volume, as real thick slices have; default 1: the centre plane); "
        "a list such as 1,3 mixes them, each 5 mm case drawing one",
    )
    p.add_argument("--families", default="vgg,resnet,inception,mobilenet", help="comma-separated member families")
    p.add_argument(
        "--specialists", default="", help="extra subtype-specialist members (Kang et al.): comma list of IPH..SAH, small"
    )
    p.add_argument("--ensemble", choices=("mean", "weighted"), default="mean", help="member weights (default mean)")
    p.add_argument(
        "--any-rule", choices=("model", "noisy-or"), default="model",
        help="each slice's ANY: the networks' own ANY output (Lee et al.; default), or the noisy-OR of the "
        "ensemble's five subtype probabilities; written to the manifest and used for the operating points",
    )
    p.add_argument("--min-sensitivity", type=float, default=0.95, help="per-label validation sensitivity target")
    p.add_argument(
        "--min-specificity", type=float, default=0.95,
        help="validation specificity of each subtype's specific threshold, at which a called subtype reads "
        "'positive' rather than 'possible' (default 0.95)",
    )
    p.add_argument("--target-miss-rate", type=float, default=0.01, help="triage: miss rate among confident negatives")
    add_triage_prevalence_argument(p)
    p.add_argument(
        "--calibration-cases", type=int, default=0, metavar="N",
        help="phantoms only: N more validation-split cases, used with the validation cases to place the "
        "operating points and triage thresholds (not for model selection; default 0)",
    )
    p.add_argument("--workers", type=int, default=2, help="processes generating phantoms (default 2)")
    p.add_argument("--threads", type=int, help="PyTorch threads (default: PyTorch's choice)")
    p.add_argument("--max-steps", type=int, help="stop each member after this many steps (timing runs)")
    p.add_argument("--name", default="ichviewer-default", help="ensemble name in the manifest")
    p.add_argument("--work", metavar="DIR", help="caches and checkpoints (default DIR/work of --out)")
    p.set_defaults(func=run_train)


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def recipe_config_from_args(args: argparse.Namespace):
    """The `RecipeConfig` an `ichviewer train` command line describes (ValueError for a bad combination)."""
    from ichviewer.training.recipe import RecipeConfig

    specialists = tuple(s.upper() if s.lower() != "small" else "small" for s in _split(args.specialists))
    return RecipeConfig(
        out=args.out,
        source=args.source,
        data_dir=args.data,
        labels_csv=args.labels,
        families=_split(args.families),
        specialists=specialists,
        epochs=args.epochs,
        seed=args.seed,
        n_train=args.n_cases[0],
        n_validation=args.n_cases[1],
        calibration_cases=args.calibration_cases,
        thin_every=args.thin_every,
        thickness_planes=args.thickness_planes,
        matrix=args.matrix,
        input_size=args.input_size,
        windows=args.windows,
        crop=args.crop,
        interpolation=args.interpolation,
        slab_mm=args.slab_mm or None,
        twins=not args.no_twins,
        pair_twins=args.pair_twins,
        width=args.width,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch or None,
        lr=args.lr,
        positive_fraction=args.positive_fraction,
        hard_fraction=args.hard_fraction,
        hard_stratum=args.hard_stratum,
        positive_sampling=args.positive_sampling,
        precision=args.precision,
        input_stem=args.input_stem,
        wide_stem=args.wide_stem,
        pooling=args.pooling,
        lesion_map_weight=args.lesion_map_weight,
        mimic_map_weight=args.mimic_map_weight,
        ignore_invisible=args.ignore_invisible_positives,
        lesion_map_stride=args.lesion_map_stride,
        noisy_or_any_weight=args.noisy_or_any_weight,
        twin_rank_weight=args.twin_rank_weight,
        context_slices=args.context_slices,
        ensemble=args.ensemble,
        any_rule=args.any_rule,
        min_sensitivity=args.min_sensitivity,
        min_specificity=args.min_specificity,
        target_miss_rate=args.target_miss_rate,
        triage_prevalence=args.triage_prevalence,
        workers=args.workers,
        threads=args.threads,
        resume=args.resume,
        max_steps=args.max_steps,
        name=args.name,
        work_dir=args.work,
    )


def run_train(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print(f"ichviewer train: PyTorch is not installed; {TRAIN_EXTRA_HINT}", file=sys.stderr)
        return 2
    from ichviewer.training.data import TrainingDataError
    from ichviewer.training.export import ExportMismatchError
    from ichviewer.training.recipe import run_recipe
    from ichviewer.training.trainer import CheckpointError

    try:
        config = recipe_config_from_args(args)
    except ValueError as exc:
        print(f"ichviewer train: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_recipe(config, stream=sys.stderr)
    except (TrainingDataError, CheckpointError, ValueError) as exc:
        print(f"ichviewer train: {exc}", file=sys.stderr)
        return 2
    except ExportMismatchError as exc:
        print(f"ichviewer train: export check failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ichviewer train: cannot write {getattr(exc, 'filename', '') or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    ens = result.log["ensemble"]
    print(f"wrote {result.manifest_path}")
    print(
        f"validation: mAP {ens['validation_map']:.4f}, case AUC(ANY) {ens['validation_case_auc_any']:.4f}; "
        f"{result.log['seconds_total'] / 60:.1f} min; log {result.log_path}"
    )
    return 0
