"""Training-step speed with and without the allocator tuning, printed as ratios (no assertions).

Each family of the bundled recipe trains for the same number of steps on the same small
phantom cache (built once with the bundled command's settings) in two fresh processes:
one with glibc's default allocator (baseline, `ICHVIEWER_MALLOC_TUNING=0`) and one with
`ichviewer.training.allocator.tune_allocator_for_training()` applied, as `ichviewer train`
does. Printed per family: milliseconds per step, CPU system time per step, peak resident
memory, and the baseline / tuned ratio. The numbers the two runs compute are the same
(see the test); only time and memory differ.

Run: `python benchmarks/bench_training.py [--steps 40] [--families vgg,resnet,inception,mobilenet]
[--extra="--lesion-map-weight 3"]` (needs the `train` extra; about 1 minute per family).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = 24
WARMUP_STEPS = 5


def _config(extra: str):
    from ichviewer.cli import build_parser
    from ichviewer.commands.train import recipe_config_from_args
    from ichviewer.training.recipe import BUNDLED_COMMAND

    argv = shlex.split(BUNDLED_COMMAND)[1:] + shlex.split(extra)
    return recipe_config_from_args(build_parser().parse_args(argv))


def _build_cache(extra: str, path: Path) -> None:
    from ichviewer.training.data import build_phantom_cache, plan_phantom_cases

    config = _config(extra)
    plans = plan_phantom_cases(CASES, "train", config.seed, config.thin_every, config.thickness_planes)
    cache = build_phantom_cache(
        plans, config.input_size, config.matrix, 2, windows=config.window_set, crop=config.crop,
        slab_mm=config.slab_mm, with_maps=config.lesion_map_weight > 0,
    )
    cache.save(path)


def _child(extra: str, cache_path: Path, family: str, steps: int) -> None:
    """Runs in a fresh process: train `steps` steps, print a JSON line of timings."""
    import resource
    import time

    from ichviewer.training.allocator import peak_resident_mb, tune_allocator_for_training
    from ichviewer.training.data import SliceCache
    from ichviewer.training.recipe import member_train_config
    from ichviewer.training.trainer import train_member

    allocator = tune_allocator_for_training()
    config = _config(extra)
    names = [m for m in config.members() if m[1] == family]
    index = config.members().index(names[0])
    cache = SliceCache.load(cache_path)
    tc = member_train_config(config, index, *names[0])
    train_member(tc, cache, cache, max_steps=WARMUP_STEPS)  # imports, oneDNN kernels, first allocations
    sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    t0 = time.perf_counter()
    result = train_member(tc, cache, cache, max_steps=steps)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "allocator": allocator["applied"],
        "step_ms": 1000 * result.step_seconds / result.steps,
        "sys_ms": 1000 * (usage.ru_stime - sys0) / result.steps,
        "wall_s": wall,
        "peak_rss_mb": peak_resident_mb(),  # this child's own peak (ru_maxrss would carry the parent's over)
    }))


def _run_child(extra: str, cache_path: Path, family: str, steps: int, tuned: bool) -> dict:
    env = dict(os.environ, ICHVIEWER_MALLOC_TUNING="1" if tuned else "0")
    out = subprocess.run(
        [sys.executable, __file__, "--child", family, "--cache", str(cache_path), "--steps", str(steps), f"--extra={extra}"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--families", default="vgg,resnet,inception,mobilenet")
    ap.add_argument("--extra", default="", help="options added to the bundled command (e.g. \"--lesion-map-weight 3\")")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.extra, Path(args.cache), args.child, args.steps)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        cache_path = Path(tmp) / "cache.npz"
        _build_cache(args.extra, cache_path)
        print(f"bundled command{' + ' + args.extra if args.extra else ''}; {CASES} cases, {args.steps} steps per run")
        print(f"{'family':<10} {'allocator':<9} {'ms/step':>8} {'sys ms/step':>12} {'peak RSS MB':>12} {'baseline/tuned':>15}")
        for family in args.families.split(","):
            base = _run_child(args.extra, cache_path, family, args.steps, tuned=False)
            tuned = _run_child(args.extra, cache_path, family, args.steps, tuned=True)
            for label, r in (("default", base), ("tuned" if tuned["allocator"] else "untuned", tuned)):
                ratio = base["step_ms"] / r["step_ms"]
                print(f"{family:<10} {label:<9} {r['step_ms']:8.0f} {r['sys_ms']:12.1f} {r['peak_rss_mb']:12.0f} {ratio:14.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
