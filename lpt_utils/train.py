"""Stages 5 and 6: supervised fine-tuning on the long CoTs, then DPO from the SFT model.

The paper trains the whole language model of the student VLM with its vision tower and projector
frozen: SFT first (TRL `SFTTrainer`), then DPO with an SFT (NLL) term mixed in (TRL `DPOTrainer`,
``loss_type=["sigmoid", "sft"]``), the SFT model being both the starting point and the reference.

How the pieces fit:
- The notebook reads notebook 04's files (`load_sft_rows`, `load_dpo_rows`: the contract's columns
  are checked, bad rows are dropped with a reason), renders every example with the student's chat
  template into a prompt and a completion (`sft_examples`, `dpo_examples`) and writes them as a
  parquet file the trainer reads.
- Training runs in a subprocess (`python -m lpt_utils.train {sft,dpo} --config job.yaml`, or the same
  under `accelerate launch` on GPUs; `lpt_utils.launch` builds the command), one epoch per call: a
  call trains up to `TrainJob.stop_after_epoch` of a schedule that spans `TrainJob.epochs`, resuming
  from the previous call's checkpoint, and exports that epoch's model.
- Between calls the notebook scores the exported model on held-out MCQs through the engines
  (`validation_accuracy`), never in the trainer's process; `sweep` runs the learning-rate sweep with
  early stopping and keeps the best epoch's model.

The masked X→O prefix: TRL's vision collator, fed prompt-completion examples with
``completion_only_loss=True``, labels only the completion. The prompt here is the system and user turns
(image included) rendered with the generation prompt, *followed by the example's assistant prefix*
(the wrong simple thought of an X→O row), so those tokens carry no loss while the rest of the
assistant turn (cue, added thought, answer, end of turn) does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import yaml

from lpt_utils.artifacts import Funnel

# ----------------------------------------------------------------------------- the input contract

SFT_FILES = ("sft_long", "sft_simple", "sft_published")
DPO_FAMILIES = ("O", "X→O")
SFT_COLUMNS = ("id", "mcq_id", "image_id", "image_path", "system", "user", "assistant", "assistant_prefix",
               "source")
DPO_COLUMNS = ("id", "mcq_id", "image_id", "image_path", "system", "user", "chosen", "rejected", "pair_type",
               "family")
DPO_FILE = {"O": "dpo_O", "X→O": "dpo_XO"}
VAL_FILE = "val_mcqs"
VAL_COLUMNS = ("mcq_id", "image_id", "image_path", "question", "choices", "answer_letter", "question_type",
               "choice_form", "answer_form")

# Submodules that make up the vision side of a VLM (tower and projector), by attribute name. Qwen2-VL and
# Qwen2.5-VL keep both in `model.visual` (the patch merger is the projector).
VISION_MODULE_NAMES = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "mm_projector")


def _read_parquet(path: Path, columns: Iterable[str], what: str) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook 04 (training data) first")
    df = pd.read_parquet(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path.name}: missing column(s) {', '.join(missing)} of the {what} contract "
                         f"(has: {', '.join(df.columns)})")
    return df


def load_sft_rows(data_dir: Path, which: str = "sft_long") -> tuple[pd.DataFrame, Funnel]:
    """Rows of `<data_dir>/<which>.parquet` that can train, and the funnel of those that cannot: a missing
    image file, an empty assistant turn, an assistant turn that does not begin with its prefix, a prefix
    that is the whole turn."""
    if which not in SFT_FILES:
        raise ValueError(f"sft data must be one of {SFT_FILES}, got {which!r}")
    df = _read_parquet(Path(data_dir) / f"{which}.parquet", SFT_COLUMNS, "SFT")
    if not df["id"].is_unique:
        raise ValueError(f"{which}.parquet: the `id` column has duplicates")
    df = df.assign(assistant_prefix=df["assistant_prefix"].fillna(""))
    reason = pd.Series("", index=df.index)
    reason[~df["image_path"].map(lambda p: isinstance(p, str) and Path(p).is_file())] = "missing_image"
    reason[(reason == "") & (df["assistant"].fillna("").str.strip() == "")] = "empty_assistant"
    turns = df["assistant"].fillna("")
    not_opening = pd.Series([not a.startswith(p) for a, p in zip(turns, df["assistant_prefix"])], index=df.index)
    reason[(reason == "") & not_opening] = "assistant_not_starting_with_prefix"
    whole = (df["assistant_prefix"] != "") & (df["assistant_prefix"].str.len() >= turns.str.len())
    reason[(reason == "") & whole] = "prefix_is_the_whole_turn"  # nothing would carry loss
    funnel = Funnel()
    funnel.add(f"{which} rows usable (image on disk, assistant turn begins with its prefix)", len(df),
               int((reason == "").sum()), Counter(reason[reason != ""]))
    return df[reason == ""].reset_index(drop=True), funnel


def load_dpo_rows(data_dir: Path, families: Iterable[str] = DPO_FAMILIES) -> tuple[pd.DataFrame, Funnel]:
    """Preference pairs of the chosen families (`O`: O>O→X and O>X; `X→O`: X→O>X→X and X→O>X), minus pairs
    with a missing image, an empty side, or the same text on both sides."""
    families = list(families)
    unknown = [f for f in families if f not in DPO_FAMILIES]
    if unknown or not families:
        raise ValueError(f"dpo families must be a non-empty subset of {DPO_FAMILIES}, got {families}")
    parts = []
    for fam in families:
        df = _read_parquet(Path(data_dir) / f"{DPO_FILE[fam]}.parquet", DPO_COLUMNS, "DPO")
        wrong = df["family"] != fam
        if wrong.any():
            raise ValueError(f"{DPO_FILE[fam]}.parquet holds {int(wrong.sum())} pair(s) of another family "
                             f"({sorted(df.loc[wrong, 'family'].unique())})")
        parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    if not df["id"].is_unique:
        raise ValueError("DPO files: the `id` column has duplicates")
    reason = pd.Series("", index=df.index)
    reason[~df["image_path"].map(lambda p: isinstance(p, str) and Path(p).is_file())] = "missing_image"
    empty = (df["chosen"].fillna("").str.strip() == "") | (df["rejected"].fillna("").str.strip() == "")
    reason[(reason == "") & empty] = "empty_side"
    reason[(reason == "") & (df["chosen"] == df["rejected"])] = "chosen_equals_rejected"
    funnel = Funnel()
    funnel.add(f"pairs usable ({' + '.join(families)})", len(df), int((reason == "").sum()),
               Counter(reason[reason != ""]))
    return df[reason == ""].reset_index(drop=True), funnel


def load_val_mcqs(data_dir: Path, max_mcqs: int | None = None) -> pd.DataFrame:
    """The held-out MCQs scored after each epoch (notebook 01's row schema); the first `max_mcqs`."""
    df = _read_parquet(Path(data_dir) / f"{VAL_FILE}.parquet", VAL_COLUMNS, "validation MCQ")
    if "is_valid" in df.columns:
        df = df[df["is_valid"]]
    if max_mcqs is not None:
        df = df.head(int(max_mcqs))
    if df.empty:
        raise ValueError(f"{VAL_FILE}.parquet has no valid MCQ to validate on")
    return df.reset_index(drop=True)


# ----------------------------------------------------------------------------- rendering


def _prompt_messages(system: str, user: str) -> list[dict[str, Any]]:
    """System, then the user turn with the image before its text (the student prompt's layout)."""
    return [{"role": "system", "content": system},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user}]}]


def split_turn(processor, system: str, user: str, assistant: str, prefix: str = "") -> tuple[str, str]:
    """(prompt text, completion text) for one example, rendered with the processor's chat template.

    The prompt is the system and user turns with the generation prompt, then `prefix` (the start of the
    assistant turn that carries no loss); the completion is the rest of the assistant turn as the template
    renders it, end-of-turn token included (so the model learns to stop). Raises ValueError when the
    template renders the prompt differently alone than inside the whole conversation, or changes the
    assistant's text so that `prefix` no longer opens it.
    """
    msgs = _prompt_messages(system, user)
    prompt = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(msgs + [{"role": "assistant", "content": assistant}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently alone than before an assistant "
                         f"turn (prompt ends {prompt[-40:]!r}); a template that opens the think tag itself "
                         "needs assistant turns without it")
    turn = full[len(prompt):]
    if not turn.startswith(prefix):
        raise ValueError(f"the chat template changed the assistant turn: it no longer begins with its prefix "
                         f"{prefix[:40]!r}")
    return prompt + prefix, turn[len(prefix):]


def image_token_count(processor, image_path: str, max_pixels: int | None) -> int:
    """How many tokens the image becomes after our size cap and the processor's own resize (Qwen2-VL
    family: grid cells / merge_size²)."""
    from lpt_utils.engines.images import load_image

    img = load_image(image_path, max_pixels)
    ip = processor.image_processor
    grid = ip(images=[img], return_tensors="np")["image_grid_thw"][0]
    return int(grid.prod()) // int(ip.merge_size) ** 2


def _text_len(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class RenderedSet:
    """Examples as TRL reads them (`prompt`, `completion` or `chosen`/`rejected`, `images` as paths), with
    their lengths in tokens (image tokens included), and the funnel of what did not fit."""

    examples: pd.DataFrame
    funnel: Funnel
    counts: dict[str, Any]


def _length_policy(lengths: pd.Series, prompt_lengths: pd.Series, max_length: int | None,
                   overlong: str) -> pd.Series:
    """The drop reason per example ("" = keep) under the cutoff. `truncate` keeps an over-long example
    (the collator cuts its end, as LLaMA-Factory's cutoff does) unless its prompt alone reaches the cutoff
    (its image tokens could be cut); `drop` drops every example over the cutoff."""
    if overlong not in ("truncate", "drop"):
        raise ValueError(f"overlong must be 'truncate' or 'drop', got {overlong!r}")
    reason = pd.Series("", index=lengths.index)
    if max_length is None:
        return reason
    reason[prompt_lengths >= max_length] = "prompt_reaches_cutoff"
    if overlong == "drop":
        reason[(reason == "") & (lengths > max_length)] = "longer_than_cutoff"
    return reason


def sft_examples(rows: pd.DataFrame, processor, *, max_length: int | None, max_pixels: int | None,
                 overlong: str = "truncate") -> RenderedSet:
    """SFT examples from the contract's rows: prompt = system + user (+ image) + assistant prefix, completion
    = the rest of the assistant turn. Lengths are counted with the image's real token count."""
    tok = processor.tokenizer
    img_tokens = {p: image_token_count(processor, p, max_pixels) for p in rows["image_path"].unique()}
    out = []
    for r in rows.itertuples(index=False):
        prompt, completion = split_turn(processor, r.system, r.user, r.assistant, r.assistant_prefix)
        # the template writes one image placeholder token; the processor expands it to the image's tokens
        n_prompt = _text_len(tok, prompt) - 1 + img_tokens[r.image_path]
        n_completion = _text_len(tok, completion)
        out.append({"id": r.id, "source": r.source, "prompt": prompt, "completion": completion,
                    "images": [r.image_path], "prompt_tokens": n_prompt, "completion_tokens": n_completion,
                    "masked_prefix_tokens": _text_len(tok, r.assistant_prefix) if r.assistant_prefix else 0})
    df = pd.DataFrame(out)
    funnel = Funnel()
    if df.empty:
        funnel.add("examples within the cutoff", 0, 0)
        return RenderedSet(df, funnel, {"examples": 0})
    reason = _length_policy(df.prompt_tokens + df.completion_tokens, df.prompt_tokens, max_length, overlong)
    truncated = int(((df.prompt_tokens + df.completion_tokens) > (max_length or math.inf)).sum()
                    - (reason != "").sum())
    funnel.add(f"examples within the cutoff ({max_length} tokens, overlong: {overlong})", len(df),
               int((reason == "").sum()), Counter(reason[reason != ""]))
    kept = df[reason == ""].reset_index(drop=True)
    total = kept.prompt_tokens + kept.completion_tokens
    counts = {"examples": len(kept), "by_source": kept.source.value_counts().to_dict(),
              "with_masked_prefix": int((kept.masked_prefix_tokens > 0).sum()), "truncated_at_cutoff": truncated,
              "tokens_median": float(total.median()) if len(kept) else None,
              "tokens_max": int(total.max()) if len(kept) else None}
    return RenderedSet(kept, funnel, counts)


def dpo_examples(rows: pd.DataFrame, processor, *, max_length: int | None, max_pixels: int | None,
                 overlong: str = "truncate") -> RenderedSet:
    """DPO examples: the shared prompt (system + user + image), and the chosen and rejected assistant turns
    as the template renders them (end of turn included)."""
    tok = processor.tokenizer
    img_tokens = {p: image_token_count(processor, p, max_pixels) for p in rows["image_path"].unique()}
    out = []
    for r in rows.itertuples(index=False):
        prompt, chosen = split_turn(processor, r.system, r.user, r.chosen)
        prompt_r, rejected = split_turn(processor, r.system, r.user, r.rejected)
        if prompt != prompt_r:
            raise ValueError(f"pair {r.id}: the chat template renders the prompt differently before the chosen "
                             "and the rejected turn")
        n_prompt = _text_len(tok, prompt) - 1 + img_tokens[r.image_path]
        out.append({"id": r.id, "pair_type": r.pair_type, "family": r.family, "prompt": prompt, "chosen": chosen,
                    "rejected": rejected, "images": [r.image_path], "prompt_tokens": n_prompt,
                    "chosen_tokens": _text_len(tok, chosen), "rejected_tokens": _text_len(tok, rejected)})
    df = pd.DataFrame(out)
    funnel = Funnel()
    if df.empty:
        funnel.add("pairs within the cutoff", 0, 0)
        return RenderedSet(df, funnel, {"pairs": 0})
    longest = df.prompt_tokens + df[["chosen_tokens", "rejected_tokens"]].max(axis=1)
    reason = _length_policy(longest, df.prompt_tokens, max_length, overlong)
    funnel.add(f"pairs within the cutoff ({max_length} tokens, overlong: {overlong})", len(df),
               int((reason == "").sum()), Counter(reason[reason != ""]))
    kept = df[reason == ""].reset_index(drop=True)
    counts = {"pairs": len(kept), "by_pair_type": kept.pair_type.value_counts().to_dict(),
              "by_family": kept.family.value_counts().to_dict(),
              "truncated_at_cutoff": int((longest[reason == ""] > (max_length or math.inf)).sum())}
    return RenderedSet(kept, funnel, counts)


# ----------------------------------------------------------------------------- batches and the model


@dataclass
class ImagePathCollator:
    """Loads each example's images from their paths (with the same size cap as the engines), then hands
    the batch to TRL's vision collator `inner`. Keeps images out of the dataset's Arrow table."""

    inner: Any
    max_pixels: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        from lpt_utils.engines.images import load_image

        batch = [{**ex, "images": [load_image(p, self.max_pixels) for p in ex["images"]]} for ex in examples]
        return self.inner(batch)


def sft_collator(processor, max_length: int | None, max_pixels: int | None) -> ImagePathCollator:
    """The collator `SFTTrainer` is given: TRL's prompt-completion vision collator, prompt unlabelled."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    return ImagePathCollator(DataCollatorForVisionLanguageModeling(processor=processor, max_length=max_length,
                                                                   completion_only_loss=True), max_pixels)


def dpo_collator(processor, max_length: int | None, max_pixels: int | None) -> ImagePathCollator:
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    return ImagePathCollator(DataCollatorForVisionPreference(processor=processor, max_length=max_length),
                             max_pixels)


def label_view(processor, example: dict[str, Any], max_length: int | None, max_pixels: int | None) -> dict[str, Any]:
    """How the SFT collator labels one rendered example: the text that carries no loss (system, user, image,
    masked prefix), the text that does, and the count of image tokens (all unlabelled)."""
    import re

    batch = sft_collator(processor, max_length, max_pixels)(
        [{k: example[k] for k in ("prompt", "completion", "images")}])
    ids, labels, att = batch["input_ids"][0], batch["labels"][0], batch["attention_mask"][0].bool()
    tok = processor.tokenizer
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    no_loss = tok.decode(ids[att & (labels == -100)])
    no_loss = re.sub(r"(?:<\|image_pad\|>)+", lambda m: f"<|image_pad|>×{m.group(0).count('<|image_pad|>')}", no_loss)
    return {"no_loss": no_loss, "loss": tok.decode(ids[labels != -100]), "image_tokens": int((ids == pad).sum()),
            "labelled_tokens": int((labels != -100).sum())}


def vision_modules(model) -> dict[str, Any]:
    """The vision tower and projector submodules of a VLM, by qualified name (outermost matches only)."""
    found: dict[str, Any] = {}
    for name, module in model.named_modules():
        if name.split(".")[-1] in VISION_MODULE_NAMES and not any(name.startswith(f + ".") for f in found):
            found[name] = module
    if not found:
        raise ValueError(f"{type(model).__name__}: no vision tower or projector found "
                         f"(looked for submodules named {', '.join(VISION_MODULE_NAMES)})")
    return found


def freeze_vision(model) -> list[str]:
    """Set requires_grad False on the vision tower and projector; returns the frozen parameters' names."""
    frozen = []
    for prefix, module in vision_modules(model).items():
        for n, p in module.named_parameters():
            p.requires_grad_(False)
            frozen.append(f"{prefix}.{n}")
    return frozen


def parameter_counts(model) -> dict[str, int]:
    def n(p):  # under DeepSpeed ZeRO-3 a partitioned parameter keeps its full size in `ds_numel`
        return getattr(p, "ds_numel", None) or p.numel()

    trainable = sum(n(p) for p in model.parameters() if p.requires_grad)
    total = sum(n(p) for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable}


# ----------------------------------------------------------------------------- one training call


@dataclass
class TrainJob:
    """Everything one training call needs; written as YAML by the notebook, read by the CLI.

    The schedule spans `epochs`; the call stops after `stop_after_epoch`, exports that epoch's model to
    `model_dir` and writes its log to `metrics_file`. With `resume` it continues from the checkpoint the
    previous call left in `output_dir` (weights, optimizer, schedule, data order); without, it starts
    afresh. `gradient_accumulation_steps` is derived (`accumulation_steps`) from the effective batch size,
    the per-device batch and the number of processes.
    """

    stage: str  # "sft" | "dpo"
    model: str  # the starting model directory (or hub id)
    train_file: str  # parquet of rendered examples (`sft_examples` / `dpo_examples`)
    output_dir: str  # Trainer checkpoints of this learning rate
    model_dir: str  # where this call exports its epoch's model
    metrics_file: str
    learning_rate: float
    epochs: int
    stop_after_epoch: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    resume: bool = False
    num_processes: int = 1
    ref_model: str | None = None  # DPO: the reference model (default: `model`)
    max_length: int | None = 1024
    max_pixels: int | None = None
    scheduler: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    precision: str = "fp32"  # "fp32" | "bf16"
    gradient_checkpointing: bool = False
    seed: int = 0
    logging_steps: int = 1
    cpu_threads: int | None = None  # torch threads when training on CPU (None: torch's default)
    beta: float = 0.1  # DPO
    loss: str = "sigmoid"  # DPO preference loss
    sft_weight: float = 0.0  # DPO: weight of the NLL term on the chosen turn (0: none)

    def __post_init__(self) -> None:
        if self.stage not in ("sft", "dpo"):
            raise ValueError(f"TrainJob.stage must be 'sft' or 'dpo', got {self.stage!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"TrainJob.precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if not 1 <= self.stop_after_epoch <= self.epochs:
            raise ValueError(f"TrainJob.stop_after_epoch {self.stop_after_epoch} outside 1..{self.epochs}")
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "num_processes"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainJob.{name} must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError("TrainJob.learning_rate must be > 0")

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_batch_size * self.gradient_accumulation_steps * self.num_processes

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(asdict(self), sort_keys=False, allow_unicode=True))
        return path

    @classmethod
    def load(cls, path: Path) -> "TrainJob":
        d = yaml.safe_load(Path(path).read_text()) or {}
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown TrainJob key(s) {', '.join(unknown)}")
        return cls(**d)


def accumulation_steps(batch_size: int | None, per_device: int, num_processes: int) -> int:
    """Gradient accumulation that makes per-device × accumulation × processes = `batch_size` (None: 1)."""
    if batch_size is None:
        return 1
    per_step = per_device * num_processes
    if batch_size < per_step or batch_size % per_step:
        raise ValueError(f"batch size {batch_size} is not a multiple of per-device batch {per_device} × "
                         f"{num_processes} process(es) = {per_step}")
    return batch_size // per_step


def _trainer_args(job: TrainJob, use_cpu: bool):
    common = dict(
        output_dir=job.output_dir, num_train_epochs=job.epochs, learning_rate=job.learning_rate,
        per_device_train_batch_size=job.per_device_batch_size,
        gradient_accumulation_steps=job.gradient_accumulation_steps, lr_scheduler_type=job.scheduler,
        warmup_steps=job.warmup_steps, weight_decay=job.weight_decay, bf16=job.precision == "bf16",
        use_cpu=use_cpu, gradient_checkpointing=job.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if job.gradient_checkpointing else None,
        logging_steps=job.logging_steps, save_strategy="epoch", save_total_limit=1, report_to="none",
        seed=job.seed, data_seed=job.seed, disable_tqdm=True, max_length=job.max_length,
        dataloader_num_workers=0,
    )
    if job.stage == "sft":
        from trl import SFTConfig

        return SFTConfig(**common, completion_only_loss=True)
    from trl import DPOConfig

    losses, weights = [job.loss], [1.0]
    if job.sft_weight:
        losses.append("sft")
        weights.append(job.sft_weight)
    return DPOConfig(**common, beta=job.beta, loss_type=losses, loss_weights=weights)


def load_vlm(path: str, precision: str):
    import torch
    from transformers import AutoModelForImageTextToText

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)


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
    Trainer restores them from its own shards)."""
    import datasets
    import torch
    from transformers import AutoProcessor

    use_cpu = not torch.cuda.is_available()
    args = _trainer_args(job, use_cpu)  # before loading: DeepSpeed ZeRO-3 partitions at load time
    processor = AutoProcessor.from_pretrained(job.model)
    start = str(resume) if resume is not None and _has_weights(resume) else job.model
    model = load_vlm(start, job.precision)
    frozen = freeze_vision(model)
    data = datasets.Dataset.from_parquet(job.train_file)
    if job.stage == "sft":
        from trl import SFTTrainer

        cls = _resuming(SFTTrainer) if resume is not None else SFTTrainer
        keep = ["prompt", "completion", "images"]
        trainer = cls(model=model, args=args, train_dataset=data.select_columns(keep), processing_class=processor,
                      data_collator=sft_collator(processor, job.max_length, job.max_pixels), callbacks=callbacks)
    else:
        from trl import DPOTrainer

        cls = _resuming(DPOTrainer) if resume is not None else DPOTrainer
        ref = load_vlm(job.ref_model or job.model, job.precision)
        ref.requires_grad_(False)
        keep = ["prompt", "chosen", "rejected", "images"]
        trainer = cls(model=model, ref_model=ref, args=args, train_dataset=data.select_columns(keep),
                      processing_class=processor,
                      data_collator=dpo_collator(processor, job.max_length, job.max_pixels), callbacks=callbacks)
    return trainer, processor, frozen


def _stop_after_epoch_callback(epoch: int):
    from transformers import TrainerCallback

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
    import torch

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


# ----------------------------------------------------------------------------- validation


@dataclass
class ValidationResult:
    accuracy: float  # right answers / samples; unparsable samples count as wrong
    samples: int
    parsed: int
    accuracy_by_type: dict[str, float] = field(default_factory=dict)
    rows: list = field(default_factory=list, repr=False)  # the scored samples (`simple_cot.SimpleCoT`)


def validation_accuracy(model_dir: Path, val_rows: list[dict[str, Any]], engine: dict[str, Any],
                        sampling: dict[str, Any], store_path: Path, models_dir: Path, *,
                        think_tag: str = "<think>", with_type: bool = True,
                        rule: str = "strict") -> ValidationResult:
    """Score `model_dir` on the held-out MCQs with the student prompt (forced think tag) through the
    engines (`engine`: the profile's `student.engine`, its model replaced by `model_dir`). Requests are
    stored under `store_path`, keyed by the model's weights, so a re-run with the same weights reuses them.
    The engine is closed before returning, so the next training call has the machine to itself."""
    from lpt_utils import simple_cot
    from lpt_utils.engines import EngineConfig, RequestStore, make_engine, run_requests

    if not val_rows:
        raise ValueError("no validation MCQs")
    cfg = EngineConfig.from_dict({**engine, "model": str(model_dir)})
    prefix = simple_cot.forced_prefix(str(model_dir), think_tag)
    eng = make_engine(cfg, models_dir)
    try:
        results = run_requests(eng, simple_cot.requests(val_rows, sampling, prefix, with_type),
                               RequestStore(store_path), desc=f"validating {Path(model_dir).parent.name}")
    finally:
        close = getattr(eng, "close", None)
        if close:
            close()
    scored, _ = simple_cot.score(val_rows, results, rule=rule)
    by_type: dict[str, list[bool]] = {}
    for r in scored:
        by_type.setdefault(r.question_type, []).append(r.is_correct)
    return ValidationResult(accuracy=sum(r.is_correct for r in scored) / len(scored), samples=len(scored),
                            parsed=sum(r.drop_reason != "unparsable" for r in scored),
                            accuracy_by_type={t: sum(v) / len(v) for t, v in sorted(by_type.items())},
                            rows=scored)


# ----------------------------------------------------------------------------- what changed


@dataclass
class WeightDiff:
    """Which saved tensors differ between two checkpoints of the same model."""

    language_changed: int
    language_total: int
    vision_changed: int
    vision_total: int
    max_vision_change: float
    changed_examples: list[str] = field(default_factory=list)


def _weight_files(model: str) -> list[Path]:
    p = Path(model)
    if not p.is_dir():  # a hub id: its files in the local cache
        from huggingface_hub import snapshot_download

        p = Path(snapshot_download(model, allow_patterns=["*.safetensors", "*.json"], local_files_only=True))
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model}: no .safetensors weights")
    return files


def is_vision_key(name: str) -> bool:
    return any(part in VISION_MODULE_NAMES for part in name.split("."))


def compare_weights(base: str, trained: str) -> WeightDiff:
    """Compare two saved models tensor by tensor (one tensor in memory at a time, so a 7B model is fine):
    how many language and vision tensors changed. Both must be saved under the same key names (any two
    `save_pretrained` folders of one architecture are)."""
    import torch
    from safetensors import safe_open

    def index(model: str) -> dict[str, Path]:
        out = {}
        for f in _weight_files(model):
            with safe_open(str(f), "pt") as h:
                out.update({k: f for k in h.keys()})
        return out

    a, b = index(base), index(trained)
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"{base} and {trained} hold different tensors (e.g. {only})")
    lang = [0, 0]
    vis = [0, 0]
    max_vis = 0.0
    changed: list[str] = []
    for k in sorted(a):
        with safe_open(str(a[k]), "pt") as ha, safe_open(str(b[k]), "pt") as hb:
            ta, tb = ha.get_tensor(k), hb.get_tensor(k)
        same = ta.shape == tb.shape and torch.equal(ta, tb)
        counter = vis if is_vision_key(k) else lang
        counter[1] += 1
        if not same:
            counter[0] += 1
            if len(changed) < 5:
                changed.append(k)
            if counter is vis:
                max_vis = max(max_vis, float((ta.float() - tb.float()).abs().max()))
    return WeightDiff(language_changed=lang[0], language_total=lang[1], vision_changed=vis[0],
                      vision_total=vis[1], max_vision_change=max_vis, changed_examples=changed)


# ----------------------------------------------------------------------------- the sweep


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
    def from_settings(cls, s: dict[str, Any]) -> "SweepPlan":
        lrs = s["learning_rates"]
        lrs = tuple(float(x) for x in (lrs if isinstance(lrs, (list, tuple)) else [lrs]))
        return cls(lrs, int(s["max_epochs"]), s.get("early_stop_patience"), bool(s.get("validate", True)))


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


def lr_tag(lr: float) -> str:
    return f"lr-{lr:.0e}".replace("e-0", "e-")


def epoch_log(log_history: list[dict[str, Any]], epoch: int) -> list[dict[str, Any]]:
    """The training log entries (those with a loss) of epoch `epoch` (1-based)."""
    return [e for e in log_history if "loss" in e and epoch - 1 < e.get("epoch", 0) <= epoch + 1e-9]


def sweep(plan: SweepPlan, train_epoch: Callable[[float, int], dict[str, Any]],
          validate: Callable[[Path], float] | None, *, on_result: Callable[[EpochResult], None] | None = None,
          discard: Callable[[Path], None] | None = None) -> tuple[list[EpochResult], EpochResult]:
    """Run the plan: `train_epoch(lr, epoch)` trains one more epoch and returns its metrics (with
    `model_dir`); `validate(model_dir)` scores it. A learning rate stops after `plan.patience` epochs
    without improving on its own best. The best (lr, epoch) overall wins (ties: the earlier); `discard`
    is called on every exported model that can no longer win, so at most two are kept on disk.
    Returns (every epoch's result, the best)."""
    from tqdm.auto import tqdm

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


def sweep_fingerprint(settings: dict[str, Any], train_file: Path, *models: str) -> str:
    """What shapes a sweep's models: the stage's settings, the rendered examples' content and the
    starting models (their `selected_from.json` where they are a sweep's pick, else their path)."""
    import hashlib

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


# ----------------------------------------------------------------------------- jobs from the profile

# Profile keys of the `sft:` / `dpo:` sections that a TrainJob takes as they are.
_JOB_KEYS = ("per_device_batch_size", "max_length", "max_pixels", "scheduler", "warmup_steps", "weight_decay",
             "precision", "gradient_checkpointing", "seed", "logging_steps", "cpu_threads")


def make_job(stage: str, s: dict[str, Any], *, model: str, train_file: Path, sweep_dir: Path, lr: float,
             epoch: int, num_processes: int, ref_model: str | None = None) -> TrainJob:
    """The TrainJob of one (learning rate, epoch) call, from the profile section `s` (`sft` or `dpo`).
    Layout: `<sweep_dir>/<lr-tag>/checkpoints/` and `<sweep_dir>/<lr-tag>/epoch-<k>/{model,metrics.json}`."""
    lr_dir = Path(sweep_dir) / lr_tag(lr)
    extra: dict[str, Any] = {}
    if stage == "dpo":
        extra = {"beta": float(s["beta"]), "loss": s["loss"], "sft_weight": float(s["sft_weight"] or 0.0),
                 "ref_model": ref_model}
    return TrainJob(
        stage=stage, model=str(model), train_file=str(train_file), output_dir=str(lr_dir / "checkpoints"),
        model_dir=str(lr_dir / f"epoch-{epoch}" / "model"),
        metrics_file=str(lr_dir / f"epoch-{epoch}" / "metrics.json"),
        learning_rate=float(lr), epochs=int(s["max_epochs"]), stop_after_epoch=epoch, resume=epoch > 1,
        gradient_accumulation_steps=accumulation_steps(s["batch_size"], int(s["per_device_batch_size"]),
                                                       num_processes),
        num_processes=num_processes, **{k: s[k] for k in _JOB_KEYS}, **extra)


def epoch_trainer(stage: str, s: dict[str, Any], *, model: str, train_file: Path, sweep_dir: Path,
                  num_processes: int, ref_model: str | None = None) -> Callable[[float, int], dict[str, Any]]:
    """`train_epoch(lr, epoch)` for `sweep`: writes the call's job file beside its metrics, runs it in a
    subprocess (`lpt_utils.launch`, the launcher the profile names), returns its metrics and `model_dir`."""
    from lpt_utils import launch

    def train_epoch(lr: float, epoch: int) -> dict[str, Any]:
        job = make_job(stage, s, model=model, train_file=train_file, sweep_dir=sweep_dir, lr=lr, epoch=epoch,
                       num_processes=num_processes, ref_model=ref_model)
        folder = Path(job.metrics_file).parent
        job_file = folder / "job.yaml"
        if Path(job.metrics_file).exists() and job_file.exists() and TrainJob.load(job_file) == job:
            print(f"{lr_tag(lr)} epoch {epoch}: finished in an earlier run, reused", flush=True)
        else:
            cmd = launch.launch_command(stage, job.save(job_file), launcher=s["launcher"],
                                        num_processes=num_processes, precision=s["precision"])
            print(launch.run_training(cmd, folder / "train.log"), flush=True)
        return {**json.loads(Path(job.metrics_file).read_text()), "model_dir": job.model_dir}

    return train_epoch


def validator(val_rows: list[dict[str, Any]], student_engine: dict[str, Any], validation: dict[str, Any],
              store_path: Path, models_dir: Path, *, think_tag: str = "<think>", with_type: bool = True,
              rule: str = "strict",
              cache_file: Path | None = None) -> tuple[Callable[[Path], float], dict[str, ValidationResult]]:
    """`validate(model_dir) -> accuracy` for `sweep`, and the dict it fills with each model's full result.
    With `cache_file` (inside the sweep folder, which `prepare_sweep_dir` empties when anything that
    shapes the models changes), each model's score is kept there too, so a resumed sweep does not need
    the models it already scored and discarded."""
    seen: dict[str, ValidationResult] = {}
    cache = json.loads(Path(cache_file).read_text()) if cache_file and Path(cache_file).exists() else {}

    def validate(model_dir: Path) -> float:
        if str(model_dir) in cache:
            res = ValidationResult(**cache[str(model_dir)])
            print(f"validation {Path(model_dir).parent.parent.name}/{Path(model_dir).parent.name}: "
                  f"{res.accuracy:.1%} (scored in an earlier run)", flush=True)
            seen[str(model_dir)] = res
            return res.accuracy
        res = validation_accuracy(model_dir, val_rows, student_engine, validation["sampling"], store_path,
                                  models_dir, think_tag=think_tag, with_type=with_type,
                                  rule=rule)
        seen[str(model_dir)] = res
        if cache_file:
            cache[str(model_dir)] = {k: v for k, v in asdict(res).items() if k != "rows"}
            Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(cache_file).with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, cache_file)
        print(f"validation {Path(model_dir).parent.parent.name}/{Path(model_dir).parent.name}: "
              f"{res.accuracy:.1%} of {res.samples} ({res.parsed} parsed)", flush=True)
        return res.accuracy

    return validate, seen


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
              stage_dir: Path, models_dir: Path, num_processes: int, ref_model: str | None = None,
              score_start: bool = False) -> SweepOutcome:
    """Stage 5 or 6 end to end, as its notebook runs it: resume or start `<stage_dir>/sweep/`, train
    one epoch per subprocess call for each learning rate of the profile's `settings[stage]`, score
    every epoch's model on stage 4's held-out MCQs through the engines (and the starting model first
    with `score_start`), stop early per learning rate, and move the best epoch's model to
    `<stage_dir>/model/`."""
    from lpt_utils import launch

    s = settings[stage]
    plan = SweepPlan.from_settings(s)
    stage_dir = Path(stage_dir)
    sweep_dir = stage_dir / "sweep"
    resumed = prepare_sweep_dir(sweep_dir, sweep_fingerprint({**s, "student": settings["student"]}, train_file,
                                                             str(model)))
    if resumed:
        print("resuming: epochs finished by an earlier run with these settings and examples are reused")
    val, validate, validations, start = None, None, {}, None
    if plan.validate:
        val = load_val_mcqs(data_dir, s["validation"]["max_mcqs"])
        validate, validations = validator(
            val.to_dict("records"), settings["student"]["engine"], s["validation"],
            stage_dir / "validation" / "requests.jsonl", models_dir, think_tag=settings["simple_cot"]["think_tag"],
            with_type=settings["training_data"]["with_type_line"],
            rule=settings["simple_cot"]["rule"],
            cache_file=sweep_dir / "validation.json")
        print(f"{len(val)} held-out MCQs")
        if score_start:
            start = validate(model)
    command = launch.launch_command(stage, "JOB.yaml", launcher=s["launcher"], num_processes=num_processes,
                                    precision=s["precision"])
    print("each call:", " ".join(command))
    train_epoch = epoch_trainer(stage, s, model=str(model), ref_model=ref_model, train_file=train_file,
                                sweep_dir=sweep_dir, num_processes=num_processes)
    results, best = sweep(plan, train_epoch, validate, discard=discard_model)
    model_dir = keep_best(best, stage_dir / "model", sweep_dir)
    print(f"kept: lr {best.learning_rate:g}, epoch {best.epoch} -> {model_dir}")
    return SweepOutcome(results=results, best=best, model_dir=model_dir, sweep_dir=sweep_dir, resumed=resumed,
                        command=command, val=val, validations=validations, start_accuracy=start)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lpt_utils.train",
                                 description="One training call of stage 5 (sft) or 6 (dpo) from a job file.")
    ap.add_argument("stage", choices=("sft", "dpo"))
    ap.add_argument("--config", required=True, type=Path, help="a TrainJob YAML written by the notebook")
    args = ap.parse_args(argv)
    job = TrainJob.load(args.config)
    if job.stage != args.stage:
        raise SystemExit(f"{args.config} is a {job.stage} job, not {args.stage}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    m = run_job(job)
    if m:
        print(f"[{job.stage}] lr {job.learning_rate:g} epoch {job.stop_after_epoch}/{job.epochs}: "
              f"step {m['global_step']}, {m['seconds']} s -> {job.model_dir}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
