"""The science test: training learns what its data say (teacher-forced likelihoods, no sampling), and a
deliberately broken data path is caught. Runs on the tiny student and a fixed slice of a tiny run's
stage-4 rows (tests/data/likelihood_slice; its README says how it was written)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from lpt_utils.config import load_profile
from lpt_utils.training import data, job, likelihood

SLICE = Path(__file__).parent / "data" / "likelihood_slice"


def test_the_slice_holds_what_the_checks_score():
    sl = likelihood.Slice.read(SLICE)
    assert (sl.sft.assistant_prefix.str.len() > 0).sum() >= 10  # X->O rows: the mask check's probes
    rows = pd.concat([sl.sft, sl.heldout])
    assert all(likelihood.concludes_with_answer(r) for r in rows.itertuples(index=False))
    assert len(sl.heldout) >= 20 and sl.heldout.mcq_id.nunique() >= 15  # the answers check's probes
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
    letters = [likelihood.named_option(r)[1] for r in sl.sft.itertuples(index=False)]
    new = [likelihood.named_option(r)[1] for r in perm.itertuples(index=False)]  # still one of its options
    assert sorted(new) == sorted(letters) and sum(a != b for a, b in zip(new, letters)) >= len(perm) // 2
    assert (likelihood.unmask(sl.sft).assistant_prefix == "").all()
    swapped = likelihood.swap_pairs(sl.dpo)
    assert list(swapped.chosen) == list(sl.dpo.rejected) and list(swapped.rejected) == list(sl.dpo.chosen)
    with pytest.raises(ValueError, match="no answer tag"):
        likelihood.split_answer("<think> no answer here </think>")


def _row(answer: str, thought: str, choices: str = "(A) red\n(B) light blue\n(C) green\n(D) blue"):
    return SimpleNamespace(id="r", user=f"What colour is the mug?\nSelect from the following choices.\n{choices}",
                           assistant=f"<think>\n{thought}\n</think>\n\nSo that settles it.\n\n<answer>{answer}</answer>")


@pytest.mark.parametrize("answer, letter, renamed", [
    ("(D)", "D", "(B)"),                        # Qwen2.5-VL's usual letter form
    ("D.", "D", "B."),
    ("(D) blue", "D", "(B) light blue"),          # the letter and the text it gives, both renamed
    ("blue", "D", "light blue"),                  # the option's text (the tiny student's form)
    (" Blue ", "D", " light blue "),              # any case; the spacing kept
])
def test_an_answer_is_renamed_in_its_own_form(answer, letter, renamed):
    row = _row(answer, "Hmm, the mug looks light blue at first. Wait, under the lamp it is plainly blue.")
    options, named, _ = likelihood.named_option(row)
    assert options == ["red", "light blue", "green", "blue"] and named == letter
    out = likelihood.answer_naming(row, "B")
    assert out.endswith(f"<answer>{renamed}</answer>") and out.startswith(row.assistant.split("<answer>")[0])
    assert likelihood.thought_conclusion(row) == "D"  # "blue" alone, after "light blue"
    assert likelihood.concludes_with_answer(row)


def test_a_thought_that_ends_elsewhere_or_an_answer_that_names_nothing():
    row = _row("(D)", "It is blue, I think. Wait, looking again, the rim is (C) green.")
    assert likelihood.thought_conclusion(row) == "C" and not likelihood.concludes_with_answer(row)
    assert likelihood.thought_conclusion(_row("(D)", "Nothing about colours here.")) is None
    bad = _row("the mug", "It is blue.")
    assert not likelihood.concludes_with_answer(bad)
    with pytest.raises(ValueError, match="names none of its options"):
        likelihood.named_option(bad)
    with pytest.raises(ValueError, match="has 4 options, no \\(E\\)"):
        likelihood.answer_naming(_row("(D)", "blue"), "E")


# ----------------------------------------------------------------------------- training (slow)


@pytest.fixture(scope="module")
def slice_and_settings():
    return likelihood.Slice.read(SLICE), load_profile("tiny")


def _run(tiny_vlm_dir, slice_and_settings, tmp_path, only):
    sl, settings = slice_and_settings
    return likelihood.run_checks(str(tiny_vlm_dir), sl, settings, work=tmp_path, only=only)


CHECKED = ["answers", "mask", "preferences"]


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


def _answer_not_learned(original):
    """The SFT collator with the answer block outside the loss (from the last answer tag on), as when a
    too short max_length cuts the completion's tail."""

    def collator(processor, max_length, max_pixels):
        inner = original(processor, max_length, max_pixels)
        tag = processor.tokenizer.convert_tokens_to_ids("<answer>")

        def call(examples):
            batch = inner(examples)
            tags = (batch["input_ids"] == tag).long()
            last = tags.cumsum(1) >= tags.sum(1, keepdim=True).clamp(min=1)
            batch["labels"] = batch["labels"].masked_fill(last, -100)
            return batch

        return call

    return collator


def _answers_off_by_one(original):
    """Stage 4's rows rendered with each answer naming the option after the verified one (an off-by-one
    when the verified letter is written in the requested form)."""

    def render(rows, *args, **kwargs):
        out = rows.copy()
        out["assistant"] = [likelihood.answer_naming(r, _next_letter(r)) for r in rows.itertuples(index=False)]
        return original(out, *args, **kwargs)

    return render


def _next_letter(row) -> str:
    options, letter, _ = likelihood.named_option(row)
    return likelihood.LETTERS[(likelihood.LETTERS.index(letter) + 1) % len(options)]


BROKEN = {
    "answer block outside the loss": (job, "sft_collator", _answer_not_learned, "answers"),
    "answers written as the next option": (data, "sft_examples", _answers_off_by_one, "answers"),
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
