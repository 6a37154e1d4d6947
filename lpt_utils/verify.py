"""Parse think/answer responses and verify an answer against the right option (stages 2, 3 and 7).

The rule (FACTS.md, stage 2): an answer is right when, stripped, it is an accepted form of the right
option — its text (case-insensitive), its letter, "(X)", "X.", "(X) option text", "X. option text" —
or when its first space-separated token is "(X)" or "X." (so the letter decides, and
"(A) some other text" counts as A).

Decided here, where the released forms are silent:
- an answer naming two *different* option letters ("(A) or (B)", "A and C.") is wrong: ambiguous;
- letters are read case-insensitively ("b", "(b)", "b." name option B);
- trailing punctuation (. , ; : !) and surrounding quotes or asterisks are ignored ("blue." = "blue",
  "(B)." = "(B)"), as is whitespace;
- an empty answer is wrong.

The released code also counts an answer equal to the text of *any* option as correct (a defect, in
its stages 2 and 3 and its evaluation alike). `released_any_option_text=True` reproduces that, off
by default, so a user can measure how much it moves a score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJ"
_THINK_ANSWER = re.compile(r"<think>(.*?)</think>\s*<answer>(.*?)</answer>", re.S)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
_AFTER_ANSWER_COLON = re.compile(r"Answer:\s*(.+)", re.S | re.I)
_STRIP = " \t\n\r.,;:!\"'`*"
# A token that names an option letter on its own: "(B)", "B.", "B)", "B:", or a bare "B".
_LETTER_TOKEN = re.compile(r"(?<![A-Za-z0-9])\(?([A-Ja-j])\)?(?=[\s.,;:)!]|$)")


@dataclass(frozen=True)
class Parsed:
    """A response split into its thought and its answer; `ok` False when the tags were not found."""

    thought: str
    answer: str
    ok: bool


def parse_response(text: str) -> Parsed:
    """The first `<think>…</think> <answer>…</answer>` (non-greedy, across lines), both stripped.

    Pass the whole assistant turn: a forced `<think>` prefix must be put back in front of what the
    model generated after it (`"<think>" + continuation`).
    """
    m = _THINK_ANSWER.search(text or "")
    if not m:
        return Parsed("", "", False)
    return Parsed(m.group(1).strip(), m.group(2).strip(), True)


def extract_answer(text: str) -> str | None:
    """Evaluation's extraction: the text in the answer tags, else the text after "Answer:", else
    None (an unanswered item, never scored as some letter)."""
    m = _ANSWER_TAG.search(text or "")
    if m:
        return m.group(1).strip()
    m = _AFTER_ANSWER_COLON.search(text or "")
    if m and m.group(1).strip():
        return m.group(1).strip().splitlines()[0].strip()
    return None


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip(_STRIP).lower()


@dataclass(frozen=True)
class Verdict:
    correct: bool
    letter: str | None  # the option the answer names (None: none, or ambiguous)
    how: str  # text | letter | first_token | any_option_text | ambiguous | no_match | empty


def named_letter(answer: str, choices: list[str]) -> Verdict:
    """Which option an answer names, by the accepted forms (see the module docstring)."""
    n = len(choices)
    raw = (answer or "").strip()
    a = _norm(raw)
    if not a:
        return Verdict(False, None, "empty")
    texts = [_norm(c) for c in choices]
    if a in texts and texts.count(a) == 1:
        return Verdict(False, LETTERS[texts.index(a)], "text")
    # Letter forms: "B", "(B)", "B.", "(B) text", "B. text"
    m = re.fullmatch(r"\(?([a-j])[).:]?(?:\s+(.*))?", a)
    if m and LETTERS.lower().index(m.group(1)) < n:
        i = LETTERS.lower().index(m.group(1))
        rest = m.group(2)
        bracketed = a.startswith("(") or re.match(r"^[a-j][.)]", a)
        if rest is None or _norm(rest) == texts[i]:
            return Verdict(False, LETTERS[i], "letter")
        if bracketed and not _other_letters(rest, i, n):
            return Verdict(False, LETTERS[i], "first_token")
    letters = {LETTERS.lower().index(x.lower()) for x in _LETTER_TOKEN.findall(raw)
               if LETTERS.lower().index(x.lower()) < n and _looks_like_option_token(raw, x)}
    if len(letters) > 1:
        return Verdict(False, None, "ambiguous")
    return Verdict(False, None, "no_match")


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


def verify(answer: str, choices: list[str], right_letter: str, *,
           released_any_option_text: bool = False) -> Verdict:
    """Is `answer` the right option? See the module docstring for the accepted forms."""
    v = named_letter(answer, choices)
    if released_any_option_text and v.how == "text":
        return Verdict(True, v.letter, "any_option_text")
    if v.letter is not None:
        return Verdict(v.letter == right_letter.upper(), v.letter, v.how)
    return v
