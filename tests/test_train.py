"""Stages 5-6 (lpt_utils.training): the contract's loaders and rendering (`data`), the sweep (`sweep`),
the masked X→O prefix on the batches the trainer really sees, frozen vision weights (`weights`), resuming
(`job.run_job`, the trainer's side of a call), the vLLM-loadable model and its validation (`validation`),
on a hand-built stage-4 folder drawn from tiny-world scenes. The profile -> TRL config -> job file path
is tests/test_training_job.py; papermill runs of notebooks 05_sft and 06_dpo are in the chain
(tests/test_notebooks.py)."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lpt_utils import config, profile_schema
from lpt_utils.pipeline import mcq
from lpt_utils.tiny_world import corpus
from lpt_utils.tiny_world.scenes import load_scene_set, make_scene_set
from lpt_utils.training import data as td
from lpt_utils.training import job as tj
from lpt_utils.training import launch
from lpt_utils.training import sweep as ts
from lpt_utils.training import validation as tv
from lpt_utils.training import weights as tw

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE_PX = 224 * 224


# ----------------------------------------------------------------------------- a stage-4 folder by hand


def build_training_data(run_dir: Path, *, n_train: int = 4, n_val: int = 2, per_scene: int = 2, seed: int = 3) -> Path:
    """`run_dir/04_training_data/` in notebook 04's layout: tiny-world scenes, their true student answers as
    O rows, an X→O row per MCQ that opens with a wrong thought (the masked prefix) then recovers, one pair
    per DPO family, and held-out MCQs from other scenes."""
    scenes_dir = run_dir / "00_sources" / "scenes"
    make_scene_set(scenes_dir, n_train + n_val, split="train", seed=seed)
    sft, dpo_o, dpo_xo, val = [], [], [], []
    for i, (rec, scene) in enumerate(load_scene_set(scenes_dir)):
        img = str((scenes_dir / "images" / rec["image_file"]).resolve())
        for k, (row, msgs, completion) in enumerate(corpus.student_examples(scene, image_path=img)):
            if k >= per_scene:
                break
            if i >= n_train:
                val.append({**{k: v for k, v in row.items() if k != "kind"}, "description": "", "item_index": k,
                            "is_valid": True, "invalid_reason": "", "raw_response": "", "reformatted_response": "",
                            "raw_item": ""})
                continue
            wrong_letter = next(x for x in "ABCD" if x != row["answer_letter"])
            wrong = row["choices"]["ABCD".index(wrong_letter)]
            right_turn = "<think>" + completion
            prefix = f"<think> I think it is {wrong}."
            recovered = prefix + " Wait," + completion
            wrong_turn = f"{prefix} </think> <answer> {mcq.answer_in_form(row, wrong_letter)} </answer>"
            base = {"mcq_id": row["mcq_id"], "image_id": row["image_id"], "image_path": img,
                    "system": msgs[0]["content"], "user": msgs[1]["content"][1]["text"], "extra_metadata": "{}"}
            ids = {"simple_cot_id": f"{row['mcq_id']}-s", "long_cot_id": ""}
            sft.append({"id": f"{row['mcq_id']}-O", **base, **ids, "assistant": right_turn, "assistant_prefix": "",
                        "source": "O", "num_tokens": 40})
            sft.append({"id": f"{row['mcq_id']}-XO", **base, **ids, "long_cot_id": f"{row['mcq_id']}-l",
                        "assistant": recovered, "assistant_prefix": prefix, "source": "X→O", "num_tokens": 48})
            dpo_o.append({"id": f"{row['mcq_id']}-o", **base, "chosen": right_turn, "rejected": wrong_turn,
                          "pair_type": "O>X", "family": "O"})
            dpo_xo.append({"id": f"{row['mcq_id']}-xo", **base, "chosen": recovered, "rejected": wrong_turn,
                           "pair_type": "X→O>X", "family": "X→O"})
    out = run_dir / "04_training_data"
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(sft).to_parquet(out / "sft_long.parquet", index=False)
    pd.DataFrame([r for r in sft if r["source"] == "O"]).to_parquet(out / "sft_simple.parquet", index=False)
    pd.DataFrame(dpo_o).to_parquet(out / "dpo_O.parquet", index=False)
    pd.DataFrame(dpo_xo).to_parquet(out / "dpo_XO.parquet", index=False)
    pd.DataFrame(val).to_parquet(out / "val_mcqs.parquet", index=False)
    pd.DataFrame([{"set": "sft_long", "rows": len(sft)}]).to_parquet(out / "data.parquet", index=False)
    (out / "manifest.json").write_text(json.dumps({"stage": "04_training_data", "settings_hash": "hand-built"}))
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return build_training_data(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def processor(tiny_vlm_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_vlm_dir)


# A profile section of each stage, as the profiles write them: TRL's keys, and this project's under `lpt`.
TINY_LPT = {"learning_rates": [1e-3], "max_epochs": 1, "early_stop_patience": None, "validate": False,
            "validation": {"max_mcqs": None, "sampling": {}}, "effective_batch_size": 4, "overlong": "truncate",
            "max_pixels": IMAGE_SIZE_PX, "cpu_threads": 1, "launcher": "python", "num_processes": 1}
TINY = {
    "sft": {"per_device_train_batch_size": 2, "max_length": 1024, "lr_scheduler_type": "cosine", "warmup_steps": 1,
            "weight_decay": 0.0, "bf16": False, "gradient_checkpointing": False, "seed": 0, "logging_steps": 1,
            "lpt": {**TINY_LPT, "data": "sft_long"}},
    "dpo": {"per_device_train_batch_size": 2, "max_length": 1024, "lr_scheduler_type": "cosine", "warmup_steps": 1,
            "weight_decay": 0.0, "bf16": False, "gradient_checkpointing": False, "seed": 0, "logging_steps": 1,
            "beta": 1.0, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5],
            "lpt": {**TINY_LPT, "families": ["O", "X→O"]}},
}


def tiny_job(stage: str, model: Path, train_file: Path, sweep_dir: Path, *, epochs: int = 1, epoch: int = 1,
             **changes) -> tj.TrainJob:
    section = copy.deepcopy(TINY[stage])
    section["lpt"]["max_epochs"] = epochs
    job = tj.make_job(stage, section, model=str(model), train_file=train_file, sweep_dir=sweep_dir, lr=1e-3,
                      epoch=epoch, num_processes=1, use_cpu=True, ref_model=str(model) if stage == "dpo" else None)
    return dataclasses.replace(job, **changes)


# ----------------------------------------------------------------------------- plain logic


def _fake_sweep(plan, accuracies):
    """Run `sweep.run_plan` with a trainer that only records calls and a validator reading `accuracies`."""
    calls, discarded = [], []

    def train_epoch(lr, epoch):
        calls.append((lr, epoch))
        return {"model_dir": f"/m/{lr}/{epoch}", "global_step": epoch * 3, "seconds": 1.0,
                "log_history": [{"loss": 2.0 / epoch, "epoch": epoch - 0.5}, {"loss": 1.0 / epoch, "epoch": epoch,
                                                                               "rewards/margins": 0.1 * epoch}]}

    def validate(model_dir):
        _, lr, epoch = str(model_dir).rsplit("/", 2)
        return accuracies[float(lr)][int(epoch) - 1]

    results, best = ts.run_plan(plan, train_epoch, validate if plan.validate else None,
                                discard=lambda p: discarded.append(str(p)))
    return calls, discarded, results, best


def test_sweep_stops_early_per_learning_rate_and_keeps_the_best_epoch():
    plan = ts.SweepPlan((1e-5, 8e-6), max_epochs=5, patience=1)
    acc = {1e-5: [0.2, 0.5, 0.4, 0.9, 0.9], 8e-6: [0.6, 0.6, 0.1, 0.1, 0.1]}
    calls, discarded, results, best = _fake_sweep(plan, acc)
    # 1e-5 stops after epoch 3 (no gain over epoch 2); 8e-6 after epoch 2 (a tie is no gain)
    assert calls == [(1e-5, 1), (1e-5, 2), (1e-5, 3), (8e-6, 1), (8e-6, 2)]
    assert (best.learning_rate, best.epoch, best.val_accuracy) == (8e-6, 1, 0.6) and best.is_best
    assert sum(r.is_best for r in results) == 1
    # every exported model but the kept one is discarded, each once
    assert sorted(discarded) == sorted(r.model_dir for r in results if r is not best)
    assert results[0].train_loss == pytest.approx(1.5) and results[1].train_loss == pytest.approx(0.75)
    assert results[1].extra == {"rewards/margins": pytest.approx(0.2)}
    table = ts.results_table(results)
    assert list(table.is_best) == [False, False, False, True, False] and "rewards_margins" in table


def test_sweep_patience_two_and_no_early_stop():
    acc = {1e-5: [0.5, 0.4, 0.3, 0.9]}
    calls, *_ = _fake_sweep(ts.SweepPlan((1e-5,), 4, patience=2), acc)
    assert calls == [(1e-5, 1), (1e-5, 2), (1e-5, 3)]
    calls, _, _, best = _fake_sweep(ts.SweepPlan((1e-5,), 4, patience=None), acc)
    assert len(calls) == 4 and best.epoch == 4


def test_sweep_without_validation_keeps_the_last_epoch():
    calls, discarded, results, best = _fake_sweep(ts.SweepPlan((1e-5,), 3, patience=None, validate=False), {})
    assert len(calls) == 3 and best.epoch == 3 and best.val_accuracy is None
    assert discarded == ["/m/1e-05/1", "/m/1e-05/2"]
    with pytest.raises(ValueError, match="needs validation"):
        ts.SweepPlan((1e-5, 8e-6), 3, validate=False)


# ----------------------------------------------------------------------------- the contract


def test_load_sft_rows_counts_what_cannot_train(data_dir, tmp_path):
    rows, funnel = td.load_sft_rows(data_dir)
    assert len(rows) == 16 and funnel.steps[0]["out"] == 16
    bad = pd.read_parquet(data_dir / "sft_long.parquet")
    bad.loc[0, "image_path"] = str(tmp_path / "gone.png")
    bad.loc[1, "assistant_prefix"] = "<think> something else"
    bad.loc[2, "assistant"] = "  "
    bad.loc[3, "assistant_prefix"] = bad.loc[3, "assistant"]
    bad.to_parquet(tmp_path / "sft_long.parquet")
    rows, funnel = td.load_sft_rows(tmp_path)
    assert len(rows) == 12
    assert funnel.steps[0]["dropped"] == {"missing_image": 1, "assistant_not_starting_with_prefix": 1,
                                          "empty_assistant": 1, "prefix_is_the_whole_turn": 1}
    bad.drop(columns=["assistant_prefix"]).to_parquet(tmp_path / "sft_long.parquet")
    with pytest.raises(ValueError, match="assistant_prefix"):
        td.load_sft_rows(tmp_path)
    with pytest.raises(FileNotFoundError, match="notebook 04"):
        td.load_sft_rows(tmp_path, "sft_simple")


def test_training_rows_written_where_the_run_was_find_their_images_where_it_is(data_dir, tmp_path):
    """04's sets written on a machine where the run lay elsewhere (its manifest says where) train here:
    no row is lost as a missing image. Without that record the same rows are counted as missing."""
    run = tmp_path / "run"
    shutil.copytree(data_dir.parent, run)
    was = "/mnt/node7/outputs/run"
    stage4 = run / "04_training_data"
    for f in stage4.glob("*.parquet"):
        df = pd.read_parquet(f)
        if "image_path" not in df:
            continue
        df["image_path"] = [p.replace(str(data_dir.parent.resolve()), was) for p in df.image_path]
        df.to_parquet(f, index=False)
    (stage4 / "manifest.json").write_text(json.dumps({"stage": "04_training_data", "run_dir": was}))
    rows, funnel = td.load_sft_rows(stage4)
    assert len(rows) == 16 and funnel.steps[0]["dropped"] == {}
    assert all(p.startswith(str(run.resolve()) + "/00_sources/") for p in rows.image_path)
    pairs, _ = td.load_dpo_rows(stage4, ["O", "X→O"])
    assert len(pairs) == 16
    (stage4 / "manifest.json").unlink()
    rows, funnel = td.load_sft_rows(stage4)
    assert len(rows) == 0 and funnel.steps[0]["dropped"] == {"missing_image": 16}


def test_load_dpo_rows_by_family(data_dir, tmp_path):
    both, _ = td.load_dpo_rows(data_dir, ["O", "X→O"])
    xo, _ = td.load_dpo_rows(data_dir, ["X→O"])
    assert len(both) == 16 and set(xo.family) == {"X→O"} and len(xo) == 8
    with pytest.raises(ValueError, match="families"):
        td.load_dpo_rows(data_dir, ["XO"])
    shutil.copy(data_dir / "dpo_O.parquet", tmp_path / "dpo_XO.parquet")
    with pytest.raises(ValueError, match="another family"):
        td.load_dpo_rows(tmp_path, ["X→O"])
    same = pd.read_parquet(data_dir / "dpo_O.parquet")
    same.loc[0, "rejected"] = same.loc[0, "chosen"]
    same.to_parquet(tmp_path / "dpo_O.parquet")
    rows, funnel = td.load_dpo_rows(tmp_path, ["O"])
    assert len(rows) == 7 and funnel.steps[0]["dropped"] == {"chosen_equals_rejected": 1}


def test_load_val_mcqs(data_dir):
    val = td.load_val_mcqs(data_dir)
    assert len(val) == 4 and set(val.mcq_id).isdisjoint(pd.read_parquet(data_dir / "sft_long.parquet").mcq_id)
    assert len(td.load_val_mcqs(data_dir, 3)) == 3


def test_rendering_splits_at_the_prefix_and_counts_image_tokens(data_dir, processor):
    rows, _ = td.load_sft_rows(data_dir)
    r = rows[rows.source == "X→O"].iloc[0]
    prompt, completion = td.split_turn(processor, r.system, r.user, r.assistant, r.assistant_prefix)
    assert prompt.endswith("<|im_start|>assistant\n" + r.assistant_prefix)
    assert prompt.index("<|image_pad|>") < prompt.index(r.user)  # the image before the question
    assert (r.assistant_prefix + completion).startswith(r.assistant) and completion.endswith("<|im_end|>\n")
    rendered = td.sft_examples(rows, processor, max_length=1024, max_pixels=IMAGE_SIZE_PX)
    assert rendered.counts["with_masked_prefix"] == 8
    assert td.image_token_count(processor, r.image_path, IMAGE_SIZE_PX) == 64  # 224 px: 16 x 16 / 4
    # the cutoff: `drop` removes what is longer, `truncate` keeps it unless the prompt alone reaches it
    n = int(rendered.examples.prompt_tokens.min()) + 5
    dropped = td.sft_examples(rows, processor, max_length=n, max_pixels=IMAGE_SIZE_PX, overlong="drop")
    kept = td.sft_examples(rows, processor, max_length=n, max_pixels=IMAGE_SIZE_PX, overlong="truncate")
    assert len(dropped.examples) == 0 and dropped.funnel.steps[0]["dropped"]
    assert 0 < len(kept.examples) < 16 and kept.counts["truncated_at_cutoff"] == len(kept.examples)


# ----------------------------------------------------------------------------- training on the tiny VLM


@pytest.fixture(scope="module")
def sft_file(data_dir, processor, tmp_path_factory) -> Path:
    rows, _ = td.load_sft_rows(data_dir)
    path = tmp_path_factory.mktemp("sft") / "train_examples.parquet"
    td.sft_examples(rows, processor, max_length=1024, max_pixels=IMAGE_SIZE_PX).examples.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def dpo_file(data_dir, processor, tmp_path_factory) -> Path:
    rows, _ = td.load_dpo_rows(data_dir)
    path = tmp_path_factory.mktemp("dpo") / "train_pairs.parquet"
    td.dpo_examples(rows, processor, max_length=1024, max_pixels=IMAGE_SIZE_PX).examples.to_parquet(path)
    return path


def _collapse_image_pads(text: str) -> str:
    return text.replace("<|image_pad|>", "")


def test_trainer_batches_label_only_what_follows_the_prefix(tiny_vlm_dir, sft_file, data_dir, processor, tmp_path):
    """Every batch SFTTrainer trains on: no label on system, user, image tokens or the X→O prefix; the
    rest of each assistant turn labelled, token for token."""
    job = tiny_job("sft", tiny_vlm_dir, sft_file, tmp_path)
    trainer, proc, _ = tj.build_trainer(job)
    seen = []
    inner = trainer.compute_loss

    def recording(model, inputs, *a, **k):
        seen.append({k2: v.detach().clone() for k2, v in inputs.items() if k2 in ("input_ids", "labels",
                                                                                  "attention_mask")})
        return inner(model, inputs, *a, **k)

    trainer.compute_loss = recording
    with tj.cpu_threads(1):
        trainer.train()
    tok = proc.tokenizer
    pad_id = tok.convert_tokens_to_ids("<|image_pad|>")
    rows = pd.read_parquet(data_dir / "sft_long.parquet")
    examples = pd.read_parquet(sft_file)
    by_completion = {c: (e, r) for c, e, r in zip(examples.completion, examples.itertuples(), rows.itertuples())}
    sources = []
    for batch in seen:
        for ids, labels, att in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            att = att.bool()
            assert not (labels[~att] != -100).any()  # padding unlabelled
            assert (ids == pad_id).sum() == 64 and (labels[ids == pad_id] == -100).all()
            labelled = ids[labels != -100]
            completion = tok.decode(labelled)
            assert completion in by_completion, completion
            ex, row = by_completion[completion]
            assert labelled.tolist() == tok(completion, add_special_tokens=False)["input_ids"]
            # labelled tokens form one block that closes the sequence
            pos = (labels != -100).nonzero().flatten()
            assert pos.tolist() == list(range(int(pos[0]), int(pos[-1]) + 1)) and int(pos[-1]) == int(att.nonzero()[-1])
            unlabelled = _collapse_image_pads(tok.decode(ids[att & (labels == -100)]))
            assert row.system in unlabelled and row.user in unlabelled
            assert unlabelled.endswith("<|im_start|>assistant\n" + row.assistant_prefix)
            assert row.assistant_prefix + completion == row.assistant + "<|im_end|>\n"
            sources.append(row.source)
    assert sources.count("X→O") == 8 and sources.count("O") == 8  # one epoch: every example once


def test_sft_then_dpo_move_language_weights_and_leave_vision_alone(tiny_vlm_dir, sft_file, dpo_file, tmp_path):
    sft = tiny_job("sft", tiny_vlm_dir, sft_file, tmp_path / "sft")
    m = tj.run_job(sft)
    assert m["global_step"] == 4 and m["trainable"] > 0 and m["frozen"] > 0
    assert m["frozen_parameter_tensors"] == tw.compare_weights(str(tiny_vlm_dir), str(tiny_vlm_dir)).vision_total
    d = tw.compare_weights(str(tiny_vlm_dir), sft.model_dir)
    assert d.vision_changed == 0 and d.vision_total > 0 and d.max_vision_change == 0.0
    assert d.language_changed > 0
    for f in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (Path(sft.model_dir) / f).exists(), f
    dpo = tiny_job("dpo", Path(sft.model_dir), dpo_file, tmp_path / "dpo")
    m = tj.run_job(dpo)
    log = [e for e in m["log_history"] if "loss" in e]
    assert log and all("rewards/margins" in e for e in log)
    d = tw.compare_weights(sft.model_dir, dpo.model_dir)
    assert d.vision_changed == 0 and d.language_changed > 0


def test_resuming_an_epoch_equals_training_straight_through(tiny_vlm_dir, sft_file, tmp_path):
    """Two calls (epoch 1, then epoch 2 resumed from its checkpoint) give the weights of one 2-epoch call:
    the checkpoint's weights, optimizer, schedule and data order all carry over (this guards the
    work-around for transformers' resume ignoring Qwen2.5-VL's renamed keys)."""
    from safetensors.torch import load_file

    first = tiny_job("sft", tiny_vlm_dir, sft_file, tmp_path / "a", epochs=2)
    tj.run_job(first)
    with pytest.raises(ValueError, match="earlier run"):  # a fresh schedule never mixes with old checkpoints
        tj.run_job(first)
    second = dataclasses.replace(first, stop_after_epoch=2, resume=True,
                                 model_dir=str(tmp_path / "a" / "e2"), metrics_file=str(tmp_path / "a" / "m2.json"))
    resumed = tj.run_job(second)
    straight = tiny_job("sft", tiny_vlm_dir, sft_file, tmp_path / "b", epochs=2, epoch=2, resume=False)
    whole = tj.run_job(straight)
    a = load_file(Path(second.model_dir) / "model.safetensors")
    b = load_file(Path(straight.model_dir) / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert [e["loss"] for e in resumed["log_history"] if "loss" in e] == \
        [e["loss"] for e in whole["log_history"] if "loss" in e]
    with pytest.raises(ValueError, match="already trained"):
        tj.run_job(second)


# ----------------------------------------------------------------------------- slow: vLLM and the notebooks


@pytest.mark.slow
def test_trained_model_is_validated_through_vllm(tiny_vlm_dir, sft_file, data_dir, tmp_path):
    job = tiny_job("sft", tiny_vlm_dir, sft_file, tmp_path)
    tj.run_job(job)
    s = config.load_profile("tiny")
    val = td.load_val_mcqs(data_dir).to_dict("records")
    store = tmp_path / "val.jsonl"
    res = tv.validation_accuracy(Path(job.model_dir), val, s["student"]["engine"],
                                 s["sft"]["lpt"]["validation"]["sampling"], store)
    assert res.samples == len(val) and 0 <= res.accuracy <= 1 and res.parsed >= 1
    assert any(r.raw_text.strip() != "<think>" for r in res.rows)  # the engine generated text
    assert sum(1 for _ in store.open()) == len(val)


def test_a_stopped_sweep_resumes_and_a_finished_one_is_not_retrained(tmp_path, monkeypatch, data_dir):
    """The notebooks' sweep (`run_sweep`), with the training subprocess and the validation engine
    replaced by recorders: a sweep killed after its second training call resumes at the third (epochs 1-2 reused,
    scores of discarded models read back), a re-run of the finished sweep trains and scores nothing,
    and a changed setting starts afresh."""
    s = copy.deepcopy(config.load_profile("tiny")["sft"])
    s["lpt"].update(learning_rates=[1e-3, 1e-4], max_epochs=2, early_stop_patience=None)
    train_file = tmp_path / "examples.parquet"
    pd.DataFrame({"x": [1, 2]}).to_parquet(train_file)
    trained, scored = [], []
    acc = {"lr-1e-3": [0.2, 0.5], "lr-1e-4": [0.4, 0.3]}

    def fake_training(cmd, log_file, **kw):
        job = tj.TrainJob.load(cmd[cmd.index("--config") + 1])
        if len(trained) == stop_after[0]:
            raise RuntimeError("killed")
        trained.append((job.learning_rate, job.stop_after_epoch))
        Path(job.model_dir).mkdir(parents=True)
        Path(job.metrics_file).write_text(json.dumps({"learning_rate": job.learning_rate, "epoch": job.stop_after_epoch,
                                                      "global_step": 1, "seconds": 1, "log_history": []}))
        return "done"

    def fake_validation(model_dir, *a, **k):
        scored.append(str(model_dir))
        lr, ep = Path(model_dir).parent.parent.name, int(Path(model_dir).parent.name.split("-")[1])
        return tv.ValidationResult(accuracy=acc[lr][ep - 1], samples=10, parsed=10)

    monkeypatch.setattr(launch, "run_training", fake_training)
    monkeypatch.setattr(tv, "validation_accuracy", fake_validation)

    profile = config.load_profile("tiny")

    def run(settings, stop_after_calls=None):
        stop_after[0] = stop_after_calls
        out = ts.run_sweep("sft", {**profile, "sft": settings}, model="base", train_file=train_file,
                           data_dir=data_dir, stage_dir=tmp_path / "05_sft", num_processes=1)
        assert out.table.is_best.sum() == 1 and len(out.table) == len(out.results)
        assert out.kept_validation().accuracy == out.best.val_accuracy and len(out.val)
        return out.resumed, out.model_dir, out.best

    stop_after = [None]
    with pytest.raises(RuntimeError, match="killed"):
        run(s, stop_after_calls=2)
    assert trained == [(1e-3, 1), (1e-3, 2)] and len(scored) == 2
    resumed, model, best = run(s)
    assert resumed and trained[2:] == [(1e-4, 1), (1e-4, 2)] and len(scored) == 4  # nothing done twice
    assert (best.learning_rate, best.epoch) == (1e-3, 2) and (model / "selected_from.json").exists()
    n_trained, n_scored = len(trained), len(scored)
    resumed, model, best = run(s)  # the finished sweep, run again
    assert resumed and len(trained) == n_trained and len(scored) == n_scored
    assert (best.learning_rate, best.epoch) == (1e-3, 2) and model.exists()
    resumed, _, _ = run({**s, "warmup_steps": s["warmup_steps"] + 1})  # a change: afresh
    assert not resumed and len(trained) == n_trained + 4
    job = yaml.safe_load((tmp_path / "05_sft" / "sweep" / "lr-1e-3" / "epoch-1" / "job.yaml").read_text())
    assert job["trl"]["warmup_steps"] == s["warmup_steps"] + 1 and job["trl"]["learning_rate"] == 1e-3
    # a misspelled setting stops the sweep before anything is trained, naming the key
    n_trained = len(trained)
    with pytest.raises(ValueError, match=r"'warmup_step' is not a field of TRL's SFTConfig \(did you mean 'warmup_steps'"):
        ts.run_sweep("sft", {**profile, "sft": {**s, "warmup_step": 1}}, model="base", train_file=train_file,
                     data_dir=data_dir, stage_dir=tmp_path / "05_sft", num_processes=1)
    assert len(trained) == n_trained


def test_the_control_trains_another_set_at_the_kept_rate_into_its_own_folder(tmp_path):
    """`sft.lpt.control` (notebook 05's simple-CoT contrast): the same section on another stage-4 set,
    one learning rate (the kept one), its own folder; the main set-up is left as it was; null: none."""
    profile = config.load_profile("tiny")
    section = tj.StageSettings.from_section("sft", profile["sft"])
    setup = ts.TrainingSetup("sft", profile, section, ts.SweepPlan.from_section(section), data_dir=tmp_path,
                             stage_dir=tmp_path / "05_sft", model="student", ref_model=None, num_processes=1,
                             accumulation=4)
    control = setup.control(3e-4)
    assert control.section.lpt["data"] == "sft_simple" and control.plan.learning_rates == (3e-4,)
    assert control.stage_dir == tmp_path / "05_sft" / "control" and control.validation_store.parent.parent == control.stage_dir
    assert control.plan.max_epochs == setup.plan.max_epochs and control.section.trl == setup.section.trl
    assert setup.section.lpt["data"] == "sft_long" and setup.plan.learning_rates == (1e-4,)
    assert control.control(1e-4) is None  # a control has no control of its own
    off = copy.deepcopy(profile)
    off["sft"]["lpt"]["control"] = None
    assert dataclasses.replace(setup, section=tj.StageSettings.from_section("sft", off["sft"])).control(1e-4) is None
    with pytest.raises(Exception, match="sft.lpt.control"):
        profile_schema.check(config.apply_overrides(profile, {"sft.lpt.control": "sft_lon"}))


def test_a_job_runs_under_accelerate_launch_on_one_cpu_process(tiny_vlm_dir, sft_file, tmp_path):
    """The training module under `accelerate launch` (one CPU process: the GPU recipes cannot run here),
    through the same `launch_command` and `run_training` the sweep uses."""
    job = tiny_job("sft", tiny_vlm_dir, sft_file, tmp_path / "sft")
    cmd = launch.launch_command("sft", job.save(tmp_path / "job.yaml"), launcher="accelerate", num_processes=1,
                                accelerate_config=launch.ACCELERATE_CPU)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    launch.run_training(cmd, tmp_path / "train.log")
    metrics = json.loads(Path(job.metrics_file).read_text())
    assert metrics["global_step"] == 4 and (Path(job.model_dir) / "model.safetensors").exists()
