"""Answer verification: every accepted form and the edge cases the notebooks rely on."""

import pytest

from lpt_utils.pipeline.verify import (
    Extracted,
    extract_answer,
    parse_response,
    released_choice_texts,
    verdicts,
    verify,
)

CHOICES = ["red", "blue", "green square", "yellow"]


@pytest.mark.parametrize("answer", [
    "blue", "Blue", " BLUE ", "blue.", "B", "(B)", "B.", "(B) blue", "B. blue", "(B) something else",
    "B. something else", "b", "(b)", "b.", "(B).", "**(B)**", "\"blue\"",
])
def test_right_answer_forms(answer):
    assert verify(answer, CHOICES, "B").correct, answer


@pytest.mark.parametrize("answer,how", [
    ("red", "text"), ("(A)", "letter"), ("A.", "letter"), ("(A) blue", "first_token"),
    ("(A) or (B)", "ambiguous"), ("A and B.", "ambiguous"), ("", "empty"), ("   ", "empty"),
    ("purple", "no_match"), ("I think it is B", "no_match"), ("The answer is (A)", "statement"), ("(E)", "no_match"),
    ("blue green", "no_match"), ("a blue thing", "no_match"),
])
def test_wrong_or_unmatched_answers(answer, how):
    v = verify(answer, CHOICES, "B")
    assert not v.correct and v.how == how, (answer, v)


def test_multiword_option_text_and_letter_plus_text():
    assert verify("Green Square", CHOICES, "C").correct
    assert verify("(C) green square", CHOICES, "C").correct
    assert verify("C. green square.", CHOICES, "C").letter == "C"


def test_released_rule_counts_any_option_text():
    assert not verify("red", CHOICES, "B").correct
    v = verify("red", CHOICES, "B", rule="released")
    assert v.correct and v.how == "any_option_text"
    # letters are still decided by the letter under the released rule
    assert not verify("(A)", CHOICES, "B", rule="released").correct


@pytest.mark.parametrize("answer,strict,released", [
    ("b", True, False),          # the released comparisons are case-sensitive
    ("(b)", True, False),
    ("B)", True, False),         # not one of the released letter forms
    ("**B**", True, False),      # nothing is normalised beyond stripping
    ("(B)\nblue", True, False),  # first token split on a space only
    ("(B) anything", True, True),
    ("Blue", True, True),        # option text: lower-cased on both sides
])
def test_strict_and_released_differ_where_the_released_code_is_literal(answer, strict, released):
    v = verdicts(answer, CHOICES, "B")
    assert (v["strict"].correct, v["released"].correct) == (strict, released), (answer, v)


def test_letter_followed_by_another_dotted_letter_is_ambiguous():
    # The text after a leading letter is checked for other option letters with its case kept: an echoed
    # second option line ("C. green square") names C as well, while a capital word ("A blue one") or a
    # lower-case "a." does not.
    assert verify("B. blue\nC. green square", CHOICES, "B").how == "ambiguous"
    assert verify("(B) blue, C. is green square", CHOICES, "B").how == "ambiguous"
    assert verify("(B) A blue one", CHOICES, "B").how == "first_token"
    assert verify("B. the one in a. corner", CHOICES, "B").correct
    assert verify("(B) blue, not (C)", CHOICES, "B").how == "ambiguous"  # unchanged: bracketed letters


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match="unknown answer rule"):
        verify("B", CHOICES, "B", rule="lenient")


def test_released_rereads_option_texts_as_the_released_code_did():
    # an option holding " B. " is split there by the released choice grammar; the real (B) then
    # overwrites the stray one, and "Plan B. Go home" can no longer be matched by its text
    assert released_choice_texts(["Plan B. Go home", "stay", "run"]) == {"A": "Plan", "B": "stay", "C": "run"}
    assert verify("Plan B. Go home", ["Plan B. Go home", "stay", "run"], "A", rule="released").how == \
        "unreadable_choices"
    assert not verify("(A) Plan B. Go home", ["Plan B. Go home", "stay", "run"], "A", rule="released").correct


def test_parse_response():
    p = parse_response("<think> I see a blue ball.\nIt is round. </think>\n<answer> (B) </answer> tail")
    assert p.ok and p.thought == "I see a blue ball.\nIt is round." and p.answer == "(B)"
    assert p.shape == "think_answer"
    first = parse_response("<think>a</think><answer>A</answer><think>b</think><answer>B</answer>")
    assert first.answer == "A" and first.later_answers == ("B",)
    summary = parse_response("<think> x </think>\n\nSo the answer is (B).\n\n<answer>B</answer>")
    assert summary.ok and summary.answer == "B" and summary.between == "So the answer is (B)."
    assert summary.shape == "think_summary_answer"
    for bad, shape in [("<think> truncated thought without end", "cut_in_thought"),
                       ("<think> x </think> no answer tags", "no_answer_block"),
                       ("<answer>B</answer>", "no_think"), ("", "empty"),
                       ("<think> x </think> <answer> B", "cut_in_answer")]:
        p = parse_response(bad)
        assert not p.ok and p.shape == shape, bad
    assert parse_response("<think></think><answer></answer>").ok  # parsable; the empty answer is wrong


def test_extract_answer_for_evaluation():
    assert extract_answer("<think>x</think><answer>(C)</answer>").answer == "(C)"
    assert extract_answer("blah\nAnswer: (D) yellow\nmore").answer == "(D) yellow"
    assert extract_answer("blah\nAnswer: (D) yellow\nmore", "released").answer == "(D) yellow\nmore"
    assert extract_answer("I think it is B") == Extracted("I think it is B", "whole_response")
    assert extract_answer("I think it is B", whole_response=False) == Extracted(None, "none")
    assert extract_answer("<think> it is red </think> (A)").answer == "(A)"
    assert extract_answer("<think> it is red </think> (A)", "released").answer == "<think> it is red </think> (A)"


def test_the_fast_parse_agrees_with_the_reference_expression_on_shuffled_tags():
    """`parse_response` finds the tags by position for speed; on thousands of responses assembled
    from tags, summaries, whitespace and text in random order it gives what the reference regular
    expression gives, and the shape `response_shape` names."""
    import random

    from lpt_utils.pipeline.verify import _ANSWER_BLOCK, _THINK_THEN_ANSWER, parse_response, response_shape

    pieces = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "(B) blue", "So it is A.", "\n\n**Summary**\n"]
    rng = random.Random(0)
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 9)))
        p = parse_response(text)
        m = _THINK_THEN_ANSWER.search(text)
        assert p.ok == bool(m), text
        assert p.shape == response_shape(text), text
        if m:
            later = tuple(a.strip() for a in _ANSWER_BLOCK.findall(text, m.end()))
            assert (p.thought, p.between, p.answer, p.later_answers) == (
                m.group(1).strip(), m.group(2).strip(), m.group(3).strip(), later), text
