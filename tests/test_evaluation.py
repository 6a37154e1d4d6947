"""Evaluation (lpt_utils.evaluation): prompts, extraction, scoring, aggregation, the results table
beside the paper's numbers, re-scoring from saved predictions, model rows and difficulty halves."""

from pathlib import Path

import pandas as pd
import pytest

from lpt_utils import config, evaluation as ev
from lpt_utils.benchmarks import BenchItem
from lpt_utils.engines.base import GenerationResult

ITEM = BenchItem("vstar", "7", "What colour is the cup?", ["red", "blue", "green", "white"], "B",
                 category="direct_attributes", image_path="/img.png")
TEXT_ITEM = BenchItem("mmlu_pro", "70", "Which law applies?", [f"law {i}" for i in range(10)], "J",
                      category="law", domain="law")


def res(*texts):
    return GenerationResult(key="k", texts=list(texts), num_tokens=[len(t.split()) for t in texts],
                            finish_reasons=["stop"] * len(texts))


# ----------------------------------------------------------------------------- prompts


def test_messages_direct_and_think_prompts():
    direct, think = ev.messages(ITEM, "direct"), ev.messages(ITEM, "think")
    assert direct[1] == think[1]  # same user turn
    assert "<think>" not in direct[0]["content"] and "<think>" in think[0]["content"]
    for m in (direct, think):
        assert "<answer>" in m[0]["content"] and "(B)" in m[0]["content"] and "image" in m[0]["content"]
    image, text = direct[1]["content"]
    assert image == {"type": "image", "image": "/img.png"}
    assert text["text"].splitlines() == ["What colour is the cup?", "Select from the following choices.",
                                         "(A) red", "(B) blue", "(C) green", "(D) white"]
    with pytest.raises(ValueError):
        ev.messages(ITEM, "cot")


def test_text_only_item_names_its_domain_and_has_no_image():
    sys_msg, user = ev.messages(TEXT_ITEM, "think")
    assert isinstance(user["content"], str) and "image" not in sys_msg["content"]
    assert user["content"].startswith("This question is from the domain of law.")
    assert user["content"].splitlines()[-1] == "(J) law 9"


def test_requests_force_the_prefix_on_think_only_and_use_the_benchmark_token_limit():
    spec = {"path": "x", "max_new_tokens": 2048}
    s = ev.sampling_for({"sampling": {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 1024}}, spec)
    [d] = ev.requests([TEXT_ITEM], "direct", s, "<think>")
    [t] = ev.requests([TEXT_ITEM], "think", s, "<think>")
    assert d.assistant_prefix == "" and t.assistant_prefix == "<think>"
    assert t.sampling.max_new_tokens == 2048 and t.sampling.temperature == 0.0
    assert t.meta == {"benchmark": "mmlu_pro", "item_id": "70", "prompt": "think"}


# ----------------------------------------------------------------------------- extraction + scoring


@pytest.mark.parametrize("raw, extracted, reason, correct, released", [
    # think outputs
    ("<think> the cup is blue </think> <answer> (B) </answer>", "(B)", "", True, True),
    ("<think> it is blue </think> <answer>B</answer>", "B", "", True, True),  # letter only
    ("<think> hmm </think> <answer> blue </answer>", "blue", "", True, True),  # option text only
    ("<think> hmm </think> <answer> (B) blue </answer>", "(B) blue", "", True, True),  # "(B) text"
    ("<think> hmm </think> <answer> (B) or (C) </answer>", "(B) or (C)", "", False, True),  # two letters
    # cut off in the thought: the whole response is all there is, and it names nothing
    ("<think> the cup is blue, so (B)", "<think> the cup is blue, so (B)", "", False, False),
    ("<think> so the answer is B </think>", "", "empty_answer", False, False),  # nothing after the thought
    ("<think> x </think> <answer> </answer>", "", "empty_answer", False, False),  # empty
    # direct outputs
    ("<answer> (B) </answer>", "(B)", "", True, True),
    ("<answer>(C)</answer>", "(C)", "", False, False),
    ("B", "B", "", True, True),  # a bare letter: the released script's whole-response fallback
    ("(B) blue", "(B) blue", "", True, True),
    ("The answer is (B).", "The answer is (B).", "", False, False),  # prose is read by neither rule
    ("Answer: (B)", "(B)", "", True, True),  # the text after "Answer:"
    ("Answer: B. blue\nmore text", "B. blue", "", True, True),
    ("", "", "empty_answer", False, False),
])
def test_extraction_and_matching(raw, extracted, reason, correct, released):
    s = ev.score_response(raw, ITEM.choices, "B")
    assert (s.extracted, s.unanswered_reason, s.correct, s.correct_released) == (extracted, reason, correct,
                                                                                released)
    assert s.answered == (reason == "")
    if not s.answered:
        assert s.named_letter == "" and s.match == "unanswered"


def test_without_the_whole_response_fallback_an_untagged_answer_is_unanswered():
    s = ev.score_response("B", ITEM.choices, "B", whole_response=False)
    assert (s.extracted, s.unanswered_reason, s.correct, s.correct_released) == (None, "no_answer", False, False)
    assert ev.score_response("Answer: B", ITEM.choices, "B", whole_response=False).correct


def test_two_letters_are_answered_but_ambiguous():
    s = ev.score_response("<answer> (B) or (C) </answer>", ITEM.choices, "B")
    assert s.answered and s.match == "ambiguous" and s.named_letter == ""


def test_released_rule_counts_any_option_text():
    s = ev.score_response("<answer> green </answer>", ITEM.choices, "B")
    assert not s.correct and s.correct_released and s.named_letter == "C"


def test_predictions_keep_raw_output_with_the_prefix():
    [p] = ev.predictions("base", "tiny:vlm", "think", [ITEM], [res(" blue </think> <answer> (B) </answer>")],
                         "<think>")
    assert p.raw_output.startswith("<think> blue") and p.correct and p.right_letter == "B"
    assert (p.model, p.prompt, p.benchmark, p.item_id, p.category) == ("base", "think", "vstar", "7",
                                                                        "direct_attributes")
    [d] = ev.predictions("base", "tiny:vlm", "direct", [ITEM], [res("<answer> (A) </answer>")], "<think>")
    assert d.raw_output == "<answer> (A) </answer>" and not d.correct and d.named_letter == "A"


# ----------------------------------------------------------------------------- aggregation


def frame(rows):
    """Predictions with only the columns aggregation reads."""
    base = {"model": "base", "prompt": "think", "answered": True, "correct_released": None, "num_tokens": 10}
    df = pd.DataFrame([{**base, **r} for r in rows])
    df["correct_released"] = df["correct_released"].fillna(df["correct"]).astype(bool)
    return df


def test_category_mean_vs_item_mean():
    df = frame([{"benchmark": "cv_bench", "category": "Count", "correct": c} for c in (True, False)]
               + [{"benchmark": "cv_bench", "category": "Depth", "correct": True} for _ in range(3)]
               + [{"benchmark": "mmvp", "category": "", "correct": c} for c in (True, True, False, False)]
               + [{"benchmark": "mmvp", "category": "", "correct": False, "answered": False}])
    s = ev.benchmark_scores(df).set_index("benchmark")
    assert s.loc["cv_bench", "item_mean"] == pytest.approx(80.0)  # 4 of 5
    assert s.loc["cv_bench", "category_mean"] == pytest.approx(75.0)  # (50 + 100) / 2
    assert s.loc["cv_bench", "score"] == pytest.approx(75.0)  # CV-Bench: mean over its tasks
    assert s.loc["mmvp", "score"] == pytest.approx(40.0)  # MMVP: plain accuracy; unanswered is wrong
    assert s.loc["mmvp", "unanswered"] == 1 and s.loc["mmvp", "unanswered_pct"] == pytest.approx(20.0)
    cats = ev.category_scores(df)
    assert cats[cats.category == "Count"].accuracy.item() == pytest.approx(50.0)


def test_released_rule_switch_and_other_score():
    df = frame([{"benchmark": "vstar", "category": "direct_attributes", "correct": False, "correct_released": True},
                {"benchmark": "vstar", "category": "direct_attributes", "correct": True}])
    strict, loose = ev.benchmark_scores(df), ev.benchmark_scores(df, released=True)
    assert strict.score.item() == pytest.approx(50.0) and strict.score_other.item() == pytest.approx(100.0)
    assert loose.score.item() == pytest.approx(100.0) and loose.rule.item() == "released"


def scores_for(values: dict, model="dpo", prompt="think", mmlu=(50.0, 52.0)):
    rows = [{"model": model, "prompt": prompt, "benchmark": b, "score": v, "item_mean": v, "category_mean": v,
             "score_other": v} for b, v in values.items()]
    if mmlu:
        rows.append({"model": model, "prompt": prompt, "benchmark": "mmlu_pro", "score": mmlu[1],
                     "item_mean": mmlu[0], "category_mean": mmlu[1], "score_other": mmlu[1]})
    return pd.DataFrame(rows)


def test_results_table_in_the_papers_layout_with_paper_numbers():
    five = {"cv_bench": 80.0, "vstar": 60.0, "mmvp": 70.0, "mmstar": 60.0, "mme_realworld": 30.0}
    table = ev.results_table(scores_for(five))
    assert list(table.columns) == ["model", "prompt", "Avg", "CV-Bench", "V*", "MMVP", "MMStar-V", "MME-RW-V",
                                   "MMLU-Pro (items)", "MMLU-Pro (categories)"]
    assert table.Avg.item() == pytest.approx(60.0)
    cmp = ev.compare_with_paper(table).set_index("column")
    assert cmp.loc["Avg", "paper"] == 61.87 and cmp.loc["Avg", "diff"] == pytest.approx(60.0 - 61.87)
    assert cmp.loc["V*", "paper"] == 60.31
    assert cmp.loc["MMLU-Pro (items)", "paper"] == 50.20 == cmp.loc["MMLU-Pro (categories)", "paper"]
    md = ev.results_markdown(table)
    assert "| dpo | think |" in md and "60.00 (61.87, -1.87)" in md


def test_avg_needs_all_five_columns_and_other_benchmarks_get_their_own_column():
    table = ev.results_table(scores_for({"cv_bench": 80.0, "synthetic": 40.0}, model="base", prompt="direct",
                                        mmlu=None))
    assert pd.isna(table["Avg"].item()) and table["Synthetic (V*-style)"].item() == 40.0
    cmp = ev.compare_with_paper(table).set_index("column")
    assert cmp.loc["CV-Bench", "paper"] == 74.74 and pd.isna(cmp.loc["Synthetic (V*-style)", "paper"])
    # the paper's columns stay, empty where not run, with the paper's number beside them
    assert pd.isna(cmp.loc["MMVP", "ours"]) and cmp.loc["MMVP", "paper"] == 73.67 and pd.isna(cmp.loc["MMVP", "diff"])
    md = ev.results_markdown(table)
    assert "– (paper: 73.67)" in md and "– (paper: 58.47)" in md and "40.00" in md


def test_markdown_shows_the_other_rule_where_it_differs():
    s = scores_for({"vstar": 50.0}, model="sft", mmlu=None)
    s.loc[0, "score_other"] = 55.0
    md = ev.results_markdown(ev.results_table(s), s)
    assert "[other rule: 55.00]" in md


# ----------------------------------------------------------------------------- re-score from saved predictions


def test_rescore_from_saved_predictions(tmp_path):
    mmvp = BenchItem("mmvp", "99", "Long or short tusks?", ["Long", "Short"], "A", corrected_letter="B",
                     image_path="/e.jpg")
    preds = (ev.predictions("base", "m", "think", [ITEM, mmvp],
                            [res("<think> x </think> <answer> (B) </answer>"),
                             res("<think> x </think> <answer> (b) </answer>")], "")
             + ev.predictions("base", "m", "direct", [ITEM, mmvp], [res("Answer: green"), res("nothing")], ""))
    df = ev.to_frame(preds)
    path = tmp_path / "data.parquet"
    df.to_parquet(path)
    saved = pd.read_parquet(path)
    again = ev.rescore(saved)
    cols = ["extracted", "answered", "named_letter", "match", "correct", "correct_released", "right_letter"]
    assert again[cols].equals(df[cols])
    # corrections off: the published (wrong) label of MMVP item 99 is used
    off = ev.rescore(saved, corrections=False)
    assert off.loc[1, "right_letter"] == "A" and not off.loc[1, "correct"] and again.loc[1, "correct"]
    assert ev.benchmark_scores(again).set_index(["prompt", "benchmark"]).loc[("think", "mmvp"), "score"] == 100.0
    # a verifier decision replayed on the raw text, not on the stored verdict
    saved.loc[2, "correct"] = True
    assert not ev.rescore(saved).loc[2, "correct"] and ev.rescore(saved).loc[2, "correct_released"]


# ----------------------------------------------------------------------------- models, specs, limits


def tiny_settings(tmp_path, **eval_overrides):
    overrides = {"paths.outputs": str(tmp_path / "out"), "paths.figures": str(tmp_path / "fig"),
                 **{f"eval.{k}": v for k, v in eval_overrides.items()}}
    return config.resolve_run("tiny", "evaltest", overrides)


def test_model_rows_skip_a_missing_trained_model_with_the_reason(tmp_path):
    run = tiny_settings(tmp_path)
    sft = run.run_dir / "05_sft" / "model"
    sft.mkdir(parents=True)
    (sft / "config.json").write_text("{}")
    rows = {r.name: r for r in ev.model_rows(run.settings, run.run_dir)}
    assert rows["base"].model == "tiny:vlm" and rows["base"].prompts == ["direct", "think"]
    assert rows["sft"].available and rows["sft"].model == str(sft) and rows["sft"].prompts == ["think"]
    assert not rows["dpo"].available and "06_dpo" in rows["dpo"].reason


def test_model_rows_accept_hub_ids_and_reject_unknown_prompts(tmp_path):
    run = tiny_settings(tmp_path, models={"base": "student", "other": "Org/Some-VLM"},
                        prompts={"base": ["direct"], "other": ["think"]})
    rows = ev.model_rows(run.settings, run.run_dir)
    assert [(r.name, r.model, r.available) for r in rows] == [("base", "tiny:vlm", True),
                                                              ("other", "Org/Some-VLM", True)]
    bad = tiny_settings(tmp_path, prompts={"base": ["cot"]})
    with pytest.raises(ValueError, match="unknown prompt"):
        ev.model_rows(bad.settings, bad.run_dir)


def test_engine_config_sizes_images_by_the_longer_side():
    paper = config.load_profile("paper")
    cfg = ev.engine_config(paper, "/models/sft")
    assert cfg.model == "/models/sft" and cfg.longest_side == 512 and cfg.max_pixels is None
    assert cfg.dtype == "bfloat16" and cfg.max_model_len == paper["student"]["engine"]["max_model_len"]
    from lpt_utils.engines.images import capped_size

    assert capped_size(2048, 1024, cfg.max_pixels, cfg.longest_side) == (512, 256)


def test_benchmark_specs_build_the_synthetic_set_under_the_run(tmp_path):
    run = tiny_settings(tmp_path)
    specs = ev.benchmark_specs(run.settings, run)
    assert list(specs) == ["synthetic"]
    assert specs["synthetic"]["path"] == str(run.stage_dir("sources") / "benchmark_heldout")
    assert specs["synthetic"]["n_scenes"] == run.settings["data"]["synthetic"]["n_heldout"]
    paper = config.load_profile("paper")
    specs = ev.benchmark_specs(paper, run)
    assert specs["cv_bench"]["path"] == str(Path(run.root) / "data/benchmarks/cv_bench")
    assert specs["mmlu_pro"]["max_new_tokens"] == 2048


def test_take_limit_is_independent_of_file_order():
    items = [BenchItem("vstar", str(i), "q", ["a", "b"], "A") for i in range(50)]
    a = ev.take_limit(items, 10)
    b = ev.take_limit(list(reversed(items)), 10)
    assert len(a) == 10 and {x.item_id for x in a} == {x.item_id for x in b}
    assert [x.item_id for x in a] == sorted((x.item_id for x in a), key=int)  # file order kept
    assert ev.take_limit(items, None) == items


def test_load_funnel_counts_every_record_by_reason():
    from collections import Counter

    from lpt_utils.benchmarks import LoadReport

    items = [BenchItem("mmstar", str(i), "q", ["a", "b"], "A") for i in range(5)]
    report = LoadReport("mmstar", total=12, kept=8, filtered=Counter({"math": 3}), skipped=Counter({"missing_image": 1}))
    funnel = ev.load_funnel({"mmstar": (items, report), "mmvp": (items[:2], LoadReport("mmvp", total=2, kept=2))})
    assert funnel.steps == [
        {"step": "mmstar: records -> items", "in": 12, "out": 8, "dropped": {"left out: math": 3, "missing_image": 1}},
        {"step": "mmstar: eval.limit", "in": 8, "out": 5, "dropped": {"over eval.limit": 3}},
        {"step": "mmvp: records -> items", "in": 2, "out": 2, "dropped": {}}]
    with pytest.raises(ValueError, match="every drop needs a reason"):  # an uncounted drop is refused
        ev.load_funnel({"x": (items, LoadReport("x", total=9, kept=5))})


# ----------------------------------------------------------------------------- difficulty, lengths


def test_difficulty_halves_from_sample_accuracy():
    items = [BenchItem("vstar", str(i), "q", ["a", "b"], "A") for i in range(5)]
    right, wrong = "<think> x </think> <answer> (A) </answer>", "<think> x </think> <answer> (B) </answer>"
    results = [res(*[right] * k + [wrong] * (4 - k)) for k in (4, 0, 3, 1, 2)]
    d = ev.difficulty(items, results).set_index("item_id")
    assert d.loc["0", "accuracy"] == 1.0 and d.loc["1", "accuracy"] == 0.0 and d.loc["4", "samples"] == 4
    assert list(d.sort_values("accuracy").half) == ["hard", "hard", "easy", "easy", "easy"]
    assert (d.median_accuracy == 0.5).all()
    ties = ev.difficulty(items, [res(right, wrong)] * 5)
    assert (ties.half == "hard").sum() == 2 and ties.equals(ev.difficulty(items, [res(right, wrong)] * 5))


def test_length_vs_accuracy_and_easy_hard_join():
    df = frame([{"benchmark": "vstar", "category": "direct_attributes", "correct": c, "item_id": str(i),
                 "num_tokens": n} for i, (c, n) in enumerate([(True, 10), (False, 30)])])
    pts = ev.length_vs_accuracy(df)
    assert pts.mean_tokens.item() == 20.0 and pts.score.item() == 50.0
    diff = pd.DataFrame({"benchmark": ["vstar", "vstar"], "item_id": ["0", "1"], "half": ["easy", "hard"],
                         "accuracy": [1.0, 0.0]})
    j = ev.with_difficulty(df, diff)
    assert list(j.half) == ["easy", "hard"] and list(j.num_tokens) == [10, 30]


# ----------------------------------------------------------------------------- a re-run calls no model


class CountingEngine:
    """Answers every request with the right option in tags; counts what it was asked."""

    fingerprint = "counting"
    batch_size = 64

    def __init__(self):
        self.calls = 0

    def generate(self, requests):
        self.calls += len(requests)
        return [GenerationResult(key="", texts=[" x </think> <answer> (B) </answer>"] * r.sampling.n,
                                 num_tokens=[5] * r.sampling.n, finish_reasons=["stop"] * r.sampling.n)
                for r in requests]

    def close(self):
        pass


def test_run_model_and_difficulty_use_the_store(tmp_path):
    from lpt_utils.engines import RequestStore

    run = tiny_settings(tmp_path)
    items = {"synthetic": [ITEM, BenchItem("synthetic", "8", "q", ["a", "b"], "B", category="relative_position",
                                           image_path="/img.png")]}
    row = ev.ModelRow("base", "tiny:vlm", ["direct", "think"])
    engine = CountingEngine()
    store = tmp_path / "requests" / "base.jsonl"
    with pytest.MonkeyPatch.context() as mp:  # no image files needed: keys hash image bytes
        mp.setattr("lpt_utils.engines.base.file_digest", lambda p: "digest")
        preds = ev.run_model(engine, row, items, run.settings, RequestStore(store), "<think>")
        assert engine.calls == 4 and len(preds) == 4
        assert [(p.prompt, p.item_id) for p in preds] == [("direct", "7"), ("direct", "8"), ("think", "7"),
                                                         ("think", "8")]
        again = ev.run_model(engine, row, items, run.settings, RequestStore(store), "<think>")
        assert engine.calls == 4 and ev.to_frame(again).equals(ev.to_frame(preds))
        d = ev.run_difficulty(engine, items, run.settings, RequestStore(tmp_path / "requests" / "d.jsonl"), "<think>")
        assert engine.calls == 6 and (d.samples == run.settings["eval"]["difficulty"]["samples"]).all()
    think = [p for p in preds if p.prompt == "think"]
    assert all(p.raw_output.startswith("<think>") for p in think) and think[0].correct


@pytest.mark.slow
def test_tiny_vlm_answers_the_synthetic_benchmark_through_vllm(tmp_path, tiny_vlm_dir):
    """The real path on a few held-out items: vLLM, the eval engine settings (longer side), both
    prompts, the forced think prefix; then a re-run is served from the store."""
    from lpt_utils.engines import RequestStore, make_engine

    run = tiny_settings(tmp_path, limit=6)
    items = {"synthetic": ev.load_benchmarks(run.settings, run)["synthetic"][0]}
    assert len(items["synthetic"]) == 6
    row = ev.ModelRow("base", str(tiny_vlm_dir), ["direct", "think"])
    prefix = ev.think_prefix(run.settings, str(tiny_vlm_dir))
    assert prefix == "<think>"
    engine = make_engine(ev.engine_config(run.settings, row.model), run.models_dir)
    try:
        assert "longest_side=224" in engine.fingerprint and "max_pixels=None" in engine.fingerprint
        store = tmp_path / "base.jsonl"
        df = ev.to_frame(ev.run_model(engine, row, items, run.settings, RequestStore(store), prefix))
    finally:
        engine.close()
    think = df[df.prompt == "think"]
    assert len(df) == 12 and think.raw_output.str.startswith("<think>").all()
    assert think.answered.mean() >= 0.8  # the tiny student learned the tagged format
    assert (df.num_tokens > 0).all() and set(df.finish_reason) <= {"stop", "length"}
    lines = store.read_text().count("\n")
    fresh = make_engine(ev.engine_config(run.settings, row.model), run.models_dir)
    try:
        again = ev.run_model(fresh, row, items, run.settings, RequestStore(store), prefix)
        assert fresh._llm is None  # never started: every answer came from the store
    finally:
        fresh.close()
    assert store.read_text().count("\n") == lines and ev.to_frame(again).equals(df)
