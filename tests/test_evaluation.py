"""Evaluation (lpt_utils.pipeline.evaluation): prompts, extraction, scoring, aggregation under both rules, the
results tables (the released rule's beside the paper's numbers, the strict rule's after it), the
CV-Bench authors' aggregate, re-scoring from saved predictions, the profiles' evaluation settings and
the image area cap, model rows and difficulty halves."""

from pathlib import Path

import pandas as pd
import pytest

from lpt_utils import config
from lpt_utils.benchmarks import BenchItem
from lpt_utils.engines.base import GenerationResult
from lpt_utils.pipeline import evaluation as ev

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
    ("The answer is (B).", "(B)", "", True, False),  # strict reads the statement; released: first token "The"
    ("I think it is B", "I think it is B", "", False, False),  # prose is read by neither rule
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


def test_the_fallback_setting_reaches_predictions_rescore_and_difficulty():
    raws = ["(B) blue", "<think> x </think> <answer> (B) </answer>"]
    on = ev.to_frame(ev.predictions("base", "m", "direct", [ITEM, ITEM], [res(r) for r in raws]))
    off = ev.to_frame(ev.predictions("base", "m", "direct", [ITEM, ITEM], [res(r) for r in raws],
                                     whole_response=False))
    assert list(on.correct) == [True, True] and list(on.correct_released) == [True, True]
    assert list(off.answered) == [False, True] and list(off.correct_released) == [False, True]
    assert ev.rescore(on, whole_response=False)[["answered", "correct", "correct_released"]].equals(
        off[["answered", "correct", "correct_released"]])
    assert ev.rescore(off)[["answered", "correct"]].equals(on[["answered", "correct"]])
    d_on = ev.difficulty([ITEM], [res(*raws)])
    d_off = ev.difficulty([ITEM], [res(*raws)], whole_response=False)
    assert d_on.accuracy.item() == 1.0 and d_off.accuracy.item() == 0.5


def test_two_letters_are_answered_but_ambiguous():
    s = ev.score_response("<answer> (B) or (C) </answer>", ITEM.choices, "B")
    assert s.answered and s.match == "ambiguous" and s.named_letter == ""


def test_released_rule_counts_any_option_text():
    s = ev.score_response("<answer> green </answer>", ITEM.choices, "B")
    assert not s.correct and s.correct_released and s.named_letter == "C"


def test_predictions_keep_the_items_subset():
    item = BenchItem("cv_bench", "2D-0", "How many?", ["1", "2"], "B", category="Count", image_path="/i.png",
                     subset="ADE20K")
    [p] = ev.predictions("base", "m", "direct", [item], [res("<answer> (B) </answer>")])
    assert p.subset == "ADE20K" and ev.to_frame([p]).subset.item() == "ADE20K"


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
    s = ev.benchmark_scores(df, "strict").set_index("benchmark")
    assert s.loc["cv_bench", "item_mean"] == pytest.approx(80.0)  # 4 of 5
    assert s.loc["cv_bench", "category_mean"] == pytest.approx(75.0)  # (50 + 100) / 2
    assert s.loc["cv_bench", "score"] == pytest.approx(75.0)  # CV-Bench: mean over its tasks
    assert s.loc["mmvp", "score"] == pytest.approx(40.0)  # MMVP: plain accuracy; unanswered is wrong
    assert s.loc["mmvp", "unanswered"] == 1 and s.loc["mmvp", "unanswered_pct"] == pytest.approx(20.0)
    cats = ev.category_scores(df, "strict")
    assert cats[cats.category == "Count"].accuracy.item() == pytest.approx(50.0)
    assert pd.isna(s.loc["mmvp", "authors_score"])  # only CV-Bench has an authors' aggregate


def test_both_rules_are_scored_released_first():
    df = frame([{"benchmark": "vstar", "category": "direct_attributes", "correct": False, "correct_released": True,
                 "extracted_released": "green"},
                {"benchmark": "vstar", "category": "direct_attributes", "correct": True, "extracted_released": "(B)"},
                {"benchmark": "vstar", "category": "relative_position", "correct": False, "answered": False,
                 "extracted_released": "<think> cut off"}])
    s = ev.benchmark_scores(df)
    assert list(s.rule) == ["released", "strict"]
    rel, strict = s.set_index("rule").loc["released"], s.set_index("rule").loc["strict"]
    assert rel.score == pytest.approx(50.0) and strict.score == pytest.approx(25.0)  # (100 + 0) / 2, (50 + 0) / 2
    # unanswered is per rule: the released script takes the whole response when there is nothing else
    assert (rel.unanswered, strict.unanswered) == (0, 1)
    cats = ev.category_scores(df).set_index(["rule", "category"])
    assert cats.loc[("released", "direct_attributes"), "accuracy"] == 100.0
    assert cats.loc[("strict", "relative_position"), "unanswered"] == 1
    with pytest.raises(ValueError, match="unknown rule"):
        ev.benchmark_scores(df, "loose")


def test_cv_bench_authors_aggregate_on_a_hand_made_frame():
    # ADE20K 3/4, COCO 1/2 (2D = 62.5), Omni3D 2/5 (3D = 40): authors' = (62.5 + 40) / 2 = 51.25.
    # Tasks: Count 3/4, Relation 1/2, Depth 1/3, Distance 1/2: the paper's column = 52.083...
    rows = ([("Count", "ADE20K", c) for c in (True, True, True)] + [("Relation", "ADE20K", False)]
            + [("Count", "COCO", False), ("Relation", "COCO", True)]
            + [("Depth", "Omni3D", c) for c in (True, False, False)]
            + [("Distance", "Omni3D", c) for c in (True, False)])
    df = frame([{"benchmark": "cv_bench", "category": t, "subset": src, "correct": ok, "correct_released": True}
                for t, src, ok in rows])
    s = ev.benchmark_scores(df).set_index("rule")
    assert s.loc["strict", "authors_score"] == pytest.approx(51.25)
    assert s.loc["strict", "score"] == pytest.approx(100 * (3 / 4 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    assert s.loc["released", "authors_score"] == pytest.approx(100.0)
    by_source = ev.subset_scores(df, "strict").set_index("subset")
    assert by_source.accuracy.to_dict() == pytest.approx({"ADE20K": 75.0, "COCO": 50.0, "Omni3D": 40.0})
    # a source with no item (one file read, or eval.limit): no authors' aggregate rather than a wrong one
    assert pd.isna(ev.benchmark_scores(df[df.subset != "COCO"], "strict").authors_score.item())
    table = ev.results_table(s.reset_index(), "strict")
    cols = list(table.columns)
    assert cols[cols.index("CV-Bench") + 1] == "CV-Bench (authors')"
    assert table["CV-Bench (authors')"].item() == pytest.approx(51.25)
    assert ev.paper_value("base", "direct", "CV-Bench (authors')") is None  # not in the paper


def scores_for(values: dict, model="dpo", prompt="think", mmlu=(50.0, 52.0), rule="released"):
    rows = [{"rule": rule, "model": model, "prompt": prompt, "benchmark": b, "score": v, "item_mean": v,
             "category_mean": v, "authors_score": float("nan"), "items": 10, "unanswered": 0}
            for b, v in values.items()]
    if mmlu:
        rows.append({"rule": rule, "model": model, "prompt": prompt, "benchmark": "mmlu_pro", "score": mmlu[1],
                     "item_mean": mmlu[0], "category_mean": mmlu[1], "authors_score": float("nan"), "items": 10,
                     "unanswered": 0})
    return pd.DataFrame(rows)


def test_results_table_in_the_papers_layout_with_paper_numbers():
    five = {"cv_bench": 80.0, "vstar": 60.0, "mmvp": 70.0, "mmstar": 60.0, "mme_realworld": 30.0}
    table = ev.results_table(scores_for(five))
    assert list(table.columns) == ["model", "prompt", "Avg", "CV-Bench", "CV-Bench (authors')", "V*", "MMVP",
                                   "MMStar-V", "MME-RW-V", "MMLU-Pro (items)", "MMLU-Pro (categories)"]
    assert table.Avg.item() == pytest.approx(60.0)
    cmp = ev.compare_with_paper(table).set_index("column")
    assert cmp.loc["Avg", "paper"] == 61.87 and cmp.loc["Avg", "diff"] == pytest.approx(60.0 - 61.87)
    assert cmp.loc["V*", "paper"] == 60.31
    assert cmp.loc["MMLU-Pro (items)", "paper"] == 50.20 == cmp.loc["MMLU-Pro (categories)", "paper"]
    md = ev.table_markdown(table)
    assert "| dpo | think |" in md and "60.00 (61.87, -1.87)" in md
    assert "CV-Bench (authors')" not in ev.results_table(scores_for({"vstar": 50.0})).columns  # CV-Bench not run


def test_avg_needs_all_five_columns_and_other_benchmarks_get_their_own_column():
    table = ev.results_table(scores_for({"cv_bench": 80.0, "synthetic": 40.0}, model="base", prompt="direct",
                                        mmlu=None))
    assert pd.isna(table["Avg"].item()) and table["Synthetic (V*-style)"].item() == 40.0
    cmp = ev.compare_with_paper(table).set_index("column")
    assert cmp.loc["CV-Bench", "paper"] == 74.74 and pd.isna(cmp.loc["Synthetic (V*-style)", "paper"])
    # the paper's columns stay, empty where not run, with the paper's number beside them
    assert pd.isna(cmp.loc["MMVP", "ours"]) and cmp.loc["MMVP", "paper"] == 73.67 and pd.isna(cmp.loc["MMVP", "diff"])
    md = ev.table_markdown(table)
    assert "– (paper: 73.67)" in md and "– (paper: 58.47)" in md and "40.00" in md
    assert "CV-Bench (authors')" not in table.columns or table["CV-Bench (authors')"].isna().all()


def test_results_markdown_puts_the_released_rule_beside_the_paper_and_the_strict_rule_after():
    five = {"cv_bench": 80.0, "vstar": 60.0, "mmvp": 70.0, "mmstar": 60.0, "mme_realworld": 30.0}
    strict = {**five, "vstar": 55.0}
    s = pd.concat([scores_for(five), scores_for(strict, rule="strict")], ignore_index=True)
    s.loc[(s.rule == "strict") & (s.benchmark == "vstar"), "unanswered"] = 2
    md = ev.results_markdown(s)
    released_part, strict_part = md.split("### Scores, strict rule (this project's correction)")
    assert "### Scores, released rule (the paper's rule), beside the paper's numbers" in released_part
    assert "60.00 (60.31, -0.31)" in released_part  # V*, with the paper's number and the difference
    assert "| dpo | think | 59.00 | 80.00 | – | 55.00 | 70.00 |" in strict_part  # no paper numbers here
    assert "60.31" not in strict_part and "| strict | dpo | think | vstar | 2 of 10 |" in strict_part
    both = ev.results_tables(s)
    assert list(both.rule) == ["released", "strict"] and list(both.columns[:3]) == ["rule", "model", "prompt"]
    cmp = ev.compare_with_paper(both).set_index(["rule", "column"])
    assert cmp.loc[("strict", "V*"), "diff"] == pytest.approx(55.0 - 60.31)
    assert cmp.loc[("released", "V*"), "diff"] == pytest.approx(60.0 - 60.31)


def test_write_results_keeps_both_rules(tmp_path):
    df = frame([{"benchmark": "vstar", "category": "direct_attributes", "correct": c, "correct_released": r}
                for c, r in ((True, True), (False, True))])
    paths = ev.write_results(tmp_path, ev.benchmark_scores(df), ev.category_scores(df))
    for key in ("results", "scores", "categories", "vs_paper"):
        assert set(pd.read_csv(paths[key]).rule) == {"released", "strict"}, key
    results = pd.read_csv(paths["results"]).set_index("rule")
    assert results.loc["released", "V*"] == 100.0 and results.loc["strict", "V*"] == 50.0
    md = paths["markdown"].read_text()
    assert md.index("released rule (the paper's rule)") < md.index("strict rule (this project's correction)")


# ----------------------------------------------------------------------------- re-score from saved predictions


def test_rescore_from_saved_predictions(tmp_path):
    mmvp = BenchItem("mmvp", "99", "Long or short tusks?", ["Long", "Short"], "A", corrected_letter="B",
                     image_path="/e.jpg")
    preds = (ev.predictions("base", "m", "think", [ITEM, mmvp],
                            [res("<think> x </think> <answer> (B) </answer>"),
                             res("<think> x </think> <answer> (b) </answer>")], "", corrections=True)
             + ev.predictions("base", "m", "direct", [ITEM, mmvp], [res("Answer: green"), res("nothing")], "",
                              corrections=True))
    df = ev.to_frame(preds)
    path = tmp_path / "data.parquet"
    df.to_parquet(path)
    saved = pd.read_parquet(path)
    again = ev.rescore(saved, corrections=True)
    cols = ["extracted", "answered", "named_letter", "match", "correct", "correct_released", "right_letter"]
    assert again[cols].equals(df[cols])
    # corrections off (the profiles' default): the published (wrong) label of MMVP item 99 is used
    off = ev.rescore(saved)
    assert off.loc[1, "right_letter"] == "A" and not off.loc[1, "correct"] and again.loc[1, "correct"]
    score = ev.benchmark_scores(again, "strict").set_index(["prompt", "benchmark"]).loc[("think", "mmvp"), "score"]
    assert score == 100.0
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
    with pytest.raises(config.ProfileError, match=r"override eval\.prompts: eval\.prompts\.base\.0: "
                                                  r"expected 'direct' or 'think' \(got 'cot'\)"):
        tiny_settings(tmp_path, prompts={"base": ["cot"]})  # refused when the run's settings are resolved


# ----------------------------------------------------------------------------- the profiles' settings, image sizing


@pytest.mark.parametrize("name", ["paper", "released_code"])
def test_paper_profiles_take_the_released_evaluation_scripts_settings(name):
    """The released vllm_eval.py: max_tokens 2048 on every benchmark, image_max_pixels 512*512,
    image_min_pixels 16*16, the whole-response extraction fallback; MMVP labels as published."""
    e = config.load_profile(name)["eval"]
    assert e["sampling"]["max_new_tokens"] == 2048 and e["sampling"]["temperature"] == 0.0
    assert all(not (spec or {}).get("max_new_tokens") for spec in e["benchmarks"].values())  # no own limit
    assert e["image_max_pixels"] == 512 * 512 and e["image_min_pixels"] == 16 * 16
    assert e["whole_response_fallback"] is True and e["mmvp_corrections"] is False
    cfg = ev.engine_config(config.load_profile(name), "/models/sft")
    assert (cfg.max_pixels, cfg.min_pixels, cfg.longest_side) == (262144, 256, None)


def test_no_profile_sizes_evaluation_images_by_a_side_or_picks_one_rule():
    for name in config.available_profiles():
        e = config.load_profile(name)["eval"]
        assert not set(ev.RETIRED_SETTINGS) & set(e), name
        assert e["image_max_pixels"] and e["image_min_pixels"] <= e["image_max_pixels"], name
    tiny = config.load_profile("tiny")["eval"]
    assert tiny["image_max_pixels"] == 224 * 224  # the tiny VLM's scenes, whole


def test_a_retired_eval_setting_is_refused_with_its_replacement():
    s = config.load_profile("paper")
    s["eval"]["longest_side"] = 512
    with pytest.raises(ValueError, match="image_max_pixels"):
        ev.engine_config(s, "/models/sft")
    s["eval"].pop("longest_side")
    s["eval"]["released_scoring"] = True
    with pytest.raises(ValueError, match="both rules"):
        ev.engine_config(s, "/models/sft")


def test_engine_config_caps_images_by_area():
    paper = config.load_profile("paper")
    cfg = ev.engine_config(paper, "/models/sft")
    assert cfg.model == "/models/sft" and cfg.max_pixels == 262144 and cfg.min_pixels == 256
    assert cfg.dtype == "bfloat16" and cfg.max_model_len == paper["student"]["engine"]["max_model_len"]


@pytest.mark.parametrize("size, expected", [
    ((1920, 1080), (682, 384)),  # 16:9 frame: scaled by sqrt(262144 / 2073600) = 512/1440, sides cut to integers
    ((4000, 3000), (591, 443)),
    ((2048, 1024), (724, 362)),  # the longer side is 724, not 512: the area, not the side, is capped
    ((400, 300), (400, 300)),    # under the cap and over the floor: unchanged
    ((512, 512), (512, 512)),    # exactly at the cap
    ((10, 10), (16, 16)),        # under 16 x 16: scaled up to the floor
    ((7, 3), (24, 11)),          # up-scaled and cut to 24 x 10 = 240 < 256: the shorter side grows to fit
])
def test_area_cap_arithmetic(size, expected):
    from lpt_utils.engines.images import capped_size

    w, h = capped_size(*size, max_pixels=512 * 512, min_pixels=16 * 16)
    assert (w, h) == expected
    assert 256 <= w * h <= 262144
    if size[0] * size[1] > 262144:  # LLaMA-Factory's arithmetic: int(side * sqrt(max / area))
        import math

        f = math.sqrt(262144 / (size[0] * size[1]))
        assert (w, h) == (int(size[0] * f), int(size[1] * f))
        assert abs(w / h - size[0] / size[1]) / (size[0] / size[1]) < 0.01  # aspect kept


def test_engine_config_checks_the_floor_and_fingerprints_it_only_when_set():
    from lpt_utils.engines import EngineConfig
    from lpt_utils.engines.common import fingerprint

    with pytest.raises(ValueError, match="min_pixels"):
        EngineConfig(model="m", max_pixels=100, min_pixels=256)
    assert "min_pixels" not in fingerprint("vllm", EngineConfig(model="m", max_pixels=50176), "")
    assert "min_pixels=256" in fingerprint("vllm", EngineConfig(model="m", max_pixels=50176, min_pixels=256), "")


def test_a_1920x1080_frame_keeps_twice_the_pixels_of_a_512_longer_side():
    from lpt_utils.engines.images import capped_size

    area = capped_size(1920, 1080, max_pixels=512 * 512)
    side = capped_size(1920, 1080, longest_side=512)
    assert area[0] * area[1] > 0.99 * 262144 and side == (512, 288)
    assert side[0] * side[1] / (area[0] * area[1]) == pytest.approx(0.56, abs=0.01)  # 44% fewer pixels


def test_benchmark_specs_put_the_synthetic_set_under_the_run(tmp_path):
    run = tiny_settings(tmp_path)
    specs = ev.benchmark_specs(run.settings, run)
    assert list(specs) == ["synthetic"]
    assert specs["synthetic"]["path"] == str(run.stage_dir("sources") / "benchmark_heldout")
    assert specs["synthetic"]["n_scenes"] == 110 and run.benchmark_builder("synthetic") is not None
    paper = config.load_profile("paper")
    specs = ev.benchmark_specs(paper, run)
    assert specs["cv_bench"]["path"] == str(Path(run.root) / "data/benchmarks/cv_bench")
    assert not specs["mmlu_pro"].get("max_new_tokens")  # 2048 for every benchmark: eval.sampling
    assert ev.sampling_for(paper["eval"], specs["mmlu_pro"])["max_new_tokens"] == 2048


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
    assert (d.rule == "released").all() and d.accuracy.equals(d.accuracy_strict)
    assert d.loc["0", "accuracy"] == 1.0 and d.loc["1", "accuracy"] == 0.0 and d.loc["4", "samples"] == 4
    assert list(d.sort_values("accuracy").half) == ["hard", "hard", "easy", "easy", "easy"]
    assert (d.median_accuracy == 0.5).all()
    ties = ev.difficulty(items, [res(right, wrong)] * 5)
    assert (ties.half == "hard").sum() == 2 and ties.equals(ev.difficulty(items, [res(right, wrong)] * 5))


def test_difficulty_halves_follow_the_released_rule_and_keep_the_strict_one():
    items = [BenchItem("vstar", str(i), "q", ["cat", "dog"], "A") for i in range(2)]
    # item 0: every sample names the wrong option's text (right under the released rule's defect)
    results = [res("<think> x </think> <answer> dog </answer>"), res("<think> x </think> <answer> (B) </answer>")]
    d = ev.difficulty(items, results).set_index("item_id")
    assert d.loc["0", "accuracy"] == 1.0 and d.loc["0", "accuracy_strict"] == 0.0
    assert list(d.half) == ["easy", "hard"]
    s = ev.difficulty(items, results, rule="strict").set_index("item_id")
    assert s.loc["0", "accuracy"] == 0.0 and (s.rule == "strict").all()


def test_length_vs_accuracy_and_easy_hard_join():
    df = frame([{"benchmark": "vstar", "category": "direct_attributes", "correct": c, "item_id": str(i),
                 "num_tokens": n} for i, (c, n) in enumerate([(True, 10), (False, 30)])])
    pts = ev.length_vs_accuracy(df, "strict")
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
    """The real path on a few held-out items: vLLM, the eval engine settings (area cap), both
    prompts, the forced think prefix; then a re-run is served from the store."""
    from lpt_utils.engines import RequestStore, make_engine

    run = tiny_settings(tmp_path, limit=6)
    items = {"synthetic": ev.load_benchmarks(run.settings, run)["synthetic"][0]}
    assert len(items["synthetic"]) == 6
    row = ev.ModelRow("base", str(tiny_vlm_dir), ["direct", "think"])
    prefix = ev.think_prefix(run.settings, str(tiny_vlm_dir))
    assert prefix == "<think>"
    engine = make_engine(ev.engine_config(run.settings, row.model), run.resolve_model)
    try:
        assert "max_pixels=50176" in engine.fingerprint and "min_pixels=256" in engine.fingerprint
        store = tmp_path / "base.jsonl"
        df = ev.to_frame(ev.run_model(engine, row, items, run.settings, RequestStore(store), prefix))
    finally:
        engine.close()
    think = df[df.prompt == "think"]
    assert len(df) == 12 and think.raw_output.str.startswith("<think>").all()
    assert think.answered.mean() >= 0.8  # the tiny student learned the tagged format
    assert (df.num_tokens > 0).all() and set(df.finish_reason) <= {"stop", "length"}
    lines = store.read_text().count("\n")
    fresh = make_engine(ev.engine_config(run.settings, row.model), run.resolve_model)
    try:
        again = ev.run_model(fresh, row, items, run.settings, RequestStore(store), prefix)
        assert fresh._llm is None  # never started: every answer came from the store
    finally:
        fresh.close()
    assert store.read_text().count("\n") == lines and ev.to_frame(again).equals(df)


def test_answer_sources_show_how_often_a_model_answers_outside_its_tags():
    rows = [("<answer> (B) </answer>", "direct"), ("(B)", "direct"), ("The answer is (B).", "direct"),
            ("<think> x </think> <answer> B </answer>", "think")]
    df = pd.DataFrame([{"model": "base", "prompt": p, "source": ev.score_response(t, ITEM.choices, "B").source}
                       for t, p in rows])
    table = ev.answer_sources(df)
    assert table.loc[("base", "direct"), "answer_tags"] == round(1 / 3, 3)
    assert table.loc[("base", "direct"), "answer_statement"] == round(1 / 3, 3)
    assert table.loc[("base", "direct"), "whole_response"] == round(1 / 3, 3)
    assert table.loc[("base", "think"), "answer_tags"] == 1.0 and table["responses"].sum() == 4


def test_scored_models_record_the_weights_identity_not_only_the_path(tmp_path):
    run = tiny_settings(tmp_path)
    sft = run.run_dir / "05_sft" / "model"
    sft.mkdir(parents=True)
    (sft / "config.json").write_text("{}")
    (sft / "model.safetensors").write_bytes(b"weights-1")
    rows = ev.model_rows(run.settings, run.run_dir)
    first = ev.scored_models(rows)["sft"]
    assert first["model"] == str(sft) and first["identity"].startswith("weights:")
    (sft / "model.safetensors").write_bytes(b"weights-2")  # trained again at the same path
    assert ev.scored_models(rows)["sft"]["identity"] != first["identity"]
    assert "dpo" not in ev.scored_models(rows)  # not trained: not scored


def test_paired_differences_pair_by_item_and_say_when_a_gain_is_beyond_noise():
    import math
    import statistics

    rows = []
    # 40 items: the base model is right on the first 10, the SFT model on the first 30 (+50 points, every
    # change an improvement); the DPO model differs from base on 2 items only, one each way (0 points)
    for i in range(40):
        for model, right in (("base", i < 10), ("sft", i < 30), ("dpo", i < 10 and i != 0 or i == 39)):
            rows.append({"model": model, "prompt": "think", "benchmark": "b", "item_id": f"q{i}",
                         "correct": right, "correct_released": right})
    rows.append({"model": "sft", "prompt": "think", "benchmark": "b", "item_id": "only-sft", "correct": True,
                 "correct_released": True})  # an item the baseline did not answer: not paired, left out
    table = ev.paired_differences(pd.DataFrame(rows))
    assert set(table.rule) == {"released", "strict"} and set(table.model) == {"sft", "dpo"}
    sft = table[(table.model == "sft") & (table.rule == "strict")].iloc[0]
    assert sft["items"] == 40 and sft["difference"] == pytest.approx(50.0)
    d = [100.0] * 20 + [0.0] * 20
    se = statistics.stdev(d) / math.sqrt(40)
    assert sft["se"] == pytest.approx(se) and sft["ci_low"] == pytest.approx(50 - 1.96 * se)
    assert sft["beyond_2se"]
    dpo = table[(table.model == "dpo") & (table.rule == "strict")].iloc[0]
    assert dpo["difference"] == pytest.approx(0.0) and not dpo["beyond_2se"] and dpo["ci_low"] < 0 < dpo["ci_high"]
    assert ev.paired_differences(pd.DataFrame(rows), baseline=("base", "direct")).empty
    from lpt_utils.viz import eval_plots

    fig = eval_plots.paired_differences(table)
    assert [ax.get_title() for ax in fig.axes] == ["b (n = 40)"]
    assert len(fig.axes[0].get_yticklabels()) == 4  # sft and dpo under both rules
    assert eval_plots.paired_differences(table.iloc[0:0]) is None


def test_subset_intervals_say_whether_each_question_type_is_above_chance():
    rows = []
    # recognition: 45 of 60 right on 4 options (75%, well above 25%); counting: 4 of 20 on 4 options
    # (20%: its interval holds chance); spatial: 6 of 10 on 2 options (50% = chance); no subset: left out
    for sub, right, n, k in (("recognition", 45, 60, 4), ("counting", 4, 20, 4), ("spatial", 6, 10, 2), ("", 5, 5, 4)):
        for i in range(n):
            rows.append({"model": "base", "prompt": "think", "benchmark": "synthetic", "subset": sub,
                         "item_id": f"{sub}{i}", "choices": ["x"] * k, "correct": i < right,
                         "correct_released": True})
    t = ev.subset_intervals(pd.DataFrame(rows)).set_index("subset")
    assert list(t.index) == ["recognition", "counting", "spatial"]
    assert t.loc["recognition", "accuracy"] == pytest.approx(75.0) and t.loc["recognition", "chance"] == pytest.approx(25.0)
    # Wilson's interval for 45/60 at 95%
    assert (t.loc["recognition", "ci_low"], t.loc["recognition", "ci_high"]) == (pytest.approx(62.8, abs=0.1),
                                                                                 pytest.approx(84.2, abs=0.1))
    assert t.above_chance.tolist() == [True, False, False]
    assert t.loc["spatial", "chance"] == pytest.approx(50.0) and 0 <= t.loc["counting", "ci_low"] < 20 < t.loc["counting", "ci_high"]
    released = ev.subset_intervals(pd.DataFrame(rows), rule="released").set_index("subset")
    assert (released.accuracy == 100).all()  # the rule's own column
    assert ev.subset_intervals(pd.DataFrame(rows).drop(columns="subset")).empty


def test_shards_of_the_benchmarks_take_every_item_once_whatever_the_file_order():
    benchmarks = {"vstar": [BenchItem("vstar", str(i), "q", ["a", "b"], "A") for i in range(40)],
                  "mmvp": [BenchItem("mmvp", str(i), "q", ["a", "b"], "A") for i in range(40)]}
    shards = [ev.shard_benchmarks(benchmarks, i, 3) for i in range(3)]
    for name, items in benchmarks.items():
        taken = [it.item_id for s in shards for it in s[name]]
        assert sorted(taken) == sorted(it.item_id for it in items) and all(s[name] for s in shards)
        assert [it.item_id for it in shards[1][name]] == [it.item_id for it in items if it in shards[1][name]]
    # the same ids under two benchmarks are two items, each drawn on its own
    assert [it.item_id for it in shards[0]["vstar"]] != [it.item_id for it in shards[0]["mmvp"]]
    reordered = ev.shard_benchmarks({k: v[::-1] for k, v in benchmarks.items()}, 1, 3)
    assert {k: {it.item_id for it in v} for k, v in reordered.items()} == {
        k: {it.item_id for it in v} for k, v in shards[1].items()}
    assert ev.shard_benchmarks(benchmarks, 0, 1) == benchmarks
