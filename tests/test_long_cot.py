"""Stage 3 building blocks: prefix, casing, seeded cue/separator, banned words, transitions."""

import pytest

from lpt_utils import long_cot

LINES = ["(A) red", "(B) blue", "(C) green", "(D) yellow"]


def test_prefix_keeps_the_simple_thoughts_casing():
    thought = "i see the NASA logo on a Blue Mug next to iPhone cables"
    p = long_cot.assistant_prefix("What colour is the mug?", LINES, thought, "Wait,", "\n")
    assert "I see the NASA logo on a Blue Mug next to iPhone cables." in p  # only the first letter changed
    assert p.startswith("<think>\n") and p.count("<think>") == 1
    assert p.endswith(".\nWait,")
    assert "What colour is the mug?" in p and all(line in p for line in LINES)
    assert "description" in p.lower()  # the opening notes the user's request not to lean on it
    assert long_cot.assistant_prefix("Q?", LINES, "x", "Hmm,", " ", think_tag="").startswith("The question")


@pytest.mark.parametrize("thought,expected", [
    ("it is red", "It is red."), ("It is red.", "It is red."), ("is it red?", "Is it red?"),
    ("  padded thought!  ", "Padded thought!"), ("", ""),
])
def test_splice_thought(thought, expected):
    assert long_cot.splice_thought(thought) == expected


def test_cue_and_separator_are_seeded_per_example():
    a = long_cot.draw_cue_and_separator(0, "img-q01-s2")
    assert a == long_cot.draw_cue_and_separator(0, "img-q01-s2")
    draws = {long_cot.draw_cue_and_separator(0, f"id{i}") for i in range(200)}
    assert {c for c, _ in draws} == set(long_cot.CUES) and {s for _, s in draws} == {"\n", " "}
    assert long_cot.draw_cue_and_separator(0, "x", cues=["Wait,"])[0] == "Wait,"


def test_banned_words_match_whole_words_only():
    banned = ["state", "states", "description", "the image described", "user's", "text"]
    assert long_cot.banned_hits("As the description states, it is red.", banned) == ["states", "description"]
    assert long_cot.banned_hits("That statement is textual.", banned) == []  # contain, but are not, banned words
    assert long_cot.banned_hits("In THE IMAGE DESCRIBED there is", banned) == ["the image described"]
    assert long_cot.banned_hits("The user's picture", banned) == ["user's"]
    assert long_cot.banned_hits("users picture", banned) == []


def test_transitions():
    assert [long_cot.transition(a, b) for a in (True, False) for b in (True, False)] == list(long_cot.TRANSITIONS)


def test_user_message_parts():
    u = long_cot.user_message("A red ball.", "What colour?", LINES)
    assert "A red ball." in u and "What colour?" in u and all(line in u for line in LINES)
    assert "<answer>" in u and "never refer to the description" in u
