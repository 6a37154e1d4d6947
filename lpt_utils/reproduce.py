"""Run the numbered notebooks in order with papermill: the whole paper, one profile, one run.

    python -m lpt_utils.reproduce --profile tiny --run tiny
    python -m lpt_utils.reproduce --profile paper --run paper-500 --only 01 02 -o data.num_images=1000
    python -m lpt_utils.reproduce --profile tiny --run tiny --rerun-stale   # only what is stale, in order
    python -m lpt_utils.reproduce --run big --only 02 --shard $SLURM_ARRAY_TASK_ID/8   # one task of an array job
    python -m lpt_utils.reproduce --run big --merge 02 --shards 8                        # then join the parts
    (07 too: its merge checks the parts are all there, then runs 07 whole from their stored calls)

Executed copies go to `outputs/<run>/notebooks/`; wall times to `outputs/<run>/timings.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

from lpt_utils.config import REPO_ROOT, Run, resolve_run
from lpt_utils.stages import SPECS

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL = "lpt"


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks, in order; `only` filters by number prefix ("01") or name."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.stem.startswith(o) or p.stem == o for o in only)]
        if not found:
            raise SystemExit(f"no notebook matches {only}")
    return found


def run_notebook(path: Path, profile: str, run: str, overrides: dict[str, Any] | None = None,
                 out_dir: Path | None = None, kernel: str = KERNEL, progress: bool = False,
                 shard: tuple[int, int] | None = None) -> Path:
    """Execute one notebook with papermill (`progress`: a bar over its cells; `shard`: (index, count)
    of an array job, for the notebooks that take `shard_index` / `num_shards`); returns the executed
    copy's path (one per shard)."""
    import papermill

    out_dir = Path(out_dir) if out_dir else resolve_run(profile, run, overrides).run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {"profile": profile, "run": run, "overrides": overrides or {}}
    out = out_dir / path.name
    if shard:
        params.update(shard_index=shard[0], num_shards=shard[1])
        out = out_dir / f"{path.stem}.part-{shard[0]}-of-{shard[1]}.ipynb"
    papermill.execute_notebook(str(path), str(out), kernel_name=kernel, cwd=str(path.parent),
                               parameters=params, progress_bar=progress, log_output=False)
    return out


def stale_chain(run: Run) -> list[str]:
    """The notebooks to run so that every stage is current: from the first stage that is stale or
    missing (in pipeline order) to the last one, each notebook once. [] when all are current."""
    order = [s for s in SPECS if s.key != "sources"]
    status = run.stale()
    first = next((i for i, s in enumerate(order) if not status[s.folder]), None)
    if first is None:
        return []
    names: list[str] = []
    for s in order[first:]:
        if s.notebook not in names:
            names.append(s.notebook)
    return names


SHARDED = ("01", "02", "03", "07")  # the notebooks that take shard_index / num_shards
# Merged by running the notebook whole once every part is there: its calls are all in the parts' stores,
# and its scores, intervals and figures need every item (07's evaluation).
SCORED_WHOLE = ("07",)


def parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected I/N, e.g. 0/3") from None
    if not sep or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected I/N with 0 <= I < N")
    return i, n


def merge(run: Run, numbers: list[str], shards: int) -> list[Path]:
    """Join the parts the shards of notebooks `numbers` wrote (each stage's `Stage.merge`), then draw
    the merged stages' figures into `figures/<run>/` (each shard drew only its share, under
    `figures/<run>/parts/`). For a notebook of `SCORED_WHOLE`, only check that all `shards` parts are
    there: running it whole then (`main` does) scores and draws every item from the parts' stores."""
    out, keys = [], []
    for nb in notebooks(numbers):
        for spec in SPECS:
            if spec.notebook == nb.stem and spec.record is not None:
                if nb.name.startswith(SCORED_WHOLE):
                    run.stage(spec.key).written_parts(shards)
                else:
                    out.append(run.stage(spec.key).merge(expected=shards))
                    keys.append(spec.key)
    if keys:
        from lpt_utils.viz import figures  # matplotlib: only when a merge draws

        figures.render(run, only=keys)
    return out


def parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"override {text!r}: expected key=value")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--run", default=None, help="run name (default: the profile's name)")
    ap.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. 01 02")
    ap.add_argument("-o", "--override", action="append", type=parse_override, default=[],
                    help="dotted.key=value (YAML value), repeatable")
    ap.add_argument("--rerun-stale", action="store_true",
                    help="run only the notebooks of stale or missing stages, from the first one on")
    ap.add_argument("--shard", type=parse_shard, default=None,
                    help=f"I/N: run shard I of N (an array job's task) of notebooks {', '.join(SHARDED)}")
    ap.add_argument("--merge", nargs="+", metavar="NN", help="join the parts the shards of these notebooks wrote")
    ap.add_argument("--shards", type=int, default=None, help="with --merge: how many shards there were")
    args = ap.parse_args(argv)
    run = args.run or args.profile
    overrides = dict(args.override)
    resolved = resolve_run(args.profile, run, overrides)
    run_dir = resolved.run_dir
    only = args.only
    if args.merge:
        for folder in merge(resolved, args.merge, args.shards):
            print(f"merged {folder}")
        whole = [n for n in args.merge if n.startswith(SCORED_WHOLE)]
        for nb in notebooks(whole) if whole else []:
            print(f"[{time.strftime('%H:%M:%S')}] {nb.name} whole, its calls served from the parts' stores", flush=True)
            print(f"    done -> {run_notebook(nb, args.profile, run, overrides, progress=True)}", flush=True)
        return
    if args.shard and not only:
        raise SystemExit(f"--shard runs one sharded notebook at a time: add --only, one of {', '.join(SHARDED)}")
    if args.shard and any(not o.startswith(SHARDED) for o in only):
        raise SystemExit(f"--shard: only notebooks {', '.join(SHARDED)} take shards")
    if args.rerun_stale:
        for folder, st in resolved.stale().items():
            print(f"  {folder}: {st}")
        only = stale_chain(resolved)
        if not only:
            print("every stage is current: nothing to run")
            return
    timings_path = run_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    for nb in notebooks(only):
        t0 = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] {nb.name} (profile={args.profile}, run={run})", flush=True)
        out = run_notebook(nb, args.profile, run, overrides, progress=True, shard=args.shard)
        timings[nb.stem] = round(time.time() - t0, 1)
        timings_path.write_text(json.dumps(timings, indent=2))
        print(f"    done in {timings[nb.stem]} s -> {out}", flush=True)
    print(f"timings: {timings_path}  total {sum(timings.values()):.0f} s")


if __name__ == "__main__":
    main()
