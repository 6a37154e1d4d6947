"""Cognitive behaviours in chains of thought: verification, backtracking, subgoal setting and
backward chaining (the four of Gandhi et al., 2025, "Cognitive behaviors that enable self-improving
reasoners", who count them with an LLM judge prompted once per behaviour).

Two judges, chosen by the profile (`behaviours.judge`):
- `llm`: one request per (text, behaviour) through the engines; the judge is told what the behaviour
  is, with an example, and answers with a count in `<count>` tags (our prompt; the LPT paper's exact
  judge prompt is not published here). An answer without a count is recorded as missing, not zero.
- `keywords`: a fast estimate from phrase patterns (for the tiny profile and quick looks). It counts
  surface markers, so a cue word the pipeline inserted ("Wait,") counts as backtracking: the figure
  compares texts as the student will learn them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from lpt_utils.engines import EngineConfig, RequestStore, make_engine, run_requests
from lpt_utils.engines.base import GenerationRequest, SamplingSettings
from lpt_utils.pipeline.training_data import stable_int
from lpt_utils.prompts import render

BEHAVIOURS = ("verification", "backtracking", "subgoal setting", "backward chaining")

DEFINITIONS = {
    "verification": ("checking an intermediate result or the answer against the evidence",
                     "Let me check: the mug is on the left, and the left item is blue, so that holds."),
    "backtracking": ("noticing that a line of reasoning is wrong and abandoning it for another",
                     "Wait, that cannot be right; the cup is not red. Let me look at the other side."),
    "subgoal setting": ("splitting the problem into smaller intermediate steps to reach one by one",
                        "First I find the table, then I see what stands on it, then I compare sizes."),
    "backward chaining": ("starting from the goal or a candidate answer and reasoning back to what must hold",
                          "If the answer were (C), the lamp would have to be left of the sofa; is it?"),
}

_PATTERNS = {
    "verification": r"\b(let me (check|verify|confirm|double-check)|double-check\w*|verif\w+|to confirm|"
                    r"check(ing)? (again|that|this)|looking (at it )?again|that (matches|holds|checks out|is consistent)|"
                    r"re-?check\w*|make sure)\b",
    "backtracking": r"\b(wait|hmm|actually|alternatively|on second thought|that('s| is) (not|wrong)|"
                    r"i was wrong|let me reconsider|reconsider\w*|no,|instead|rethink)\b",
    "subgoal setting": r"\b(first(ly)?|second(ly)?|then|next|finally|step \d+|let me (start|break)|"
                       r"i need to (find|figure out|determine|identify|check)|to answer this)\b",
    "backward chaining": r"\b(work(ing)? backwards?|if the answer (is|were)|for (this|it|that) to be (true|right|correct)|"
                         r"suppose the answer|which option (would|could|must)|the answer would (require|mean))\b",
}
_COMPILED = {b: re.compile(p, re.I) for b, p in _PATTERNS.items()}


def keyword_counts(text: str) -> dict[str, int]:
    """Occurrences of each behaviour's marker phrases in `text` (the fast estimate)."""
    return {b: len(_COMPILED[b].findall(text or "")) for b in BEHAVIOURS}


def judge_messages(text: str, behaviour: str) -> list[dict[str, Any]]:
    """The LLM judge's prompt for one behaviour in one chain of thought."""
    if behaviour not in DEFINITIONS:
        raise ValueError(f"unknown behaviour {behaviour!r}; known: {', '.join(BEHAVIOURS)}")
    definition, example = DEFINITIONS[behaviour]
    return [{"role": "system", "content": render("behaviour_judge_system")},
            {"role": "user", "content": render("behaviour_judge_user", behaviour=behaviour, definition=definition,
                                               example=example, text=text.strip())}]


_COUNT = re.compile(r"<count>\s*(\d+)\s*</count>", re.I)


def parse_count(response: str) -> int | None:
    """The judge's count (the last `<count>N</count>`), or None when it gave none."""
    found = _COUNT.findall(response or "")
    return int(found[-1]) if found else None


def judge_requests(texts: Sequence[str], ids: Sequence[str], sampling: dict[str, Any]) -> list:
    """One request per (text, behaviour), `meta` naming both."""
    s = SamplingSettings.from_dict(sampling)
    return [GenerationRequest(messages=judge_messages(t, b), sampling=s, meta={"id": i, "behaviour": b})
            for t, i in zip(texts, ids, strict=True) for b in BEHAVIOURS]


@dataclass
class Judgement:
    id: str
    kind: str  # "simple" | "long"
    judge: str  # "keywords" | "llm"
    counts: dict[str, int | None]


def judge_keywords(texts: Sequence[str], ids: Sequence[str], kind: str) -> list[Judgement]:
    return [Judgement(i, kind, "keywords", keyword_counts(t)) for t, i in zip(texts, ids, strict=True)]


def judge_llm(results, ids: Sequence[str], kind: str) -> list[Judgement]:
    """Fold the judge's results (in `judge_requests` order) back into one `Judgement` per text."""
    out, it = [], iter(results)
    for i in ids:
        counts = {b: parse_count(next(it).texts[0]) for b in BEHAVIOURS}
        out.append(Judgement(i, kind, "llm", counts))
    return out


def to_rows(judgements: Sequence[Judgement]) -> list[dict[str, Any]]:
    return [{"id": j.id, "kind": j.kind, "judge": j.judge, **{b: j.counts[b] for b in BEHAVIOURS}}
            for j in judgements]


def shares(rows) -> Any:
    """Share of texts showing each behaviour at least once, per kind (simple / long); texts whose
    count is missing are left out of that behaviour's share."""
    import pandas as pd

    df = pd.DataFrame(rows)
    out = {}
    if df.empty:  # nothing was judged (no text kept): no share, one row per behaviour all the same
        return pd.DataFrame(index=list(BEHAVIOURS))
    for kind, d in df.groupby("kind"):
        out[kind] = {b: round(float((d[b].dropna() > 0).mean()), 3) if d[b].notna().any() else None
                     for b in BEHAVIOURS}
    return pd.DataFrame(out)


def sample_ids(ids: Sequence[str], k: int | None, seed: int = 0) -> list[str]:
    """At most `k` ids, chosen by a hash of (seed, id): stable as rows are added or reordered."""
    if not k or k >= len(ids):
        return list(ids)
    return sorted(ids, key=lambda i: stable_int(seed, "behaviours", i))[:k]


def judge_texts(items: dict[str, list[tuple[str, str]]], settings: dict[str, Any], *, store_path=None,
                resolve=None, seed: int = 0) -> list[dict[str, Any]]:
    """Judge {kind: [(id, text), ...]} with the profile's judge (`behaviours` section); returns rows
    (id, kind, judge, one count column per behaviour). LLM calls go through the engines and are
    stored in `store_path`, so a re-run calls no model; `resolve` is the run's model resolver."""
    rows: list[Judgement] = []
    picked = {kind: dict(pairs) for kind, pairs in items.items()}
    picked = {kind: {i: d[i] for i in sample_ids(list(d), settings.get("max_texts"), seed)} for kind, d in picked.items()}
    if settings["judge"] == "keywords":
        for kind, d in picked.items():
            rows += judge_keywords(list(d.values()), list(d), kind)
        return to_rows(rows)
    if settings["judge"] != "llm":
        raise ValueError(f"behaviours.judge must be 'llm' or 'keywords', not {settings['judge']!r}")
    engine = make_engine(EngineConfig.from_dict(settings["engine"]), resolve)
    try:
        for kind, d in picked.items():
            results = run_requests(engine, judge_requests(list(d.values()), list(d), settings["sampling"]),
                                   RequestStore(store_path), desc=f"judging {kind} CoTs")
            rows += judge_llm(results, list(d), kind)
    finally:
        engine.close()
    return to_rows(rows)
