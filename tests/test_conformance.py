"""The conformance corpus (tests/data/conformance.yaml): realistic outputs of R1 distills, Qwen2.5-VL and
5- and 10-option benchmarks, each with its expected parse and its verdict under both answer rules."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from lpt_utils.pipeline import evaluation
from lpt_utils.pipeline.verify import SHAPES, parse_response, verdicts

CORPUS = Path(__file__).parent / "data" / "conformance.yaml"
CASES = yaml.safe_load(CORPUS.read_text())["cases"]

# What the corpus must cover (the issue that asked for it lists these shapes).
REQUIRED_TAGS = {
    "r1", "summary_between", "think_close_blank_lines", "answer_said_twice", "final_answer_bold", "boxed",
    "letter_and_text_in_tags", "cut_in_thought", "cut_in_answer", "two_blocks_agree", "two_blocks_disagree",
    "answer_colon_in_thought", "thought_contradicts_answer", "chinese", "empty_answer",
    "qwen", "tagged", "untagged_the_answer_is", "bare_letter", "lower_case", "letter_paren", "letter_colon",
    "option_text_only", "markdown_bold", "five_options", "ten_options",
}


def test_the_corpus_is_well_formed_and_covers_what_real_models_write():
    ids = Counter(c["id"] for c in CASES)
    assert not [i for i, n in ids.items() if n > 1], "duplicate case ids"
    assert len(CASES) >= 80
    missing = REQUIRED_TAGS - {t for c in CASES for t in c["tags"]}
    assert not missing, f"no case tagged {sorted(missing)}"
    for c in CASES:
        assert c["use"] in ("stage", "eval"), c["id"]
        assert c["right"] in "ABCDEFGHIJ"[:len(c["choices"])], c["id"]
        if c.get("judgement"):
            assert c.get("why"), f"{c['id']}: a judgement call needs its reason"
        exp = c["expect"]
        keys = {"parses", "shape", "strict", "released"} if c["use"] == "stage" else \
            {"answer", "released_answer", "strict", "released"}
        assert keys <= set(exp), f"{c['id']}: expect lacks {keys - set(exp)}"
        if c["use"] == "stage":
            assert exp["shape"] in SHAPES, c["id"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(case):
    exp, choices, right = case["expect"], list(case["choices"]), case["right"]
    if case["use"] == "stage":
        p = parse_response(case["text"])
        assert (p.ok, p.shape) == (exp["parses"], exp["shape"])
        if p.ok:
            assert p.answer == exp["answer"]
            v = verdicts(p.answer, choices, right, later_answers=p.later_answers)
            got = (v["strict"].correct, v["released"].correct)
        else:
            got = (False, False)  # an unparsable response is never used
    else:
        s = evaluation.score_response(case["text"], choices, right, whole_response=case.get("whole_response", True))
        assert s.extracted == exp["answer"]
        assert s.extracted_released == exp["released_answer"]
        got = (s.correct, s.correct_released)
    assert got == (exp["strict"], exp["released"]), case.get("why", "")
