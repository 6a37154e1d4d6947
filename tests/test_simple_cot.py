"""Stage 2: forced think prefix, parse + verify + de-duplicate each sample, O/X labels."""

import json

from lpt_utils.engines.base import GenerationResult
from lpt_utils.pipeline import simple_cot

MCQ = {"mcq_id": "img-q00", "image_id": "img", "image_path": "/img.png", "question": "What colour?",
       "choices": ["red", "blue", "green", "yellow"], "answer": "blue", "answer_letter": "B",
       "question_type": "recognition", "choice_form": "paren", "answer_form": "paren_letter"}


def _res(*texts):
    return GenerationResult(key="k", texts=list(texts), num_tokens=[len(t.split()) for t in texts],
                            finish_reasons=["stop"] * len(texts))


def test_requests_force_one_think_tag():
    [req] = simple_cot.requests([MCQ], {"n": 3, "temperature": 0.7}, "<think>")
    assert req.assistant_prefix == "<think>" and req.sampling.n == 3
    assert req.messages[1]["content"][0] == {"type": "image", "image": "/img.png"}
    assert req.meta == {"mcq_id": "img-q00"}


def test_template_that_already_opens_think_gets_no_second_tag(tmp_path):
    plain = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tokenizer_config.json").write_text(json.dumps({"chat_template": plain}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "chat_template.jinja").write_text(plain.replace("<|assistant|>", "<|assistant|><think>\n"))
    assert simple_cot.forced_prefix(str(tmp_path / "a")) == "<think>"
    assert simple_cot.forced_prefix(str(tmp_path / "b")) == ""
    assert simple_cot.forced_prefix("Qwen/Qwen2.5-VL-7B-Instruct") == "<think>"  # remote: not inspectable


def test_score_labels_and_drops():
    res = _res(" I see blue. </think> <answer> (B) </answer>",
               " I see red. </think> <answer> (A) </answer>",
               " I see blue. </think> <answer> (B) </answer>",  # duplicate of the first
               " I see blue, it is",  # truncated: unparsable
               " Hmm. </think> <answer> blue </answer>")
    rows, funnel = simple_cot.score([MCQ], [res])
    assert [r.label for r in rows] == ["O", "X", "O", "", "O"]
    assert [r.drop_reason for r in rows] == ["", "", "duplicate", "unparsable", ""]
    assert rows[0].thought == "I see blue." and rows[0].raw_text.startswith("<think> I see blue.")
    assert rows[1].named_letter == "A" and rows[4].match == "text"
    assert [r.response_id for r in rows][:2] == ["img-q00-s0", "img-q00-s1"]
    assert funnel.steps[0]["dropped"] == {"unparsable: cut_in_thought (stop)": 1} and funnel.steps[1]["dropped"] == {"duplicate": 1}
    s = simple_cot.summary(rows)
    assert (s["kept"], s["O"], s["X"]) == (3, 2, 1) and s["mcqs_by_labels"] == {"both O and X": 1}
    assert s["accuracy_by_type"] == {"recognition": round(2 / 3, 4)}


def test_released_rule_switch_changes_the_label():
    res = _res(" x </think> <answer> red </answer>")
    assert simple_cot.score([MCQ], [res])[0][0].label == "X"
    [row] = simple_cot.score([MCQ], [res], rule="released")[0]
    assert row.label == "O" and row.rule == "released"
    # both verdicts are stored whichever rule labels the row
    assert (row.correct_strict, row.correct_released, row.match_released) == (False, True, "any_option_text")
