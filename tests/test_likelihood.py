"""The science test: training learns what its data say (teacher-forced likelihoods, no sampling), and a
deliberately broken data path is caught. Runs on the tiny student and a fixed slice of a tiny run's
stage-4 rows (tests/data/likelihood_slice, written by `likelihood.write_slice`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from lpt_utils.config import load_profile
from lpt_utils.training import data, job, likelihood

SLICE = Path(__file__).parent / "data" / "likelihood_slice"


def test_the_slice_holds_what_the_checks_score():
    sl = likelihood.Slice.read(SLICE)
    assert (sl.sft.assistant_prefix.str.len() > 0).sum() >= 10  # X->O rows: the mask check's probes
    assert set(sl.dpo.family) == {"O", "X→O"}
    assert not set(sl.sft.mcq_id) & set(sl.heldout.mcq_id)
    assert all(Path(p).exists() for p in pd.concat([sl.sft, sl.heldout, sl.dpo]).image_path)
    for a in sl.heldout.assistant:
        thought, answer = likelihood.split_answer(a)
        assert thought + answer == a and answer.startswith("<answer>") and "</think>" in thought


def test_a_slice_sharing_mcqs_with_its_held_out_rows_is_refused(tmp_path):
    shutil.copytree(SLICE, tmp_path / "s")
    sft = pd.read_json(tmp_path / "s" / "sft.jsonl", lines=True, dtype=False)
    held = pd.read_json(tmp_path / "s" / "heldout.jsonl", lines=True, dtype=False)
    held.loc[0, "mcq_id"] = sft.mcq_id.iloc[0]
    held.to_json(tmp_path / "s" / "heldout.jsonl", orient="records", lines=True, force_ascii=False)
    with pytest.raises(ValueError, match="share 1 MCQs"):
        likelihood.Slice.read(tmp_path / "s")


def test_the_variants_change_only_what_they_name():
    sl = likelihood.Slice.read(SLICE)
    perm = likelihood.permute_answers(sl.sft, seed=0)
    thoughts = [likelihood.split_answer(a)[0] for a in sl.sft.assistant]
    assert [likelihood.split_answer(a)[0] for a in perm.assistant] == thoughts
    assert sorted(likelihood.split_answer(a)[1] for a in perm.assistant) == \
        sorted(likelihood.split_answer(a)[1] for a in sl.sft.assistant)
    assert (perm.assistant != sl.sft.assistant).sum() >= len(perm) // 2
    assert (likelihood.unmask(sl.sft).assistant_prefix == "").all()
    swapped = likelihood.swap_pairs(sl.dpo)
    assert list(swapped.chosen) == list(sl.dpo.rejected) and list(swapped.rejected) == list(sl.dpo.chosen)
    with pytest.raises(ValueError, match="no answer tag"):
        likelihood.split_answer("<think> no answer here </think>")


# ----------------------------------------------------------------------------- training (slow)


@pytest.fixture(scope="module")
def slice_and_settings():
    return likelihood.Slice.read(SLICE), load_profile("tiny")


def _run(tiny_vlm_dir, slice_and_settings, tmp_path, only):
    sl, settings = slice_and_settings
    return likelihood.run_checks(str(tiny_vlm_dir), sl, settings, work=tmp_path, only=only)


# The answers check (SFT teaches the answers its rows give) is left out: on today's tiny run its long
# CoTs mostly contradict their own answer letter (3 of 15 slice rows agree), so nothing consistent is
# there to learn (measured: gain real -1.30, permuted -0.89 nats). It runs from the module's CLI.
CHECKED = ["mask", "preferences"]


@pytest.mark.slow
def test_training_learns_what_its_data_say(tiny_vlm_dir, slice_and_settings, tmp_path):
    results = _run(tiny_vlm_dir, slice_and_settings, tmp_path, CHECKED)
    assert [r.name for r in results] == CHECKED
    failed = [r.line() for r in results if not r.held]
    assert not failed, "\n".join(failed)


def _inverted_loss_mask(original):
    """The SFT collator with its loss mask inverted: the prompt is learned, the answer is not."""

    def collator(processor, max_length, max_pixels):
        inner = original(processor, max_length, max_pixels)

        def call(examples):
            batch = inner(examples)
            labels = batch["labels"]
            batch["labels"] = batch["input_ids"].masked_fill(labels != -100, -100).masked_fill(
                batch["attention_mask"] == 0, -100)
            return batch

        return call

    return collator


def _prefix_not_masked(original):
    """Stage 4's rows rendered as if their assistant prefix were part of the completion."""

    def render(rows, *args, **kwargs):
        return original(likelihood.unmask(rows), *args, **kwargs)

    return render


def _pairs_swapped(original):
    """DPO examples rendered with chosen and rejected the wrong way round."""

    def render(rows, *args, **kwargs):
        out = original(rows, *args, **kwargs)
        out.examples["chosen"], out.examples["rejected"] = out.examples["rejected"].values, out.examples["chosen"].values
        return out

    return render


BROKEN = {
    "inverted loss mask": (job, "sft_collator", _inverted_loss_mask, "mask"),
    "X->O prefix not masked": (data, "sft_examples", _prefix_not_masked, "mask"),
    "DPO pairs swapped": (data, "dpo_examples", _pairs_swapped, "preferences"),
}


@pytest.mark.slow
@pytest.mark.parametrize("bug", list(BROKEN))
def test_a_broken_training_data_path_is_caught(bug, tiny_vlm_dir, slice_and_settings, tmp_path, monkeypatch):
    module, name, breaker, check = BROKEN[bug]
    monkeypatch.setattr(module, name, breaker(getattr(module, name)))
    (result,) = _run(tiny_vlm_dir, slice_and_settings, tmp_path, [check])
    print(f"broken on purpose ({bug}): {result.line()}")
    assert not result.held, f"the {check} check did not catch: {bug}"
