"""Stage 2: the student VLM answers every valid MCQ with a short chain of thought ("simple CoT").

The assistant turn is forced to begin with the think tag (exactly one: a chat template that already
opens it gets no second one), several samples per MCQ. Each response is parsed into thought and answer
and verified against the right option (`lpt_utils.pipeline.verify`): O = right, X = wrong. Unparsable and
duplicate responses stay in the artifact with the reason and are not used later.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from lpt_utils.artifacts import Funnel
from lpt_utils.engines.base import GenerationRequest, SamplingSettings
from lpt_utils.pipeline.mcq import student_messages
from lpt_utils.pipeline.verify import parse_response, verdicts
from lpt_utils.records import SimpleCoT, as_dict

THINK = "<think>"


def template_opens_think(model_path: str, tag: str = THINK) -> bool:
    """Whether the model's chat template already ends its generation prompt with `tag` (newer
    DeepSeek-R1-Distill templates do). Remote models (no local tokenizer files) count as not."""
    p = Path(model_path)
    cfg = p / "tokenizer_config.json"
    template = ""
    if (p / "chat_template.jinja").exists():
        template = (p / "chat_template.jinja").read_text()
    elif cfg.exists():
        template = str(json.loads(cfg.read_text()).get("chat_template") or "")
    if not template:
        return False
    from jinja2 import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    try:  # transformers' own renderer: the same extensions (raise_exception, ...) as at run time
        rendered, _ = render_jinja_template([[{"role": "user", "content": "x"}]], chat_template=template,
                                            add_generation_prompt=True, bos_token="", eos_token="")
        rendered = rendered[0]
    except TemplateError:
        return False
    return rendered.rstrip().endswith(tag)


def forced_prefix(model_path: str, tag: str = THINK) -> str:
    """What the assistant turn is forced to begin with: the tag, unless the template adds it."""
    return "" if template_opens_think(model_path, tag) else tag


def requests(mcqs, sampling: dict[str, Any], prefix: str, with_type: bool = True) -> list:
    """One request per valid MCQ (n samples each), its prompt the stage-1 student prompt."""
    s = SamplingSettings.from_dict(sampling)
    return [GenerationRequest(messages=student_messages(m, with_type=with_type), assistant_prefix=prefix,
                              sampling=s, meta={"mcq_id": m["mcq_id"]})
            for m in mcqs]


def score(mcqs, results, *, rule: str = "strict") -> tuple[list[SimpleCoT], Funnel]:
    """Parse, verify (both rules; `rule` labels O/X) and de-duplicate every sample. `mcqs` are the
    stage-1 rows (dicts) in the order of `results`."""
    rows: list[SimpleCoT] = []
    for m, res in zip(mcqs, results, strict=True):
        seen: set[str] = set()
        choices = tuple(m["choices"])  # once per MCQ (verdicts are memoised on it)
        for k, (text, ntok, fin) in enumerate(zip(res.texts, res.num_tokens, res.finish_reasons)):
            raw = THINK + text
            p = parse_response(raw)
            v = verdicts(p.answer, choices, m["answer_letter"], later_answers=p.later_answers) if p.ok else None
            correct = bool(v and v[rule].correct)
            drop = "unparsable"
            if p.ok:  # a duplicate: the same response as an earlier sample of this MCQ, up to whitespace
                key = " ".join(raw.split())
                drop = "duplicate" if key in seen else ""
                seen.add(key)
            rows.append(SimpleCoT(
                mcq_id=m["mcq_id"], response_id=f"{m['mcq_id']}-s{k}", image_id=m["image_id"],
                image_path=m["image_path"], question_type=m["question_type"], raw_text=raw,
                thought=p.thought, answer=p.answer, answer_letter=m["answer_letter"],
                named_letter=(v["strict"].letter or "") if v else "", match=v["strict"].how if v else "",
                match_released=v["released"].how if v else "",
                correct_strict=bool(v and v["strict"].correct), correct_released=bool(v and v["released"].correct),
                rule=rule, is_correct=correct, label=("O" if correct else "X") if p.ok else "", response_shape=p.shape,
                num_tokens=int(ntok), finish_reason=fin, kept=not drop, drop_reason=drop))
    funnel = Funnel()
    n = len(rows)
    parsed = sum(r.drop_reason != "unparsable" for r in rows)
    funnel.add("responses that parse (think, anything, then answer tags)", n, parsed,
               unparsable_reasons(rows))
    kept = sum(r.kept for r in rows)
    funnel.add("distinct responses per MCQ", parsed, kept, {"duplicate": parsed - kept})
    return rows, funnel


def unparsable_reasons(rows) -> Counter:
    """Unparsable rows by shape and by why generation stopped ("unparsable: cut_in_thought (length)"),
    so a funnel tells the token limit from a malformed response."""
    return Counter(f"unparsable: {r.response_shape} ({r.finish_reason})" for r in rows if r.drop_reason == "unparsable")


def summary(rows: list[SimpleCoT]) -> dict[str, Any]:
    """Counts for the manifest: kept O and X, accuracy overall and per question type."""
    kept = [r for r in rows if r.kept]
    by_type: dict[str, list[bool]] = {}
    for r in kept:
        by_type.setdefault(r.question_type, []).append(r.is_correct)
    labels = Counter(r.label for r in kept)
    mixed = Counter()
    per_mcq: dict[str, set[str]] = {}
    for r in kept:
        per_mcq.setdefault(r.mcq_id, set()).add(r.label)
    mixed.update("both O and X" if len(v) == 2 else f"only {next(iter(v))}" for v in per_mcq.values())
    return {
        "responses": len(rows), "kept": len(kept), "O": labels.get("O", 0), "X": labels.get("X", 0),
        "accuracy": round(sum(r.is_correct for r in kept) / len(kept), 4) if kept else None,
        "accuracy_by_type": {t: round(sum(v) / len(v), 4) for t, v in sorted(by_type.items())},
        "mcqs_by_labels": dict(mixed),
        "shapes": dict(Counter(r.response_shape for r in rows)),
        "accuracy_by_rule": accuracy_by_rule(kept),
    }


def accuracy_by_rule(kept) -> dict[str, float | None]:
    """Kept rows' accuracy under each rule (the profile's rule labels O/X; both are stored)."""
    n = len(kept)
    return {"strict": round(sum(r.correct_strict for r in kept) / n, 4) if n else None,
            "released": round(sum(r.correct_released for r in kept) / n, 4) if n else None}


def to_rows(rows: list[SimpleCoT]) -> list[dict[str, Any]]:
    return [as_dict(r) for r in rows]
