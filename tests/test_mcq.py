"""Stage 1: parsing, validity, randomisation and the student prompt."""

import random

import pytest

from lpt_utils.pipeline import mcq


def tagged(question="What colour is the ball?", choices="(A) red (B) blue (C) green (D) yellow",
           answer="blue", qtype="recognition"):
    return (f"<question>{question}</question> <choices>{choices}</choices> "
            f"<answer>{answer}</answer> <type>{qtype}</type>")


def first(text):
    return mcq.parse_tagged_list(text)[0]


def test_format_then_parse_round_trip():
    items = [{"question": "How many cups?", "choices": ["one", "two", "three", "four"], "answer": "two",
              "type": "Counting and Quantification"},
             {"question": "Where is the cat?", "choices": ["left", "right", "top", "bottom"],
              "answer": "left", "type": "spatial & relational"}]
    parsed = mcq.parse_tagged_list(mcq.format_tagged_list(items))
    assert [p.question for p in parsed] == ["How many cups?", "Where is the cat?"]
    assert parsed[0].choices == ["one", "two", "three", "four"]
    assert parsed[0].qtype == "counting and quantification"
    assert parsed[1].qtype == "spatial and relational"
    assert all(mcq.validity(p) == "" for p in parsed)


@pytest.mark.parametrize("choices", [
    "(A) red (B) blue (C) green (D) yellow",
    "A. red\nB. blue\nC. green\nD. yellow",
    "A) red; B) blue; C) green; D) yellow",
])
def test_option_styles(choices):
    assert first(tagged(choices=choices)).choices == ["red", "blue", "green", "yellow"]


def test_out_of_sequence_letter_is_option_text():
    it = first(tagged(choices="(A) Plan A. first (B) two (C) three (D) four", answer="two"))
    assert it.choices == ["Plan A. first", "two", "three", "four"]


@pytest.mark.parametrize("text,reason", [
    (tagged(choices="(A) red (B) blue (C) green"), "option_count_3"),
    (tagged(choices="(A) red (B) blue (C) green (D) yellow (E) pink"), "option_count_5"),
    (tagged(choices="(A) red (B) Blue (C) green (D) blue"), "duplicate_options"),
    (tagged(answer="purple"), "answer_matches_no_option"),
    (tagged(question=""), "missing_question"),
    (tagged(answer=""), "missing_answer"),
    (tagged(choices=""), "option_count_0"),
])
def test_invalid_reasons(text, reason):
    assert mcq.validity(first(text)) == reason


def test_answer_matching_two_options_is_invalid():
    it = mcq.ParsedItem(0, "q?", ["red", "blue", "Red ", "green"], "red", "recognition", "")
    assert mcq.validity(it) in ("duplicate_options", "answer_matches_several_options")
    assert mcq.match_answer_to_options("red", ["red", "blue", "red.", "green"]) == [0, 2]


@pytest.mark.parametrize("answer,expected", [
    ("blue", [1]), ("Blue.", [1]), ("(B)", [1]), ("B.", [1]), ("(B) blue", [1]), ("b", [1]),
    ("(B) green", []), ("(F)", []),
])
def test_answer_forms_of_the_writer(answer, expected):
    assert mcq.match_answer_to_options(answer, ["red", "blue", "green", "yellow"]) == expected


def test_malformed_responses_parse_to_nothing_or_flagged():
    assert mcq.parse_tagged_list("") == []
    assert mcq.parse_tagged_list("Sorry, I cannot help with that.") == []
    # truncated mid-item: still returned, flagged invalid rather than dropped
    items = mcq.parse_tagged_list(tagged() + "\n2. <question>How many dogs?</question> <choices>(A) one (B")
    assert len(items) == 2 and mcq.validity(items[0]) == "" and mcq.validity(items[1]) != ""


def test_randomisation_is_deterministic_and_row_order_independent():
    resp = "\n".join(f"{i}. " + tagged(question=f"Q{i}?", answer="green") for i in range(1, 6))
    a = mcq.mcqs_from_responses("img1", "/x.png", "d", resp, resp, seed=42)
    b = mcq.mcqs_from_responses("img1", "/x.png", "d", resp, resp, seed=42)
    assert [m.to_row() for m in a] == [m.to_row() for m in b]
    for m in a:  # the right answer survives the shuffle
        assert m.choices[mcq.LETTERS.index(m.answer_letter)] == "green"
        assert sorted(m.choices) == sorted(["red", "blue", "green", "yellow"])
    # one MCQ's draw does not depend on which other MCQs exist or their order
    one = mcq.randomise(["red", "blue", "green", "yellow"], 2, 42, "img1-q03")
    assert (one[0], one[2], one[3]) == (a[3].choices, a[3].choice_form, a[3].answer_form)
    other_seed = mcq.mcqs_from_responses("img1", "/x.png", "d", resp, resp, seed=7)
    assert [m.choices for m in other_seed] != [m.choices for m in a]


def test_randomisation_covers_forms_and_positions():
    rng = random.Random(0)
    letters, forms = set(), set()
    for i in range(200):
        ch, right, cf, af = mcq.randomise(["a", "b", "c", "d"], 0, 42, f"id{rng.random()}")
        letters.add(right)
        forms.add((cf, af))
    assert letters == {0, 1, 2, 3}
    assert len(forms) == len(mcq.CHOICE_FORMS) * len(mcq.ANSWER_FORMS)


def test_student_prompt_parts():
    [m] = mcq.mcqs_from_responses("img", "/img.png", "d", "1. " + tagged(), "1. " + tagged(), seed=1)
    msgs = mcq.student_messages(m)
    system, user = msgs[0]["content"], msgs[1]["content"]
    assert "<think>" in system and "<answer>" in system
    assert "recognition" in system
    assert mcq.ANSWER_FORMS[m.answer_form] in system
    assert user[0] == {"type": "image", "image": "/img.png"}
    text = user[1]["text"]
    assert text.startswith("What colour is the ball?")
    assert "select from the following choices" in text.lower()
    for line in mcq.choice_lines(m):
        assert line in text
    assert mcq.answer_in_form(m) in {f"({m.answer_letter})", f"{m.answer_letter}.", "blue"}


def test_writer_prompt_asks_for_the_paper_parts():
    system = mcq.writer_messages("A red ball.")[0]["content"].lower()
    for part in ("four options", "<question>", "<choices>", "<answer>", "<type>", "spatial and relational",
                 "counting and quantification", "recognition", "general knowledge", "short phrase"):
        assert part in system, part
    assert mcq.writer_messages(" A red ball. ")[1]["content"].endswith("A red ball.")


def _result(text, i=0):
    from lpt_utils.engines.base import GenerationResult

    return GenerationResult(key=f"k{i}", texts=[text], num_tokens=[1], finish_reasons=["stop"],
                            meta={"image_id": f"img{i}"})


def test_reformat_modes_select_responses():
    good = "1. " + tagged()
    loose = "1. What colour is the ball? A) red B) blue C) green D) yellow. Answer: blue (recognition)"
    missing_type = "1. <question>Q?</question> <choices>(A) a (B) b (C) c (D) d</choices> <answer>a</answer>"
    res = [_result(good, 0), _result(loose, 1), _result(missing_type, 2)]
    sampling = {"n": 1, "temperature": 0.0}
    assert [r.meta["index"] for r in mcq.reformat_requests(res, sampling, "always")] == [0, 1, 2]
    assert [r.meta["index"] for r in mcq.reformat_requests(res, sampling, "when_unparsed")] == [1, 2]
    assert mcq.reformat_requests(res, sampling, "never") == []
    with pytest.raises(ValueError):
        mcq.reformat_requests(res, sampling, "sometimes")
    # the reformat prompt carries the writer's response
    req = mcq.reformat_requests(res, sampling, "always")[1]
    assert loose in req.messages[1]["content"]
    # ... and asks for exactly the tagged structure stage 1 parses, one numbered item per question
    system = req.messages[0]["content"]
    assert req.messages[0]["role"] == "system" and "numbered" in system
    for tag in ("<question>", "<choices>", "<answer>", "<type>"):
        assert tag in system, tag
    assert "(A)" in system and "(D)" in system


def test_build_mcqs_parses_reformatted_text_where_present():
    from lpt_utils.pipeline.captions import CaptionRecord

    recs = [CaptionRecord("img0", "/a.png", "d0"), CaptionRecord("img1", "/b.png", "d1")]
    writer = [_result("1. " + tagged(), 0), _result("unparsable prose", 1)]
    fixed = _result("1. " + tagged(question="Fixed?", answer="red") + "\n2. " + tagged(answer="nope"), 1)
    fixed.meta["index"] = 1
    mcqs, funnel = mcq.build_mcqs(recs, writer, [fixed], seed=0)
    assert [m.question for m in mcqs] == ["What colour is the ball?", "Fixed?", "What colour is the ball?"]
    assert mcqs[0].reformatted_response == "" and mcqs[1].reformatted_response.startswith("1. <question>Fixed")
    assert mcqs[1].raw_response == "unparsable prose"
    assert funnel.steps[-1] == {"step": funnel.steps[-1]["step"], "in": 3, "out": 2,
                                "dropped": {"answer_matches_no_option": 1}}
