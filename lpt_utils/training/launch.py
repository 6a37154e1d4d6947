"""How notebooks 05-06 start a training call: a subprocess, so the trainer never shares a process (or
its memory) with the vLLM engine that validates between epochs.

- `python`: ``python -m lpt_utils.training {sft,dpo} --config job.yaml``, one process (CPU, or one GPU).
- `accelerate`: the same module under ``accelerate launch`` with the repo's DeepSpeed ZeRO-3 settings
  for one multi-GPU node (`recipes/accelerate_zero3.yaml`), one process per GPU.
- `slurm`: several nodes of the Slurm allocation the notebook runs in: ``srun`` starts ``accelerate
  launch`` once per node (`recipes/accelerate_zero3_multinode.yaml`), each with its node's rank; the
  first node of the allocation is the main process (``scontrol show hostnames``). The profile's
  `lpt.num_machines` says how many nodes, `lpt.num_processes` how many GPUs each.

    cmd = launch_command("sft", job_file, launcher="accelerate", num_processes=4, bf16=True)
    run_training(cmd, log_file)
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import yaml

from lpt_utils.config import REPO_ROOT

RECIPES = Path(__file__).parent / "recipes"
ACCELERATE_ZERO3 = RECIPES / "accelerate_zero3.yaml"
ACCELERATE_ZERO3_MULTINODE = RECIPES / "accelerate_zero3_multinode.yaml"
ACCELERATE_CPU = RECIPES / "accelerate_cpu.yaml"  # one CPU process: the CI's check of the accelerate path
LAUNCHERS = ("python", "accelerate", "slurm")
MAIN_PORT = 29500
TRAINING_MODULE = "lpt_utils.training"  # the TRL-style script a call runs (`python -m`)


def read_accelerate_config(path: Path = ACCELERATE_ZERO3) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def resolve_num_processes(setting: int | str | None, launcher: str) -> int:
    """How many training processes: 1 for `python`; for `accelerate`, the setting, or with `auto`/None
    every visible GPU."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "python":
        if setting not in (None, "auto", 1):
            raise ValueError(f"the python launcher runs one process; num_processes {setting!r} needs "
                             "launcher: accelerate")
        return 1
    if setting in (None, "auto"):
        import torch

        n = torch.cuda.device_count()
        if n == 0:
            raise RuntimeError("launcher 'accelerate' with num_processes 'auto' found no GPU; use launcher: python "
                               "on a CPU machine")
        return n
    n = int(setting)
    if n < 1:
        raise ValueError(f"num_processes must be >= 1, got {setting!r}")
    return n


def launch_command(stage: str, job_file: Path, *, launcher: str, num_processes: int = 1, bf16: bool = False,
                   num_machines: int = 1, accelerate_config: Path | None = None,
                   python: str = sys.executable) -> list[str]:
    """The argv of one training call. `num_processes`: all of them, over every node; `bf16`: the job's
    TRL `bf16`, passed to accelerate as its mixed precision (`no` otherwise)."""
    if stage not in ("sft", "dpo"):
        raise ValueError(f"stage must be 'sft' or 'dpo', got {stage!r}")
    module = ["-m", TRAINING_MODULE, stage, "--config", str(job_file)]
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "python":
        if num_processes != 1 or num_machines != 1:
            raise ValueError("the python launcher runs one process")
        return [python, *module]
    mixed = "bf16" if bf16 else "no"
    if launcher == "accelerate":
        if num_machines != 1:
            raise ValueError("launcher 'accelerate' runs on one node; several nodes need launcher 'slurm'")
        return [python, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config or ACCELERATE_ZERO3),
                "--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", mixed, *module]
    if num_processes % num_machines:
        raise ValueError(f"{num_processes} processes do not split evenly over {num_machines} nodes")
    per_node = [python, "-m", "accelerate.commands.launch",
                "--config_file", str(accelerate_config or ACCELERATE_ZERO3_MULTINODE),
                "--num_processes", str(num_processes), "--num_machines", str(num_machines),
                "--machine_rank", "$SLURM_NODEID", "--main_process_ip", "$LPT_MAIN_NODE",
                "--main_process_port", str(MAIN_PORT), "--mixed_precision", mixed, *module]
    script = ('LPT_MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); exec '
              + " ".join(a if a.startswith("$") else shlex.quote(a) for a in per_node))
    return ["srun", "--nodes", str(num_machines), "--ntasks-per-node", "1", "--kill-on-bad-exit=1",
            "bash", "-c", script]


def run_training(cmd: list[str], log_file: Path, *, cwd: Path = REPO_ROOT, tail: int = 40) -> str:
    """Run `cmd`, its output going to `log_file`; returns the last line it printed. A failure raises
    RuntimeError with the end of the log."""
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    last: deque[str] = deque(maxlen=tail)
    with open(log_file, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            last.append(line.rstrip("\n"))
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"training call failed (exit {rc}); log: {log_file}\n" + "\n".join(last))
    return next((s for s in reversed(last) if s.strip()), "")
