"""`python -m lpt_utils.tiny_world build|check|prune [--models-dir DIR] [--only vlm|lm]`.

build: make sure both models (and their tokenizer) exist for the current recipes; check: vLLM smoke
checks (parse rate, accuracy per question kind, writer validity); prune: delete model folders left by
older recipes."""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lpt_utils.tiny_world")
    p.add_argument("command", choices=["build", "check", "prune"])
    p.add_argument("--models-dir", default=None, help="default: $LPT_MODELS_DIR or outputs/models")
    p.add_argument("--only", choices=["vlm", "lm"], action="append", help="one model (repeatable)")
    p.add_argument("--scenes", type=int, default=60, help="held-out scenes for `check`")
    args = p.parse_args(argv)
    names = args.only or ["lm", "vlm"]

    from lpt_utils.tiny_world.models import default_models_dir, ensure_model, prune

    models_dir = args.models_dir or str(default_models_dir())
    if args.command == "prune":
        for path in prune(models_dir):
            print(f"removed {path}")
        return 0
    if args.command == "build":
        for name in names:
            t0 = time.time()
            path = ensure_model(name, models_dir)
            print(f"{name}: {path} ({time.time() - t0:.0f} s)")
        return 0
    from lpt_utils.tiny_world.check import check_in_subprocess

    report = {name: check_in_subprocess(name, ensure_model(name, models_dir), args.scenes) for name in names}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
