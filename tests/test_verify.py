"""Answer verification: every accepted form and the edge cases the notebooks rely on."""

import pytest

from lpt_utils.verify import extract_answer, parse_response, verify

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
    ("purple", "no_match"), ("The answer is (B)", "no_match"), ("(E)", "no_match"),
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
    v = verify("red", CHOICES, "B", released_any_option_text=True)
    assert v.correct and v.how == "any_option_text"
    # letters are still decided by the letter under the released rule
    assert not verify("(A)", CHOICES, "B", released_any_option_text=True).correct


def test_parse_response():
    p = parse_response("<think> I see a blue ball.\nIt is round. </think>\n<answer> (B) </answer> tail")
    assert p.ok and p.thought == "I see a blue ball.\nIt is round." and p.answer == "(B)"
    first = parse_response("<think>a</think><answer>A</answer><think>b</think><answer>B</answer>")
    assert first.answer == "A"
    for bad in ["<think> truncated thought without end", "<think> x </think> no answer tags",
                "<answer>B</answer>", "", "<think> x </think> <answer> B"]:
        assert not parse_response(bad).ok, bad
    assert parse_response("<think></think><answer></answer>").ok  # parsable; the empty answer is wrong


def test_extract_answer_for_evaluation():
    assert extract_answer("<think>x</think><answer>(C)</answer>") == "(C)"
    assert extract_answer("blah\nAnswer: (D) yellow\nmore") == "(D) yellow"
    assert extract_answer("I think it is B") is None
    assert extract_answer("") is None
    assert extract_answer("Answer:   ") is None
