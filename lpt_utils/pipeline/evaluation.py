"""Notebook 07: score the base, SFT and DPO models on the paper's benchmarks (docs/evaluation.md; each
`eval` setting's source: docs/settings.md).

The path of one item, whatever the benchmark (`lpt_utils.benchmarks` reads the published files):

1. messages: a "direct" or a "think" system prompt (`templates/eval_*_system.j2`; both ask for the
   letter in parentheses inside answer tags), then the user turn: the image, the question, "select
   from the following choices", the choices as "(A) text" lines (`templates/eval_user.j2`; MMLU-Pro
   names the question's domain first). Greedy decoding, at most `eval.sampling.max_new_tokens` new
   tokens (2048 in the released evaluation script, every benchmark); images capped by area
   (`eval.image_max_pixels` = 512 × 512, `eval.image_min_pixels` = 16 × 16, aspect kept: the
   released script's LLaMA-Factory image regularisation, `lpt_utils.engines.images.capped_size`).
2. extraction (`verify.extract_answer`, each rule its own): the text in the answer tags, else the text
   after "Answer:", else the whole response (`eval.whole_response_fallback`, on in the released
   script). A response from which the strict rule extracts nothing (or an empty answer) is
   *unanswered* under it: wrong, and counted per benchmark, never scored as some letter.
3. matching, both rules on every row (`lpt_utils/pipeline/verify.py`): `correct_released`, the released
   script's rule exactly (an answer equal to *any* option's text counts as right: its defect), and
   `correct`, the strict rule (the right option only: this project's correction).
4. aggregation, per rule (`RULES`): per benchmark, the mean of per-category accuracies
   (`Task.aggregate`), or plain accuracy (MMVP); MMLU-Pro reports both its item mean and its category
   mean; CV-Bench also its authors' own aggregate (`Task.authors_score`, an extra column).

Which rule is shown where: the paper's numbers were computed with the released rule, so the table
printed beside them (`results_table(scores, "released")`, the first part of `results.md`) uses it;
the strict rule's table follows, labelled as this project's correction. `results.csv`, `scores.csv`,
`categories.csv` and `results_vs_paper.csv` hold both, with a `rule` column.

Every prediction (model, prompt, benchmark, item, raw output, both extractions and verdicts) is
saved, so `rescore` can recompute any score from the saved rows without calling a model.

Not stated in the paper (docs/settings.md, `eval.think_prefix`): the think prompt is not followed by a
forced `<think>` in the `paper` profile (`eval.think_prefix: ""`; the appendix describes a system prompt
only, and the released launcher passes `--force_thinking False`); the tiny
profile forces it, since its models learned to continue an opened tag, not to open one. The paper's
table rows: base + direct, base + think ("+ CoT prompt"), SFT + think, DPO + think — the prompt of
the trained rows is inferred, not stated. The easy/hard halves of the difficulty samples are split
by the released rule's accuracy (the paper's figure), the strict one is kept beside it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lpt_utils.artifacts import Funnel
from lpt_utils.benchmarks import TASKS, BenchItem, LoadReport, get_task
from lpt_utils.engines import EngineConfig, run_requests
from lpt_utils.engines.base import GenerationRequest, SamplingSettings
from lpt_utils.engines.common import model_identity
from lpt_utils.pipeline.simple_cot import forced_prefix
from lpt_utils.pipeline.verify import (
    LETTERS,
    Verdict,
    extract_answer,
    released_verdict,
    strict_verdict,
)
from lpt_utils.prompts import render
from lpt_utils.records import Prediction, as_dict
from lpt_utils.stages import take_shard

PROMPTS = ("direct", "think")

# The two answer rules, the paper's first: which verdict column each reads, and how tables name it.
RULES = ("released", "strict")
RULE_COLUMN = {"released": "correct_released", "strict": "correct"}
RULE_TITLE = {"released": "released rule (the paper's rule)", "strict": "strict rule (this project's correction)"}

# Settings that were replaced; a profile that still sets one is told what replaced it.
RETIRED_SETTINGS = {
    "longest_side": "eval.image_max_pixels / eval.image_min_pixels (an area cap, as the released script)",
    "released_scoring": "nothing: both rules are always reported (the released one beside the paper's numbers)",
}

# ----------------------------------------------------------------------------- the paper's numbers

# Table 1 / appendix Table 5 of the paper (arXiv 2504.15362), keyed by
# (model row, prompt). The prompt of the SFT and DPO rows is inferred (think).
PAPER_ROWS: dict[tuple[str, str], dict[str, float]] = {
    ("base", "direct"): {"avg": 58.47, "cv_bench": 74.74, "vstar": 48.51, "mmvp": 73.67, "mmstar": 63.73,
                         "mme_realworld": 31.68},
    ("base", "think"): {"avg": 59.18, "cv_bench": 75.42, "vstar": 55.08, "mmvp": 70.60, "mmstar": 62.40,
                        "mme_realworld": 32.40},
    ("sft", "think"): {"avg": 59.90, "cv_bench": 76.05, "vstar": 60.53, "mmvp": 70.00, "mmstar": 60.67,
                       "mme_realworld": 32.25},
    ("dpo", "think"): {"avg": 61.87, "cv_bench": 76.61, "vstar": 60.31, "mmvp": 75.00, "mmstar": 64.00,
                       "mme_realworld": 33.45},
}
# MMLU-Pro average per model (the paper states neither its prompt for the base row nor whether the
# average is over items or categories: it is shown beside every prompt of the model, and both means).
PAPER_MMLU_PRO: dict[str, float] = {"base": 48.07, "sft": 50.77, "dpo": 50.20}


# ----------------------------------------------------------------------------- prompts


def system_prompt(kind: str, with_image: bool = True) -> str:
    if kind not in PROMPTS:
        raise ValueError(f"prompt kind must be one of {PROMPTS}, got {kind!r}")
    return render(f"eval_{kind}_system", with_image=with_image)


def user_text(item: BenchItem) -> str:
    lines = [f"({LETTERS[i]}) {c}" for i, c in enumerate(item.choices)]
    return render("eval_user", domain=item.domain, question=item.question, choice_lines=lines)


def messages(item: BenchItem, kind: str) -> list[dict[str, Any]]:
    """System prompt of `kind`, then the user turn: the image (if any), then the question text."""
    with_image = item.image_path is not None
    content: Any = user_text(item)
    if with_image:
        content = [{"type": "image", "image": item.image_path}, {"type": "text", "text": content}]
    return [{"role": "system", "content": system_prompt(kind, with_image)},
            {"role": "user", "content": content}]


def sampling_for(eval_settings: dict[str, Any], spec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The profile's eval sampling, with a benchmark's own `max_new_tokens` where its spec sets one
    (no profile does: the released script allows 2048 on every benchmark)."""
    s = dict(eval_settings["sampling"])
    if spec.get("max_new_tokens"):
        s["max_new_tokens"] = int(spec["max_new_tokens"])
    s.update(changes)
    return s


def requests(items: list[BenchItem], kind: str, sampling: dict[str, Any], prefix: str = "") -> list:
    """One request per item. `prefix` (the forced opening of the assistant turn) is used with the
    think prompt only."""
    s = SamplingSettings.from_dict(sampling)
    pre = prefix if kind == "think" else ""
    return [GenerationRequest(messages=messages(it, kind), assistant_prefix=pre, sampling=s,
                              meta={"benchmark": it.benchmark, "item_id": it.item_id, "prompt": kind})
            for it in items]


# ----------------------------------------------------------------------------- extraction and scoring


@dataclass(frozen=True)
class Scored:
    """How one response reads under both rules (`lpt_utils.pipeline.verify`): each rule extracts its own answer
    and judges it. Strict: `extracted` (None: unanswered), where it came from, the option it names,
    the verdict; released: its extraction and verdict (the paper's numbers were computed with it)."""

    extracted: str | None
    source: str  # answer_tags | answer_colon | after_thought | whole_response | none
    unanswered_reason: str  # "" | "no_answer" (nothing to extract) | "empty_answer"
    named_letter: str  # the option the answer names ("" when none or ambiguous)
    match: str  # lpt_utils.pipeline.verify.Verdict.how, or "unanswered"
    correct: bool  # the strict rule: the right option only
    extracted_released: str | None
    match_released: str
    correct_released: bool  # the released evaluation script's rule, exactly

    @property
    def answered(self) -> bool:
        return not self.unanswered_reason


def score_response(raw: str, choices: list[str], right_letter: str, *, whole_response: bool = True) -> Scored:
    """Extract the answer from a whole assistant turn and judge it under both rules.
    `whole_response`: the released script's last fallback (`eval.whole_response_fallback`)."""
    ext = extract_answer(raw, "strict", whole_response)
    rel = extract_answer(raw, "released", whole_response)
    if rel.answer is None:
        rv = Verdict(False, None, "unanswered")
    else:
        rv = released_verdict(rel.answer, list(choices), right_letter, in_evaluation=True)
    if ext.answer is None or not ext.answer.strip():
        reason = "no_answer" if ext.answer is None else "empty_answer"
        return Scored(ext.answer, ext.source, reason, "", "unanswered", False, rel.answer, rv.how, rv.correct)
    sv = strict_verdict(ext.answer, list(choices), right_letter, ext.later_answers)
    return Scored(ext.answer, ext.source, "", sv.letter or "", sv.how, sv.correct, rel.answer, rv.how, rv.correct)


def predictions(model: str, model_path: str, kind: str, items: list[BenchItem], results, prefix: str = "",
                *, corrections: bool = False, whole_response: bool = True) -> list[Prediction]:
    """Score the (greedy, n=1) results of `requests(items, kind, ...)`, in the same order.
    `corrections`: `eval.mmvp_corrections`; `whole_response`: `eval.whole_response_fallback`."""
    out = []
    pre = prefix if kind == "think" else ""
    for it, res in zip(items, results, strict=True):
        raw = pre + res.texts[0]
        right = it.right_letter(corrections)
        s = score_response(raw, it.choices, right, whole_response=whole_response)
        out.append(Prediction(
            model=model, model_path=model_path, prompt=kind, benchmark=it.benchmark, item_id=it.item_id,
            category=it.category, subset=it.subset, question=it.question, choices=list(it.choices),
            answer_letter=it.answer_letter, corrected_letter=it.corrected_letter, right_letter=right,
            image_path=it.image_path or "", raw_output=raw, extracted=s.extracted, source=s.source,
            answered=s.answered, unanswered_reason=s.unanswered_reason, named_letter=s.named_letter, match=s.match,
            correct=s.correct, extracted_released=s.extracted_released, match_released=s.match_released,
            correct_released=s.correct_released, num_tokens=int(res.num_tokens[0]),
            finish_reason=res.finish_reasons[0]))
    return out


def to_frame(preds: list[Prediction]) -> pd.DataFrame:
    cols = list(Prediction.__dataclass_fields__)
    return pd.DataFrame([as_dict(p) for p in preds], columns=cols)


def rescore(df: pd.DataFrame, *, corrections: bool = False, whole_response: bool = True) -> pd.DataFrame:
    """Recompute extraction and both verdicts from the saved raw outputs (no model call): after a
    change to the verifier, or to switch label corrections or the whole-response fallback."""
    out = df.copy()
    rows = []
    for r in out.itertuples(index=False):
        right = (r.corrected_letter or r.answer_letter) if corrections else r.answer_letter
        s = score_response(r.raw_output, list(r.choices), right, whole_response=whole_response)
        rows.append((right, s.extracted, s.source, s.answered, s.unanswered_reason, s.named_letter, s.match,
                     s.correct, s.extracted_released, s.match_released, s.correct_released))
    cols = ["right_letter", "extracted", "source", "answered", "unanswered_reason", "named_letter", "match",
            "correct", "extracted_released", "match_released", "correct_released"]
    new = pd.DataFrame(rows, columns=cols, index=out.index)
    for c in cols:
        out[c] = new[c]
    return out


# ----------------------------------------------------------------------------- aggregation


def _check_rules(rules) -> tuple[str, ...]:
    rules = (rules,) if isinstance(rules, str) else tuple(rules)
    bad = [r for r in rules if r not in RULES]
    if bad:
        raise ValueError(f"unknown rule(s) {bad}; rules: {RULES}")
    return rules


def _unanswered(g: pd.DataFrame, rule: str) -> pd.Series:
    """Responses from which `rule` extracted no answer (or an empty one)."""
    if rule == "released" and "extracted_released" in g.columns:
        text = g["extracted_released"]
        return text.isna() | (text.fillna("").astype(str).str.strip() == "")
    return ~g["answered"].astype(bool)


def _score(g: pd.DataFrame, column: str, aggregate: str) -> tuple[float, float, float]:
    """(item mean, category mean, the task's score) in percent."""
    items = 100.0 * g[column].mean()
    cats = 100.0 * g.groupby("category")[column].mean().mean()
    return items, cats, (cats if aggregate == "category_mean" else items)


SCORE_COLUMNS = ["rule", "model", "prompt", "benchmark", "items", "unanswered", "unanswered_pct", "categories",
                 "item_mean", "category_mean", "score", "authors_score"]


def benchmark_scores(df: pd.DataFrame, rules=RULES) -> pd.DataFrame:
    """One row per (rule, model, prompt, benchmark), the released rule's rows first: items, unanswered
    (under that rule), the item mean, the category mean, the benchmark's score (its task's aggregate)
    and its authors' aggregate where it has one (CV-Bench; NaN otherwise), in percent."""
    rows = []
    for rule in _check_rules(rules):
        col = RULE_COLUMN[rule]
        for (model, prompt, bench), g in df.groupby(["model", "prompt", "benchmark"], sort=False):
            task = TASKS.get(bench)
            items, cats, score = _score(g, col, task.aggregate if task else "category_mean")
            missing = _unanswered(g, rule)
            authors = task.authors_score(g, col) if task and task.authors_score else math.nan
            rows.append({"rule": rule, "model": model, "prompt": prompt, "benchmark": bench, "items": len(g),
                         "unanswered": int(missing.sum()), "unanswered_pct": round(100.0 * missing.mean(), 2),
                         "categories": int(g["category"].nunique()), "item_mean": items, "category_mean": cats,
                         "score": score, "authors_score": authors})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def category_scores(df: pd.DataFrame, rules=RULES) -> pd.DataFrame:
    """Accuracy (percent) and unanswered count per (rule, model, prompt, benchmark, category)."""
    out = []
    for rule in _check_rules(rules):
        d = df.assign(_ok=df[RULE_COLUMN[rule]].astype(bool), _none=_unanswered(df, rule))
        g = d.groupby(["model", "prompt", "benchmark", "category"], sort=False)
        t = g.agg(items=("_ok", "size"), accuracy=("_ok", "mean"), unanswered=("_none", "sum")).reset_index()
        t["accuracy"] *= 100.0
        t["unanswered"] = t["unanswered"].astype(int)
        out.append(t.assign(rule=rule))
    cols = ["rule", "model", "prompt", "benchmark", "category", "items", "accuracy", "unanswered"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def subset_scores(df: pd.DataFrame, rules=RULES) -> pd.DataFrame:
    """Accuracy (percent) per (rule, model, prompt, benchmark, subset) for the items that have a subset
    (CV-Bench's sources, from which its authors' aggregate is made)."""
    cols = ["rule", "model", "prompt", "benchmark", "subset", "items", "accuracy"]
    if "subset" not in df.columns:
        return pd.DataFrame(columns=cols)
    d = df[df["subset"].fillna("") != ""]
    out = []
    for rule in _check_rules(rules):
        g = d.groupby(["model", "prompt", "benchmark", "subset"], sort=False)[RULE_COLUMN[rule]]
        t = g.agg(items="size", accuracy="mean").reset_index()
        t["accuracy"] = 100.0 * t["accuracy"].astype(float)
        out.append(t.assign(rule=rule))
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def subset_intervals(df: pd.DataFrame, rule: str = "strict", z: float = 1.96) -> pd.DataFrame:
    """Accuracy (percent) per (model, prompt, benchmark, subset) with its 95% interval (Wilson's, which
    stays inside 0-100 on small groups) beside chance (the mean of 1 / number of options over the
    group's items); `above_chance` marks groups whose interval lies wholly above it. The tiny profile's
    synthetic benchmark has one subset per question type."""
    cols = ["model", "prompt", "benchmark", "subset", "items", "accuracy", "ci_low", "ci_high", "chance",
            "above_chance"]
    _check_rules(rule)
    if "subset" not in df.columns:
        return pd.DataFrame(columns=cols)
    d = df[df["subset"].fillna("") != ""].assign(
        _right=lambda x: x[RULE_COLUMN[rule]].astype(float), _chance=lambda x: 1.0 / x["choices"].map(len))
    if d.empty:
        return pd.DataFrame(columns=cols)
    t = d.groupby(["model", "prompt", "benchmark", "subset"], sort=False).agg(
        items=("_right", "size"), p=("_right", "mean"), chance=("_chance", "mean")).reset_index()
    n, p = t["items"].astype(float), t["p"]
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    t["accuracy"], t["ci_low"], t["ci_high"] = 100 * p, 100 * (centre - half), 100 * (centre + half)
    t["chance"] = 100 * t["chance"]
    t["above_chance"] = t["ci_low"] > t["chance"]
    return t[cols]


def paper_columns() -> list[str]:
    """The paper's columns, in its order (they stay in the table, empty where not run)."""
    return ["Avg"] + [t.title for t in TASKS.values() if t.in_average] + ["MMLU-Pro (items)", "MMLU-Pro (categories)"]


def results_table(scores: pd.DataFrame, rule: str = "released") -> pd.DataFrame:
    """The paper's layout for one rule (`scores` from `benchmark_scores`): one row per (model, prompt);
    Avg (over the five vision columns, only when all five were run), the five columns — CV-Bench
    followed by its authors' aggregate when CV-Bench was run —, MMLU-Pro as item mean and category
    mean, then any other benchmark (the tiny profile's synthetic one)."""
    _check_rules(rule)
    if "rule" in scores.columns:
        scores = scores[scores["rule"] == rule]
    vision = [t for t in TASKS.values() if t.in_average]
    rows = []
    for (model, prompt), g in scores.groupby(["model", "prompt"], sort=False):
        by = g.set_index("benchmark")
        row: dict[str, Any] = {"model": model, "prompt": prompt}
        got = [by.loc[t.name, "score"] for t in vision if t.name in by.index]
        row["Avg"] = sum(got) / len(got) if len(got) == len(vision) else math.nan
        for t in TASKS.values():
            if t.name not in by.index:
                continue
            if t.name == "mmlu_pro":
                row["MMLU-Pro (items)"] = by.loc[t.name, "item_mean"]
                row["MMLU-Pro (categories)"] = by.loc[t.name, "category_mean"]
            else:
                row[t.title] = by.loc[t.name, "score"]
            if t.authors_score is not None:
                row[t.authors_title] = by.loc[t.name, "authors_score"] if "authors_score" in by.columns else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # The paper's columns stay, empty where not run, so its numbers show beside ours; an authors'
    # column beside its benchmark's, and a column of another benchmark, only when it was run.
    cols = []
    for c in paper_columns():
        if c not in table.columns:
            table[c] = math.nan
        cols.append(c)
        task = next((t for t in TASKS.values() if t.title == c), None)
        if task and task.authors_title in table.columns:
            cols.append(task.authors_title)
    others = [c for c in table.columns if c not in ("model", "prompt", *cols) and table[c].notna().any()]
    return table[["model", "prompt", *cols, *others]]


def results_tables(scores: pd.DataFrame) -> pd.DataFrame:
    """`results_table` of every rule in `scores`, stacked, with a leading `rule` column (results.csv)."""
    rules = [r for r in RULES if r in set(scores["rule"])] if "rule" in scores.columns else []
    parts = [results_table(scores, r).assign(rule=r) for r in rules]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=["rule", "model", "prompt"])
    table = pd.concat(parts, ignore_index=True)
    return table[["rule", *[c for c in table.columns if c != "rule"]]]


def paper_value(model: str, prompt: str, column: str) -> float | None:
    """The paper's number for a cell of the results table (None: the paper has none; the CV-Bench
    authors' aggregate is not in the paper)."""
    if column.startswith("MMLU-Pro"):
        return PAPER_MMLU_PRO.get(model)
    key = "avg" if column == "Avg" else next((t.name for t in TASKS.values() if t.title == column), None)
    return PAPER_ROWS.get((model, prompt), {}).get(key) if key else None


def compare_with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Long form of `results_table` / `results_tables`: (rule,) row, column, ours, paper (None where
    the paper has no number), and ours − paper."""
    keys = [c for c in ("rule", "model", "prompt") if c in table.columns]
    out = []
    for _, r in table.iterrows():
        for col in table.columns:
            if col in keys:
                continue
            paper = paper_value(r["model"], r["prompt"], col)
            ours = None if pd.isna(r[col]) else round(float(r[col]), 2)
            if ours is None and paper is None:
                continue
            out.append({**{k: r[k] for k in keys}, "column": col, "ours": ours, "paper": paper,
                        "diff": round(ours - paper, 2) if ours is not None and paper is not None else None})
    return pd.DataFrame(out, columns=[*keys, "column", "ours", "paper", "diff"])


def table_markdown(table: pd.DataFrame, with_paper: bool = True) -> str:
    """One results table as markdown; with `with_paper`, each cell reads "ours (paper, ours − paper)"
    where the paper has a number, and an empty cell "– (paper: x)"."""
    cols = [c for c in table.columns if c not in ("rule", "model", "prompt")]
    lines = ["| model | prompt | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            paper = paper_value(r["model"], r["prompt"], c) if with_paper else None
            if pd.isna(v):
                cells.append("–" + (f" (paper: {paper:.2f})" if paper is not None else ""))
                continue
            cells.append(f"{v:.2f}" + (f" ({paper:.2f}, {v - paper:+.2f})" if paper is not None else ""))
        lines.append(f"| {r['model']} | {r['prompt']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(scores: pd.DataFrame) -> str:
    """`results.md`: the released rule's table beside the paper's numbers, then the strict rule's
    table (this project's correction), then the unanswered counts where there are any."""
    parts = []
    rules = [r for r in RULES if r in set(scores.get("rule", pd.Series(dtype=str)))]
    if "released" in rules:
        parts += [f"### Scores, {RULE_TITLE['released']}, beside the paper's numbers", "",
                  "The rule the paper's numbers were computed with (the released evaluation script: an "
                  "answer equal to *any* option's text counts as right). Each cell: ours (paper, ours − paper).",
                  "", table_markdown(results_table(scores, "released"), with_paper=True), ""]
    if "strict" in rules:
        parts += [f"### Scores, {RULE_TITLE['strict']}", "",
                  "The right option only (`lpt_utils/pipeline/verify.py`); the paper has no numbers under this rule.",
                  "", table_markdown(results_table(scores, "strict"), with_paper=False), ""]
    missing = scores[scores["unanswered"] > 0] if "unanswered" in scores.columns else scores.iloc[:0]
    if len(missing):
        parts += ["### Unanswered responses (counted wrong under that rule)", "",
                  "| rule | model | prompt | benchmark | unanswered |", "|---|---|---|---|---|"]
        parts += [f"| {r.rule} | {r.model} | {r.prompt} | {r.benchmark} | {r.unanswered} of {r.items} |"
                  for r in missing.itertuples(index=False)]
    return "\n".join(parts).rstrip() + "\n"


# ----------------------------------------------------------------------------- settings -> work


@dataclass
class ModelRow:
    """One model of the table (its prompts are the table's rows), or why it is skipped."""

    name: str
    model: str
    prompts: list[str]
    available: bool = True
    reason: str = ""


def _looks_local(model: str) -> bool:
    """A local path rather than a hub id ("org/name"): absolute, starting with ".", or more than one
    "/" in it."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1


def model_rows(settings: dict[str, Any], run_dir: Path, root: Path | None = None) -> list[ModelRow]:
    """The profile's `eval.models` (name -> model) with `eval.prompts` (name -> prompts).

    "student" is the student's model (`student.engine.model`); "{run_dir}" in a value is the run's
    folder (the SFT/DPO notebooks write their model there). A local directory that is not there (or
    has no config.json) gives a row marked unavailable, with the reason, not an error.
    """
    ev = settings["eval"]
    rows = []
    for name, model in ev["models"].items():
        prompts = list(ev["prompts"].get(name) or [])
        bad = [p for p in prompts if p not in PROMPTS]
        if bad:
            raise ValueError(f"eval.prompts.{name}: unknown prompt(s) {bad}; known: {PROMPTS}")
        model = settings["student"]["engine"]["model"] if model == "student" else str(model).format(run_dir=run_dir)
        if _looks_local(model):
            p = Path(model).expanduser()
            p = p if p.is_absolute() or root is None else Path(root) / p
            if not (p / "config.json").exists():
                rows.append(ModelRow(name, str(p), prompts, False,
                                     f"no model at {p} (the notebook that trains it has not run)"))
                continue
            model = str(p)
        rows.append(ModelRow(name, model, prompts))
    return rows


def check_eval_settings(ev: dict[str, Any]) -> None:
    """Refuse a retired `eval` setting (a profile of one's own written for an older version), naming
    what replaced it, rather than ignoring it."""
    old = [k for k in RETIRED_SETTINGS if k in ev]
    if old:
        raise ValueError("; ".join(f"eval.{k} is no longer a setting: use {RETIRED_SETTINGS[k]}" for k in old))


def engine_config(settings: dict[str, Any], model: str):
    """The student's engine settings for `model`, with evaluation's image sizing: the area cap
    `eval.image_max_pixels` with the floor `eval.image_min_pixels`, aspect kept (the released
    script's LLaMA-Factory regularisation)."""
    ev = settings["eval"]
    check_eval_settings(ev)
    d = {**settings["student"]["engine"], "model": model, "max_pixels": ev["image_max_pixels"],
         "min_pixels": ev["image_min_pixels"], "longest_side": None}
    if ev.get("max_model_len"):
        d["max_model_len"] = ev["max_model_len"]
    return EngineConfig.from_dict(d)


def benchmark_specs(settings: dict[str, Any], run) -> dict[str, dict[str, Any]]:
    """`eval.benchmarks` for the names in `eval.run`, paths made absolute (relative to the repository
    root; "{run_dir}" in a path is the run's folder, where a builder plugin writes a generated one)."""
    ev = settings["eval"]
    check_eval_settings(ev)
    specs = {}
    for name in ev["run"]:
        get_task(name)
        spec = dict(ev["benchmarks"].get(name) or {})
        if not spec.get("path"):
            raise ValueError(f"eval.benchmarks.{name}.path: name the folder that holds {name}'s files")
        spec["path"] = str(spec["path"]).format(run_dir=run.run_dir)
        for key in ("path", "image_root"):
            if spec.get(key) and not Path(spec[key]).is_absolute():
                spec[key] = str(Path(run.root) / spec[key])
        specs[name] = spec
    return specs


def take_limit(items: list[BenchItem], limit: int | None) -> list[BenchItem]:
    """At most `limit` items, chosen by a hash of (benchmark, item id) so the choice does not depend on
    file order; kept in file order. None: all."""
    if not limit or len(items) <= limit:
        return items
    key = {id(it): hashlib.sha256(f"{it.benchmark}:{it.item_id}".encode()).hexdigest() for it in items}
    keep = {id(it) for it in sorted(items, key=lambda it: key[id(it)])[:limit]}
    return [it for it in items if id(it) in keep]


def shard_benchmarks(benchmarks: dict[str, list[BenchItem]], shard_index: int,
                     num_shards: int) -> dict[str, list[BenchItem]]:
    """Each benchmark's items that one shard of an array job answers (by a hash of benchmark and item
    id, whatever the file order; every item in exactly one shard), in file order; all with one shard."""
    return {name: take_shard(items, lambda it: f"{it.benchmark}:{it.item_id}", shard_index, num_shards)
            for name, items in benchmarks.items()}


def load_benchmarks(settings: dict[str, Any], run) -> dict[str, tuple[list[BenchItem], LoadReport]]:
    """Every benchmark in `eval.run` (written first by its builder plugin, if the profile names one):
    its items (after `eval.limit`) and its load report. Images held as bytes are written once to
    `<run>/07_eval/images/<benchmark>/`."""
    out = {}
    for name, spec in benchmark_specs(settings, run).items():
        build = run.benchmark_builder(name)  # e.g. the tiny world's held-out scenes (plugins.benchmark_builders)
        if build is not None:
            build(spec, Path(spec["path"]))
        items, report = get_task(name).load(spec, run.stage_dir("eval") / "images" / name)
        limited = take_limit(items, settings["eval"].get("limit"))
        if len(limited) < len(items):
            report.notes.append(f"eval.limit: {len(limited)} of {len(items)} items evaluated")
        out[name] = (limited, report)
    return out


def load_funnel(loaded: dict[str, tuple[list[BenchItem], LoadReport]]) -> Funnel:
    """The stage's funnel from `load_benchmarks`: per benchmark, its records -> items (left out by
    design, or skipped with a reason), then what `eval.limit` cut."""
    funnel = Funnel()
    for name, (items, report) in loaded.items():
        dropped = {**{f"left out: {k}": v for k, v in report.filtered.items()}, **dict(report.skipped)}
        funnel.add(f"{name}: records -> items", report.total, report.kept, dropped)
        if len(items) < report.kept:
            funnel.add(f"{name}: eval.limit", report.kept, len(items), {"over eval.limit": report.kept - len(items)})
    return funnel


def think_prefix(settings: dict[str, Any], model_path: str) -> str:
    """The forced opening of the think prompt's assistant turn: `eval.think_prefix`, unless the
    model's chat template already opens it (then nothing, so the turn never holds two)."""
    tag = settings["eval"].get("think_prefix") or ""
    if not tag:
        return ""
    return forced_prefix(model_path, tag)


def run_model(engine, row: ModelRow, benchmarks: dict[str, list[BenchItem]], settings: dict[str, Any],
              store, prefix: str = "") -> list[Prediction]:
    """Every benchmark under every prompt of `row`, greedy, through one `run_requests` call (so the
    engine batches across benchmarks); a re-run is served from `store` and calls no model."""
    ev = settings["eval"]
    jobs, reqs = [], []
    for name, items in benchmarks.items():
        sampling = sampling_for(ev, ev["benchmarks"].get(name) or {})
        for kind in row.prompts:
            r = requests(items, kind, sampling, prefix)
            jobs.append((name, kind, len(r)))
            reqs += r
    results = run_requests(engine, reqs, store, desc=f"{row.name}")
    out, k = [], 0
    for name, kind, n in jobs:
        out += predictions(row.name, row.model, kind, benchmarks[name], results[k:k + n], prefix,
                           corrections=ev["mmvp_corrections"], whole_response=ev["whole_response_fallback"])
        k += n
    print(f"{row.name}: {results.stats}")
    return out


def run_difficulty(engine, benchmarks: dict[str, list[BenchItem]], settings: dict[str, Any], store,
                   prefix: str = "") -> pd.DataFrame:
    """`eval.difficulty.samples` samples per item of the benchmarks in `eval.difficulty.benchmarks`
    (those being evaluated), think prompt, stage 2's sampling settings; then `difficulty`."""
    ev = settings["eval"]
    d = ev["difficulty"]
    names = [b for b in d["benchmarks"] if b in benchmarks]
    sampling = dict(settings["simple_cot"]["sampling"], n=int(d["samples"]))
    items = [it for b in names for it in benchmarks[b]]
    results = run_requests(engine, requests(items, "think", sampling, prefix), store, desc="difficulty")
    return difficulty(items, results, prefix, corrections=ev["mmvp_corrections"],
                      whole_response=ev["whole_response_fallback"])


# ----------------------------------------------------------------------------- difficulty, lengths


def difficulty(items: list[BenchItem], results, prefix: str = "", *, corrections: bool = False,
               whole_response: bool = True, rule: str = "released") -> pd.DataFrame:
    """Per item, the base model's accuracy over its samples (think prompt, stage-2 sampling; the
    paper draws 11), and its half: items are ranked by that accuracy, ties broken by a hash of the
    item id, and the lower half of each benchmark is "hard", the upper "easy" (with an odd count the
    middle item is easy). The median accuracy is kept for reference.

    `correct` / `accuracy` are under `rule` (the released one by default: the paper's figure was made
    with it), which sets the halves; `accuracy_strict` and `accuracy_released` are both kept."""
    _check_rules(rule)
    rows = []
    for it, res in zip(items, results, strict=True):
        right = it.right_letter(corrections)
        scored = [score_response(prefix + t, it.choices, right, whole_response=whole_response) for t in res.texts]
        n = len(scored)
        ok = {"strict": sum(x.correct for x in scored), "released": sum(x.correct_released for x in scored)}
        rows.append({"benchmark": it.benchmark, "item_id": it.item_id, "category": it.category,
                     "samples": n, "correct": int(ok[rule]), "accuracy": ok[rule] / n if n else 0.0,
                     "accuracy_strict": ok["strict"] / n if n else 0.0,
                     "accuracy_released": ok["released"] / n if n else 0.0, "rule": rule,
                     "mean_tokens": sum(res.num_tokens) / len(res.num_tokens) if res.num_tokens else 0.0})
    df = pd.DataFrame(rows, columns=["benchmark", "item_id", "category", "samples", "correct", "accuracy",
                                     "accuracy_strict", "accuracy_released", "rule", "mean_tokens"])
    if df.empty:
        return df.assign(half=pd.Series(dtype=str), median_accuracy=pd.Series(dtype=float))
    df["_tie"] = [hashlib.sha256(f"{b}:{i}".encode()).hexdigest() for b, i in zip(df.benchmark, df.item_id)]
    halves = []
    for _, g in df.groupby("benchmark", sort=False):
        g = g.sort_values(["accuracy", "_tie"])
        n_hard = len(g) // 2
        halves.append(pd.Series(["hard"] * n_hard + ["easy"] * (len(g) - n_hard), index=g.index))
        df.loc[g.index, "median_accuracy"] = g["accuracy"].median()
    df["half"] = pd.concat(halves)
    return df.drop(columns="_tie")


def length_vs_accuracy(df: pd.DataFrame, rule: str = "released") -> pd.DataFrame:
    """Per (model, prompt, benchmark): mean and median output tokens beside the benchmark's score
    under `rule`."""
    lengths = df.groupby(["model", "prompt", "benchmark"], sort=False)["num_tokens"].agg(["mean", "median"])
    lengths = lengths.rename(columns={"mean": "mean_tokens", "median": "median_tokens"}).reset_index()
    scores = benchmark_scores(df, (rule,))[["model", "prompt", "benchmark", "score"]]
    return lengths.merge(scores, on=["model", "prompt", "benchmark"])


PAIRED_COLUMNS = ["rule", "benchmark", "model", "prompt", "baseline", "items", "score", "baseline_score",
                  "difference", "se", "ci_low", "ci_high", "beyond_2se"]


def paired_differences(df: pd.DataFrame, baseline: tuple[str, str] = ("base", "think"), rules=RULES,
                       z: float = 1.96) -> pd.DataFrame:
    """Every (model, prompt) row against `baseline` (a (model, prompt) pair), per rule and benchmark, on
    the items both answered: the difference in item accuracy (percentage points) with its paired
    standard error (the standard deviation of the per-item differences over the square root of their
    number) and a `z` interval (1.96: 95%); `beyond_2se` when the difference exceeds twice its standard
    error. Item means, not the benchmark's category-mean score: the pairing is by item."""
    rows = []
    for rule in _check_rules(rules):
        column = "correct_released" if rule == "released" else "correct"
        table = df.pivot_table(index=["benchmark", "item_id"], columns=["model", "prompt"], values=column,
                               aggfunc="first")
        if baseline not in table.columns:
            continue
        for (model, prompt) in table.columns:
            if (model, prompt) == baseline:
                continue
            both = table[[baseline, (model, prompt)]].dropna()
            for bench, g in both.groupby(level="benchmark", sort=False):
                ours, base = g[(model, prompt)].astype(float), g[baseline].astype(float)
                d = 100.0 * (ours - base)
                n = len(d)
                se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
                diff = float(d.mean())
                rows.append({"rule": rule, "benchmark": bench, "model": model, "prompt": prompt,
                             "baseline": "/".join(baseline), "items": n, "score": 100.0 * ours.mean(),
                             "baseline_score": 100.0 * base.mean(), "difference": diff, "se": se,
                             "ci_low": diff - z * se, "ci_high": diff + z * se,
                             "beyond_2se": bool(n > 1 and abs(diff) > 2 * se)})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def with_difficulty(df: pd.DataFrame, diff: pd.DataFrame) -> pd.DataFrame:
    """Predictions of the benchmarks that have a difficulty, each with its item's half (easy/hard)."""
    return df.merge(diff[["benchmark", "item_id", "half", "accuracy"]].rename(
        columns={"accuracy": "base_sample_accuracy"}), on=["benchmark", "item_id"], how="inner")


def write_results(stage_dir: Path, scores: pd.DataFrame, categories: pd.DataFrame) -> dict[str, Path]:
    """Write the results beside the predictions, every file with both rules (a `rule` column):
    `results.csv` (the paper's layout per rule), `results.md` (the released rule's table with the
    paper's numbers and the differences, then the strict rule's), `results_vs_paper.csv` (long form),
    `scores.csv` (per benchmark: unanswered, item and category means, the authors' aggregate) and
    `categories.csv`."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    paths = {"results": stage_dir / "results.csv", "markdown": stage_dir / "results.md",
             "vs_paper": stage_dir / "results_vs_paper.csv", "scores": stage_dir / "scores.csv",
             "categories": stage_dir / "categories.csv"}
    tables = results_tables(scores)
    tables.round(2).to_csv(paths["results"], index=False)
    paths["markdown"].write_text(results_markdown(scores))
    compare_with_paper(tables).to_csv(paths["vs_paper"], index=False)
    scores.round(2).to_csv(paths["scores"], index=False)
    categories.round(2).to_csv(paths["categories"], index=False)
    return paths


def answer_sources(df: pd.DataFrame) -> pd.DataFrame:
    """Where each (model, prompt)'s strict answers came from (`verify.extract_answer`'s source:
    answer tags, an "Answer:" line, a boxed answer, an answer statement, the text after the thought,
    the whole response, none), as shares: how often a model answers outside the tags it was asked for."""
    table = pd.crosstab([df["model"], df["prompt"]], df["source"], normalize="index").round(3)
    table["responses"] = df.groupby(["model", "prompt"]).size()
    return table


def scored_models(rows: list[ModelRow], resolve=None) -> dict[str, dict[str, str]]:
    """What 07 scored, for its manifest: each available model row's id or folder and the identity of
    its weights (`engines.common.model_identity`: a trained folder's weights' hash, a tiny model's
    recipe hash; "" for a hub id), so a re-trained model is told from the one that was scored."""
    out = {}
    for r in rows:
        if r.available:
            path = resolve(r.model) if resolve else r.model
            out[r.name] = {"model": r.model, "identity": model_identity(path)}
    return out
