"""Stages 5-6 in the kernel: the learning-rate sweep that notebooks 05 and 06 run.

Each learning rate trains a schedule of `lpt.max_epochs` epochs, one epoch per subprocess call
(`job.make_job` writes the call's `job.yaml`, `lpt_utils.training.launch` runs ``python -m lpt_utils.training``
on it); after each call the engines score the exported model on held-out MCQs (`validation`), a
learning rate stops after `lpt.early_stop_patience` epochs without a better accuracy, and the best
(learning rate, epoch) is kept as `<stage>/model/`. A sweep folder carries a fingerprint of what shapes
its models: a killed sweep resumes where it stopped, a finished one re-runs without training or
scoring anything, and a changed setting starts afresh. `run_sweep` is all of it, as a notebook calls it;
`prepare` is a notebook's set-up (stage 4 checked, the section, the starting model, the launcher).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from lpt_utils.training import launch
from lpt_utils.training.data import DPO_FILE, SFT_FILES, load_val_mcqs
from lpt_utils.training.job import StageSettings, TrainJob, cuda_available, make_job
from lpt_utils.training.validation import ValidationResult, validator

# ----------------------------------------------------------------------------- the plan and its run


@dataclass(frozen=True)
class SweepPlan:
    """Learning rates tried in order; each trains up to `max_epochs` (the schedule's length) and stops
    early after `patience` epochs without a better validation accuracy (None: never). Without validation
    there is one learning rate and its last epoch is kept."""

    learning_rates: tuple[float, ...]
    max_epochs: int
    patience: int | None = 1
    validate: bool = True

    def __post_init__(self) -> None:
        if not self.learning_rates:
            raise ValueError("the sweep needs at least one learning rate")
        if self.max_epochs < 1:
            raise ValueError("max_epochs must be >= 1")
        if self.patience is not None and self.patience < 1:
            raise ValueError("patience must be None or >= 1")
        if not self.validate and len(self.learning_rates) > 1:
            raise ValueError("a sweep over several learning rates needs validation to choose between them")

    @classmethod
    def from_section(cls, section: StageSettings) -> SweepPlan:
        """The plan a profile's `sft` / `dpo` section states in its `lpt:` sub-section."""
        s = section.lpt
        lrs = s["learning_rates"]
        lrs = tuple(float(x) for x in (lrs if isinstance(lrs, (list, tuple)) else [lrs]))
        return cls(lrs, int(s["max_epochs"]), s["early_stop_patience"], bool(s["validate"]))


@dataclass
class EpochResult:
    """One (learning rate, epoch) of a sweep."""

    learning_rate: float
    epoch: int
    model_dir: str
    val_accuracy: float | None
    train_loss: float | None  # mean of the losses logged during this epoch
    global_step: int
    train_seconds: float
    val_seconds: float
    is_best: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# Logged training metrics averaged per epoch into `EpochResult.extra` when present (DPO's).
EPOCH_MEANS = ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")


def epoch_log(log_history: list[dict[str, Any]], epoch: int) -> list[dict[str, Any]]:
    """The training log entries (those with a loss) of epoch `epoch` (1-based)."""
    return [e for e in log_history if "loss" in e and epoch - 1 < e.get("epoch", 0) <= epoch + 1e-9]


def run_plan(plan: SweepPlan, train_epoch: Callable[[float, int], dict[str, Any]],
             validate: Callable[[Path], float] | None, *, on_result: Callable[[EpochResult], None] | None = None,
             discard: Callable[[Path], None] | None = None) -> tuple[list[EpochResult], EpochResult]:
    """Run the plan: `train_epoch(lr, epoch)` trains one more epoch and returns its metrics (with
    `model_dir`); `validate(model_dir)` scores it. A learning rate stops after `plan.patience` epochs
    without improving on its own best. The best (lr, epoch) overall wins (ties: the earlier); `discard`
    is called on every exported model that can no longer win, so at most two are kept on disk.
    Returns (every epoch's result, the best)."""
    if plan.validate and validate is None:
        raise ValueError("the plan validates but no validate function was given")
    results: list[EpochResult] = []
    best: EpochResult | None = None
    bar = tqdm(total=len(plan.learning_rates) * plan.max_epochs, desc="sweep", unit="epoch")
    for lr in plan.learning_rates:
        lr_best, since = -math.inf, 0
        for epoch in range(1, plan.max_epochs + 1):
            m = train_epoch(lr, epoch)
            t0 = time.time()
            acc = validate(Path(m["model_dir"])) if plan.validate else None
            log = epoch_log(m.get("log_history", []), epoch)
            means = {k: sum(e[k] for e in log if k in e) / n for k in ("loss", *EPOCH_MEANS)
                     if (n := sum(k in e for e in log))}
            res = EpochResult(learning_rate=lr, epoch=epoch, model_dir=str(m["model_dir"]), val_accuracy=acc,
                              train_loss=means.pop("loss", None), global_step=int(m.get("global_step", 0)),
                              train_seconds=float(m.get("seconds", 0)), val_seconds=round(time.time() - t0, 1),
                              extra=means)
            results.append(res)
            bar.update(1)
            score = acc if plan.validate else epoch
            if best is None or score > (best.val_accuracy if plan.validate else best.epoch):
                if best is not None and discard:
                    discard(Path(best.model_dir))
                best = res
            elif discard:
                discard(Path(res.model_dir))
            if on_result:
                on_result(res)
            if plan.validate:
                if acc > lr_best:
                    lr_best, since = acc, 0
                else:
                    since += 1
                if plan.patience is not None and since >= plan.patience and epoch < plan.max_epochs:
                    bar.update(plan.max_epochs - epoch)
                    break
    bar.close()
    assert best is not None
    best.is_best = True
    return results, best


def results_table(results: list[EpochResult]) -> pd.DataFrame:
    """One row per (learning rate, epoch): losses, validation accuracy, time, whether it was kept."""
    rows = []
    for r in results:
        d = {k: v for k, v in asdict(r).items() if k not in ("extra", "model_dir")}
        d.update({k.replace("/", "_"): v for k, v in r.extra.items()})
        rows.append(d)
    return pd.DataFrame(rows)


def load_histories(sweep_dir: Path) -> dict[float, list[dict[str, Any]]]:
    """Each learning rate's whole training log (from its last epoch's metrics file), by learning rate."""
    out: dict[float, tuple[int, list[dict[str, Any]]]] = {}
    for f in Path(sweep_dir).glob("*/epoch-*/metrics.json"):
        m = json.loads(f.read_text())
        lr, ep = float(m["learning_rate"]), int(m["epoch"])
        if lr not in out or ep > out[lr][0]:
            out[lr] = (ep, m["log_history"])
    return {lr: h for lr, (_, h) in sorted(out.items(), reverse=True)}


# ----------------------------------------------------------------------------- the sweep folder


def sweep_fingerprint(settings: dict[str, Any], train_file: Path, *models: str) -> str:
    """What shapes a sweep's models: the stage's settings, the rendered examples' content and the
    starting models (their `selected_from.json` where they are a sweep's pick, else their path)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(Path(train_file).read_bytes())
    for m in models:
        picked = Path(m) / "selected_from.json"
        h.update((picked.read_text() if picked.exists() else str(m)).encode())
    return h.hexdigest()[:16]


def prepare_sweep_dir(sweep_dir: Path, fingerprint: str) -> bool:
    """Resume a sweep that stopped (or re-run a finished one) when nothing that shapes its models
    changed; else start it afresh. Returns True when resuming."""
    sweep_dir = Path(sweep_dir)
    stamp = sweep_dir / "fingerprint.txt"
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        return True
    shutil.rmtree(sweep_dir, ignore_errors=True)
    sweep_dir.mkdir(parents=True)
    stamp.write_text(fingerprint + "\n")
    return False


def discard_model(path: Path) -> None:
    """Delete an exported epoch model that lost (keeps its metrics and logs beside it)."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)


def keep_best(best: EpochResult, target: Path, sweep_dir: Path, *, remove_checkpoints: bool = True) -> Path:
    """Move the best epoch's model to `target` (`<stage>/model/`) and delete the Trainer checkpoints
    (optimizer states) under `sweep_dir`. Returns `target`."""
    target = Path(target)
    kept = target / "selected_from.json"
    if not Path(best.model_dir).exists() and kept.exists():
        prev = json.loads(kept.read_text())
        if (prev.get("learning_rate"), prev.get("epoch")) == (best.learning_rate, best.epoch):
            return target  # a finished sweep re-run: its best model is already in place
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(best.model_dir, target)
    (target / "selected_from.json").write_text(json.dumps(
        {k: v for k, v in asdict(best).items() if k != "extra"}, indent=1))
    if remove_checkpoints:
        for ckpt in Path(sweep_dir).glob("*/checkpoints/checkpoint-*"):
            shutil.rmtree(ckpt)
    return target


# ----------------------------------------------------------------------------- one subprocess call per epoch


def epoch_trainer(stage: str, section: StageSettings, *, model: str, train_file: Path, sweep_dir: Path,
                  num_processes: int, use_cpu: bool, ref_model: str | None = None,
                  num_machines: int = 1) -> Callable[[float, int], dict[str, Any]]:
    """`train_epoch(lr, epoch)` for `run_plan`: writes the call's job file beside its metrics, runs it in a
    subprocess (`lpt_utils.training.launch`, the launcher the section names), returns its metrics and `model_dir`.
    A call whose metrics and identical job file are already there is not run again."""

    def train_epoch(lr: float, epoch: int) -> dict[str, Any]:
        job = make_job(stage, section, model=model, train_file=train_file, sweep_dir=sweep_dir, lr=lr, epoch=epoch,
                       num_processes=num_processes, use_cpu=use_cpu, ref_model=ref_model)
        folder = Path(job.metrics_file).parent
        job_file = folder / "job.yaml"
        if Path(job.metrics_file).exists() and job_file.exists() and _same_job(job_file, job):
            print(f"{folder.parent.name} epoch {epoch}: finished in an earlier run, reused", flush=True)
        else:
            cmd = launch.launch_command(stage, job.save(job_file), launcher=section.lpt["launcher"],
                                        num_processes=num_processes, num_machines=num_machines, bf16=job.bf16)
            print(launch.run_training(cmd, folder / "train.log"), flush=True)
        return {**json.loads(Path(job.metrics_file).read_text()), "model_dir": job.model_dir}

    return train_epoch


def _same_job(path: Path, job: TrainJob) -> bool:
    try:
        return TrainJob.load(path) == job
    except (ValueError, TypeError):  # a job file of an older layout: not the same job
        return False


# ----------------------------------------------------------------------------- one stage's sweep


@dataclass
class SweepOutcome:
    """What a stage's sweep leaves for its notebook (05 or 06)."""

    results: list[EpochResult]  # every (learning rate, epoch) trained, in order
    best: EpochResult  # the kept one
    model_dir: Path  # where the kept model now is: `<stage>/model/`
    sweep_dir: Path  # `<stage>/sweep/`: per-call job files, logs and metrics
    resumed: bool  # an earlier run with the same settings and examples was picked up
    command: list[str]  # each call's launch command ("JOB.yaml" stands for the call's job file)
    val: pd.DataFrame | None  # the held-out MCQs (None: the profile trains without validation)
    validations: dict[str, ValidationResult]  # by model directory (scores read back from an earlier run have no rows)
    start_accuracy: float | None = None  # the starting model's validation accuracy, where asked for

    @property
    def table(self) -> pd.DataFrame:
        return results_table(self.results)

    def kept_validation(self) -> ValidationResult | None:
        """The kept model's validation result (None without validation); its `rows` are empty when
        it was scored in an earlier run (the score is read back, the answers stay in the store)."""
        return self.validations.get(self.best.model_dir)


def run_sweep(stage: str, settings: dict[str, Any], *, model: str, train_file: Path, data_dir: Path,
              stage_dir: Path, num_processes: int, resolve: Callable[[str], str] | None = None,
              ref_model: str | None = None, score_start: bool = False) -> SweepOutcome:
    """Stage 5 or 6 end to end, as its notebook runs it: resume or start `<stage_dir>/sweep/`, train
    one epoch per subprocess call for each learning rate of the profile's `settings[stage]`, score
    every epoch's model on stage 4's held-out MCQs through the engines (and the starting model first
    with `score_start`), stop early per learning rate, and move the best epoch's model to
    `<stage_dir>/model/`. `model` and `ref_model` are folders (or hub ids); `resolve` is the run's model
    resolver the validation engine is built with (`Run.resolve_model`). The section is checked first
    (`StageSettings.from_section`)."""
    s = settings[stage]
    section = StageSettings.from_section(stage, s)
    lpt = section.lpt
    plan = SweepPlan.from_section(section)
    stage_dir = Path(stage_dir)
    sweep_dir = stage_dir / "sweep"
    resumed = prepare_sweep_dir(sweep_dir, sweep_fingerprint({**s, "student": settings["student"]}, train_file,
                                                             str(model)))
    if resumed:
        print("resuming: epochs finished by an earlier run with these settings and examples are reused")
    val, validate, validations, start = None, None, {}, None
    if plan.validate:
        val = load_val_mcqs(data_dir, lpt["validation"]["max_mcqs"])
        validate, validations = validator(
            val.to_dict("records"), settings["student"]["engine"], lpt["validation"],
            stage_dir / "validation" / "requests.jsonl", resolve=resolve, think_tag=settings["simple_cot"]["think_tag"],
            with_type=settings["training_data"]["with_type_line"],
            rule=settings["simple_cot"]["rule"],
            cache_file=sweep_dir / "validation.json")
        print(f"{len(val)} held-out MCQs")
        if score_start:
            start = validate(model)
    machines = int(lpt.get("num_machines") or 1)
    command = launch.launch_command(stage, "JOB.yaml", launcher=lpt["launcher"], num_processes=num_processes,
                                    num_machines=machines, bf16=section.bf16)
    print("each call:", " ".join(command))
    train_epoch = epoch_trainer(stage, section, model=str(model), ref_model=ref_model, train_file=train_file,
                                sweep_dir=sweep_dir, num_processes=num_processes, use_cpu=not cuda_available(),
                                num_machines=machines)
    results, best = run_plan(plan, train_epoch, validate, discard=discard_model)
    model_dir = keep_best(best, stage_dir / "model", sweep_dir)
    print(f"kept: lr {best.learning_rate:g}, epoch {best.epoch} -> {model_dir}")
    return SweepOutcome(results=results, best=best, model_dir=model_dir, sweep_dir=sweep_dir, resumed=resumed,
                        command=command, val=val, validations=validations, start_accuracy=start)


# ----------------------------------------------------------------------------- a notebook's set-up


@dataclass
class TrainingSetup:
    """What notebook 05 (`stage` "sft") or 06 ("dpo") trains with, resolved once by `prepare`: the
    checked section of the profile, the sweep's plan, where stage 4's data are, the starting model
    (the student for SFT; the kept SFT model for DPO, also its frozen reference), the launcher's
    process count and the gradient accumulation it implies."""

    stage: str
    settings: dict[str, Any]  # the run's resolved settings (every section)
    section: StageSettings  # `settings[stage]`, checked: TRL's keys (`.trl`), this project's (`.lpt`)
    plan: SweepPlan
    data_dir: Path  # stage 4's folder (checked current)
    stage_dir: Path  # `outputs/<run>/05_sft` or `06_dpo`
    model: str  # the starting model
    ref_model: str | None  # DPO's reference (the SFT model); None for SFT
    num_processes: int
    accumulation: int
    resolve: Callable[[str], str] | None = None  # the run's model resolver (`Run.resolve_model`)
    reference_accuracy: float | None = None  # DPO: the SFT model's validation accuracy, where comparable

    @property
    def effective_batch_size(self) -> int:
        return self.section.per_device_batch_size * self.accumulation * self.num_processes

    @property
    def render_options(self) -> dict[str, Any]:
        """The cutoff, image cap and overlong policy the examples are rendered with (`data.sft_examples`,
        `data.dpo_examples`, `data.label_view` take them)."""
        return {"max_length": self.section.value("max_length"), "max_pixels": self.section.lpt["max_pixels"],
                "overlong": self.section.lpt["overlong"]}

    @property
    def validation_store(self) -> Path:
        """Where the validation's model calls are stored."""
        return self.stage_dir / "validation" / "requests.jsonl"

    def write_examples(self, examples: pd.DataFrame, name: str) -> Path:
        """Write the rendered examples the trainer's subprocess reads; returns the file."""
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        path = self.stage_dir / name
        examples.to_parquet(path, index=False)
        return path

    def run_sweep(self, train_file: Path, *, score_start: bool = False) -> SweepOutcome:
        """`run_sweep` for this stage with this set-up."""
        return run_sweep(self.stage, self.settings, model=self.model, ref_model=self.ref_model, train_file=train_file,
                         data_dir=self.data_dir, stage_dir=self.stage_dir, resolve=self.resolve,
                         num_processes=self.num_processes, score_start=score_start)

    def control(self, learning_rate: float) -> TrainingSetup | None:
        """The control run of `sft.lpt.control` (None when the profile names none): the same model,
        recipe and validation on another stage-4 set (the paper's simple-CoT contrast: `sft_simple`),
        at one learning rate (the main sweep's kept one), into `<stage>/control/`."""
        which = self.section.lpt.get("control")
        if self.stage != "sft" or not which:
            return None
        if which not in SFT_FILES:
            raise ValueError(f"sft.lpt.control must be one of {SFT_FILES} or null, got {which!r}")
        lpt = {**self.settings[self.stage]["lpt"], "data": which, "control": None,
               "learning_rates": [float(learning_rate)]}
        settings = {**self.settings, self.stage: {**self.settings[self.stage], "lpt": lpt}}
        section = StageSettings.from_section(self.stage, settings[self.stage])
        return dataclasses.replace(self, settings=settings, section=section, plan=SweepPlan.from_section(section),
                                   stage_dir=self.stage_dir / "control")

    def __str__(self) -> str:
        from lpt_utils.config import show

        lines = [f"{'policy and reference' if self.ref_model else 'base model'}: {self.model}", str(self.plan)]
        if self.stage == "dpo":
            v = self.section.value
            lines.append(f"loss: {v('loss_type')} with weights {v('loss_weights')}, beta {v('beta')}")
        lines.append(f"batch: {self.section.per_device_batch_size} per device x {self.accumulation} accumulated x "
                     f"{self.num_processes} process(es) = {self.effective_batch_size}"
                     + (" pairs" if self.stage == "dpo" else ""))
        return "\n".join(lines) + "\n" + show(self.settings, (self.stage,))


@dataclass
class ControlOutcome:
    """The control run of notebook 05 (`sft.lpt.control`): its set, its examples' counts, its sweep."""

    data: str  # the stage-4 set it trained on
    counts: dict[str, Any]  # the rendered examples' counts
    outcome: SweepOutcome

    def summary(self) -> dict[str, Any]:
        b = self.outcome.best
        return {"data": self.data, **self.counts, "learning_rate": b.learning_rate,
                "epochs_trained": len(self.outcome.results), "kept_epoch": b.epoch,
                "kept_val_accuracy": b.val_accuracy, "model_dir": str(self.outcome.model_dir)}


def run_control(setup: TrainingSetup, learning_rate: float, processor) -> ControlOutcome | None:
    """Train `sft.lpt.control`'s set as `setup` trained its own, at `learning_rate`, into
    `<stage>/control/` (resumable like the main sweep); None when the profile names no control or
    stage 4 wrote no row of that set (said, not raised: the main model stands without it)."""
    from lpt_utils.training.data import load_sft_rows, sft_examples

    control = setup.control(learning_rate)
    if control is None:
        print("no control run (sft.lpt.control is null)")
        return None
    which = control.section.lpt["data"]
    rows, _ = load_sft_rows(control.data_dir, which)
    if rows.empty:
        print(f"no control run: stage 4 wrote no trainable row of {which}")
        return None
    rendered = sft_examples(rows, processor, **control.render_options)
    print(f"control: {which}, {rendered.counts}")
    outcome = control.run_sweep(control.write_examples(rendered.examples, "train_examples.parquet"))
    return ControlOutcome(which, dict(rendered.counts), outcome)


class NothingToTrain(RuntimeError):
    """Stage 4 wrote no example of the set a training stage trains on."""


def prepare(run, stage: str) -> TrainingSetup:
    """Notebook 05's or 06's set-up for a run (`config.Run`): stage 4 must be current (a stale one is
    refused, naming the notebook to re-run), and for DPO the SFT stage too, with its model in place;
    the section is checked (`StageSettings.from_section`); the launcher's processes are counted."""
    if stage not in ("sft", "dpo"):
        raise ValueError(f"stage must be 'sft' or 'dpo', not {stage!r}")
    run.stage("training_data").check()
    settings = run.settings
    section = StageSettings.from_section(stage, settings[stage])
    sizes = (run.stage("training_data").manifest() or {}).get("counts", {}).get("sets", {})
    wanted = [section.lpt["data"]] if stage == "sft" else [DPO_FILE[f] for f in section.lpt["families"]]
    if sizes and not any(sizes.get(name) for name in wanted):
        raise NothingToTrain(f"run {run.name}: stage 4 wrote no rows for {', '.join(wanted)} ({sizes}); its funnel "
                             "in 04_training_data/manifest.json says why. Nothing to train.")
    # all processes over every node (accumulation and the launch count them all)
    n_proc = launch.resolve_num_processes(section.lpt["num_processes"], section.lpt["launcher"]) * int(
        section.lpt.get("num_machines") or 1)
    ref_model, reference_accuracy = None, None
    if stage == "sft":
        model = run.resolve_model(settings["student"]["engine"]["model"])
    else:
        sft = run.stage("sft")
        sft.check()
        model = ref_model = str(sft.dir / "model")
        if not (sft.dir / "model" / "config.json").exists():
            raise FileNotFoundError(f"{model} does not exist: run notebook 05 (SFT) first")
        if section.lpt["validation"] == settings["sft"]["lpt"]["validation"]:  # the scores are comparable only then
            reference_accuracy = (sft.manifest() or {}).get("counts", {}).get("kept_val_accuracy")
    return TrainingSetup(stage=stage, settings=settings, section=section, plan=SweepPlan.from_section(section),
                         data_dir=run.stage_dir("training_data"), stage_dir=run.stage_dir(stage), model=model,
                         ref_model=ref_model, num_processes=n_proc, accumulation=section.accumulation(n_proc),
                         resolve=run.resolve_model, reference_accuracy=reference_accuracy)
