"""Stages 5-6, the kernel's side of the input: notebook 04's files as training examples.

- The input contract: `load_sft_rows` / `load_dpo_rows` / `load_val_mcqs` read stage 4's parquet files,
  check their columns, and drop (with a reason, in a funnel) rows that cannot train.
- Rendering: `sft_examples` / `dpo_examples` render each row with the student's chat template into the
  prompt-completion (or prompt/chosen/rejected) examples TRL reads, counting tokens with the image's
  real token count; the notebook writes them to the parquet file a job trains on.
- Batches: `sft_collator` / `dpo_collator` wrap TRL's vision collators so images are loaded from their
  paths (the trainer's process uses them); `label_view` shows what one example's batch labels.

The masked X→O prefix: TRL's vision collator, fed prompt-completion examples with
``completion_only_loss=True``, labels only the completion. The prompt here is the system and user turns
(image included) rendered with the generation prompt, *followed by the example's assistant prefix*
(the wrong simple thought of an X→O row), so those tokens carry no loss while the rest of the
assistant turn (cue, added thought, answer, end of turn) does.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lpt_utils.artifacts import Funnel, read_rows
from lpt_utils.engines.images import load_image
from lpt_utils.records import DPO_COLUMNS, MCQ, SFT_COLUMNS, columns

# ----------------------------------------------------------------------------- the input contract

SFT_FILES = ("sft_long", "sft_simple", "sft_published")
DPO_FAMILIES = ("O", "X→O")
DPO_FILE = {"O": "dpo_O", "X→O": "dpo_XO"}
VAL_FILE = "val_mcqs"
VAL_COLUMNS = columns(MCQ)  # the held-out MCQs are stage 1's rows


def _read_parquet(path: Path, columns: Iterable[str], what: str) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook 04 (training data) first")
    df = read_rows(path)  # image paths inside a moved run's folder point into it where it is now
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


# ----------------------------------------------------------------------------- batches


@dataclass
class ImagePathCollator:
    """Loads each example's images from their paths (with the same size cap as the engines), then hands
    the batch to TRL's vision collator `inner`. Keeps images out of the dataset's Arrow table."""

    inner: Any
    max_pixels: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = [{**ex, "images": [load_image(p, self.max_pixels) for p in ex["images"]]} for ex in examples]
        return self.inner(batch)


def sft_collator(processor, max_length: int | None, max_pixels: int | None) -> ImagePathCollator:
    """The collator `SFTTrainer` is given: TRL's prompt-completion vision collator, prompt unlabelled."""
    # trl is heavy: loaded only where a batch is built
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    return ImagePathCollator(DataCollatorForVisionLanguageModeling(processor=processor, max_length=max_length,
                                                                   completion_only_loss=True), max_pixels)


def dpo_collator(processor, max_length: int | None, max_pixels: int | None) -> ImagePathCollator:
    """The collator `DPOTrainer` is given: TRL's vision preference collator."""
    from trl.trainer.dpo_trainer import (
        DataCollatorForVisionPreference,  # heavy, as in sft_collator
    )

    return ImagePathCollator(DataCollatorForVisionPreference(processor=processor, max_length=max_length),
                             max_pixels)


def label_view(processor, example: dict[str, Any], max_length: int | None, max_pixels: int | None) -> dict[str, Any]:
    """How the SFT collator labels one rendered example: the text that carries no loss (system, user, image,
    masked prefix), the text that does, and the count of image tokens (all unlabelled)."""
    batch = sft_collator(processor, max_length, max_pixels)(
        [{k: example[k] for k in ("prompt", "completion", "images")}])
    ids, labels, att = batch["input_ids"][0], batch["labels"][0], batch["attention_mask"][0].bool()
    tok = processor.tokenizer
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    no_loss = tok.decode(ids[att & (labels == -100)])
    no_loss = re.sub(r"(?:<\|image_pad\|>)+", lambda m: f"<|image_pad|>×{m.group(0).count('<|image_pad|>')}", no_loss)
    return {"no_loss": no_loss, "loss": tok.decode(ids[labels != -100]), "image_tokens": int((ids == pad).sum()),
            "labelled_tokens": int((labels != -100).sum())}
