"""Stage 3 building blocks: prefix, casing, seeded cue/separator, banned words, transitions."""

import pytest

from lpt_utils import config
from lpt_utils.pipeline import long_cot

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
    paper = config.load_profile("paper")["long_cot"]
    cues, seps = paper["cues"], paper["separators"]
    a = long_cot.draw_cue_and_separator(0, "img-q01-s2", cues, seps)
    assert a == long_cot.draw_cue_and_separator(0, "img-q01-s2", cues, seps)
    draws = {long_cot.draw_cue_and_separator(0, f"id{i}", cues, seps) for i in range(200)}
    assert {c for c, _ in draws} == set(cues) and {s for _, s in draws} == {"\n", " "}
    assert long_cot.draw_cue_and_separator(0, "x", ["Wait,"], seps)[0] == "Wait,"


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


# ----------------------------------------------------------------------------- the stage as a whole

from types import SimpleNamespace  # noqa: E402

MCQ = {"mcq_id": "img1-q00", "image_id": "img1", "image_path": "img1.png", "question": "What colour is the mug?",
       "choices": ["red", "blue", "green", "yellow"], "answer": "blue", "answer_letter": "B",
       "question_type": "recognition", "choice_form": "paren", "answer_form": "paren_letter",
       "description": "A blue mug on a table."}


def _simple(rid, thought, correct):
    return {"response_id": rid, "mcq_id": MCQ["mcq_id"], "thought": thought, "answer": "(B)" if correct else "(A)",
            "is_correct": correct, "num_tokens": 7}


class _Tok:
    """A chat template that opens the think tag itself (as newer R1-distill templates do) or not."""

    def __init__(self, opens_think):
        self.opens = opens_think

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        return f"<user>{messages[0]['content']}</user><assistant>" + ("<think>\n" if self.opens else "")


@pytest.mark.parametrize("opens", [False, True])
def test_prompts_write_exactly_one_think_tag(opens):
    exs = long_cot.examples({MCQ["mcq_id"]: MCQ}, [_simple("s0", "it is blue", True)], seed=0, cues=["Wait,"],
                           separators=["\n", " "])
    ex = long_cot.build_prompts(exs, _Tok(opens))[0]
    assert (ex.prompt + ex.prefix).count("<think>") == 1
    assert ex.prefix.endswith("It is blue.\nWait,") or ex.prefix.endswith("It is blue. Wait,")
    assert "A blue mug on a table." in ex.prompt and "(B) blue" in ex.prompt


def test_requests_ban_words_in_sampling_only_when_asked():
    exs = long_cot.build_prompts(long_cot.examples({MCQ["mcq_id"]: MCQ}, [_simple("s0", "x", True)], seed=0,
                                                   cues=["Wait,"], separators=[" "]), _Tok(False))
    banned = ["text", "mental"]
    on = long_cot.requests(exs, {"n": 3, "temperature": 0.6}, banned, ban_in_sampling=True)[0]
    off = long_cot.requests(exs, {"n": 3, "temperature": 0.6}, banned, ban_in_sampling=False)[0]
    assert on.sampling.bad_words == ("text", "mental") and off.sampling.bad_words == ()
    assert on.prompt == exs[0].prompt and on.assistant_prefix == exs[0].prefix and on.sampling.n == 3


def _score(simple_rows, texts_per_example, banned=("text",)):
    exs = long_cot.build_prompts(long_cot.examples({MCQ["mcq_id"]: MCQ}, simple_rows, seed=0, cues=["Wait,"],
                                                   separators=[" "]),
                                 _Tok(False))
    results = [SimpleNamespace(texts=t, num_tokens=[5] * len(t), finish_reasons=["stop"] * len(t))
               for t in texts_per_example]
    return long_cot.score(exs, results, banned_words=banned)


def test_score_labels_transitions_and_keeps_drops_with_reasons():
    right, wrong = _simple("s0", "it is blue", True), _simple("s1", "it is red", False)
    rows, funnel = _score([right, wrong], [
        [" that holds. </think> <answer> (B) </answer>",           # O→O
         " no, it is red. </think> <answer> (A) </answer>",         # O→X
         " the text says blue. </think> <answer> (B) </answer>"],   # banned word "text"
        [" it is blue after all. </think> <answer> (B) blue </answer>",  # X→O
         " still red. </think> <answer> red </answer>",                 # X→X
         " still red. </think> <answer> red </answer>",                 # duplicate of the row above
         " it is cut off mid"],                                         # unparsable (no closing tag)
    ])
    by = {r.long_id: r for r in rows}
    assert [by[f"s0-l{k}"].transition for k in range(2)] == ["O→O", "O→X"]
    assert by["s0-l2"].drop_reason == "banned word" and by["s0-l2"].banned_hits == ["text"]
    assert [by[f"s1-l{k}"].transition for k in range(2)] == ["X→O", "X→X"]
    assert by["s1-l2"].drop_reason == "duplicate" and by["s1-l3"].drop_reason == "unparsable"
    assert sum(r.kept for r in rows) == 4
    # the long thought the student will learn: simple thought, separator, cue, added thought
    xo = by["s1-l0"]
    assert xo.long_thought in ("It is red.\nWait, it is blue after all.", "It is red. Wait, it is blue after all.")
    assert xo.added_thought == "it is blue after all." and xo.simple_thought == "it is red"
    assert [s["out"] for s in funnel.steps] == [6, 5, 4]
    table = long_cot.transition_table(long_cot.to_rows(rows), by="cue")
    assert table.loc["all", ["O→O", "O→X", "X→O", "X→X"]].tolist() == [1, 1, 1, 1]
    assert table.loc["all", "rate X→O"] == 0.5 and table.loc["Wait,", "n"] == 4


def test_ban_effect_compares_the_two_arms():
    s = _simple("s0", "it is blue", True)
    with_ban, _ = _score([s], [[" fine. </think> <answer> (B) </answer>"]])
    without, _ = _score([s], [[" that statement in the text holds. </think> <answer> (B) </answer>"]])
    t = long_cot.ban_effect(with_ban, without, ["text", "state"])
    assert t.loc["banned word in added thought"].tolist() == [0.0, 1.0]
    assert t.loc["longer word containing one"].tolist() == [0.0, 1.0]  # "statement"
    assert long_cot.collateral_words("A statement, textures and text.", ["text", "state"]) == ["statement", "textures"]
