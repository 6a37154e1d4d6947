"""One training call of stage 5 (sft) or 6 (dpo), from a job file the notebook wrote:

    python -m lpt_utils.training sft --config outputs/tiny/05_sft/sweep/lr-1e-3/epoch-1/job.yaml
    accelerate launch --config_file lpt_utils/training/recipes/accelerate_zero3.yaml --num_processes 4 \\
        -m lpt_utils.training sft --config outputs/paper/05_sft/sweep/lr-1e-5/epoch-1/job.yaml

The job's `trl:` mapping becomes TRL's `SFTConfig` / `DPOConfig` as it is; the rest says which model,
which examples, which epoch to stop after and where the model goes (`job.TrainJob`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lpt_utils.training.job import STAGES, TrainJob, run_job


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lpt_utils.training",
                                 description="One training call of stage 5 (sft) or 6 (dpo) from a job file.")
    ap.add_argument("stage", choices=STAGES)
    ap.add_argument("--config", required=True, type=Path, help="a job file (job.yaml) written by notebook 05/06")
    args = ap.parse_args(argv)
    job = TrainJob.load(args.config)
    if job.stage != args.stage:
        raise SystemExit(f"{args.config} is a {job.stage} job, not {args.stage}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    m = run_job(job)
    if m:  # the main process (under accelerate, the others return nothing)
        print(f"[{job.stage}] lr {job.learning_rate:g} epoch {job.stop_after_epoch}/{job.epochs}: "
              f"step {m['global_step']}, {m['seconds']} s -> {job.model_dir}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
