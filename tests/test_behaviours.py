"""Cognitive behaviours: the keyword estimate on labelled examples, the LLM judge's prompt and parsing."""

from types import SimpleNamespace

import pandas as pd
import pytest

from lpt_utils.pipeline import behaviours as bh

LABELLED = [  # (text, behaviours it shows)
    ("I see a red cup. So the answer is red.", set()),
    ("I see a red cup. Wait, the cup is on the left and it is blue. So the answer is blue.", {"backtracking"}),
    ("Let me check: the left object is a blue cup, which matches option B.", {"verification"}),
    ("First I find the table. Then I look at what is on it.", {"subgoal setting"}),
    ("If the answer were (C), the lamp would be left of the sofa, and it is not.", {"backward chaining"}),
    ("Hmm, actually no. Looking again, the star is green. That matches (A).", {"backtracking", "verification"}),
]


@pytest.mark.parametrize("text,shown", LABELLED)
def test_keyword_estimate_on_labelled_examples(text, shown):
    counts = bh.keyword_counts(text)
    assert {b for b, c in counts.items() if c > 0} == shown


def test_keyword_words_inside_other_words_do_not_count():
    assert bh.keyword_counts("The thenar muscle and a firstborn nextdoor.")["subgoal setting"] == 0


def test_judge_prompt_and_count_parsing():
    msgs = bh.judge_messages("  It is red.  ", "verification")
    assert msgs[0]["role"] == "system" and "<count>" in msgs[0]["content"]
    assert "It is red." in msgs[1]["content"] and "verification" in msgs[1]["content"]
    assert "checking an intermediate result" in msgs[1]["content"]
    with pytest.raises(ValueError, match="unknown behaviour"):
        bh.judge_messages("x", "daydreaming")
    assert bh.parse_count("It verifies twice. <count>2</count>") == 2
    assert bh.parse_count("<count>1</count> no, <count> 3 </count>") == 3
    assert bh.parse_count("I think it is two.") is None


def test_llm_judgements_fold_back_per_text_and_missing_counts_are_not_zero():
    reqs = bh.judge_requests(["a", "b"], ["t1", "t2"], {"temperature": 0.0, "max_new_tokens": 64})
    assert len(reqs) == 8 and [r.meta["behaviour"] for r in reqs[:4]] == list(bh.BEHAVIOURS)
    answers = ["<count>1</count>", "<count>0</count>", "no idea", "<count>0</count>"] * 2
    results = [SimpleNamespace(texts=[a]) for a in answers]
    js = bh.judge_llm(results, ["t1", "t2"], "long")
    assert js[0].counts == {"verification": 1, "backtracking": 0, "subgoal setting": None, "backward chaining": 0}
    table = bh.shares(bh.to_rows(js) + bh.to_rows(bh.judge_keywords(["Wait, no."], ["s1"], "simple")))
    assert table.loc["verification", "long"] == 1.0 and pd.isna(table.loc["subgoal setting", "long"])
    assert table.loc["backtracking", "simple"] == 1.0


def test_judge_texts_through_an_engine_stores_calls(tmp_path, monkeypatch):
    """The LLM path end to end with a scripted engine standing in for the judge model: requests go
    through `run_requests` and the store, so a second call is served without the engine."""
    from lpt_utils.engines.base import GenerationResult

    calls = []

    class Judge:
        fingerprint = "scripted-judge"

        def generate(self, reqs):
            calls.append(len(reqs))
            return [GenerationResult(key="", texts=["<count>2</count>" if r.meta["behaviour"] == "verification"
                                                    else "<count>0</count>"], num_tokens=[3],
                                     finish_reasons=["stop"]) for r in reqs]

        def close(self):
            pass

    monkeypatch.setattr(bh, "make_engine", lambda cfg, resolve=None: Judge())
    settings = {"judge": "llm", "max_texts": 2, "engine": {"model": "judge", "backend": "vllm"},
                "sampling": {"temperature": 0.0, "max_new_tokens": 32}}
    items = {"simple": [("s1", "It is red."), ("s2", "It is blue."), ("s3", "It is green.")],
             "long": [("l1", "It is red. Wait, let me check.")]}
    rows = bh.judge_texts(items, settings, store_path=tmp_path / "judge.jsonl")
    assert sum(r["kind"] == "simple" for r in rows) == 2  # max_texts
    assert all(r["verification"] == 2 and r["backtracking"] == 0 and r["judge"] == "llm" for r in rows)
    assert sum(calls) == 3 * 4
    again = bh.judge_texts(items, settings, store_path=tmp_path / "judge.jsonl")
    assert again == rows and sum(calls) == 3 * 4  # served from the store
    with pytest.raises(ValueError, match="judge must be"):
        bh.judge_texts(items, {**settings, "judge": "vibes"})
