"""Stage 3 building blocks: the reasoning model continues the student's simple CoT into a long one.

The assistant turn is pre-filled with the model's think tag, an opening that restates the question
and options (and that the user asked to reason without referring to the revealed description), the
simple thought with its own casing (only the first letter may change: the released code lower-cased
the whole thought), a separator (newline or space) and a cognitive cue; the model continues from the
cue. Cue and separator are drawn from a seed and the example's id, so resuming or sharding draws the
same ones.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Sequence

from lpt_utils.prompts import render

CUES = ("Wait,", "Hmm,", "Alternatively,", "Let's double-check the details.")
SEPARATORS = ("\n", " ")
TRANSITIONS = ("O→O", "O→X", "X→O", "X→X")


def example_rng(seed: int, example_id: str) -> random.Random:
    """A random stream for one example, independent of row order."""
    return random.Random(int.from_bytes(hashlib.sha256(f"{seed}:{example_id}".encode()).digest()[:8], "big"))


def draw_cue_and_separator(seed: int, example_id: str, cues: Sequence[str] = CUES,
                           separators: Sequence[str] = SEPARATORS) -> tuple[str, str]:
    rng = example_rng(seed, example_id)
    return rng.choice(list(cues)), rng.choice(list(separators))


def splice_thought(thought: str) -> str:
    """The simple thought as it enters the prefix: stripped, first letter upper-cased, nothing else
    changed, ending with a period (added only when it ends without sentence punctuation)."""
    t = thought.strip()
    if not t:
        return t
    t = t[0].upper() + t[1:]
    return t if t[-1] in ".!?" else t + "."


def user_message(description: str, question: str, choice_lines: list[str]) -> str:
    return render("long_cot_user", description=description.strip(), question=question.strip(),
                  choice_lines=choice_lines)


def assistant_prefix(question: str, choice_lines: list[str], thought: str, cue: str, separator: str,
                     think_tag: str = "<think>") -> str:
    """Think tag (or "" when the chat template opens it), opening, simple thought, separator, cue."""
    opening = render("long_cot_opening", think_tag=think_tag, question=question.strip(),
                     choice_lines=choice_lines).lstrip("\n")
    return f"{opening}\n{splice_thought(thought)}{separator}{cue}"


def banned_hits(text: str, banned: Sequence[str]) -> list[str]:
    """Banned words or phrases that occur in `text` as whole words (case-insensitive): "state" hits
    "state" but not "statement"; list inflected forms explicitly ("state", "states", "stated")."""
    hits = []
    for w in banned:
        pattern = r"(?<![A-Za-z0-9'])" + re.escape(w.strip()) + r"(?![A-Za-z0-9])"
        if w.strip() and re.search(pattern, text, flags=re.I):
            hits.append(w)
    return hits


def transition(simple_correct: bool, long_correct: bool) -> str:
    """"O→O", "O→X", "X→O" or "X→X": the simple CoT's label, then the long CoT's."""
    return f"{'O' if simple_correct else 'X'}→{'O' if long_correct else 'X'}"
