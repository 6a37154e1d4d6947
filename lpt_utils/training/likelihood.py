"""Does training learn what its data say? Three checks by teacher-forced likelihood (no sampling).

Accuracy on a benchmark moves by chance on small models and small sets; a bug in the training data (an
inverted loss mask, a prefix that is not masked, swapped preference pairs) can leave it where it was.
These checks train the student briefly through the project's own path (`data.sft_examples` /
`data.dpo_examples`, `job.make_job`, TRL's trainer with the project's collators, `job.run_job`) on a
small slice of stage 4's rows, and compare log-likelihoods of fixed targets before and after:

- **answers**: SFT on the rows as they are raises the likelihood of held-out rows' right answers among
  their options (the answer block naming the right option against the blocks naming each other option,
  given the prompt and the row's own thought) more than SFT on the same rows with their answer letters
  permuted among them (each answer still one of its own question's options);
- **mask**: SFT with the X->O rows' wrong opening thoughts masked (the rows as they are) raises the
  likelihood of those thoughts less than SFT on the same rows with nothing masked;
- **preferences**: DPO raises the chosen-over-rejected log-likelihood margin of its pairs; DPO on the
  same pairs with chosen and rejected swapped lowers it.

Each check trains two variants from the same start with the same seed and data order, so it is
deterministic on a CPU; it passes only when the difference has the right sign and exceeds `tolerance`.
`python -m lpt_utils.training.likelihood --model DIR --slice DIR` prints a report; `tests/test_likelihood.py`
runs it on the tiny student and on deliberately broken variants of the data path, which must fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from lpt_utils.engines.images import load_image
from lpt_utils.pipeline.mcq import split_options
from lpt_utils.pipeline.verify import LETTERS, named_letter
from lpt_utils.training import data, job

ANSWER_TAG = "<answer>"
_ANSWER_INNER = re.compile(r"<answer>\s*(.*?)\s*</answer>\s*", re.S)


@dataclass
class Probe:
    """One scored target: the log-likelihood of `target` right after `prompt` (with the image)."""

    prompt: str
    target: str
    image: str


@dataclass
class CheckResult:
    name: str
    claim: str
    figures: dict[str, float]
    difference: float  # what must exceed the tolerance for the check to hold
    tolerance: float
    seconds: float = 0.0

    @property
    def held(self) -> bool:
        return self.difference > self.tolerance

    def line(self) -> str:
        figs = ", ".join(f"{k} {v:+.4f}" for k, v in self.figures.items())
        return (f"[{'held' if self.held else 'FAILED'}] {self.name}: {self.claim} | {figs} | "
                f"difference {self.difference:+.4f} (must exceed {self.tolerance})")


@dataclass
class Slice:
    """A small fixed slice of stage 4's rows: SFT rows to train on, held-out SFT rows (other MCQs) whose
    right answers are scored, and DPO pairs."""

    sft: pd.DataFrame
    heldout: pd.DataFrame
    dpo: pd.DataFrame

    @classmethod
    def read(cls, folder: Path) -> Slice:
        """From `sft.jsonl`, `heldout.jsonl`, `dpo.jsonl` in `folder`, image paths relative to it."""
        folder = Path(folder)

        def load(name: str) -> pd.DataFrame:
            rows = pd.read_json(folder / f"{name}.jsonl", lines=True, dtype=False)
            rows["image_path"] = [str(folder / p) for p in rows["image_path"]]
            return rows

        out = cls(load("sft"), load("heldout"), load("dpo"))
        shared = set(out.sft.mcq_id) & set(out.heldout.mcq_id)
        if shared:
            raise ValueError(f"{folder}: held-out rows share {len(shared)} MCQs with the training rows")
        return out


def write_slice(stage4: Path, folder: Path, *, train_rows: int = 200, heldout_rows: int = 48, pairs: int = 24,
                seed: int = 0, consistent: bool = True) -> dict[str, int]:
    """Write a slice of stage 4's folder `stage4` to `folder`: long-CoT SFT rows of some MCQs to train on
    (X->O rows first, so that the mask check has rows to score), rows of other MCQs held out, and DPO
    pairs from both families; images copied beside them, paths relative. Returns the counts.

    `consistent`: only SFT rows whose thought ends on the option their answer names
    (`concludes_with_answer`). A real reasoner's long CoTs do; the tiny run's often do not (117 of the 362
    long-CoT rows of its stage 4 without subsampling do), and rows that contradict themselves teach no
    answer to learn. Measured on that run (3 slice seeds x 2 permutation seeds, 4 epochs): from all rows
    the answers check held 4 times in 6 (it failed by 0.40 nats); from consistent rows 6 times in 6 (by
    0.044 to 0.30 nats)."""
    import shutil

    stage4, folder = Path(stage4), Path(folder)
    sft = pd.read_parquet(stage4 / "sft_long.parquet")
    if consistent:
        sft = sft[[concludes_with_answer(r) for r in sft.itertuples(index=False)]]
    dpo = pd.concat([pd.read_parquet(stage4 / f"{data.DPO_FILE[f]}.parquet") for f in data.DPO_FAMILIES],
                    ignore_index=True)
    mcqs = sorted(set(sft.mcq_id))
    random.Random(seed).shuffle(mcqs)
    held = set(mcqs[: max(1, len(mcqs) // 4)])
    pool = sft[~sft.mcq_id.isin(held)].sample(frac=1.0, random_state=seed)
    xo = pool[pool.assistant_prefix.str.len() > 0]
    train_part = pd.concat([xo.head(train_rows // 2), pool[pool.assistant_prefix.str.len() == 0]]).head(train_rows)
    parts = {"sft": train_part, "heldout": sft[sft.mcq_id.isin(held)].head(heldout_rows),
             "dpo": pd.concat([g.sample(min(len(g), pairs // 2), random_state=seed) for _, g in dpo.groupby("family")])}
    (folder / "images").mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, rows in parts.items():
        rows = rows.drop(columns=[c for c in ("extra_metadata",) if c in rows.columns]).copy()
        for p in set(rows.image_path):
            shutil.copyfile(p, folder / "images" / Path(p).name)
        rows["image_path"] = ["images/" + Path(p).name for p in rows.image_path]
        rows.to_json(folder / f"{name}.jsonl", orient="records", lines=True, force_ascii=False)
        counts[name] = len(rows)
    return counts


@dataclass
class Settings:
    """How long and how hard the checks train (the profile's sections give everything else)."""

    sft_lr: float = 1e-3
    sft_epochs: int = 2
    answers_epochs: int = 4  # the answers check (2 epochs held on the same 6 slices, by as little as 0.014)
    dpo_lr: float = 1e-4
    dpo_epochs: int = 1
    tolerance: float = 0.01
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)  # extra TRL keys for both stages


# ----------------------------------------------------------------------------- likelihoods


def split_answer(assistant: str) -> tuple[str, str]:
    """(thought, answer block) of an assistant turn: the answer block starts at its last answer tag."""
    at = assistant.rfind(ANSWER_TAG)
    if at <= 0:
        raise ValueError(f"no answer tag after a thought in {assistant[-80:]!r}")
    return assistant[:at], assistant[at:]


def target_logprobs(model_dir: str | Path, probes: list[Probe], max_pixels: int | None) -> list[float]:
    """Summed log-probability of each probe's target tokens, teacher-forced after its prompt and image.
    Prompt and target are tokenized together; the target's tokens are the whole's last tokens when they
    are the target's own tokenization, else those past the prompt's own tokenization, which must then be
    a prefix of the whole (a ValueError otherwise)."""
    import torch
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = job.load_vlm(str(model_dir), bf16=False).eval()
    out = []
    with torch.no_grad():
        for p in probes:
            image = load_image(p.image, max_pixels)
            whole = processor(text=[p.prompt + p.target], images=[image], return_tensors="pt")
            ids = whole["input_ids"][0]
            tail = torch.tensor(processor.tokenizer(p.target, add_special_tokens=False)["input_ids"])
            n = len(ids) - len(tail)
            if not 0 < n < len(ids) or not torch.equal(ids[n:], tail):  # the tokens merge across the seam
                head = processor(text=[p.prompt], images=[image], return_tensors="pt")["input_ids"][0]
                n = len(head)
                if n >= len(ids) or not torch.equal(ids[:n], head):
                    raise ValueError(f"the prompt's tokens are not a prefix of prompt + target ({p.target[:40]!r})")
            logits = model(**whole).logits[0, n - 1:-1].float()
            logp = torch.log_softmax(logits, dim=-1).gather(1, ids[n:, None])[:, 0]
            out.append(float(logp.sum()))
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _prompt(processor, system: str, user: str, assistant: str) -> str:
    """The rendered prompt (system and user turns, image, generation prompt) before `assistant`."""
    return data.split_turn(processor, system, user, assistant)[0]


# ----------------------------------------------------------------------------- training


def train(stage: str, rows: pd.DataFrame, model: str, work: Path, settings: dict[str, Any], lr: float,
          epochs: int, ref_model: str | None = None, overrides: dict[str, Any] | None = None) -> Path:
    """Train `model` on `rows` (stage 4's SFT or DPO rows) through the project's path: rendered by
    `data.sft_examples` / `data.dpo_examples`, a `TrainJob` from the profile's section, `run_job`.
    Returns the trained model's folder."""
    from transformers import AutoProcessor

    raw = json.loads(json.dumps(settings[stage]))  # a copy: this call's schedule, not the profile's sweep
    raw["lpt"].update(learning_rates=[lr], max_epochs=epochs, early_stop_patience=None)
    section = job.StageSettings.from_section(stage, raw)
    processor = AutoProcessor.from_pretrained(model)
    render = data.sft_examples if stage == "sft" else data.dpo_examples
    examples = render(rows, processor, max_length=section.value("max_length"), max_pixels=section.lpt["max_pixels"],
                      overlong=section.lpt["overlong"]).examples
    work.mkdir(parents=True, exist_ok=True)
    train_file = work / "train.parquet"
    examples.to_parquet(train_file, index=False)
    one = job.make_job(stage, section, model=model, train_file=train_file, sweep_dir=work, lr=lr, epoch=epochs,
                       num_processes=1, ref_model=ref_model)
    trl = {**one.trl, "save_strategy": "no", "logging_steps": 1, **(overrides or {})}
    one = dataclasses.replace(one, resume=False, trl=trl)
    job.run_job(one)
    return Path(one.model_dir)


def named_option(row) -> tuple[list[str], str, str]:
    """(the options shown in the row's user turn, the letter its answer block names, how it names it:
    "text" or a letter form). A ValueError when the answer names no single option."""
    _, block = split_answer(row.assistant)
    inner = _ANSWER_INNER.fullmatch(block)
    options = split_options(row.user)
    verdict = named_letter(inner.group(1) if inner else "", options)
    if verdict.letter is None:
        raise ValueError(f"row {row.id}: its answer block {block.strip()!r} names none of its options {options}")
    return options, verdict.letter, verdict.how


def thought_conclusion(row) -> str | None:
    """The letter of the option the row's thought names last (its text as whole words, any case, or its
    letter in brackets), or None when the thought names none."""
    thought, _ = split_answer(row.assistant)
    low, best, at = thought.lower(), None, -1
    for i, text in enumerate(split_options(row.user)):
        for pattern in (rf"(?<![a-z0-9]){re.escape(text.lower())}(?![a-z0-9])", rf"\({LETTERS[i].lower()}\)"):
            for m in re.finditer(pattern, low):
                if m.start() > at:
                    best, at = LETTERS[i], m.start()
    return best


def concludes_with_answer(row) -> bool:
    """Whether the row's thought ends on the option its answer block names."""
    try:
        return thought_conclusion(row) == named_option(row)[1]
    except ValueError:
        return False


def answer_naming(row, letter: str) -> str:
    """The row's assistant turn with its answer block naming option `letter` instead, in the same form:
    the option's text for a text answer, the letter (and its text, if given) for a letter form."""
    thought, block = split_answer(row.assistant)
    options, old, how = named_option(row)
    if LETTERS.index(letter) >= len(options):
        raise ValueError(f"row {row.id} has {len(options)} options, no ({letter})")
    new_text, old_text = options[LETTERS.index(letter)], options[LETTERS.index(old)]
    inner = _ANSWER_INNER.fullmatch(block)
    body = inner.group(1)
    if how == "text":
        body = new_text
    else:  # "(B)", "B.", "(B) blue", "B. the blue one": the letter, and the option's text where it is given
        body = re.sub(rf"(?<![A-Za-z]){old}(?![A-Za-z])", letter, body, count=1, flags=re.I)
        if old_text and body.lower().endswith(old_text.lower()):
            body = body[:len(body) - len(old_text)] + new_text
    return thought + block[:inner.start(1)] + body + block[inner.end(1):]


def permute_answers(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same rows with their answer letters permuted among them: row i's answer names the option at
    the letter row j's answer named (j drawn by a seeded permutation), in row i's answer form, so each
    answer stays one of its own question's options and the letters keep their frequencies; only which
    option each question's answer names changes. Thoughts (and the masked prefix in them) are untouched."""
    letters = [named_option(r)[1] for r in rows.itertuples(index=False)]
    order = list(range(len(letters)))
    random.Random(seed).shuffle(order)
    out = rows.copy()
    out["assistant"] = [answer_naming(r, letters[j]) for r, j in zip(rows.itertuples(index=False), order)]
    return out


def unmask(rows: pd.DataFrame) -> pd.DataFrame:
    """The same rows with nothing masked: the opening thought is trained like the rest."""
    out = rows.copy()
    out["assistant_prefix"] = ""
    return out


def swap_pairs(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.copy()
    out["chosen"], out["rejected"] = rows["rejected"].values, rows["chosen"].values
    return out


# ----------------------------------------------------------------------------- the checks


def _timed(fn: Callable[[], CheckResult]) -> CheckResult:
    import time

    t0 = time.perf_counter()
    res = fn()
    res.seconds = round(time.perf_counter() - t0, 1)
    return res


def right_option_logprob(scores: list[float], n_options: list[int]) -> float:
    """Mean over MCQs of log P(right option | one of its options): each MCQ's scores are its answer block
    naming the right option first, then each other option; what the blocks share (the tags, the form)
    cancels out, so only which option the model prefers counts."""
    import math

    out, at = [], 0
    for n in n_options:
        group = scores[at:at + n]
        top = max(group)
        out.append(group[0] - top - math.log(sum(math.exp(x - top) for x in group)))
        at += n
    return _mean(out)


def check_answers(model: str, sl: Slice, settings: dict[str, Any], cfg: Settings, work: Path) -> CheckResult:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model)
    max_pixels = settings["sft"]["lpt"]["max_pixels"]
    probes, sizes = [], []
    for r in sl.heldout.itertuples(index=False):
        options, right, _ = named_option(r)
        thought, _ = split_answer(r.assistant)
        prompt = _prompt(processor, r.system, r.user, r.assistant) + thought
        for letter in [right] + [x for x in LETTERS[:len(options)] if x != right]:
            probes.append(Probe(prompt, split_answer(answer_naming(r, letter))[1], r.image_path))
        sizes.append(len(options))

    def score(m: str | Path) -> float:
        return right_option_logprob(target_logprobs(m, probes, max_pixels), sizes)

    before = score(model)
    real = train("sft", sl.sft, model, work / "answers-real", settings, cfg.sft_lr, cfg.answers_epochs,
                 overrides=cfg.overrides)
    permuted = train("sft", permute_answers(sl.sft, cfg.seed), model, work / "answers-permuted", settings,
                     cfg.sft_lr, cfg.answers_epochs, overrides=cfg.overrides)
    gain_real, gain_perm = score(real) - before, score(permuted) - before
    return CheckResult("answers", f"SFT on the real rows raises the {len(sizes)} held-out right answers' "
                       "log-likelihood among their options more than SFT with answer letters permuted among rows",
                       {"gain real": gain_real, "gain permuted": gain_perm}, gain_real - gain_perm, cfg.tolerance)


def check_mask(model: str, sl: Slice, settings: dict[str, Any], cfg: Settings, work: Path) -> CheckResult:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model)
    max_pixels = settings["sft"]["lpt"]["max_pixels"]
    masked_rows = sl.sft[sl.sft["assistant_prefix"].str.len() > 0]
    if masked_rows.empty:
        raise ValueError("the slice has no row with a masked prefix (X->O)")
    probes = [Probe(_prompt(processor, r.system, r.user, r.assistant), r.assistant_prefix, r.image_path) for r in masked_rows.itertuples(index=False)]
    before = _mean(target_logprobs(model, probes, max_pixels))
    masked = train("sft", sl.sft, model, work / "mask-masked", settings, cfg.sft_lr, cfg.sft_epochs,
                   overrides=cfg.overrides)
    unmasked = train("sft", unmask(sl.sft), model, work / "mask-unmasked", settings, cfg.sft_lr, cfg.sft_epochs,
                     overrides=cfg.overrides)
    gain_masked = _mean(target_logprobs(masked, probes, max_pixels)) - before
    gain_unmasked = _mean(target_logprobs(unmasked, probes, max_pixels)) - before
    return CheckResult("mask", f"SFT with the {len(probes)} wrong opening thoughts masked raises their "
                       "log-likelihood less than SFT with them unmasked",
                       {"gain masked": gain_masked, "gain unmasked": gain_unmasked}, gain_unmasked - gain_masked,
                       cfg.tolerance)


def check_preferences(model: str, sl: Slice, settings: dict[str, Any], cfg: Settings, work: Path) -> CheckResult:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model)
    max_pixels = settings["dpo"]["lpt"]["max_pixels"]
    prompts = [_prompt(processor, r.system, r.user, r.chosen) for r in sl.dpo.itertuples(index=False)]
    chosen = [Probe(p, data.split_turn(processor, r.system, r.user, r.chosen)[1], r.image_path)
              for p, r in zip(prompts, sl.dpo.itertuples(index=False))]
    rejected = [Probe(p, data.split_turn(processor, r.system, r.user, r.rejected)[1], r.image_path)
                for p, r in zip(prompts, sl.dpo.itertuples(index=False))]

    def margin(m: str | Path) -> float:
        scores = target_logprobs(m, chosen + rejected, max_pixels)  # one model load for both
        return _mean(scores[:len(chosen)]) - _mean(scores[len(chosen):])

    before = margin(model)
    real = train("dpo", sl.dpo, model, work / "pairs-real", settings, cfg.dpo_lr, cfg.dpo_epochs, ref_model=model,
                 overrides=cfg.overrides)
    swapped = train("dpo", swap_pairs(sl.dpo), model, work / "pairs-swapped", settings, cfg.dpo_lr, cfg.dpo_epochs,
                    ref_model=model, overrides=cfg.overrides)
    up, down = margin(real) - before, margin(swapped) - before
    return CheckResult("preferences", f"DPO raises the chosen-over-rejected margin of its {len(chosen)} pairs "
                       "and DPO on swapped pairs lowers it", {"margin change": up, "swapped change": down},
                       min(up, -down), cfg.tolerance)


CHECKS = {"answers": check_answers, "mask": check_mask, "preferences": check_preferences}


def run_checks(model: str, sl: Slice, settings: dict[str, Any], cfg: Settings | None = None,
               work: Path | None = None, only: list[str] | None = None) -> list[CheckResult]:
    """Run the checks (all, or `only`) and print a line for each."""
    cfg = cfg or Settings()
    results = []
    with tempfile.TemporaryDirectory(prefix="lpt-likelihood-") as tmp:
        base = Path(work) if work is not None else Path(tmp)
        for name in only or list(CHECKS):
            res = _timed(lambda: CHECKS[name](model, sl, settings, cfg, base / name))
            print(res.line(), flush=True)
            results.append(res)
    return results


def main(argv: list[str] | None = None) -> list[CheckResult]:
    from lpt_utils.config import load_profile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the student's folder (the tiny VLM, or a real one)")
    ap.add_argument("--slice", required=True, type=Path, help="folder with sft.jsonl, heldout.jsonl, dpo.jsonl")
    ap.add_argument("--profile", default="tiny", help="whose sft: and dpo: sections train")
    ap.add_argument("--only", nargs="+", choices=list(CHECKS))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    results = run_checks(args.model, Slice.read(args.slice), load_profile(args.profile), only=args.only)
    if args.json:
        args.json.write_text(json.dumps([{**dataclasses.asdict(r), "held": r.held} for r in results], indent=1))
    if not all(r.held for r in results):
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
