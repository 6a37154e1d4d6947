"""Notebook 07: score the base, SFT and DPO models on the paper's benchmarks (FACTS.md, "Evaluation").

The path of one item, whatever the benchmark (`lpt_utils.benchmarks` reads the published files):

1. messages: a "direct" or a "think" system prompt (`templates/eval_*_system.j2`; both ask for the
   letter in parentheses inside answer tags), then the user turn: the image, the question, "select
   from the following choices", the choices as "(A) text" lines (`templates/eval_user.j2`; MMLU-Pro
   names the question's domain first). Greedy decoding, at most 1024 new tokens (2048 for MMLU-Pro),
   images resized so the longer side is 512 px (the engine's `longest_side`).
2. extraction (`verify.extract_answer`): the text in the answer tags, else the text after "Answer:",
   else no answer. A response with no answer (or an empty one) is *unanswered*: wrong, and counted
   per benchmark, never scored as some letter.
3. matching (`verify.verify`, the rule of stages 2-3): the extracted text against the right option
   only. The released code's looser rule (any option's text counts) is computed beside it
   (`correct_released`); `released_scoring` picks which one the table reports, and the table shows
   the other where they differ.
4. aggregation: per benchmark, the mean of per-category accuracies (`Task.aggregate`), or plain
   accuracy (MMVP); MMLU-Pro reports both its item mean and its category mean.

Every prediction (model, prompt, benchmark, item, raw output, extracted answer, verdicts) is saved,
so `rescore` can recompute any score from the saved rows without calling a model.

Decided here (FACTS.md is silent): the think prompt is not followed by a forced `<think>` in the
`paper` profile (`eval.think_prefix: ""`; the appendix describes a system prompt only); the tiny
profile forces it, since its models learned to continue an opened tag, not to open one. The paper's
table rows: base + direct, base + think ("+ CoT prompt"), SFT + think, DPO + think — the prompt of
the trained rows is inferred, not stated.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lpt_utils.artifacts import Funnel
from lpt_utils.benchmarks import TASKS, BenchItem, LoadReport, get_task
from lpt_utils.prompts import render
from lpt_utils.verify import LETTERS, Verdict, extract_answer, released_verdict, strict_verdict

PROMPTS = ("direct", "think")

# ----------------------------------------------------------------------------- the paper's numbers

# Table 1 / appendix Table 5 of the paper (FACTS.md, "The numbers to compare against"), keyed by
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
    """The profile's eval sampling, with a benchmark's own `max_new_tokens` (MMLU-Pro: 2048)."""
    s = dict(eval_settings["sampling"])
    if spec.get("max_new_tokens"):
        s["max_new_tokens"] = int(spec["max_new_tokens"])
    s.update(changes)
    return s


def requests(items: list[BenchItem], kind: str, sampling: dict[str, Any], prefix: str = "") -> list:
    """One request per item. `prefix` (the forced opening of the assistant turn) is used with the
    think prompt only."""
    from lpt_utils.engines.base import GenerationRequest, SamplingSettings

    s = SamplingSettings.from_dict(sampling)
    pre = prefix if kind == "think" else ""
    return [GenerationRequest(messages=messages(it, kind), assistant_prefix=pre, sampling=s,
                              meta={"benchmark": it.benchmark, "item_id": it.item_id, "prompt": kind})
            for it in items]


# ----------------------------------------------------------------------------- extraction and scoring


@dataclass(frozen=True)
class Scored:
    """How one response reads under both rules (`lpt_utils.verify`): each rule extracts its own answer
    and judges it. Strict: `extracted` (None: unanswered), where it came from, the option it names,
    the verdict; released: its extraction and verdict (the paper's numbers were computed with it)."""

    extracted: str | None
    source: str  # answer_tags | answer_colon | after_thought | whole_response | none
    unanswered_reason: str  # "" | "no_answer" (nothing to extract) | "empty_answer"
    named_letter: str  # the option the answer names ("" when none or ambiguous)
    match: str  # lpt_utils.verify.Verdict.how, or "unanswered"
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


@dataclass
class Prediction:
    """One row of `07_eval/data.parquet`: one model's response to one item under one prompt."""

    model: str  # the table row: base | sft | dpo | ...
    model_path: str  # what the engine loaded
    prompt: str  # direct | think
    benchmark: str
    item_id: str
    category: str
    question: str
    choices: list[str]
    answer_letter: str  # as published
    corrected_letter: str  # a known correction ("" when none); used when corrections are on
    right_letter: str  # what was scored against
    image_path: str
    raw_output: str  # the whole assistant turn (a forced prefix included)
    extracted: str | None  # the strict rule's extraction
    source: str  # where it came from: answer_tags | answer_colon | after_thought | whole_response | none
    answered: bool
    unanswered_reason: str
    named_letter: str
    match: str
    correct: bool  # the strict rule (this project's correction)
    extracted_released: str | None  # the released script's extraction
    match_released: str
    correct_released: bool  # the released script's rule (the paper's numbers)
    num_tokens: int
    finish_reason: str


def predictions(model: str, model_path: str, kind: str, items: list[BenchItem], results, prefix: str = "",
                *, corrections: bool = True, whole_response: bool = True) -> list[Prediction]:
    """Score the (greedy, n=1) results of `requests(items, kind, ...)`, in the same order."""
    out = []
    pre = prefix if kind == "think" else ""
    for it, res in zip(items, results, strict=True):
        raw = pre + res.texts[0]
        right = it.right_letter(corrections)
        s = score_response(raw, it.choices, right, whole_response=whole_response)
        out.append(Prediction(
            model=model, model_path=model_path, prompt=kind, benchmark=it.benchmark, item_id=it.item_id,
            category=it.category, question=it.question, choices=list(it.choices),
            answer_letter=it.answer_letter, corrected_letter=it.corrected_letter, right_letter=right,
            image_path=it.image_path or "", raw_output=raw, extracted=s.extracted, source=s.source,
            answered=s.answered, unanswered_reason=s.unanswered_reason, named_letter=s.named_letter, match=s.match,
            correct=s.correct, extracted_released=s.extracted_released, match_released=s.match_released,
            correct_released=s.correct_released, num_tokens=int(res.num_tokens[0]),
            finish_reason=res.finish_reasons[0]))
    return out


def to_frame(preds: list[Prediction]) -> pd.DataFrame:
    cols = list(Prediction.__dataclass_fields__)
    return pd.DataFrame([asdict(p) for p in preds], columns=cols)


def rescore(df: pd.DataFrame, *, corrections: bool = True, whole_response: bool = True) -> pd.DataFrame:
    """Recompute extraction and both verdicts from the saved raw outputs (no model call): after a
    change to the verifier, or to switch label corrections on or off."""
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


def _score(g: pd.DataFrame, column: str, aggregate: str) -> tuple[float, float, float]:
    """(item mean, category mean, the task's score) in percent."""
    items = 100.0 * g[column].mean()
    cats = 100.0 * g.groupby("category")[column].mean().mean()
    return items, cats, (cats if aggregate == "category_mean" else items)


def benchmark_scores(df: pd.DataFrame, released: bool = False) -> pd.DataFrame:
    """One row per (model, prompt, benchmark): items, unanswered, the item mean, the category mean
    and the benchmark's score (its task's aggregate), in percent, under the chosen rule
    (`released`: the released code's looser one), and `score_other` under the other rule."""
    main, other = ("correct_released", "correct") if released else ("correct", "correct_released")
    rows = []
    for (model, prompt, bench), g in df.groupby(["model", "prompt", "benchmark"], sort=False):
        agg = TASKS[bench].aggregate if bench in TASKS else "category_mean"
        items, cats, score = _score(g, main, agg)
        rows.append({"model": model, "prompt": prompt, "benchmark": bench, "items": len(g),
                     "unanswered": int((~g["answered"]).sum()),
                     "unanswered_pct": round(100.0 * (~g["answered"]).mean(), 2),
                     "categories": int(g["category"].nunique()), "item_mean": items, "category_mean": cats,
                     "score": score, "score_other": _score(g, other, agg)[2],
                     "rule": "released" if released else "strict"})
    return pd.DataFrame(rows, columns=["model", "prompt", "benchmark", "items", "unanswered", "unanswered_pct",
                                       "categories", "item_mean", "category_mean", "score", "score_other", "rule"])


def category_scores(df: pd.DataFrame, released: bool = False) -> pd.DataFrame:
    """Accuracy (percent) and unanswered count per (model, prompt, benchmark, category)."""
    col = "correct_released" if released else "correct"
    g = df.groupby(["model", "prompt", "benchmark", "category"], sort=False)
    out = g.agg(items=(col, "size"), accuracy=(col, "mean"), unanswered=("answered", lambda s: int((~s).sum())))
    out["accuracy"] *= 100.0
    return out.reset_index()


def _row_label(model: str, prompt: str) -> str:
    return f"{model} / {prompt}"


def results_table(scores: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: one row per (model, prompt); Avg (over the five vision columns, only when
    all five were run), the five columns, MMLU-Pro as item mean and category mean, then any other
    benchmark (the tiny profile's synthetic one)."""
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
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        # The paper's columns stay, empty where not run, so its numbers show beside ours; a column
        # of another benchmark only when it was run.
        paper_cols = ["Avg"] + [t.title for t in vision] + ["MMLU-Pro (items)", "MMLU-Pro (categories)"]
        for c in paper_cols:
            if c not in table.columns:
                table[c] = math.nan
        others = [c for c in table.columns if c not in ("model", "prompt", *paper_cols) and table[c].notna().any()]
        table = table[["model", "prompt", *paper_cols, *others]]
    return table


def paper_value(model: str, prompt: str, column: str) -> float | None:
    if column.startswith("MMLU-Pro"):
        return PAPER_MMLU_PRO.get(model)
    key = "avg" if column == "Avg" else next((t.name for t in TASKS.values() if t.title == column), None)
    return PAPER_ROWS.get((model, prompt), {}).get(key) if key else None


def compare_with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Long form of `results_table`: row, column, ours, paper (None where the paper has no number),
    and ours − paper."""
    out = []
    for _, r in table.iterrows():
        for col in table.columns:
            if col in ("model", "prompt"):
                continue
            paper = paper_value(r["model"], r["prompt"], col)
            ours = None if pd.isna(r[col]) else round(float(r[col]), 2)
            if ours is None and paper is None:
                continue
            out.append({"model": r["model"], "prompt": r["prompt"], "column": col, "ours": ours, "paper": paper,
                        "diff": round(ours - paper, 2) if ours is not None and paper is not None else None})
    return pd.DataFrame(out, columns=["model", "prompt", "column", "ours", "paper", "diff"])


def results_markdown(table: pd.DataFrame, scores: pd.DataFrame | None = None) -> str:
    """The results table as markdown: each cell "ours (paper, Δ)" where the paper has a number; with
    `scores`, the other rule's score is added where it differs ("[other rule: x]")."""
    other: dict[tuple[str, str, str], tuple[float, float]] = {}
    if scores is not None:
        for r in scores.itertuples(index=False):
            title = TASKS[r.benchmark].title if r.benchmark in TASKS else r.benchmark
            other[(r.model, r.prompt, title)] = (r.score, r.score_other)
    cols = [c for c in table.columns if c not in ("model", "prompt")]
    lines = ["| model | prompt | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            paper = paper_value(r["model"], r["prompt"], c)
            if pd.isna(v):
                cells.append("–" + (f" (paper: {paper:.2f})" if paper is not None else ""))
                continue
            cell = f"{v:.2f}"
            if paper is not None:
                cell += f" ({paper:.2f}, {v - paper:+.2f})"
            o = other.get((r["model"], r["prompt"], c))
            if o and abs(o[0] - o[1]) > 1e-9:
                cell += f" [other rule: {o[1]:.2f}]"
            cells.append(cell)
        lines.append(f"| {r['model']} | {r['prompt']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def engine_config(settings: dict[str, Any], model: str):
    """The student's engine settings for `model`, with evaluation's image sizing: the longer side
    scaled to `eval.longest_side` (aspect kept) instead of generation's area cap."""
    from lpt_utils.engines import EngineConfig

    ev = settings["eval"]
    d = {**settings["student"]["engine"], "model": model, "max_pixels": None, "longest_side": ev["longest_side"]}
    if ev.get("max_model_len"):
        d["max_model_len"] = ev["max_model_len"]
    return EngineConfig.from_dict(d)


def benchmark_specs(settings: dict[str, Any], run) -> dict[str, dict[str, Any]]:
    """`eval.benchmarks` for the names in `eval.run`, paths made absolute (relative to the repository
    root). The synthetic benchmark without a path is built into `<run>/00_sources/benchmark_heldout`
    from `data.synthetic` (n_heldout scenes, its seed) unless it names its own `n_scenes` / `seed`."""
    ev = settings["eval"]
    specs = {}
    for name in ev["run"]:
        get_task(name)
        spec = dict(ev["benchmarks"].get(name) or {})
        if name == "synthetic" and not spec.get("path"):
            syn = settings["data"]["synthetic"]
            spec["path"] = str(run.stage_dir("sources") / "benchmark_heldout")
            spec["n_scenes"] = spec.get("n_scenes") or syn["n_heldout"]
            spec["seed"] = spec.get("seed") if spec.get("seed") is not None else syn["seed"]
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


def load_benchmarks(settings: dict[str, Any], run) -> dict[str, tuple[list[BenchItem], LoadReport]]:
    """Every benchmark in `eval.run`: its items (after `eval.limit`) and its load report. Images held
    as bytes are written once to `<run>/07_eval/images/<benchmark>/`."""
    out = {}
    for name, spec in benchmark_specs(settings, run).items():
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
    from lpt_utils.simple_cot import forced_prefix

    return forced_prefix(model_path, tag)


def run_model(engine, row: ModelRow, benchmarks: dict[str, list[BenchItem]], settings: dict[str, Any],
              store, prefix: str = "") -> list[Prediction]:
    """Every benchmark under every prompt of `row`, greedy, through one `run_requests` call (so the
    engine batches across benchmarks); a re-run is served from `store` and calls no model."""
    from lpt_utils.engines import run_requests

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
                           corrections=ev["mmvp_corrections"])
        k += n
    print(f"{row.name}: {results.stats}")
    return out


def run_difficulty(engine, benchmarks: dict[str, list[BenchItem]], settings: dict[str, Any], store,
                   prefix: str = "") -> pd.DataFrame:
    """`eval.difficulty.samples` samples per item of the benchmarks in `eval.difficulty.benchmarks`
    (those being evaluated), think prompt, stage 2's sampling settings; then `difficulty`."""
    from lpt_utils.engines import run_requests

    ev = settings["eval"]
    d = ev["difficulty"]
    names = [b for b in d["benchmarks"] if b in benchmarks]
    sampling = dict(settings["simple_cot"]["sampling"], n=int(d["samples"]))
    items = [it for b in names for it in benchmarks[b]]
    results = run_requests(engine, requests(items, "think", sampling, prefix), store, desc="difficulty")
    return difficulty(items, results, prefix, corrections=ev["mmvp_corrections"])


# ----------------------------------------------------------------------------- difficulty, lengths


def difficulty(items: list[BenchItem], results, prefix: str = "", *, corrections: bool = True) -> pd.DataFrame:
    """Per item, the base model's accuracy over its samples (think prompt, stage-2 sampling; the
    paper draws 11), and its half: items are ranked by that accuracy, ties broken by a hash of the
    item id, and the lower half of each benchmark is "hard", the upper "easy" (with an odd count the
    middle item is easy). The median accuracy is kept for reference."""
    rows = []
    for it, res in zip(items, results, strict=True):
        right = it.right_letter(corrections)
        ok = [score_response(prefix + t, it.choices, right).correct for t in res.texts]
        rows.append({"benchmark": it.benchmark, "item_id": it.item_id, "category": it.category,
                     "samples": len(ok), "correct": int(sum(ok)), "accuracy": sum(ok) / len(ok) if ok else 0.0,
                     "mean_tokens": sum(res.num_tokens) / len(res.num_tokens) if res.num_tokens else 0.0})
    df = pd.DataFrame(rows, columns=["benchmark", "item_id", "category", "samples", "correct", "accuracy",
                                     "mean_tokens"])
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


def length_vs_accuracy(df: pd.DataFrame, released: bool = False) -> pd.DataFrame:
    """Per (model, prompt, benchmark): mean and median output tokens beside the benchmark's score."""
    lengths = df.groupby(["model", "prompt", "benchmark"], sort=False)["num_tokens"].agg(["mean", "median"])
    lengths = lengths.rename(columns={"mean": "mean_tokens", "median": "median_tokens"}).reset_index()
    scores = benchmark_scores(df, released)[["model", "prompt", "benchmark", "score"]]
    return lengths.merge(scores, on=["model", "prompt", "benchmark"])


def with_difficulty(df: pd.DataFrame, diff: pd.DataFrame) -> pd.DataFrame:
    """Predictions of the benchmarks that have a difficulty, each with its item's half (easy/hard)."""
    return df.merge(diff[["benchmark", "item_id", "half", "accuracy"]].rename(
        columns={"accuracy": "base_sample_accuracy"}), on=["benchmark", "item_id"], how="inner")


def write_results(stage_dir: Path, table: pd.DataFrame, scores: pd.DataFrame,
                  categories: pd.DataFrame) -> dict[str, Path]:
    """Write the results beside the predictions: `results.csv` (the paper's layout), `results.md`
    (with the paper's numbers and the differences), `results_vs_paper.csv` (long form),
    `scores.csv` (per benchmark, both rules, unanswered) and `categories.csv`."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    paths = {"results": stage_dir / "results.csv", "markdown": stage_dir / "results.md",
             "vs_paper": stage_dir / "results_vs_paper.csv", "scores": stage_dir / "scores.csv",
             "categories": stage_dir / "categories.csv"}
    table.round(2).to_csv(paths["results"], index=False)
    paths["markdown"].write_text(results_markdown(table, scores) + "\n")
    compare_with_paper(table).to_csv(paths["vs_paper"], index=False)
    scores.round(2).to_csv(paths["scores"], index=False)
    categories.round(2).to_csv(paths["categories"], index=False)
    return paths
