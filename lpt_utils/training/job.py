"""Stages 5-6: the profile's `sft:` / `dpo:` section -> a job file -> TRL's trainer -> one epoch.

A profile section is TRL's own config, key for key, plus one sub-section of this project's settings:

    sft:
      per_device_train_batch_size: 1    # a field of TRL's SFTConfig (DPOConfig for `dpo:`), passed as it is
      lr_scheduler_type: cosine
      ...
      lpt:                              # this project's settings, not TRL's (`LPT_KEYS`)
        learning_rates: [1.0e-5, 8.0e-6, 6.0e-6]
        effective_batch_size: 256
        ...

`StageSettings.from_section` checks both halves: a TRL key must be a field of `SFTConfig` / `DPOConfig`
(`dataclasses.fields`), an `lpt:` key one of `LPT_KEYS`; an unknown name is an error that names the
section and the key, with the closest known name. A few TRL keys belong to the job, not the profile
(`JOB_KEYS`: the learning rate comes from the sweep, the checkpointing from the one-epoch-per-call
design); the profile may not set them.

`make_job` turns a section into one call's `TrainJob`: the TRL keyword arguments verbatim (`trl:`: the
profile's keys, the job's, and `PROJECT_DEFAULTS` where the profile is silent) plus this project's job
fields (model, data file, where the epoch's model goes, which epoch to stop after, ...). The notebook
writes it as `job.yaml`; the trainer's process (`python -m lpt_utils.training`) reads it, builds
`SFTConfig(**job.trl)` / `DPOConfig(**job.trl)` and runs `run_job`: one more epoch of a schedule that
spans `num_train_epochs`, resumed from the previous call's checkpoint, exported to `model_dir`.

torch, transformers and trl are imported inside the functions that need them: the kernel imports this
module to write jobs without loading a trainer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lpt_utils.training.data import DPO_FAMILIES, SFT_FILES, dpo_collator, sft_collator
from lpt_utils.training.launch import LAUNCHERS
from lpt_utils.training.weights import (
    VISION_MODULE_NAMES,
    freeze_vision,
    parameter_counts,
)

STAGES = ("sft", "dpo")
LPT = "lpt"  # the name of the sub-section of this project's settings inside `sft:` / `dpo:`

# This project's settings (the `lpt:` sub-section of both stages), with what each does.
LPT_KEYS = {
    "learning_rates": "swept in order; each trains its own schedule; the best validation accuracy wins",
    "max_epochs": "the schedule's length (TRL's num_train_epochs of every call); a learning rate may stop earlier",
    "early_stop_patience": "stop a learning rate after this many epochs without a better accuracy; null: never",
    "validate": "score the held-out MCQs after every epoch (needed to choose between learning rates)",
    "validation": "the held-out scoring: max_mcqs (null: all) and the engine's sampling",
    "effective_batch_size": "per-device batch x gradient accumulation x processes; the accumulation is derived "
                            "from it (null: TRL's gradient_accumulation_steps as set)",
    "overlong": "truncate (the collator cuts the end) | drop: examples longer than max_length",
    "max_pixels": "area cap on training images, as the engines cap generation images",
    "cpu_threads": "torch threads when training on CPU; null: torch's default",
    "launcher": "python (one process) | accelerate (DeepSpeed ZeRO-3 on one node, recipes/accelerate_zero3.yaml) | "
                "slurm (several nodes of the Slurm allocation, recipes/accelerate_zero3_multinode.yaml)",
    "num_processes": "training processes (GPUs) per node under accelerate or slurm; auto: every visible GPU",
    "num_machines": "nodes (launcher slurm); 1 otherwise",
}
STAGE_LPT_KEYS = {
    "sft": {"data": f"which stage-4 SFT set trains: one of {', '.join(SFT_FILES)}",
            "control": "a second stage-4 SFT set trained the same way at the kept learning rate, into "
                       "<stage>/control/ (sft_simple: the paper's simple-CoT contrast); null: none"},
    "dpo": {"families": f"which DPO pair families train: a non-empty subset of {list(DPO_FAMILIES)}"},
}

# TRL keys the job sets itself, and why; a profile that states one is refused.
JOB_KEYS = {
    "output_dir": "the job's checkpoint folder under the sweep (<stage>/sweep/<lr>/checkpoints)",
    "learning_rate": "the sweep's, from lpt.learning_rates",
    "num_train_epochs": "lpt.max_epochs",
    "save_strategy": "'epoch': each call ends on a checkpoint the next call resumes from",
    "save_total_limit": "1: only the checkpoint the next call resumes from is kept",
    "use_cpu": "decided where the job is built: true when there is no GPU",
}
STAGE_JOB_KEYS = {
    "sft": {"completion_only_loss": "true: the prompt (masked X→O prefix included) carries no loss"},
    "dpo": {},
}

# TRL keys this project sets when the profile does not (TRL's defaults differ); the profile may override them.
# `data_seed` also defaults to the profile's `seed`.
PROJECT_DEFAULTS = {
    "report_to": "none",  # no experiment tracker: the log is the call's metrics.json and train.log
    "disable_tqdm": True,  # the log goes to a file; the notebook's sweep draws its own bar
    "dataloader_num_workers": 0,  # images are loaded by the collator, in the training process
    # reentrant checkpointing loses the gradients of a block whose inputs need none (the frozen vision
    # tower's output); the non-reentrant kind does not. Unused without gradient_checkpointing.
    "gradient_checkpointing_kwargs": {"use_reentrant": False},
}


# ----------------------------------------------------------------------------- checking the names


@functools.cache
def trl_fields(stage: str) -> frozenset[str]:
    """The field names of TRL's config class for `stage` (`SFTConfig` / `DPOConfig`)."""
    return frozenset(f.name for f in dataclasses.fields(config_class(stage)))


def config_class(stage: str):
    """TRL's `SFTConfig` or `DPOConfig`."""
    if stage not in STAGES:
        raise ValueError(f"stage must be 'sft' or 'dpo', got {stage!r}")
    import trl  # heavy (it loads transformers and torch): only where a config is checked or built

    return trl.SFTConfig if stage == "sft" else trl.DPOConfig


def _near(key: str, known: Iterable[str]) -> str:
    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def lpt_keys(stage: str) -> dict[str, str]:
    """This project's settings of `stage`'s `lpt:` sub-section, with what each does."""
    return {**LPT_KEYS, **STAGE_LPT_KEYS[stage]}


def check_trl_keys(stage: str, keys: Iterable[str], where: str) -> None:
    """Raise ValueError naming `where` and the first key that is not a field of TRL's config class."""
    fields_ = trl_fields(stage)
    cls = config_class(stage).__name__
    for key in keys:
        if key not in fields_:
            hint = (f"; it is one of this project's settings: put it under {stage}.{LPT}"
                    if key in lpt_keys(stage) else _near(key, fields_))
            raise ValueError(f"{where}: {key!r} is not a field of TRL's {cls}{hint}")


@dataclass(frozen=True)
class StageSettings:
    """A profile's `sft:` or `dpo:` section, checked: TRL's keys (`trl`, as the profile states them) and
    this project's (`lpt`, every key of `lpt_keys(stage)`)."""

    stage: str
    trl: dict[str, Any]
    lpt: dict[str, Any]

    @classmethod
    def from_section(cls, stage: str, section: dict[str, Any]) -> StageSettings:
        if stage not in STAGES:
            raise ValueError(f"stage must be 'sft' or 'dpo', got {stage!r}")
        if not isinstance(section, dict) or not isinstance(section.get(LPT), dict):
            raise ValueError(f"profile section {stage!r} must be a mapping with a {LPT!r} sub-section "
                             "(this project's settings)")
        trl = {k: v for k, v in section.items() if k != LPT}
        owned = {**JOB_KEYS, **STAGE_JOB_KEYS[stage]}
        for key in trl:
            if key in owned:
                raise ValueError(f"profile section {stage!r}: {key!r} is set by the job, not the profile "
                                 f"({owned[key]})")
        check_trl_keys(stage, trl, f"profile section {stage!r}")
        known = lpt_keys(stage)
        lpt = dict(section[LPT])
        for key in lpt:
            if key not in known:
                hint = (f"; it is TRL's: put it in {stage}: directly" if key in trl_fields(stage)
                        else _near(key, known))
                raise ValueError(f"profile section '{stage}.{LPT}': {key!r} is not one of this project's "
                                 f"settings{hint} (known: {', '.join(known)})")
        lpt.setdefault("num_machines", 1)  # one node unless a profile says otherwise
        if stage == "sft":
            lpt.setdefault("control", None)  # no control run unless a profile asks for one
        missing = [k for k in known if k not in lpt]
        if missing:
            raise ValueError(f"profile section '{stage}.{LPT}': missing {', '.join(missing)}")
        if lpt["launcher"] not in LAUNCHERS:
            raise ValueError(f"{stage}.{LPT}.launcher must be one of {LAUNCHERS}, got {lpt['launcher']!r}")
        if lpt["overlong"] not in ("truncate", "drop"):
            raise ValueError(f"{stage}.{LPT}.overlong must be 'truncate' or 'drop', got {lpt['overlong']!r}")
        if lpt["effective_batch_size"] is not None and "gradient_accumulation_steps" in trl:
            raise ValueError(f"profile section {stage!r}: state either gradient_accumulation_steps or "
                             f"{LPT}.effective_batch_size (from which the accumulation is derived), not both")
        return cls(stage, trl, lpt)

    def value(self, name: str) -> Any:
        """TRL's setting `name` as the trainer will see it: the profile's, else TRL's default."""
        return self.trl[name] if name in self.trl else _trl_default(self.stage, name)

    @property
    def per_device_batch_size(self) -> int:
        return int(self.value("per_device_train_batch_size"))

    @property
    def bf16(self) -> bool:
        return trains_in_bf16(self.trl)

    def accumulation(self, num_processes: int) -> int:
        """Gradient accumulation steps with `num_processes` training processes."""
        batch = self.lpt["effective_batch_size"]
        if batch is None:
            return int(self.value("gradient_accumulation_steps"))
        return accumulation_steps(int(batch), self.per_device_batch_size, num_processes)

    def trl_args(self, *, output_dir: Path, learning_rate: float, num_processes: int,
                 use_cpu: bool) -> dict[str, Any]:
        """The keyword arguments of TRL's config for one call: the job's keys, the profile's, the derived
        accumulation and `PROJECT_DEFAULTS` where the profile is silent."""
        args: dict[str, Any] = {"output_dir": str(output_dir), "learning_rate": float(learning_rate),
                                "num_train_epochs": int(self.lpt["max_epochs"])}
        args.update(self.trl)
        args["gradient_accumulation_steps"] = self.accumulation(num_processes)
        for k, v in PROJECT_DEFAULTS.items():
            args.setdefault(k, v)
        if "seed" in args:
            args.setdefault("data_seed", args["seed"])
        args.update(save_strategy="epoch", save_total_limit=1, use_cpu=bool(use_cpu))
        if self.stage == "sft":
            args["completion_only_loss"] = True
        return args


def trains_in_bf16(trl: dict[str, Any]) -> bool:
    """Whether TRL's config built from `trl` trains in bf16: `bf16` as stated; unstated (or null), TRL's
    configs take it as `not fp16`."""
    bf16 = trl.get("bf16")
    return bool(bf16) if bf16 is not None else not trl.get("fp16", False)


def _trl_default(stage: str, name: str) -> Any:
    f = next(f for f in dataclasses.fields(config_class(stage)) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def accumulation_steps(batch_size: int | None, per_device: int, num_processes: int) -> int:
    """Gradient accumulation that makes per-device × accumulation × processes = `batch_size` (None: 1)."""
    if batch_size is None:
        return 1
    per_step = per_device * num_processes
    if batch_size < per_step or batch_size % per_step:
        raise ValueError(f"batch size {batch_size} is not a multiple of per-device batch {per_device} × "
                         f"{num_processes} process(es) = {per_step}")
    return batch_size // per_step


# ----------------------------------------------------------------------------- the job file


@dataclass
class TrainJob:
    """One training call: this project's job fields, and `trl`, the keyword arguments of TRL's
    `SFTConfig` / `DPOConfig` as they are. Written as YAML by the notebook, read by the CLI.

    The schedule spans `trl["num_train_epochs"]`; the call stops after `stop_after_epoch`, exports that
    epoch's model (and the processor) to `model_dir` and writes its log to `metrics_file`. With `resume`
    it continues from the checkpoint the previous call left in `trl["output_dir"]` (weights, optimizer,
    schedule, data order); without, it starts afresh.
    """

    stage: str  # "sft" | "dpo"
    model: str  # the starting model directory (or hub id)
    train_file: str  # parquet of rendered examples (`data.sft_examples` / `data.dpo_examples`)
    model_dir: str  # where this call exports its epoch's model
    metrics_file: str
    stop_after_epoch: int
    resume: bool = False
    ref_model: str | None = None  # DPO: the frozen reference model (default: `model`)
    num_processes: int = 1
    max_pixels: int | None = None  # area cap on training images
    cpu_threads: int | None = None  # torch threads when training on CPU (None: torch's default)
    frozen_modules: list[str] = field(default_factory=lambda: list(VISION_MODULE_NAMES))
    trl: dict[str, Any] = field(default_factory=dict)  # SFTConfig(**trl) / DPOConfig(**trl)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"TrainJob.stage must be 'sft' or 'dpo', got {self.stage!r}")
        missing = [k for k in ("output_dir", "learning_rate", "num_train_epochs") if k not in self.trl]
        if missing:
            raise ValueError(f"TrainJob.trl lacks {', '.join(missing)}")
        check_trl_keys(self.stage, self.trl, "TrainJob.trl")
        if not 1 <= self.stop_after_epoch <= self.epochs:
            raise ValueError(f"TrainJob.stop_after_epoch {self.stop_after_epoch} outside 1..{self.epochs}")
        if self.num_processes < 1:
            raise ValueError("TrainJob.num_processes must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError("TrainJob.trl.learning_rate must be > 0")

    @property
    def output_dir(self) -> str:
        return str(self.trl["output_dir"])

    @property
    def learning_rate(self) -> float:
        return float(self.trl["learning_rate"])

    @property
    def epochs(self) -> int:
        return int(self.trl["num_train_epochs"])

    @property
    def bf16(self) -> bool:
        return trains_in_bf16(self.trl)

    @property
    def effective_batch_size(self) -> int:
        per_device, accumulation = (self.trl.get(k, _trl_default(self.stage, k))
                                    for k in ("per_device_train_batch_size", "gradient_accumulation_steps"))
        return int(per_device) * int(accumulation) * self.num_processes

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(asdict(self), sort_keys=False, allow_unicode=True))
        return path

    @classmethod
    def load(cls, path: Path) -> TrainJob:
        d = yaml.safe_load(Path(path).read_text()) or {}
        known = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in known:
                raise ValueError(f"{path}: {key!r} is not a TrainJob field{_near(key, known)}")
        return cls(**d)


def make_job(stage: str, section: StageSettings | dict[str, Any], *, model: str, train_file: Path,
             sweep_dir: Path, lr: float, epoch: int, num_processes: int, use_cpu: bool | None = None,
             ref_model: str | None = None) -> TrainJob:
    """The TrainJob of one (learning rate, epoch) call, from the profile's `sft` or `dpo` section (checked
    here). `use_cpu` None: true when there is no GPU. Layout: `<sweep_dir>/<lr-tag>/checkpoints/` and
    `<sweep_dir>/<lr-tag>/epoch-<k>/{model,metrics.json}`."""
    st = section if isinstance(section, StageSettings) else StageSettings.from_section(stage, section)
    if st.stage != stage:
        raise ValueError(f"a {st.stage} section cannot make a {stage} job")
    if use_cpu is None:
        use_cpu = not cuda_available()
    lr_dir = Path(sweep_dir) / lr_tag(lr)
    trl = st.trl_args(output_dir=lr_dir / "checkpoints", learning_rate=lr, num_processes=num_processes,
                      use_cpu=use_cpu)
    return TrainJob(stage=stage, model=str(model), train_file=str(train_file),
                    model_dir=str(lr_dir / f"epoch-{epoch}" / "model"),
                    metrics_file=str(lr_dir / f"epoch-{epoch}" / "metrics.json"), stop_after_epoch=int(epoch),
                    resume=epoch > 1, ref_model=str(ref_model) if ref_model is not None else None,
                    num_processes=int(num_processes), max_pixels=st.lpt["max_pixels"],
                    cpu_threads=st.lpt["cpu_threads"], trl=trl)


def lr_tag(lr: float) -> str:
    """A learning rate's folder name under the sweep: `lr-1e-5`."""
    return f"lr-{lr:.0e}".replace("e-0", "e-")


def cuda_available() -> bool:
    import torch  # heavy: only asked when a job is built without saying where it trains

    return torch.cuda.is_available()


# ----------------------------------------------------------------------------- the trainer's process


def trl_config(job: TrainJob):
    """TRL's `SFTConfig` / `DPOConfig` of the job, from its `trl` dict as it is."""
    return config_class(job.stage)(**job.trl)


def load_vlm(path: str, bf16: bool):
    import torch  # heavy, as below: the trainer's process only
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)


def _has_weights(folder: Path) -> bool:
    return any((Path(folder) / f).exists() for f in ("model.safetensors", "model.safetensors.index.json"))


def _resuming(trainer_cls):
    """`trainer_cls` whose weight reload on resume is skipped: transformers 5.19 reloads a checkpoint with
    a plain `load_state_dict`, without the key renaming `from_pretrained` applies, so a Qwen2.5-VL checkpoint
    (saved under the original key names) loads nothing and training would silently restart from the base
    weights (huggingface/transformers#43701). `build_trainer` loads the checkpoint's weights with
    `from_pretrained` instead. DeepSpeed resumes through its own checkpoint and never calls this method."""

    class Resuming(trainer_cls):
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            return None

    Resuming.__name__ = f"Resuming{trainer_cls.__name__}"
    return Resuming


def build_trainer(job: TrainJob, callbacks: list | None = None, resume: Path | None = None):
    """The configured TRL trainer for `job` (model loaded, vision frozen, collator wrapping TRL's). With
    `resume`, the policy's weights come from that checkpoint (when it holds them; under DeepSpeed the
    Trainer restores them from its own shards). Returns (trainer, processor, frozen parameter names)."""
    import datasets  # these and trl below: heavy, the trainer's process only
    from transformers import AutoProcessor

    args = trl_config(job)  # before loading: DeepSpeed ZeRO-3 partitions at load time
    processor = AutoProcessor.from_pretrained(job.model)
    start = str(resume) if resume is not None and _has_weights(resume) else job.model
    model = load_vlm(start, args.bf16)
    frozen = freeze_vision(model, job.frozen_modules)
    data = datasets.Dataset.from_parquet(job.train_file)
    if job.stage == "sft":
        from trl import SFTTrainer

        cls = _resuming(SFTTrainer) if resume is not None else SFTTrainer
        keep = ["prompt", "completion", "images"]
        trainer = cls(model=model, args=args, train_dataset=data.select_columns(keep), processing_class=processor,
                      data_collator=sft_collator(processor, args.max_length, job.max_pixels), callbacks=callbacks)
    else:
        from trl import DPOTrainer

        cls = _resuming(DPOTrainer) if resume is not None else DPOTrainer
        ref = load_vlm(job.ref_model or job.model, args.bf16)
        ref.requires_grad_(False)
        keep = ["prompt", "chosen", "rejected", "images"]
        trainer = cls(model=model, ref_model=ref, args=args, train_dataset=data.select_columns(keep),
                      processing_class=processor,
                      data_collator=dpo_collator(processor, args.max_length, job.max_pixels), callbacks=callbacks)
    return trainer, processor, frozen


def _stop_after_epoch_callback(epoch: int):
    from transformers import TrainerCallback  # heavy: the trainer's process only

    class StopAfterEpoch(TrainerCallback):
        """Ends training (after the epoch's checkpoint is saved) once `epoch` epochs are done."""

        def on_epoch_end(self, args, state, control, **kwargs):
            if state.epoch is not None and round(state.epoch) >= epoch:
                control.should_training_stop = True
            return control

    return StopAfterEpoch()


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run the block with `n` torch threads when there is no GPU (None: leave torch's setting), then put
    the previous count back. The tiny model's ops are small: one thread runs them several times faster
    than two that wait on each other, and far faster when another process holds a core."""
    import torch  # heavy: the trainer's process only

    before = torch.get_num_threads()
    if n and not torch.cuda.is_available():
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def last_checkpoint(output_dir: Path) -> Path | None:
    ckpts = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return ckpts[-1] if ckpts else None


def run_job(job: TrainJob) -> dict[str, Any]:
    """Train `job` up to its `stop_after_epoch` (resuming from the last checkpoint), export the model and
    processor to `job.model_dir`, write the log to `job.metrics_file`; returns what it wrote there."""
    t0 = time.time()
    resume = None
    if job.resume:
        resume = last_checkpoint(Path(job.output_dir))
        if resume is None:
            raise FileNotFoundError(f"the job resumes from a checkpoint in {job.output_dir}, but there is none: "
                                    "train the earlier epochs first")
        done = json.loads((resume / "trainer_state.json").read_text()).get("epoch") or 0
        if round(done) >= job.stop_after_epoch:
            raise ValueError(f"{resume} has already trained {done} epochs; the job stops after "
                             f"{job.stop_after_epoch}")
    elif last_checkpoint(Path(job.output_dir)) is not None:
        # a fresh schedule must not mix with an earlier one (the notebook starts each sweep in an empty folder)
        raise ValueError(f"{job.output_dir} holds checkpoints of an earlier run: remove it, or set resume")
    with cpu_threads(job.cpu_threads):
        trainer, processor, frozen = build_trainer(job, [_stop_after_epoch_callback(job.stop_after_epoch)], resume)
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    done = trainer.state.epoch or 0.0
    if round(done) != job.stop_after_epoch:
        raise RuntimeError(f"training stopped at epoch {done}, expected {job.stop_after_epoch}")
    trainer.save_model(job.model_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(job.model_dir)
        metrics = {
            "stage": job.stage, "learning_rate": job.learning_rate, "epoch": job.stop_after_epoch,
            "global_step": trainer.state.global_step, "resumed_from": str(resume) if resume else None,
            "seconds": round(time.time() - t0, 1), "train_runtime": result.metrics.get("train_runtime"),
            "effective_batch_size": job.effective_batch_size, "frozen_parameter_tensors": len(frozen),
            **parameter_counts(trainer.model), "log_history": trainer.state.log_history,
        }
        Path(job.metrics_file).parent.mkdir(parents=True, exist_ok=True)
        Path(job.metrics_file).write_text(json.dumps(metrics, indent=1, default=float))
        return metrics
    return {}
