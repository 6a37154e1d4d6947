"""`python -m lpt_utils.tiny_world build|check [--models-dir DIR] [--only vlm|lm]`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lpt_utils.tiny_world")
    p.add_argument("command", choices=["build", "check"])
    p.add_argument("--models-dir", default=None, help="default: $LPT_MODELS_DIR or outputs/models")
    p.add_argument("--only", choices=["vlm", "lm"], action="append", help="one model (repeatable)")
    p.add_argument("--scenes", type=int, default=60, help="held-out scenes for `check`")
    args = p.parse_args(argv)
    names = args.only or ["lm", "vlm"]

    from lpt_utils.tiny_world.models import default_models_dir, ensure_model

    models_dir = args.models_dir or str(default_models_dir())
    if args.command == "build":
        for name in names:
            t0 = time.time()
            path = ensure_model(name, models_dir)
            print(f"{name}: {path} ({time.time() - t0:.0f} s)")
        return 0
    # One vLLM engine per process: each model is checked in a child process.
    report = {}
    for name in names:
        path = ensure_model(name, models_dir)
        fn = "check_vlm" if name == "vlm" else "check_lm"
        code = (f"import json; from lpt_utils.tiny_world.check import {fn}; "
                f"print('@@' + json.dumps({fn}({str(path)!r}, n_scenes={args.scenes})))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        report[name] = json.loads(out.split("@@", 1)[1])
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
