"""`python -m lpt_utils.tiny_world build|check|prune [--models-dir DIR] [--only vlm|lm] [--serial]`.

build: make sure both models (and their tokenizer) exist for the current recipes; with more than one
model to build, the shared tokenizer is built first, then each model in its own subprocess (one
thread each, in parallel; `--serial` builds them one after the other here); check: vLLM smoke
checks (parse rate, accuracy per question kind, writer validity and agreement), also written to
each model's folder as `check.json` beside the build's `warmup_log.json`; prune: delete model folders left by
older recipes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lpt_utils.tiny_world.check import check_in_subprocess
from lpt_utils.tiny_world.models import (
    RECIPES,
    default_models_dir,
    ensure_model,
    ensure_tokenizer,
    prune,
    recipe_hash,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lpt_utils.tiny_world")
    p.add_argument("command", choices=["build", "check", "prune"])
    p.add_argument("--models-dir", default=None, help="default: $LPT_MODELS_DIR or outputs/models")
    p.add_argument("--only", choices=["vlm", "lm"], action="append", help="one model (repeatable)")
    p.add_argument("--scenes", type=int, default=60, help="held-out scenes for `check`")
    p.add_argument("--serial", action="store_true", help="build: one model after the other, in this process")
    args = p.parse_args(argv)
    names = args.only or ["lm", "vlm"]

    models_dir = args.models_dir or str(default_models_dir())
    if args.command == "prune":
        for path in prune(models_dir):
            print(f"removed {path}")
        return 0
    if args.command == "build":
        todo = [n for n in dict.fromkeys(names)
                if not (Path(models_dir) / f"{n}-{recipe_hash(RECIPES[n])}" / "recipe_hash.txt").exists()]
        if len(todo) > 1 and not args.serial:
            return _build_parallel(todo, models_dir)
        for name in names:
            t0 = time.time()
            path = ensure_model(name, models_dir)
            print(f"{name}: {path} ({time.time() - t0:.0f} s)")
        return 0
    report = {}
    for name in names:
        folder = ensure_model(name, models_dir)
        t0 = time.time()
        report[name] = check_in_subprocess(name, folder, args.scenes)
        report[name]["check_seconds"] = round(time.time() - t0, 1)
        # beside the build's own record (warmup_log.json: build_seconds, losses), what the model does
        (folder / "check.json").write_text(json.dumps({"scenes": args.scenes, **report[name]}, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def _build_parallel(names: list[str], models_dir: str) -> int:
    """The shared tokenizer here, then each model in a child process (one thread each); fails when
    any child fails."""
    t0 = time.time()
    print(f"tokenizer: {ensure_tokenizer(models_dir)} ({time.time() - t0:.0f} s)", flush=True)
    env = {**os.environ, "LPT_TINY_THREADS": os.environ.get("LPT_TINY_THREADS", "1")}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs = {n: subprocess.Popen([sys.executable, "-m", "lpt_utils.tiny_world", "build", "--only", n,
                                  "--models-dir", models_dir], env=env) for n in names}
    failed = []
    for n, proc in procs.items():
        if proc.wait() != 0:
            failed.append(f"{n} (exit {proc.returncode})")
    print(f"parallel build of {', '.join(names)}: {time.time() - t0:.0f} s", flush=True)
    if failed:
        print(f"build failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
