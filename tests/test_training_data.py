"""Stage 4: subsampling, the SFT sets, the DPO pair rules, deduplication, the validation split, and
the files `write_training_data` writes (the sharegpt format itself is tested in test_sharegpt.py)."""

from collections import Counter

import pytest

from lpt_utils.pipeline.training_data import (
    Trace,
    assistant_turn,
    build_dpo,
    build_sft,
    dedup_pairs,
    dpo_pairs,
    length_weights,
    split_validation,
    subsample,
)


def _mcq(i):
    return {"mcq_id": f"m{i}", "image_id": f"img{i // 2}", "image_path": f"/imgs/img{i // 2}.png",
            "question": f"Question {i}?", "choices": ["red", "blue", "green", "yellow"], "answer": "blue",
            "answer_letter": "B", "question_type": "recognition", "choice_form": "paren",
            "answer_form": "paren_letter"}


MCQS = {f"m{i}": _mcq(i) for i in range(4)}


def _t(kind, tid, mcq="m0", simple=None, thought=None, answer="(B)", length=10, added=0, prefix=""):
    return Trace(kind, tid, simple or tid, mcq, thought or f"thought of {tid}", answer, prefix, length, added)


# ----------------------------------------------------------------------------- subsampling


def test_length_weights_halve_per_rank_longest_first():
    w = length_weights([5, 20, 10])
    assert w[1] == pytest.approx(2 * w[2]) and w[2] == pytest.approx(2 * w[0]) and w.sum() == pytest.approx(1)


def test_subsample_quota_per_mcq_favours_long_and_fills_shortfall():
    rows = [{"mcq_id": "a", "id": f"a{k}", "len": k} for k in range(8)] + [{"mcq_id": "b", "id": "b0", "len": 1}]
    got = subsample(rows, 6, lambda r: r["len"], seed=0)
    assert len(got) == 6 and len({r["id"] for r in got}) == 6  # without replacement
    # quota 3 per MCQ; "b" has one row, so the shortfall (2) is filled from "a"'s remaining rows
    assert sum(r["mcq_id"] == "a" for r in got) == 5 and any(r["id"] == "b0" for r in got)
    # deterministic, and independent of input order
    assert subsample(rows, 6, lambda r: r["len"], seed=0) == got
    assert sorted(r["id"] for r in subsample(rows[::-1], 6, lambda r: r["len"], seed=0)) == sorted(r["id"] for r in got)
    # the longest rows are drawn far more often than the shortest (weight 0.5^rank)
    picks = Counter(r["id"] for s in range(300) for r in subsample(rows[:8], 2, lambda r: r["len"], seed=s))
    assert picks["a7"] > 200 and picks["a0"] < 10
    assert subsample(rows, 100, lambda r: r["len"], seed=0) == rows  # more than there is: all of it
    assert subsample([], 5, lambda r: 0, seed=0) == []


def test_subsample_ratio_sizes():
    rows = [{"mcq_id": f"m{k % 10}", "len": k} for k in range(375)]
    assert len(subsample(rows, int(len(rows) / 3.75), lambda r: r["len"], seed=1)) == 100


# ----------------------------------------------------------------------------- SFT


def _world():
    """m0: O, X, O→O, O→X, X→O, X→X; m1: O, X, X→O; m2: O only."""
    return [
        _t("O", "m0-s0"), _t("X", "m0-s1", answer="(A)", thought="it is red"),
        _t("O→O", "m0-s0-l0", simple="m0-s0", thought="Thought of m0-s0. Wait, yes blue.", length=30, prefix="Thought of m0-s0."),
        _t("O→X", "m0-s0-l1", simple="m0-s0", thought="Thought of m0-s0. Hmm, red?", answer="(A)", length=25,
           prefix="Thought of m0-s0."),
        _t("X→O", "m0-s1-l0", simple="m0-s1", thought="It is red. Wait, no: blue.", length=20, added=5, prefix="It is red."),
        _t("X→X", "m0-s1-l1", simple="m0-s1", thought="It is red. Wait, still red.", answer="(A)", length=20, added=4,
           prefix="It is red."),
        _t("O", "m1-s0", mcq="m1"), _t("X", "m1-s1", mcq="m1", answer="(C)"),
        _t("X→O", "m1-s1-l0", mcq="m1", simple="m1-s1", thought="Thought of m1-s1. Wait, blue.", added=3,
           prefix="Thought of m1-s1."),
        _t("O", "m2-s0", mcq="m2"),
    ]


def test_sft_sets_and_the_masked_prefix():
    sets = build_sft(_world(), MCQS, simple_divisor=1, long_divisor=1, xo_per_pooled=1.0, seed=0, with_type=True)
    assert Counter(r["source"] for r in sets.simple) == {"O": 3}
    assert Counter(r["source"] for r in sets.long) == {"O": 3, "O→O": 1, "X→O": 2}
    assert sets.pools == {"O": 3, "O→O": 1, "X→O": 2}
    for r in sets.long:
        assert r["assistant"].startswith("<think>\n") and r["assistant"].endswith("</answer>")
        assert "recognition" in r["system"] and "Question" in r["user"] and "(B) blue" in r["user"]
        assert r["simple_cot_id"] and r["extra_metadata"] == "{}"
        assert r["long_cot_id"] == ("" if r["source"] == "O" else r["id"])  # the trace ids travel with the row
        if r["source"] == "X→O":
            assert r["assistant_prefix"] and r["assistant"].startswith(r["assistant_prefix"])
            assert r["assistant_prefix"] == "<think>\nIt is red." or r["assistant_prefix"].endswith("m1-s1.")
        else:
            assert r["assistant_prefix"] == ""
    small = build_sft(_world(), MCQS, simple_divisor=3, long_divisor=2, xo_per_pooled=1.0, seed=0, with_type=False)
    assert len(small.simple) == 1 and len(small.long) == 2 + 2  # 2 of 4 pooled, then as many X→O (there are 2)
    assert "recognition" not in small.long[0]["system"]


def test_prefix_must_begin_the_long_thought():
    bad = [_t("O", "o"), _t("X→O", "x", thought="Something else entirely.", prefix="It is red.")]
    with pytest.raises(ValueError, match="does not begin"):
        build_sft(bad, MCQS, simple_divisor=1, long_divisor=1, xo_per_pooled=1, seed=0, with_type=True)


# ----------------------------------------------------------------------------- DPO


def test_pair_rules_on_every_kind():
    pairs = {(k, c.trace_id, r.trace_id) for k, c, r in dpo_pairs(_world(), seed=0)}
    assert ("O>O→X", "m0-s0", "m0-s0-l1") in pairs  # the O→X against the right thought it broke
    assert ("O>X", "m0-s0", "m0-s1") in pairs and ("O>X", "m1-s0", "m1-s1") in pairs
    assert ("X→O>X→X", "m0-s1-l0", "m0-s1-l1") in pairs  # same wrong thought, diverging after the cue
    assert ("X→O>X", "m0-s1-l0", "m0-s1") in pairs and ("X→O>X", "m1-s1-l0", "m1-s1") in pairs
    assert not any(c.startswith("m2") for _, c, _ in pairs)  # m2 has nothing to reject
    assert len(pairs) == 6
    sets, dropped = build_dpo(_world(), MCQS, seed=0, with_type=True)
    assert Counter(r["pair_type"] for r in sets["O"]) == {"O>O→X": 1, "O>X": 1} or \
        Counter(r["pair_type"] for r in sets["O"]) == {"O>X": 2}
    # in X→O > X both turns begin with the same wrong thought
    xo_x = next(r for r in sets["X→O"] if r["pair_type"] == "X→O>X" and r["mcq_id"] == "m1")
    assert xo_x["chosen"].startswith("<think>\nThought of m1-s1.") and xo_x["rejected"].startswith("<think>\nthought of m1-s1")
    assert all(r["family"] == "X→O" for r in sets["X→O"]) and all(r["family"] == "O" for r in sets["O"])


def test_dedup_on_preferred_for_O_and_on_both_for_XO():
    o = _t("O", "o"), _t("X", "x1", thought="red"), _t("X", "x2", thought="green")
    o_pairs = [("O>X", o[0], o[1]), ("O>X", o[0], o[2])]
    kept, dropped = dedup_pairs(o_pairs, seed=0, family="O")
    assert len(kept) == 1 and dropped == 1  # the same preferred text once
    xo1, xo2 = _t("X→O", "a", thought="A"), _t("X→O", "b", thought="B")
    x = _t("X", "x", thought="red")
    kept, dropped = dedup_pairs([("X→O>X", xo1, x), ("X→O>X", xo2, x)], seed=0, family="X→O")
    assert len(kept) == 1 and dropped == 1  # the same rejected text once
    # which duplicate survives is seeded, not file order
    survivors = {dedup_pairs(o_pairs, seed=s, family="O")[0][0][2].trace_id for s in range(20)}
    assert survivors == {"x1", "x2"}
    assert dedup_pairs(o_pairs, seed=3, family="O") == dedup_pairs(o_pairs, seed=3, family="O")


def test_validation_split_is_by_image_and_stable():
    mcqs = [{"mcq_id": f"m{i}", "image_id": f"img{i // 3}"} for i in range(300)]
    train, val = split_validation(mcqs, 0.2, seed=0)
    assert not train & val and len(train | val) == 100 and 8 <= len(val) <= 35
    more = mcqs + [{"mcq_id": "new", "image_id": "img-new"}]
    assert split_validation(more, 0.2, seed=0)[1] - {"img-new"} == val  # adding images moves no old one
    assert split_validation(mcqs, 0.0, seed=0)[1] == set()


# ----------------------------------------------------------------------------- writing (sharegpt: test_sharegpt.py)


def test_write_training_data_with_the_published_set(tmp_path):
    import json

    import pandas as pd

    from lpt_utils import config
    from lpt_utils.pipeline.training_data import write_training_data

    (tmp_path / "docci" / "images").mkdir(parents=True)
    (tmp_path / "docci" / "images" / "train_00001.jpg").write_bytes(b"jpg")
    msgs = [{"role": "user", "content": "<image>What colour?"}, {"role": "assistant", "content": "<think>x</think>"}]
    pd.DataFrame([{"example_id": "train_00001", "messages": msgs, "cot_type": "O"},
                  {"example_id": "train_00009", "messages": msgs, "cot_type": "O"}]).to_parquet(tmp_path / "30k.parquet")
    settings = config.load_profile("paper")["training_data"]
    settings["published"] = {"path": str(tmp_path / "30k.parquet"), "docci_dir": str(tmp_path / "docci")}
    sft = build_sft(_world(), MCQS, simple_divisor=1, long_divisor=1, xo_per_pooled=1, seed=0, with_type=True)
    dpo, _ = build_dpo(_world(), MCQS, seed=0, with_type=True)
    sets = {"sft_simple": sft.simple, "sft_long": sft.long, "dpo_O": dpo["O"], "dpo_XO": dpo["X→O"]}
    out = tmp_path / "04_training_data"
    sizes, report = write_training_data(out, settings, sets, [MCQS["m0"]], sft.pools, "r1")
    assert sizes == {**{k: len(v) for k, v in sets.items()}, "sft_published": 1, "val_mcqs": 1}
    assert report["skipped"] == {"image not in the DOCCI folder": 1}
    assert pd.read_parquet(out / "sft_published.parquet").image_path.str.endswith("train_00001.jpg").all()
    card = (out / "README.md").read_text()
    assert "run `r1`" in card and "`sft_long.parquet` | %d |" % len(sft.long) in card
    info = json.loads((out / "sharegpt" / "dataset_info.json").read_text())
    assert set(info) == {"sft_simple", "sft_long", "sft_long_stock", "dpo_O", "dpo_XO", "sft_published"}
    assert info["dpo_O"]["ranking"] and "assistant_prefix" not in info["sft_long_stock"]["columns"]
    published = pd.read_parquet(out / "sft_published.parquet")
    assert published.mcq_id.str.startswith("mcq-").all() and published.id.is_unique
    # the card says how to train on the export with stock tools, and with which file
    for needed in ("dataset_info.json", "dataset_dir", "media_dir", "qwen2_vl", "`sft_long_stock`",
                   "drops `assistant_prefix`", "TRL", "completion_only_loss", "sft_long.parquet"):
        assert needed in card, needed
    assert "`sft_long`: 2 of 6 rows" in card  # the X→O rows a stock trainer would mistrain, counted
    settings = {**settings, "published": {"path": None, "docci_dir": None}, "export_sharegpt": False}
    sizes, report = write_training_data(tmp_path / "plain", settings, sets, [], sft.pools, "r2")
    assert report is None and "sft_published" not in sizes and not (tmp_path / "plain" / "sharegpt").exists()
    assert "LLaMA-Factory" not in (tmp_path / "plain" / "README.md").read_text()  # no export, no guide to it


def test_assistant_turn_format():
    assert assistant_turn(" a b ", "(B)") == "<think>\na b\n</think>\n<answer>(B)</answer>"


def test_turn_layouts_and_the_prefix_follow_the_same_layout():
    from lpt_utils.pipeline.training_data import TurnFormat

    inline = TurnFormat(layout="inline")
    assert inline.turn(" It is red. Wait, blue. ", "(B)") == "<think> It is red. Wait, blue. </think> <answer> (B) </answer>"
    assert assistant_turn("x", "(B)", layout="inline") == inline.turn("x", "(B)")
    for fmt in (TurnFormat(), inline):
        assert fmt.turn("It is red. Wait, blue.", "(B)").startswith(fmt.prefix("It is red."))
    sets = build_sft(_world(), MCQS, simple_divisor=1, long_divisor=1, xo_per_pooled=1, seed=0, with_type=True,
                     fmt=inline)
    xo = [r for r in sets.long if r["source"] == "X→O"]
    assert xo and all(r["assistant"].startswith(r["assistant_prefix"]) and r["assistant_prefix"].startswith("<think> ")
                      for r in xo)
    dpo, _ = build_dpo(_world(), MCQS, seed=0, with_type=True, fmt=inline)
    assert all(r["chosen"].endswith(" </answer>") for fam in dpo.values() for r in fam)
    with pytest.raises(ValueError, match="layout"):
        TurnFormat(layout="yaml")
