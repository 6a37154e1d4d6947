"""Stages 5-6, from profile to job file (lpt_utils.training.job): the profiles' `sft:` / `dpo:` sections
hold TRL's own keys (checked against SFTConfig / DPOConfig) and this project's under `lpt:`; each builds
a valid TRL config with the paper's, the released code's and the tiny run's values; a job file round-trips;
the CLI reads it. No model is loaded here."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from lpt_utils import config
from lpt_utils.training import job as tj
from lpt_utils.training.__main__ import main as cli
from lpt_utils.training.sweep import SweepPlan


def _section(profile: str, stage: str) -> dict:
    return copy.deepcopy(config.load_profile(profile)[stage])


def _job(profile: str, stage: str, *, num_processes: int = 1, lr: float | None = None, epoch: int = 1,
         tmp: Path = Path("/s")) -> tj.TrainJob:
    s = tj.StageSettings.from_section(stage, _section(profile, stage))
    return tj.make_job(stage, s, model="m", train_file=tmp / "t.parquet", sweep_dir=tmp,
                       lr=lr or s.lpt["learning_rates"][0], epoch=epoch, num_processes=num_processes, use_cpu=True,
                       ref_model="m" if stage == "dpo" else None)


# ----------------------------------------------------------------------------- the names are checked


def test_a_misspelled_trl_key_is_an_error_with_a_suggestion():
    s = _section("paper", "sft")
    s["lr_schedular_type"] = s.pop("lr_scheduler_type")
    with pytest.raises(ValueError, match=r"'sft'.*'lr_schedular_type' is not a field of TRL's SFTConfig "
                                         r"\(did you mean 'lr_scheduler_type'\?\)"):
        tj.StageSettings.from_section("sft", s)
    d = _section("paper", "dpo")
    d["betta"] = 0.3
    with pytest.raises(ValueError, match=r"'dpo'.*'betta' is not a field of TRL's DPOConfig \(did you mean 'beta'\?\)"):
        tj.StageSettings.from_section("dpo", d)
    # a DPO key in the SFT section is not SFTConfig's either
    s = _section("paper", "sft")
    s["beta"] = 1.0
    with pytest.raises(ValueError, match="'beta' is not a field of TRL's SFTConfig"):
        tj.StageSettings.from_section("sft", s)


def test_a_project_setting_in_the_wrong_half_is_named_with_where_it_belongs():
    s = _section("paper", "sft")
    s["max_pixels"] = 100
    with pytest.raises(ValueError, match=r"'max_pixels'.*put it under sft\.lpt"):
        tj.StageSettings.from_section("sft", s)
    s = _section("paper", "sft")
    s["lpt"]["warmup_steps"] = 3
    with pytest.raises(ValueError, match=r"'sft\.lpt'.*'warmup_steps'.*TRL's: put it in sft: directly"):
        tj.StageSettings.from_section("sft", s)


def test_an_unknown_lpt_key_is_an_error_with_a_suggestion_and_missing_ones_are_named():
    s = _section("paper", "dpo")
    s["lpt"]["early_stop_patients"] = s["lpt"].pop("early_stop_patience")
    with pytest.raises(ValueError, match=r"'dpo\.lpt'.*'early_stop_patients'.*did you mean 'early_stop_patience'"):
        tj.StageSettings.from_section("dpo", s)
    s = _section("paper", "dpo")
    s["lpt"]["data"] = "sft_long"  # SFT's setting, not DPO's
    with pytest.raises(ValueError, match=r"'dpo\.lpt'.*'data'"):
        tj.StageSettings.from_section("dpo", s)
    s = _section("paper", "sft")
    del s["lpt"]["launcher"]
    with pytest.raises(ValueError, match=r"'sft\.lpt': missing launcher"):
        tj.StageSettings.from_section("sft", s)
    s = _section("paper", "sft")
    del s["lpt"]
    with pytest.raises(ValueError, match="'lpt' sub-section"):
        tj.StageSettings.from_section("sft", s)


def test_keys_the_job_sets_are_refused_in_the_profile():
    for key, value in (("learning_rate", 1e-5), ("num_train_epochs", 3), ("output_dir", "x"),
                       ("save_strategy", "steps"), ("use_cpu", True)):
        s = _section("paper", "sft")
        s[key] = value
        with pytest.raises(ValueError, match=rf"'{key}' is set by the job"):
            tj.StageSettings.from_section("sft", s)
    s = _section("paper", "sft")
    s["completion_only_loss"] = False
    with pytest.raises(ValueError, match="masked X→O prefix"):
        tj.StageSettings.from_section("sft", s)
    s = _section("paper", "sft")
    s["gradient_accumulation_steps"] = 8  # beside an effective batch: which one?
    with pytest.raises(ValueError, match="not both"):
        tj.StageSettings.from_section("sft", s)
    s["lpt"]["effective_batch_size"] = None  # alone it is TRL's, passed through
    assert tj.StageSettings.from_section("sft", s).accumulation(4) == 8


def test_invalid_project_values_are_refused():
    s = _section("paper", "sft")
    s["lpt"]["launcher"] = "torchrun"
    with pytest.raises(ValueError, match="launcher"):
        tj.StageSettings.from_section("sft", s)
    s = _section("paper", "sft")
    s["lpt"]["overlong"] = "cut"
    with pytest.raises(ValueError, match="overlong"):
        tj.StageSettings.from_section("sft", s)


def test_overrides_reach_the_trl_config_under_trl_names():
    s = config.apply_overrides(config.load_profile("paper"), {"sft.warmup_steps": 7, "sft.lpt.max_epochs": 2})
    job = tj.make_job("sft", s["sft"], model="m", train_file=Path("t"), sweep_dir=Path("/s"), lr=1e-5, epoch=1,
                      num_processes=4, use_cpu=True)
    args = tj.trl_config(job)
    assert (args.warmup_steps, args.num_train_epochs) == (7, 2)
    with pytest.raises(KeyError, match="sft.warmup_steps"):  # the old vocabulary is gone
        config.apply_overrides(config.load_profile("paper"), {"sft.warmup_step": 7})


# ----------------------------------------------------------------------------- the profiles' values


def test_paper_sections_build_the_appendix_configs():
    p = config.load_profile("paper")
    sft = tj.StageSettings.from_section("sft", p["sft"])
    assert SweepPlan.from_section(sft) == SweepPlan((1e-5, 8e-6, 6e-6), 5, 1, True)
    assert sft.lpt["effective_batch_size"] == 256 and sft.lpt["data"] == "sft_long"
    assert (sft.lpt["max_pixels"], sft.lpt["launcher"], sft.lpt["num_processes"]) == (262144, "accelerate", "auto")
    args = tj.trl_config(_job("paper", "sft", num_processes=4))
    assert (args.learning_rate, args.num_train_epochs) == (1e-5, 5)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 64)  # 1 x 64 x 4 = 256
    assert str(args.lr_scheduler_type).lower().endswith("cosine") and args.warmup_steps == 5
    assert (args.weight_decay, args.max_length, args.bf16, args.gradient_checkpointing) == (0.0, 1024, True, True)
    assert (args.seed, args.data_seed, args.logging_steps) == (0, 0, 1)
    assert args.completion_only_loss is True and args.save_strategy == "epoch" and args.save_total_limit == 1
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}

    dpo = tj.StageSettings.from_section("dpo", p["dpo"])
    assert SweepPlan.from_section(dpo) == SweepPlan((1e-6, 5e-7, 1e-7), 3, 1, True)
    assert dpo.lpt["families"] == ["O", "X→O"] and dpo.lpt["effective_batch_size"] == 256
    args = tj.trl_config(_job("paper", "dpo", num_processes=8))
    assert args.beta == 1.0 and args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5]
    assert (args.learning_rate, args.num_train_epochs, args.gradient_accumulation_steps) == (1e-6, 3, 32)
    assert str(args.lr_scheduler_type).lower().endswith("cosine") and args.warmup_steps == 5
    assert (args.max_length, args.bf16, args.gradient_checkpointing) == (1024, True, True)


def test_released_code_sections_state_only_what_differs():
    raw = yaml.safe_load(config.profile_path("released_code").read_text())
    assert set(raw["sft"]) == {"max_length", "lpt"} and set(raw["dpo"]) == {"beta", "loss_weights", "max_length", "lpt"}
    r = config.load_profile("released_code")
    sft = tj.StageSettings.from_section("sft", r["sft"])
    assert SweepPlan.from_section(sft) == SweepPlan((1e-5,), 1, None, False)
    args = tj.trl_config(_job("released_code", "sft", num_processes=4))
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 1)  # no accumulation
    assert (args.max_length, args.num_train_epochs, args.learning_rate) == (2048, 1, 1e-5)
    dpo = tj.StageSettings.from_section("dpo", r["dpo"])
    assert SweepPlan.from_section(dpo) == SweepPlan((1e-5,), 1, None, False) and dpo.lpt["families"] == ["X→O"]
    args = tj.trl_config(_job("released_code", "dpo", num_processes=4))
    assert args.beta == 0.2 and args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 1.0]
    assert (args.gradient_accumulation_steps, args.max_length) == (1, 2048)


def test_tiny_sections_train_fp32_on_one_process():
    t = config.load_profile("tiny")
    sft = tj.StageSettings.from_section("sft", t["sft"])
    plan = SweepPlan.from_section(sft)
    assert plan.validate and plan.learning_rates == (1e-4,) and plan.max_epochs == 2
    for stage in ("sft", "dpo"):
        s = tj.StageSettings.from_section(stage, t[stage])
        assert (s.lpt["launcher"], s.lpt["num_processes"], s.lpt["cpu_threads"]) == ("python", 1, 1)
        args = tj.trl_config(_job("tiny", stage))
        assert (args.bf16, args.use_cpu, args.gradient_checkpointing) == (False, True, False)
        assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.warmup_steps) == (2, 4, 2)
    args = tj.trl_config(_job("tiny", "dpo"))
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5] and args.beta == 1.0  # paper's


def test_bf16_follows_trl_when_the_profile_is_silent():
    s = _section("paper", "sft")
    del s["bf16"]
    st = tj.StageSettings.from_section("sft", s)
    job = tj.make_job("sft", st, model="m", train_file=Path("t"), sweep_dir=Path("/s"), lr=1e-5, epoch=1,
                      num_processes=4, use_cpu=True)
    assert st.bf16 and job.bf16 and tj.trl_config(job).bf16  # TRL's default: bf16 unless fp16
    s["fp16"] = True
    assert not tj.StageSettings.from_section("sft", s).bf16


def test_every_profile_section_is_valid():
    for name in config.available_profiles():
        settings = config.load_profile(name)
        for stage in ("sft", "dpo"):
            tj.StageSettings.from_section(stage, settings[stage])


def test_accumulation_steps_make_the_effective_batch():
    assert tj.accumulation_steps(256, 1, 4) == 64
    assert tj.accumulation_steps(256, 2, 8) == 16
    assert tj.accumulation_steps(None, 1, 4) == 1
    with pytest.raises(ValueError, match="not a multiple"):
        tj.accumulation_steps(256, 1, 3)
    with pytest.raises(ValueError, match="not a multiple"):
        tj.accumulation_steps(2, 4, 1)
    job = _job("paper", "sft", num_processes=4)
    assert job.effective_batch_size == 256


# ----------------------------------------------------------------------------- the job file


def test_the_job_file_round_trips_and_holds_the_trl_config_verbatim(tmp_path):
    job = _job("tiny", "dpo", tmp=tmp_path, epoch=1)
    path = job.save(tmp_path / "job.yaml")
    assert tj.TrainJob.load(path) == job
    raw = yaml.safe_load(path.read_text())
    assert raw["trl"] == job.trl and tj.trl_config(job).to_dict()["beta"] == raw["trl"]["beta"]
    assert raw["trl"]["output_dir"] == str(tmp_path / "lr-1e-4" / "checkpoints")
    assert raw["model_dir"] == str(tmp_path / "lr-1e-4" / "epoch-1" / "model") and raw["max_pixels"] == 50176
    assert raw["frozen_modules"] and "visual" in raw["frozen_modules"]
    # every key of the TRL part reaches DPOConfig as it is (TrainingArguments re-spells two of them)
    cfg = tj.trl_config(job)
    assert cfg.report_to == [] and str(cfg.lr_scheduler_type).lower().endswith("cosine")
    assert {k: getattr(cfg, k) for k in raw["trl"] if k not in ("report_to", "lr_scheduler_type")} == \
        {k: v for k, v in raw["trl"].items() if k not in ("report_to", "lr_scheduler_type")}


def test_a_job_file_with_unknown_keys_is_refused(tmp_path):
    job = _job("tiny", "sft", tmp=tmp_path)
    good = job.save(tmp_path / "job.yaml").read_text()
    (tmp_path / "bad.yaml").write_text(good + "stop_after_epoc: 1\n")
    with pytest.raises(ValueError, match=r"'stop_after_epoc' is not a TrainJob field \(did you mean 'stop_after_epoch'"):
        tj.TrainJob.load(tmp_path / "bad.yaml")
    raw = yaml.safe_load(good)
    raw["trl"]["learnig_rate"] = 1.0
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"'learnig_rate' is not a field of TRL's SFTConfig \(did you mean 'learning_rate'"):
        tj.TrainJob.load(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="stop_after_epoch"):
        dataclasses.replace(job, stop_after_epoch=3)  # the tiny schedule spans 2


def test_later_epochs_resume_and_keep_the_schedule(tmp_path):
    first, second = _job("tiny", "sft", tmp=tmp_path, epoch=1), _job("tiny", "sft", tmp=tmp_path, epoch=2)
    assert (first.resume, second.resume) == (False, True)
    assert first.trl == second.trl  # the same schedule; only the stopping point and the export differ
    assert first.model_dir != second.model_dir


def test_cli_refuses_a_job_of_the_other_stage(tmp_path):
    path = _job("tiny", "sft", tmp=tmp_path).save(tmp_path / "job.yaml")
    with pytest.raises(SystemExit, match="sft job"):
        cli(["dpo", "--config", str(path)])


def test_the_module_runs_as_a_script(tmp_path):
    """`python -m lpt_utils.training` is the entry point launch_command names (accelerate runs the same)."""
    import subprocess
    import sys

    path = _job("tiny", "sft", tmp=tmp_path).save(tmp_path / "job.yaml")
    out = subprocess.run([sys.executable, "-m", "lpt_utils.training", "dpo", "--config", str(path)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode != 0 and "is a sft job, not dpo" in out.stderr
