"""Read a model's response and judge its answer: one module for stages 2 and 3, the training
validation and evaluation. Every case below is pinned by `tests/data/conformance.yaml` (realistic
outputs of R1 distills, Qwen2.5-VL and 5- and 10-option items, each with its parse and both verdicts).

**Parse** (stages 2, 3, validation; `parse_response`): the first `<think>…</think>`, then *anything*,
then the first `<answer>…</answer>`, both parts stripped. Reasoning models (R1 distills above all)
write a summary sentence or paragraph between `</think>` and `<answer>`; a parser that allowed only
whitespace there would throw most of their output away. A response cut off before `</think>` or
before `</answer>` is unparsable (an unfinished answer such as "(B) or" is not an answer).
`response_shape` names the shape of every response for the funnels.

**Two rules** (`RULES`), named and switchable; both verdicts are computed everywhere. In stages 2
and 3 (and the validation) the profile names the one that labels O/X (`simple_cot.rule`,
`long_cot.rule`); evaluation reports both, the released one beside the paper's numbers:

*strict* — this project's rule. The answer names an option when, after normalising (Unicode NFKC, so
full-width "（B）" reads "(B)"; `\\boxed{…}` unwrapped; surrounding whitespace, quotes, asterisks and
trailing . , ; : ! dropped; case ignored) it is
- the option's text, or
- its letter alone or in a letter form: "B", "(B)", "B.", "B)", "B:", "(B).", or
- a letter form followed by the option's text ("(B) blue", "B. blue", "B blue"), or a bracketed or
  dotted letter ("(B)", "B.", "B)", "B:") followed by other text that names no other option letter
  ("(B) the blue one": the letter decides, as in the released rule; a bare "B" followed by other
  text names nothing, since "A white cap" would otherwise name A).
It is right when that option is the right one — the right option only. Decided where the released
forms are silent: lower-case letters count ("b", "(b)"); an answer that names two different letters
("(A) or (B)") is wrong (`ambiguous`); a second answer block that names another option than the first
is wrong (`conflicting_answers`), one that names the same option is fine; prose is not read ("The
answer is (B)." is read as a statement, see below, but "I think it is B" names nothing: `no_match`);
an empty answer is wrong.

*released* — an exact emulation of the authors' released code (stages 2 and 3 and its evaluation
script alike): the option texts are re-parsed from the choice lines as the released code does (an
option whose text holds " X. " is split there, as it was there); then an answer is right when its
lower-cased text equals *any* option's lower-cased text (the defect: a wrong option's text counts as
right), or it equals the right letter exactly ("B"; case-sensitive, so "b" misses), or "(B)" / "B."
exactly, or "(B) text" / "B. text" with the right option's text (in evaluation the answer is
lower-cased first, so that comparison never holds), or its first space-separated token is "(B)" or
"B." ("(B)\\nblue" misses: the token is "(B)\\nblue"). Nothing is normalised beyond stripping.

**Evaluation's extraction** (`extract_answer`) — what is judged in a benchmark response:
- released (the released script): the first answer block anywhere; else the text after the first
  "Answer:" up to the next "Answer:"; else the *whole response*.
- strict: the first answer block after the last `</think>` (anywhere when there is none), with the
  later blocks checked for conflicts as above; else the first line after the last "Answer:" (any case:
  "**Final Answer:** (B)" and "Final answer: B" read "(B)" and "B"); else the last `\\boxed{…}`
  after the thought (R1 distills' usual ending); else the last statement "answer is (J)" / "option is
  C" (MMLU-Pro's usual ending; the letter upper-case, so "the answer is a cat" names nothing); else
  the text after the last `</think>`, or the whole response.
The last fallback (whole response, or the text after the thought) is a setting
(`eval.whole_response_fallback`); without it a response with none of the above is unanswered.

Within an answer, strict also reads a leading statement: "The answer is (B)", "Final answer: B. blue"
name B (`how` = statement); prose elsewhere is not read ("I think it is B" names nothing).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

LETTERS = "ABCDEFGHIJ"
RULES = ("strict", "released")

_THINK_OPEN, _THINK_CLOSE, _ANSWER_OPEN, _ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"
# Think, then anything (non-greedy), then the first answer block; both inner parts stripped.
_THINK_THEN_ANSWER = re.compile(r"<think>\s*(.*?)\s*</think>(.*?)<answer>\s*(.*?)\s*</answer>", re.S)
_ANSWER_BLOCK = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.S)
_STRIP = " \t\n\r.,;:!\"'`*"
_BOXED = re.compile(r"\\boxed\{\s*(.*?)\s*\}", re.S)
# "the answer is (J)", "The final answer is B", "the correct option is: (C)" — MMLU-Pro's usual ending.
# The phrase in any case, the letter upper-case only ("the answer is a red circle" names no letter).
_ANSWER_STATEMENT = re.compile(r"(?i:answer|option|choice) (?i:is):?\s*\*{0,2}(\([A-J]\)|[A-J](?![A-Za-z0-9]))")
_LEADING_STATEMENT = re.compile(r"^(?:so |thus |therefore |hence )?(?:the |my )?(?:final |correct |best )?"
                                r"(?:answer|option|choice)(?: is|:)\s*:?\s*", re.I)
# A token that names an option letter on its own: "(B)", "B.", "B)", "B:", or a bare "B".
_LETTER_TOKEN = re.compile(r"(?<![A-Za-z0-9])\(?([A-Ja-j])\)?(?=[\s.,;:)!]|$)")


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Parsed:
    """A response split into its thought and its answer; `ok` False when the tags were not found.
    `later_answers`: answer blocks after the first one (strict checks them for conflicts); `shape`:
    see `response_shape`."""

    thought: str
    answer: str
    ok: bool
    shape: str = ""
    between: str = ""  # what stands between </think> and <answer> (a summary, usually), stripped
    later_answers: tuple[str, ...] = field(default=())


SHAPES = {
    "think_answer": "think, then the answer block (only whitespace between)",
    "think_summary_answer": "think, a summary or other text, then the answer block",
    "think_answer_repeated": "think, then two or more answer blocks",
    "cut_in_thought": "no closing think tag (cut off by the token limit, or never closed)",
    "cut_in_answer": "the answer block opened but never closed",
    "no_answer_block": "the thought closed, then no answer block",
    "no_think": "no think tag at all",
    "empty": "nothing",
}


def response_shape(text: str) -> str:
    """One of `SHAPES`: how a response is laid out (the funnels count these)."""
    t = text or ""
    if not t.strip():
        return "empty"
    if _THINK_OPEN not in t:
        return "no_think"
    after_open = t.split(_THINK_OPEN, 1)[1]
    if _THINK_CLOSE not in after_open:
        return "cut_in_thought"
    rest = after_open.split(_THINK_CLOSE, 1)[1]
    if _ANSWER_OPEN not in rest:
        return "no_answer_block"
    if not _ANSWER_BLOCK.search(rest):
        return "cut_in_answer"
    if len(_ANSWER_BLOCK.findall(rest)) > 1:
        return "think_answer_repeated"
    return "think_summary_answer" if rest.split(_ANSWER_OPEN, 1)[0].strip() else "think_answer"


def parse_response(text: str) -> Parsed:
    """The first think block, anything, then the first answer block after it (module docstring).

    Pass the whole assistant turn: a forced `<think>` prefix must be put back in front of what the
    model generated after it (`"<think>" + continuation`).
    """
    t = text or ""
    # Found by position (str.find), not by one lazy regular expression, which is several times
    # slower on long thoughts: the first <think>, the first </think> after it, the first answer block
    # after that (the same split as `_THINK_THEN_ANSWER`, which the conformance tests pin).
    i = t.find(_THINK_OPEN)
    j = t.find(_THINK_CLOSE, i + len(_THINK_OPEN)) if i >= 0 else -1
    k = t.find(_ANSWER_OPEN, j + len(_THINK_CLOSE)) if j >= 0 else -1
    end = t.find(_ANSWER_CLOSE, k + len(_ANSWER_OPEN)) if k >= 0 else -1
    if end < 0:
        return Parsed("", "", False, response_shape(t))
    later = tuple(a.strip() for a in _ANSWER_BLOCK.findall(t, end + len(_ANSWER_CLOSE))) \
        if _ANSWER_OPEN in t[end:] else ()
    between = t[j + len(_THINK_CLOSE):k].strip()
    shape = "think_answer_repeated" if later else ("think_summary_answer" if between else "think_answer")
    return Parsed(t[i + len(_THINK_OPEN):j].strip(), t[k + len(_ANSWER_OPEN):end].strip(), True, shape, between, later)


# ----------------------------------------------------------------------------- evaluation's extraction


@dataclass(frozen=True)
class Extracted:
    """What evaluation judges in a response. `answer` None: nothing to judge (unanswered).
    `source`: answer_tags | answer_colon | after_thought | whole_response | none."""

    answer: str | None
    source: str
    later_answers: tuple[str, ...] = field(default=())


def extract_answer(text: str, rule: str = "strict", whole_response: bool = True) -> Extracted:
    """Evaluation's extraction under `rule` (module docstring); `whole_response` is the released
    script's last fallback."""
    _check_rule(rule)
    t = text or ""
    if rule == "released":
        m = _ANSWER_BLOCK.search(t)
        if m:
            return Extracted(m.group(1), "answer_tags")
        if "Answer:" in t:
            return Extracted(t.split("Answer:")[1].strip(), "answer_colon")
        return Extracted(t, "whole_response") if whole_response else Extracted(None, "none")
    tail = t.rsplit(_THINK_CLOSE, 1)[1] if _THINK_CLOSE in t else t
    blocks = [b.strip() for b in _ANSWER_BLOCK.findall(tail)] or [b.strip() for b in _ANSWER_BLOCK.findall(t)]
    if blocks:
        return Extracted(blocks[0], "answer_tags", tuple(blocks[1:]))
    colon = list(re.finditer(r"Answer:", t, flags=re.I))
    if colon:
        after = t[colon[-1].end():].strip()
        line = after.splitlines()[0].strip() if after else ""
        if _norm(line):
            return Extracted(line, "answer_colon")
    boxed = _BOXED.findall(tail)
    if boxed and _norm(boxed[-1]):
        return Extracted(boxed[-1].strip(), "boxed")
    stated = list(_ANSWER_STATEMENT.finditer(unicodedata.normalize("NFKC", tail)))
    if stated:
        return Extracted(stated[-1].group(1), "answer_statement")
    if not whole_response:
        return Extracted(None, "none")
    if _THINK_CLOSE in t:
        return Extracted(tail.strip(), "after_thought")
    return Extracted(t.strip(), "whole_response")


# ----------------------------------------------------------------------------- strict rule


def _norm(s: str, lower: bool = True) -> str:
    s = unicodedata.normalize("NFKC", s or "")
    boxed = _BOXED.search(s)
    if boxed and not _BOXED.sub("", s).strip(_STRIP):
        s = boxed.group(1)
    s = re.sub(r"\s+", " ", s).strip(_STRIP)
    return s.lower() if lower else s


@dataclass(frozen=True)
class Verdict:
    correct: bool
    letter: str | None  # the option the answer names (None: none, or ambiguous)
    how: str  # strict: text | letter | first_token | ambiguous | conflicting_answers | no_match | empty;
    # released: option_text | any_option_text | letter | letter_form | letter_and_text | first_token |
    # no_match | unreadable_choices


def named_letter(answer: str, choices: list[str]) -> Verdict:
    """Which option an answer names under the strict rule's forms (module docstring)."""
    n = len(choices)
    a = _norm(answer)
    if not a:
        return Verdict(False, None, "empty")
    texts = _normed_options(tuple(choices))
    if a in texts and texts.count(a) == 1:
        return Verdict(False, LETTERS[texts.index(a)], "text")
    # Letter forms: "B", "(B)", "B.", "B)", "B:", "(B) text", "B. text"
    m = re.fullmatch(r"\(?([a-j])(?:\)[.:]?|[.:])?(?:\s+(.*))?", a)
    if m and LETTERS.lower().index(m.group(1)) < n:
        i = LETTERS.lower().index(m.group(1))
        rest = m.group(2)
        bracketed = a.startswith("(") or re.match(r"^[a-j][.):]", a)
        if rest is None or _norm(rest) == texts[i]:
            return Verdict(False, LETTERS[i], "letter")
        # the rest with its case kept: a dotted "C." names an option, a lower-case "c." need not
        cased = re.fullmatch(r"\(?[A-Ja-j](?:\)[.:]?|[.:])?\s+(.*)", _norm(answer, lower=False))
        if bracketed and not _other_letters(cased.group(1) if cased else rest, i, n):
            return Verdict(False, LETTERS[i], "first_token")
    stated = _LEADING_STATEMENT.match(a)
    if stated and a[stated.end():]:  # "the answer is (B)", "Final answer: B. blue"
        v = named_letter(a[stated.end():], choices)
        if v.letter is not None or v.how == "ambiguous":
            return Verdict(False, v.letter, "statement" if v.letter else v.how)
    raw = unicodedata.normalize("NFKC", answer or "")
    letters = {LETTERS.lower().index(x.lower()) for x in _LETTER_TOKEN.findall(raw)
               if LETTERS.lower().index(x.lower()) < n and _looks_like_option_token(raw, x)}
    if len(letters) > 1:
        return Verdict(False, None, "ambiguous")
    return Verdict(False, None, "no_match")


@functools.lru_cache(maxsize=1 << 14)
def _normed_options(choices: tuple[str, ...]) -> list[str]:
    # the options normalised once per MCQ, not once per sample (read only by the callers)
    return [_norm(c) for c in choices]


def _other_letters(rest: str, i: int, n: int) -> bool:
    """Whether the text after a leading letter names another option letter in bracket/dot form."""
    others = {LETTERS.lower().index(x.lower()) for x in re.findall(r"\(([A-Ja-j])\)", rest)}
    others |= {LETTERS.lower().index(x.lower()) for x in re.findall(r"(?<![A-Za-z])([A-J])[.)](?=\s|$)", rest)}
    return any(j != i and j < n for j in others)


def _looks_like_option_token(raw: str, letter: str) -> bool:
    # A bare lower-case "a" inside prose is an article, not an option: count lower-case letters only
    # in bracket or dot form.
    if letter.isupper():
        return True
    return bool(re.search(rf"\({letter}\)|(?<![A-Za-z]){letter}[.)](?=\s|$)", raw))


def strict_verdict(answer: str, choices: list[str], right_letter: str,
                   later_answers: tuple[str, ...] | list[str] = ()) -> Verdict:
    """The strict rule: the option the answer names is the right one, and no later answer block
    names another."""
    v = named_letter(answer, choices)
    if v.letter is None:
        return v
    for later in later_answers:
        other = named_letter(later, choices).letter
        if other is not None and other != v.letter:
            return Verdict(False, None, "conflicting_answers")
    return Verdict(v.letter == right_letter.upper(), v.letter, v.how)


# ----------------------------------------------------------------------------- released rule

# The released code's choice-line grammar: a marker "(X)" or "X." / "X)" followed by whitespace,
# then the option text, which runs (lazily) until whitespace + another marker + whitespace, or the end.
_RELEASED_CHOICE = re.compile(
    r"""(?: \( ([A-J]) \) | ([A-J]) [.)] )   # marker: (X) | X. | X)
        \s+ (.*?)                            # the option's text
        (?= \s+ (?: \([A-J]\) | [A-J][.)] ) \s+ | $ )""", re.S | re.X)


def released_choice_list(choices: list[str]) -> list[tuple[str, str]]:
    """(letter, option text) pairs as the released code re-reads them from the "(X) text" lines it
    showed: an option holding " X. " is split there, and a repeated letter appears twice."""
    return list(_released_options(tuple(choices)))


@functools.lru_cache(maxsize=1 << 14)
def _released_options(choices: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # re-read once per MCQ, not once per sample
    joined = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
    return tuple(((m.group(1) or m.group(2)), m.group(3).strip()) for m in _RELEASED_CHOICE.finditer(joined))


def released_choice_texts(choices: list[str]) -> dict[str, str]:
    """Letter -> option text as the released code looks them up (a later repeated letter wins)."""
    return dict(released_choice_list(choices))


def released_verdict(answer: str, choices: list[str], right_letter: str, *, in_evaluation: bool = False) -> Verdict:
    """The released code's rule, exactly (module docstring). `in_evaluation`: its evaluation script's
    variant, which lower-cases the answer before the "(X) text" comparison."""
    listed = released_choice_list(choices)
    parsed = dict(listed)
    lowered = {k: v.lower() for k, v in parsed.items()}
    a = (answer or "").strip()
    right = right_letter.upper()
    right_text = parsed.get(right)
    if not in_evaluation and sum(t == choices[LETTERS.index(right)] for _, t in listed) != 1:
        # the released stages assert that the right answer's text is exactly one re-read option
        return Verdict(False, None, "unreadable_choices")
    if a.lower() in lowered.values():
        letter = next(k for k, v in lowered.items() if v == a.lower())
        return Verdict(True, letter, "option_text" if letter == right else "any_option_text")
    letter_forms = [f"({right})", f"{right}."]
    if a == right:
        return Verdict(True, right, "letter")
    if a in letter_forms:
        return Verdict(True, right, "letter_form")
    if in_evaluation:
        text_forms = [f"({right}) {lowered.get(right, 'XXX')}", f"{right}. {lowered.get(right, 'XXX')}"]
        hit = a.lower() in text_forms
    else:
        text_forms = [f"({right}) {right_text}", f"{right}. {right_text}"]
        hit = right_text is not None and a in text_forms
    if hit:
        return Verdict(True, right, "letter_and_text")
    if a.split(" ")[0] in letter_forms:
        return Verdict(True, right, "first_token")
    return Verdict(False, None, "no_match")


# ----------------------------------------------------------------------------- both rules


def verdicts(answer: str, choices: list[str], right_letter: str, *, later_answers: tuple[str, ...] = (),
             in_evaluation: bool = False) -> dict[str, Verdict]:
    """Both rules' verdicts on one answer: {"strict": …, "released": …}."""
    strict, released = _verdicts(answer, tuple(choices), right_letter, tuple(later_answers), in_evaluation)
    return {"strict": strict, "released": released}


@functools.lru_cache(maxsize=1 << 16)
def _verdicts(answer: str, choices: tuple[str, ...], right_letter: str, later_answers: tuple[str, ...],
              in_evaluation: bool) -> tuple[Verdict, Verdict]:
    # A pure function of its arguments, memoised: the samples of one MCQ mostly give the same few
    # answers ("(B) blue" eight times), so a stage of a million responses judges each once. Verdicts
    # are frozen, so sharing them is safe.
    return (strict_verdict(answer, list(choices), right_letter, later_answers),
            released_verdict(answer, list(choices), right_letter, in_evaluation=in_evaluation))


def verify(answer: str, choices: list[str], right_letter: str, *, rule: str = "strict",
           later_answers: tuple[str, ...] = ()) -> Verdict:
    """Is `answer` the right option under `rule`? (stages 2-3: the released stages' variant)"""
    _check_rule(rule)
    if rule == "released":
        return released_verdict(answer, choices, right_letter)
    return strict_verdict(answer, choices, right_letter, later_answers)


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown answer rule {rule!r}; known: {', '.join(RULES)}")


def shape_table(rows) -> "Any":
    """Responses by shape (`SHAPES`) and by why generation stopped (stop | length), with shares and
    what each shape means: how a stage's output is laid out, and whether what fails to parse is only
    what the token limit cut off. `rows`: a stage's rows (with `response_shape` and `finish_reason`)."""
    import pandas as pd

    df = pd.DataFrame(rows)[["response_shape", "finish_reason"]]
    table = pd.crosstab(df["response_shape"], df["finish_reason"])
    table["total"] = table.sum(axis=1)
    table["share"] = (table["total"] / max(len(df), 1)).round(3)
    table["parses"] = [s in ("think_answer", "think_summary_answer", "think_answer_repeated") for s in table.index]
    table["meaning"] = [SHAPES.get(s, "the continuation closed the thought at once") for s in table.index]
    return table.sort_values("total", ascending=False)
