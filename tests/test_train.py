"""Stages 5-6 (lpt_utils.train): the contract's loaders, the sweep, the masked X→O prefix on the batches the
trainer really sees, frozen vision weights, resuming, the vLLM-loadable model, and papermill runs of
notebooks 05_sft and 06_dpo (run in the papermill chain, tests/test_notebooks.py) on a hand-built stage-4 folder drawn from tiny-world scenes."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lpt_utils import artifacts, config, mcq, train
from lpt_utils.tiny_world import corpus
from lpt_utils.tiny_world.scenes import load_scene_set, make_scene_set

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
                val.append({**row, "is_valid": True})
                continue
            wrong_letter = next(x for x in "ABCD" if x != row["answer_letter"])
            wrong = row["choices"]["ABCD".index(wrong_letter)]
            right_turn = "<think>" + completion
            prefix = f"<think> I think it is {wrong}."
            recovered = prefix + " Wait," + completion
            wrong_turn = f"{prefix} </think> <answer> {mcq.answer_in_form(row, wrong_letter)} </answer>"
            base = {"mcq_id": row["mcq_id"], "image_id": row["image_id"], "image_path": img,
                    "system": msgs[0]["content"], "user": msgs[1]["content"][1]["text"]}
            sft.append({"id": f"{row['mcq_id']}-O", **base, "assistant": right_turn, "assistant_prefix": "",
                        "source": "O", "num_tokens": 40})
            sft.append({"id": f"{row['mcq_id']}-XO", **base, "assistant": recovered, "assistant_prefix": prefix,
                        "source": "X→O", "num_tokens": 48})
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
    artifacts.write_stage(out, [{"set": "sft_long", "rows": len(sft)}], stage="04_training_data",
                          settings_hash="hand-built")
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return build_training_data(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def processor(tiny_vlm_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_vlm_dir)


TINY = {"per_device_batch_size": 2, "batch_size": 4, "max_length": 1024, "max_pixels": IMAGE_SIZE_PX,
        "scheduler": "cosine", "warmup_steps": 1, "weight_decay": 0.0, "precision": "fp32",
        "gradient_checkpointing": False, "seed": 0, "logging_steps": 1, "max_epochs": 1, "cpu_threads": 1,
        "beta": 1.0, "loss": "sigmoid", "sft_weight": 0.5}


def tiny_job(stage: str, model: Path, train_file: Path, sweep_dir: Path, **changes) -> train.TrainJob:
    job = train.make_job(stage, TINY, model=str(model), train_file=train_file, sweep_dir=sweep_dir, lr=1e-3,
                         epoch=1, num_processes=1, ref_model=str(model) if stage == "dpo" else None)
    return dataclasses.replace(job, **changes)


# ----------------------------------------------------------------------------- plain logic


def test_accumulation_steps_make_the_effective_batch():
    assert train.accumulation_steps(256, 1, 4) == 64
    assert train.accumulation_steps(256, 2, 8) == 16
    assert train.accumulation_steps(None, 1, 4) == 1
    with pytest.raises(ValueError, match="not a multiple"):
        train.accumulation_steps(256, 1, 3)
    with pytest.raises(ValueError, match="not a multiple"):
        train.accumulation_steps(2, 4, 1)


def _fake_sweep(plan, accuracies):
    """Run `train.sweep` with a trainer that only records calls and a validator reading `accuracies`."""
    calls, discarded = [], []

    def train_epoch(lr, epoch):
        calls.append((lr, epoch))
        return {"model_dir": f"/m/{lr}/{epoch}", "global_step": epoch * 3, "seconds": 1.0,
                "log_history": [{"loss": 2.0 / epoch, "epoch": epoch - 0.5}, {"loss": 1.0 / epoch, "epoch": epoch,
                                                                               "rewards/margins": 0.1 * epoch}]}

    def validate(model_dir):
        _, lr, epoch = str(model_dir).rsplit("/", 2)
        return accuracies[float(lr)][int(epoch) - 1]

    results, best = train.sweep(plan, train_epoch, validate if plan.validate else None,
                                discard=lambda p: discarded.append(str(p)))
    return calls, discarded, results, best


def test_sweep_stops_early_per_learning_rate_and_keeps_the_best_epoch():
    plan = train.SweepPlan((1e-5, 8e-6), max_epochs=5, patience=1)
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
    table = train.results_table(results)
    assert list(table.is_best) == [False, False, False, True, False] and "rewards_margins" in table


def test_sweep_patience_two_and_no_early_stop():
    acc = {1e-5: [0.5, 0.4, 0.3, 0.9]}
    calls, *_ = _fake_sweep(train.SweepPlan((1e-5,), 4, patience=2), acc)
    assert calls == [(1e-5, 1), (1e-5, 2), (1e-5, 3)]
    calls, _, _, best = _fake_sweep(train.SweepPlan((1e-5,), 4, patience=None), acc)
    assert len(calls) == 4 and best.epoch == 4


def test_sweep_without_validation_keeps_the_last_epoch():
    calls, discarded, results, best = _fake_sweep(train.SweepPlan((1e-5,), 3, patience=None, validate=False), {})
    assert len(calls) == 3 and best.epoch == 3 and best.val_accuracy is None
    assert discarded == ["/m/1e-05/1", "/m/1e-05/2"]
    with pytest.raises(ValueError, match="needs validation"):
        train.SweepPlan((1e-5, 8e-6), 3, validate=False)


def test_plans_from_the_profiles():
    paper, released, tiny = (config.load_profile(p) for p in ("paper", "released_code", "tiny"))
    assert train.SweepPlan.from_settings(paper["sft"]) == train.SweepPlan((1e-5, 8e-6, 6e-6), 5, 1, True)
    assert train.SweepPlan.from_settings(paper["dpo"]) == train.SweepPlan((1e-6, 5e-7, 1e-7), 3, 1, True)
    assert train.SweepPlan.from_settings(released["sft"]) == train.SweepPlan((1e-5,), 1, None, False)
    assert train.SweepPlan.from_settings(released["dpo"]) == train.SweepPlan((1e-5,), 1, None, False)
    t = train.SweepPlan.from_settings(tiny["sft"])
    assert t.validate and len(t.learning_rates) >= 1 and t.max_epochs >= 2


def test_profile_training_values_follow_facts():
    p, r = config.load_profile("paper"), config.load_profile("released_code")
    for s in (p["sft"], p["dpo"]):
        assert (s["batch_size"], s["max_length"], s["max_pixels"]) == (256, 1024, 262144)
        assert (s["scheduler"], s["warmup_steps"], s["precision"], s["gradient_checkpointing"]) == \
            ("cosine", 5, "bf16", True)
    assert (p["dpo"]["beta"], p["dpo"]["sft_weight"], p["dpo"]["loss"]) == (1.0, 0.5, "sigmoid")
    assert p["dpo"]["families"] == ["O", "X→O"] and p["sft"]["data"] == "sft_long"
    for s in (r["sft"], r["dpo"]):
        assert (s["per_device_batch_size"], s["batch_size"]) == (1, None)  # no accumulation
        assert (s["max_length"], s["max_pixels"]) == (2048, 262144)
    assert (r["dpo"]["beta"], r["dpo"]["sft_weight"], r["dpo"]["families"]) == (0.2, 1.0, ["X→O"])


def test_dpo_job_mixes_the_sft_loss_with_its_weight(tmp_path):
    p = config.load_profile("paper")["dpo"]
    job = dataclasses.replace(train.make_job("dpo", p, model="m", train_file=tmp_path / "t", sweep_dir=tmp_path,
                                             lr=1e-6, epoch=1, num_processes=1, ref_model="m"), precision="fp32")
    args = train._trainer_args(job, use_cpu=True)
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5] and args.beta == 1.0
    assert args.lr_scheduler_type == "cosine" and args.warmup_steps == 5 and args.num_train_epochs == 3
    assert args.gradient_accumulation_steps == 256 and args.max_length == 1024
    r = config.load_profile("released_code")["dpo"]
    job = dataclasses.replace(train.make_job("dpo", r, model="m", train_file=tmp_path / "t", sweep_dir=tmp_path,
                                             lr=1e-5, epoch=1, num_processes=4, ref_model="m"), precision="fp32")
    args = train._trainer_args(job, use_cpu=True)
    assert args.loss_weights == [1.0, 1.0] and args.beta == 0.2 and args.gradient_accumulation_steps == 1


def test_train_job_round_trips_and_rejects_unknown_keys(tmp_path):
    job = tiny_job("dpo", Path("m"), tmp_path / "t.parquet", tmp_path)
    assert train.TrainJob.load(job.save(tmp_path / "job.yaml")) == job
    (tmp_path / "bad.yaml").write_text((tmp_path / "job.yaml").read_text() + "learning_rat: 1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        train.TrainJob.load(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="stop_after_epoch"):
        dataclasses.replace(job, stop_after_epoch=2)


# ----------------------------------------------------------------------------- the contract


def test_load_sft_rows_counts_what_cannot_train(data_dir, tmp_path):
    rows, funnel = train.load_sft_rows(data_dir)
    assert len(rows) == 16 and funnel.steps[0]["out"] == 16
    bad = pd.read_parquet(data_dir / "sft_long.parquet")
    bad.loc[0, "image_path"] = str(tmp_path / "gone.png")
    bad.loc[1, "assistant_prefix"] = "<think> something else"
    bad.loc[2, "assistant"] = "  "
    bad.loc[3, "assistant_prefix"] = bad.loc[3, "assistant"]
    bad.to_parquet(tmp_path / "sft_long.parquet")
    rows, funnel = train.load_sft_rows(tmp_path)
    assert len(rows) == 12
    assert funnel.steps[0]["dropped"] == {"missing_image": 1, "assistant_not_starting_with_prefix": 1,
                                          "empty_assistant": 1, "prefix_is_the_whole_turn": 1}
    bad.drop(columns=["assistant_prefix"]).to_parquet(tmp_path / "sft_long.parquet")
    with pytest.raises(ValueError, match="assistant_prefix"):
        train.load_sft_rows(tmp_path)
    with pytest.raises(FileNotFoundError, match="notebook 04"):
        train.load_sft_rows(tmp_path, "sft_simple")


def test_load_dpo_rows_by_family(data_dir, tmp_path):
    both, _ = train.load_dpo_rows(data_dir, ["O", "X→O"])
    xo, _ = train.load_dpo_rows(data_dir, ["X→O"])
    assert len(both) == 16 and set(xo.family) == {"X→O"} and len(xo) == 8
    with pytest.raises(ValueError, match="families"):
        train.load_dpo_rows(data_dir, ["XO"])
    shutil.copy(data_dir / "dpo_O.parquet", tmp_path / "dpo_XO.parquet")
    with pytest.raises(ValueError, match="another family"):
        train.load_dpo_rows(tmp_path, ["X→O"])
    same = pd.read_parquet(data_dir / "dpo_O.parquet")
    same.loc[0, "rejected"] = same.loc[0, "chosen"]
    same.to_parquet(tmp_path / "dpo_O.parquet")
    rows, funnel = train.load_dpo_rows(tmp_path, ["O"])
    assert len(rows) == 7 and funnel.steps[0]["dropped"] == {"chosen_equals_rejected": 1}


def test_load_val_mcqs(data_dir):
    val = train.load_val_mcqs(data_dir)
    assert len(val) == 4 and set(val.mcq_id).isdisjoint(pd.read_parquet(data_dir / "sft_long.parquet").mcq_id)
    assert len(train.load_val_mcqs(data_dir, 3)) == 3


def test_rendering_splits_at_the_prefix_and_counts_image_tokens(data_dir, processor):
    rows, _ = train.load_sft_rows(data_dir)
    r = rows[rows.source == "X→O"].iloc[0]
    prompt, completion = train.split_turn(processor, r.system, r.user, r.assistant, r.assistant_prefix)
    assert prompt.endswith("<|im_start|>assistant\n" + r.assistant_prefix)
    assert prompt.index("<|image_pad|>") < prompt.index(r.user)  # the image before the question
    assert (r.assistant_prefix + completion).startswith(r.assistant) and completion.endswith("<|im_end|>\n")
    rendered = train.sft_examples(rows, processor, max_length=1024, max_pixels=IMAGE_SIZE_PX)
    assert rendered.counts["with_masked_prefix"] == 8
    assert train.image_token_count(processor, r.image_path, IMAGE_SIZE_PX) == 64  # 224 px: 16 x 16 / 4
    # the cutoff: `drop` removes what is longer, `truncate` keeps it unless the prompt alone reaches it
    n = int(rendered.examples.prompt_tokens.min()) + 5
    dropped = train.sft_examples(rows, processor, max_length=n, max_pixels=IMAGE_SIZE_PX, overlong="drop")
    kept = train.sft_examples(rows, processor, max_length=n, max_pixels=IMAGE_SIZE_PX, overlong="truncate")
    assert len(dropped.examples) == 0 and dropped.funnel.steps[0]["dropped"]
    assert 0 < len(kept.examples) < 16 and kept.counts["truncated_at_cutoff"] == len(kept.examples)


# ----------------------------------------------------------------------------- training on the tiny VLM


@pytest.fixture(scope="module")
def sft_file(data_dir, processor, tmp_path_factory) -> Path:
    rows, _ = train.load_sft_rows(data_dir)
    path = tmp_path_factory.mktemp("sft") / "train_examples.parquet"
    train.sft_examples(rows, processor, max_length=1024, max_pixels=IMAGE_SIZE_PX).examples.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def dpo_file(data_dir, processor, tmp_path_factory) -> Path:
    rows, _ = train.load_dpo_rows(data_dir)
    path = tmp_path_factory.mktemp("dpo") / "train_pairs.parquet"
    train.dpo_examples(rows, processor, max_length=1024, max_pixels=IMAGE_SIZE_PX).examples.to_parquet(path)
    return path


def _collapse_image_pads(text: str) -> str:
    return text.replace("<|image_pad|>", "")


def test_trainer_batches_label_only_what_follows_the_prefix(tiny_vlm_dir, sft_file, data_dir, processor, tmp_path):
    """Every batch SFTTrainer trains on: no label on system, user, image tokens or the X→O prefix; the
    rest of each assistant turn labelled, token for token."""
    job = tiny_job("sft", tiny_vlm_dir, sft_file, tmp_path)
    trainer, proc, _ = train.build_trainer(job)
    seen = []
    inner = trainer.compute_loss

    def recording(model, inputs, *a, **k):
        seen.append({k2: v.detach().clone() for k2, v in inputs.items() if k2 in ("input_ids", "labels",
                                                                                  "attention_mask")})
        return inner(model, inputs, *a, **k)

    trainer.compute_loss = recording
    with train.cpu_threads(1):
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
    m = train.run_job(sft)
    assert m["global_step"] == 4 and m["trainable"] > 0 and m["frozen"] > 0
    assert m["frozen_parameter_tensors"] == train.compare_weights(str(tiny_vlm_dir), str(tiny_vlm_dir)).vision_total
    d = train.compare_weights(str(tiny_vlm_dir), sft.model_dir)
    assert d.vision_changed == 0 and d.vision_total > 0 and d.max_vision_change == 0.0
    assert d.language_changed > 0
    for f in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (Path(sft.model_dir) / f).exists(), f
    dpo = tiny_job("dpo", Path(sft.model_dir), dpo_file, tmp_path / "dpo")
    m = train.run_job(dpo)
    log = [e for e in m["log_history"] if "loss" in e]
    assert log and all("rewards/margins" in e for e in log)
    d = train.compare_weights(sft.model_dir, dpo.model_dir)
    assert d.vision_changed == 0 and d.language_changed > 0


def test_resuming_an_epoch_equals_training_straight_through(tiny_vlm_dir, sft_file, tmp_path):
    """Two calls (epoch 1, then epoch 2 resumed from its checkpoint) give the weights of one 2-epoch call:
    the checkpoint's weights, optimizer, schedule and data order all carry over (this guards the
    work-around for transformers' resume ignoring Qwen2.5-VL's renamed keys)."""
    from safetensors.torch import load_file

    two = dict(epochs=2)
    first = tiny_job("sft", tiny_vlm_dir, sft_file, tmp_path / "a", **two)
    train.run_job(first)
    with pytest.raises(ValueError, match="earlier run"):  # a fresh schedule never mixes with old checkpoints
        train.run_job(first)
    second = dataclasses.replace(first, stop_after_epoch=2, resume=True,
                                 model_dir=str(tmp_path / "a" / "e2"), metrics_file=str(tmp_path / "a" / "m2.json"))
    resumed = train.run_job(second)
    straight = tiny_job("sft", tiny_vlm_dir, sft_file, tmp_path / "b", epochs=2, stop_after_epoch=2)
    whole = train.run_job(straight)
    a = load_file(Path(second.model_dir) / "model.safetensors")
    b = load_file(Path(straight.model_dir) / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert [e["loss"] for e in resumed["log_history"] if "loss" in e] == \
        [e["loss"] for e in whole["log_history"] if "loss" in e]
    with pytest.raises(ValueError, match="already trained"):
        train.run_job(second)


# ----------------------------------------------------------------------------- slow: vLLM and the notebooks


@pytest.mark.slow
def test_trained_model_is_validated_through_vllm(tiny_vlm_dir, sft_file, data_dir, tmp_path, models_dir):
    job = tiny_job("sft", tiny_vlm_dir, sft_file, tmp_path)
    train.run_job(job)
    s = config.load_profile("tiny")
    val = train.load_val_mcqs(data_dir).to_dict("records")
    store = tmp_path / "val.jsonl"
    res = train.validation_accuracy(Path(job.model_dir), val, s["student"]["engine"],
                                    s["sft"]["validation"]["sampling"], store, models_dir)
    assert res.samples == len(val) and 0 <= res.accuracy <= 1 and res.parsed >= 1
    assert any(r.raw_text.strip() != "<think>" for r in res.rows)  # the engine generated text
    assert sum(1 for _ in store.open()) == len(val)


def test_a_stopped_sweep_resumes_and_a_finished_one_is_not_retrained(tmp_path, monkeypatch, data_dir):
    """The notebooks' sweep (`run_sweep`), with the training subprocess and the validation engine
    replaced by recorders: a sweep killed after its second training call resumes at the third (epochs 1-2 reused,
    scores of discarded models read back), a re-run of the finished sweep trains and scores nothing,
    and a changed setting starts afresh."""
    from lpt_utils import launch

    s = dict(config.load_profile("tiny")["sft"], learning_rates=[1e-3, 1e-4], max_epochs=2, early_stop_patience=None)
    train_file = tmp_path / "examples.parquet"
    pd.DataFrame({"x": [1, 2]}).to_parquet(train_file)
    trained, scored = [], []
    acc = {"lr-1e-3": [0.2, 0.5], "lr-1e-4": [0.4, 0.3]}

    def fake_training(cmd, log_file, **kw):
        job = train.TrainJob.load(cmd[cmd.index("--config") + 1])
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
        return train.ValidationResult(accuracy=acc[lr][ep - 1], samples=10, parsed=10)

    monkeypatch.setattr(launch, "run_training", fake_training)
    monkeypatch.setattr(train, "validation_accuracy", fake_validation)

    profile = config.load_profile("tiny")

    def run(settings, stop_after_calls=None):
        stop_after[0] = stop_after_calls
        out = train.run_sweep("sft", {**profile, "sft": settings}, model="base", train_file=train_file,
                              data_dir=data_dir, stage_dir=tmp_path / "05_sft", models_dir=tmp_path, num_processes=1)
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
