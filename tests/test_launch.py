"""The training launch: the shipped accelerate + DeepSpeed ZeRO-3 settings and the commands built from
the profiles (GPU launches cannot run here, so they are parsed with accelerate's own parsers)."""

import copy
from pathlib import Path

import pytest

from lpt_utils import config
from lpt_utils.training import job as tj
from lpt_utils.training import launch


def test_accelerate_recipe_is_zero3_on_one_node_and_loads_in_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    raw = launch.read_accelerate_config()
    assert raw["distributed_type"] == "DEEPSPEED" and raw["num_machines"] == 1
    ds = raw["deepspeed_config"]
    assert ds["zero_stage"] == 3
    assert ds["zero3_save_16bit_model"] is True  # save_model gathers whole weights: a folder vLLM loads
    assert ds["offload_optimizer_device"] == "none" and ds["offload_param_device"] == "none"
    # batch and accumulation are the Trainer's to set from the profile, never pinned here
    assert "gradient_accumulation_steps" not in ds and "train_micro_batch_size_per_gpu" not in ds
    cfg = load_config_from_file(str(launch.ACCELERATE_ZERO3))  # accelerate's own schema check
    assert cfg.deepspeed_config["zero_stage"] == 3 and cfg.num_machines == 1
    assert str(cfg.distributed_type).endswith("DEEPSPEED")


def _paper_section(stage: str) -> dict:
    return config.load_profile("paper")[stage]


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_paper_profile_launches_accelerate_with_zero3(stage):
    from accelerate.commands.launch import launch_command_parser

    s = tj.StageSettings.from_section(stage, _paper_section(stage))
    assert s.lpt["launcher"] == "accelerate" and s.bf16
    argv = launch.launch_command(stage, Path("/x/job.yaml"), launcher=s.lpt["launcher"], num_processes=4,
                                 bf16=s.bf16, python="python")
    assert argv[:3] == ["python", "-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(argv[3:])
    assert Path(args.config_file) == launch.ACCELERATE_ZERO3
    assert args.num_processes == 4 and args.num_machines == 1 and args.mixed_precision == "bf16"
    assert args.module and args.training_script == "lpt_utils.training"
    assert args.training_script_args == [stage, "--config", "/x/job.yaml"]
    # the effective batch of 256 over 4 GPUs: 1 per device x 64 accumulated
    job = tj.make_job(stage, s, model="m", train_file=Path("t.parquet"), sweep_dir=Path("/s"), lr=1e-5, epoch=1,
                      num_processes=4, use_cpu=False, ref_model="m")
    assert (job.trl["per_device_train_batch_size"], job.trl["gradient_accumulation_steps"]) == (1, 64)
    assert job.effective_batch_size == 256 and job.trl["bf16"] is True


def test_fp32_under_accelerate_asks_for_no_mixed_precision():
    argv = launch.launch_command("sft", Path("j.yaml"), launcher="accelerate", num_processes=2, bf16=False)
    assert argv[argv.index("--mixed_precision") + 1] == "no"


def test_python_launcher_runs_the_module_in_one_process():
    argv = launch.launch_command("dpo", Path("j.yaml"), launcher="python", python="py")
    assert argv == ["py", "-m", "lpt_utils.training", "dpo", "--config", "j.yaml"]
    with pytest.raises(ValueError, match="one process"):
        launch.launch_command("dpo", Path("j.yaml"), launcher="python", num_processes=2)
    with pytest.raises(ValueError, match="launcher"):
        launch.launch_command("dpo", Path("j.yaml"), launcher="torchrun")
    with pytest.raises(ValueError, match="stage"):
        launch.launch_command("ppo", Path("j.yaml"), launcher="python")


def test_resolve_num_processes(monkeypatch):
    import torch

    assert launch.resolve_num_processes("auto", "python") == 1
    assert launch.resolve_num_processes(3, "accelerate") == 3
    with pytest.raises(ValueError, match="one process"):
        launch.resolve_num_processes(2, "python")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(RuntimeError, match="no GPU"):
        launch.resolve_num_processes("auto", "accelerate")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert launch.resolve_num_processes("auto", "accelerate") == 8


def test_run_training_reports_a_failure_with_the_log_tail(tmp_path):
    import sys

    log = tmp_path / "train.log"
    ok = launch.run_training([sys.executable, "-c", "print('step 1'); print('done')"], log)
    assert ok == "done" and "step 1" in log.read_text()
    with pytest.raises(RuntimeError, match=r"exit 3[\s\S]*boom"):
        launch.run_training([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], log)


def test_slurm_launches_accelerate_once_per_node_with_its_rank():
    """Several nodes (launcher slurm): `srun` runs one `accelerate launch` per node; with the variables
    Slurm sets on node 1 of 2 (4 GPUs each), the command parses as accelerate reads it."""
    import os
    import shlex

    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    argv = launch.launch_command("sft", Path("/x/job.yaml"), launcher="slurm", num_processes=8, num_machines=2,
                                 bf16=True, python="python")
    assert argv[:6] == ["srun", "--nodes", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]
    assert argv[6:8] == ["bash", "-c"]
    script = argv[8]
    assert script.startswith('LPT_MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); exec ')
    node = os.path.expandvars(script.split("; exec ", 1)[1].replace("$SLURM_NODEID", "1")
                              .replace("$LPT_MAIN_NODE", "gpu-node-01"))
    inner = shlex.split(node)
    args = launch_command_parser().parse_args(inner[3:])
    assert (args.num_machines, args.machine_rank, args.num_processes) == (2, 1, 8)
    assert args.main_process_ip == "gpu-node-01" and args.main_process_port == launch.MAIN_PORT
    assert Path(args.config_file) == launch.ACCELERATE_ZERO3_MULTINODE and args.mixed_precision == "bf16"
    assert args.training_script == "lpt_utils.training" and args.training_script_args == ["sft", "--config",
                                                                                          "/x/job.yaml"]
    cfg = load_config_from_file(str(launch.ACCELERATE_ZERO3_MULTINODE))  # accelerate's own schema check
    assert cfg.deepspeed_config["zero_stage"] == 3 and str(cfg.distributed_type).endswith("DEEPSPEED")
    with pytest.raises(ValueError, match="do not split evenly"):
        launch.launch_command("sft", Path("j.yaml"), launcher="slurm", num_processes=7, num_machines=2)
    with pytest.raises(ValueError, match="several nodes need launcher 'slurm'"):
        launch.launch_command("sft", Path("j.yaml"), launcher="accelerate", num_processes=8, num_machines=2)


def test_the_multinode_profile_counts_every_gpu_of_every_node(monkeypatch):
    """`lpt.num_machines` nodes of `lpt.num_processes` GPUs: the effective batch of 256 is split over them all."""
    section = copy.deepcopy(config.load_profile("paper")["sft"])
    section["lpt"].update(launcher="slurm", num_processes=4, num_machines=2)
    s = tj.StageSettings.from_section("sft", section)
    n = launch.resolve_num_processes(s.lpt["num_processes"], s.lpt["launcher"]) * s.lpt["num_machines"]
    assert n == 8 and s.accumulation(n) == 32  # 1 per device x 32 accumulated x 8 processes = 256
