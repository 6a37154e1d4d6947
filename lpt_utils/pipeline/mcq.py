"""Stage 1: dense captions become verifiable multiple-choice questions (MCQs).

The paper's recipe: a writer LLM reads one description and lists many vision-centric questions, each
with four options, one right answer and a reasoning-type tag; a cheaper model reformats that list into
a fixed tagged structure; a regular expression parses it; an MCQ is *valid* when it has exactly four
options and its answer matches exactly one of them. Each valid MCQ is then shown to the student VLM
with its options shuffled and in a random surface form, both drawn from a seed and the MCQ's id (not
from one stream over the rows, as the released code does), so the result does not depend on row order.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any

from lpt_utils.artifacts import Funnel
from lpt_utils.engines.base import GenerationRequest, SamplingSettings
from lpt_utils.prompts import render
from lpt_utils.records import MCQ

LETTERS = "ABCDEFGHIJ"

# Reasoning types the writer is offered; others are allowed and kept as written (normalised).
KNOWN_TYPES = (
    "analogical and goal-oriented",
    "causal and commonsense",
    "spatial and relational",
    "counting and quantification",
    "recognition",
)

# Surface forms of the options and of the answer the VLM is asked to give.
CHOICE_FORMS = {"paren": "({letter}) {text}", "dot": "{letter}. {text}"}
ANSWER_FORMS = {
    "paren_letter": "the letter of your choice in parentheses (for example: (B))",
    "dot_letter": "the letter of your choice followed by a period (for example: B.)",
    "option_text": "the full text of the option you choose, exactly as written",
}


# ----------------------------------------------------------------------------- prompts


def writer_messages(description: str) -> list[dict[str, Any]]:
    """Chat messages asking the writer LLM for tagged MCQs about one description."""
    return [
        {"role": "system", "content": render("mcq_writer_system")},
        {"role": "user", "content": render("mcq_writer_user", description=description.strip())},
    ]


def reformat_messages(response: str) -> list[dict[str, Any]]:
    """Chat messages asking the reformatting model to put a writer response into the tagged form."""
    return [
        {"role": "system", "content": render("mcq_reformat_system")},
        {"role": "user", "content": render("mcq_reformat_user", response=response.strip())},
    ]


def format_tagged_list(items: list[dict[str, Any]]) -> str:
    """The canonical tagged list the parser reads (what the reformat pass is asked to produce).

    `items`: dicts with `question`, `choices` (list of option texts, lettered A, B, ...),
    `answer` (short answer text) and `type`.
    """
    lines = []
    for i, it in enumerate(items, start=1):
        choices = " ".join(f"({LETTERS[j]}) {c}" for j, c in enumerate(it["choices"]))
        lines.append(
            f"{i}. <question>{it['question']}</question> <choices>{choices}</choices> "
            f"<answer>{it['answer']}</answer> <type>{it['type']}</type>"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- parsing

_FIELD = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.S | re.I) for name in
          ("question", "choices", "answer", "type")}
_ITEM_START = re.compile(r"<question>", re.I)
# An option marker: "(A)", "A.", "A)" or "A:" at the start or after whitespace / a separator.
_OPTION_MARK = re.compile(r"(?:^|(?<=[\s;,]))\(?([A-J])[\.\):]\s+", re.M)


@dataclass
class ParsedItem:
    """One question as parsed from a (reformatted) writer response, before validation."""

    index: int
    question: str
    choices: list[str]
    answer: str
    qtype: str
    raw: str


def split_options(text: str) -> list[str]:
    """Split "(A) red (B) blue ..." / "A. red\\nB. blue" into option texts, in the order given.

    Options are lettered consecutively from A; a marker out of sequence counts as option text.
    """
    accepted = []
    for m in _OPTION_MARK.finditer(text):
        # A marker whose letter is not the next expected one ("Plan A. ...") is part of the text.
        if len(accepted) < len(LETTERS) and m.group(1) == LETTERS[len(accepted)]:
            accepted.append(m)
    options = []
    for i, m in enumerate(accepted):
        end = accepted[i + 1].start() if i + 1 < len(accepted) else len(text)
        options.append(text[m.end():end].strip().rstrip(";,").strip())
    return options


def parse_tagged_list(text: str) -> list[ParsedItem]:
    """Parse every `<question>…</question> <choices>…</choices> <answer>…</answer> <type>…</type>`
    block. A block missing a field is still returned (with that field empty) so validation can
    count it rather than drop it silently."""
    starts = [m.start() for m in _ITEM_START.finditer(text)]
    items = []
    for i, s in enumerate(starts):
        block = text[s:starts[i + 1] if i + 1 < len(starts) else len(text)]
        got = {k: (m.group(1).strip() if (m := rx.search(block)) else "") for k, rx in _FIELD.items()}
        items.append(ParsedItem(index=i, question=got["question"], choices=split_options(got["choices"]),
                                answer=got["answer"], qtype=normalise_type(got["type"]), raw=block.strip()))
    return items


def normalise_type(t: str) -> str:
    t = re.sub(r"\s+", " ", t.strip().lower()).strip(" .")
    t = t.replace("&", "and")
    return t


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().lower()).strip(" .;,!")


def match_answer_to_options(answer: str, choices: list[str]) -> list[int]:
    """Indices of the options the writer's answer names: by text (case-insensitive, ignoring
    surrounding punctuation), or by a letter form such as "(B)", "B." or "(B) text"."""
    a = _norm(answer)
    hits = [i for i, c in enumerate(choices) if _norm(c) == a]
    if hits:
        return hits
    m = re.fullmatch(r"\(?([a-j])[\.\)]?(?:\s+(.*))?", a)
    if m and LETTERS.lower().index(m.group(1)) < len(choices):
        i = LETTERS.lower().index(m.group(1))
        if m.group(2) is None or _norm(m.group(2)) == _norm(choices[i]):
            return [i]
    return []


def validity(item: ParsedItem, n_options: int = 4) -> str:
    """'' when valid, else the reason (one of a small fixed vocabulary, for the funnel)."""
    if not item.question:
        return "missing_question"
    if not item.answer:
        return "missing_answer"
    if len(item.choices) != n_options:
        return f"option_count_{len(item.choices)}"
    if len({_norm(c) for c in item.choices}) != len(item.choices):
        return "duplicate_options"
    hits = match_answer_to_options(item.answer, item.choices)
    if not hits:
        return "answer_matches_no_option"
    if len(hits) > 1:
        return "answer_matches_several_options"
    return ""


# ----------------------------------------------------------------------------- records


def mcq_seed(seed: int, mcq_id: str) -> int:
    """A per-MCQ seed: independent of row order, so resuming and sharding reproduce it exactly."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{mcq_id}".encode()).digest()[:8], "big")


def randomise(choices: list[str], answer_index: int, seed: int, mcq_id: str,
              choice_forms=tuple(CHOICE_FORMS), answer_forms=tuple(ANSWER_FORMS)):
    """Shuffle the options and draw the surface forms for one MCQ, from (seed, mcq_id) alone.

    Returns (choices in new order, new index of the right option, choice_form, answer_form).
    """
    rng = random.Random(mcq_seed(seed, mcq_id))
    order = list(range(len(choices)))
    rng.shuffle(order)
    choice_form = rng.choice(list(choice_forms))
    answer_form = rng.choice(list(answer_forms))
    return [choices[i] for i in order], order.index(answer_index), choice_form, answer_form


def mcqs_from_responses(image_id: str, image_path: str, description: str, raw_response: str,
                        reformatted_response: str, *, seed: int,
                        choice_forms=tuple(CHOICE_FORMS), answer_forms=tuple(ANSWER_FORMS),
                        parsed_text: str | None = None) -> list[MCQ]:
    """Parse one image's response into MCQ records, validated and randomised. What is parsed is
    `parsed_text` if given, else the reformatted response."""
    out = []
    for it in parse_tagged_list(reformatted_response if parsed_text is None else parsed_text):
        mcq_id = f"{image_id}-q{it.index:02d}"
        reason = validity(it)
        choices, answer, letter = it.choices, it.answer, ""
        c_form, a_form = choice_forms[0], answer_forms[0]
        if not reason:
            right = match_answer_to_options(it.answer, it.choices)[0]
            answer = it.choices[right]
            choices, right, c_form, a_form = randomise(it.choices, right, seed, mcq_id,
                                                        choice_forms, answer_forms)
            letter = LETTERS[right]
        out.append(MCQ(mcq_id=mcq_id, image_id=image_id, image_path=image_path, description=description,
                       item_index=it.index, question=it.question, choices=choices, answer=answer,
                       answer_letter=letter, question_type=it.qtype or "unspecified",
                       choice_form=c_form, answer_form=a_form, is_valid=not reason,
                       invalid_reason=reason, raw_response=raw_response,
                       reformatted_response=reformatted_response, raw_item=it.raw))
    return out


# ----------------------------------------------------------------------------- the student prompt


def choice_lines(mcq: dict[str, Any] | MCQ) -> list[str]:
    """The options as the prompts show them, one per line, in the MCQ's drawn form ("(A) text" or
    "A. text")."""
    row = mcq.to_row() if isinstance(mcq, MCQ) else mcq
    fmt = CHOICE_FORMS[row["choice_form"]]
    return [fmt.format(letter=LETTERS[i], text=c) for i, c in enumerate(row["choices"])]


def student_messages(mcq: dict[str, Any] | MCQ, image_path: str | None = None,
                     with_type: bool = True) -> list[dict[str, Any]]:
    """The prompt the student VLM answers (stages 2 and 4): an R1-style think system prompt with a
    task line naming the reasoning type and a format line naming the answer form; the user turn
    holds the image, the question, a "select from the following choices" line and the options."""
    row = mcq.to_row() if isinstance(mcq, MCQ) else mcq
    lines = choice_lines(row)
    system = render("student_system", question_type=row.get("question_type", "") if with_type else "",
                    answer_form_description=ANSWER_FORMS[row["answer_form"]])
    user = render("student_user", question=row["question"], choice_lines=lines)
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": [{"type": "image", "image": image_path or row["image_path"]},
                                     {"type": "text", "text": user}]},
    ]


def answer_in_form(mcq: dict[str, Any] | MCQ, letter: str | None = None) -> str:
    """How an answer naming option `letter` (default: the right one) looks in the requested form."""
    row = mcq.to_row() if isinstance(mcq, MCQ) else mcq
    letter = letter or row["answer_letter"]
    form = row["answer_form"]
    if form == "paren_letter":
        return f"({letter})"
    if form == "dot_letter":
        return f"{letter}."
    return row["choices"][LETTERS.index(letter)]


# ----------------------------------------------------------------------------- the stage


def writer_requests(records, sampling) -> list:
    """One writer request per caption record."""
    s = SamplingSettings.from_dict(sampling)
    return [GenerationRequest(messages=writer_messages(r.description), sampling=s,
                              meta={"image_id": r.image_id}) for r in records]


REFORMAT_MODES = ("always", "when_unparsed", "never")


def needs_reformat(response: str) -> bool:
    """Whether a writer response fails to parse into complete tagged items on its own (no item, or
    an item missing its question, options, answer or type). Content problems (duplicate options,
    an answer matching no option) are not format problems: the validity check reports them."""
    items = parse_tagged_list(response)
    return not items or any(not (it.question and it.choices and it.answer and it.qtype) for it in items)


def reformat_requests(writer_results, sampling, mode: str = "always") -> list:
    """Reformat requests for the writer responses that `mode` selects (`meta["index"]` = position):
    `always` (the paper: every response), `when_unparsed` (only those `needs_reformat` flags; for a
    writer that already follows the format, e.g. the tiny world's), `never`."""
    if mode not in REFORMAT_MODES:
        raise ValueError(f"mcq.reformat must be one of {REFORMAT_MODES}, got {mode!r}")
    s = SamplingSettings.from_dict(sampling)
    return [GenerationRequest(messages=reformat_messages(res.texts[0]), sampling=s,
                              meta={**res.meta, "index": i})
            for i, res in enumerate(writer_results)
            if mode == "always" or (mode == "when_unparsed" and needs_reformat(res.texts[0]))]


def build_mcqs(records, writer_results, reformat_results, *, seed: int,
               choice_forms=tuple(CHOICE_FORMS), answer_forms=tuple(ANSWER_FORMS)):
    """Parse, validate and randomise every image's questions: from the reformatted response where
    one exists (matched by `meta["index"]`), else from the writer's own. Returns (MCQs, Funnel)."""
    from collections import Counter

    reformatted = {r.meta["index"]: r.texts[0] for r in reformat_results}
    mcqs: list[MCQ] = []
    no_question = 0
    for i, (rec, w) in enumerate(zip(records, writer_results, strict=True)):
        parsed_text = reformatted.get(i, w.texts[0])
        got = mcqs_from_responses(rec.image_id, rec.image_path, rec.description, w.texts[0],
                                  reformatted.get(i, ""), seed=seed, choice_forms=tuple(choice_forms),
                                  answer_forms=tuple(answer_forms), parsed_text=parsed_text)
        no_question += not got
        mcqs += got
    funnel = Funnel()
    funnel.add("images with at least one parsed question", len(records), len(records) - no_question,
               {"no_question_parsed": no_question})
    reasons = Counter(m.invalid_reason for m in mcqs if not m.is_valid)
    funnel.add("valid MCQs (4 options, answer matches exactly one)", len(mcqs),
               sum(m.is_valid for m in mcqs), reasons)
    return mcqs, funnel


def ground_truth_agreement(mcqs: list[dict[str, Any]], verdicts: list[bool | None]) -> list[dict[str, Any]]:
    """How many MCQs' right answers are true of their image, per question type and over all: rows of
    (question_type, mcqs, graded, agree, share), from a source's grader (`Run.mcq_grader`: True, False,
    or None for an MCQ it cannot grade). Only a source with ground truth (a synthetic one) has a grader."""
    if len(mcqs) != len(verdicts):
        raise ValueError(f"{len(verdicts)} verdicts for {len(mcqs)} MCQs")
    tally: dict[str, list[int]] = {}
    for m, v in zip(mcqs, verdicts):
        for key in (m.get("question_type") or "(none)", "all"):
            t = tally.setdefault(key, [0, 0, 0])
            t[0] += 1
            t[1] += v is not None
            t[2] += v is True
    order = sorted(k for k in tally if k != "all") + (["all"] if tally else [])
    return [{"question_type": k, "mcqs": tally[k][0], "graded": tally[k][1], "agree": tally[k][2],
             "share": round(tally[k][2] / tally[k][1], 3) if tally[k][1] else None} for k in order]
