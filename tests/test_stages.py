"""The stage registry: hashes that cover upstream stages, staleness that names the notebook to re-run,
rows checked against their record, and parts written by several writers merged into one file."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from lpt_utils import artifacts, config, stages
from lpt_utils.artifacts import Funnel
from lpt_utils.records import MCQ, SimpleCoT


def _run(tmp_path, **overrides):
    return config.resolve_run("tiny", "r", {"paths.outputs": str(tmp_path / "o"),
                                            "paths.figures": str(tmp_path / "f"), **overrides})


def _mcqs(n=3, question="What colour?"):
    return pd.DataFrame([MCQ(mcq_id=f"m{i}", image_id=f"i{i}", image_path="x.png", description="d", item_index=i,
                             question=question, choices=["a", "b", "c", "d"], answer="a", answer_letter="A",
                             question_type="recognition", choice_form="paren", answer_form="paren_letter",
                             is_valid=True, invalid_reason="", raw_response="", reformatted_response="",
                             raw_item="").to_row() for i in range(n)])


def _simple(mcq_ids):
    return pd.DataFrame([asdict(SimpleCoT(
        mcq_id=m, response_id=f"{m}-s0", image_id="i", image_path="x.png", question_type="recognition",
        raw_text="<think>t</think><answer>A</answer>", thought="t", answer="A", answer_letter="A",
        named_letter="A", match="letter", match_released="letter", correct_strict=True, correct_released=True,
        rule="strict", is_correct=True, label="O", response_shape="think_answer", num_tokens=3, finish_reason="stop",
        kept=True, drop_reason="")) for m in mcq_ids])


def test_every_stage_is_declared_once_with_its_notebook(tmp_path):
    assert [s.folder for s in stages.SPECS] == ["00_sources", "01_mcq", "02_simple_cot", "03_long_cot",
                                                  "04_training_data", "05_sft", "06_dpo", "07_eval"]
    notebooks = {p.stem for p in (config.REPO_ROOT / "notebooks").glob("*.ipynb")}
    assert {s.notebook for s in stages.SPECS} == notebooks
    settings = _run(tmp_path).settings
    for s in stages.SPECS:  # every declared setting exists in the profiles
        for path in s.shaped_by:
            assert stages.setting(settings, path) is not None or path.startswith("plugins"), (s.key, path)


def test_a_stage_hash_covers_its_settings_and_its_upstream_stages(tmp_path):
    base = _run(tmp_path)
    h = {k: base.stage(k).hash for k in ("mcq", "simple_cot", "long_cot", "eval")}
    writer = _run(tmp_path, **{"mcq.writer.sampling.temperature": 0.5})  # upstream of everything
    assert all(writer.stage(k).hash != h[k] for k in h)
    tokenizer = _run(tmp_path, **{"student.engine.model": "other"})  # the student's tokenizer shapes 03
    assert tokenizer.stage("mcq").hash == h["mcq"] and tokenizer.stage("long_cot").hash != h["long_cot"]
    judge = _run(tmp_path, **{"behaviours.max_texts": 3})
    assert judge.stage("simple_cot").hash == h["simple_cot"] and judge.stage("long_cot").hash != h["long_cot"]
    unrelated = _run(tmp_path, **{"eval.limit": 5})
    assert [unrelated.stage(k).hash for k in ("mcq", "simple_cot", "long_cot")] == \
        [h["mcq"], h["simple_cot"], h["long_cot"]]


def test_status_names_the_notebook_to_rerun(tmp_path):
    run = _run(tmp_path)
    assert run.stage("simple_cot").status().state == "missing"
    run.stage("mcq").write(_mcqs())
    run.stage("simple_cot").write(_simple(["m0", "m1"]))
    assert run.stage("simple_cot").status() and run.stage("simple_cot").load().shape[0] == 2
    # 01 written again with other rows: 02 was made from another 01
    run.stage("mcq").write(_mcqs(question="What shape?"))
    st = run.stage("simple_cot").status()
    assert st.state == "stale" and "another 01_mcq" in st.reason and st.rerun == "02_simple_cot"
    with pytest.raises(stages.StaleStage, match="run 02_simple_cot again"):
        run.stage("simple_cot").load()
    assert len(run.stage("simple_cot").load(check=False)) == 2  # displays may still read it
    # 01 written again identically: 02 is current again (same settings, same data)
    run.stage("mcq").write(_mcqs())
    assert run.stage("simple_cot").status()
    # other settings upstream: both are stale, each naming its own notebook
    other = _run(tmp_path, **{"mcq.randomise_seed": 7})
    assert other.stage("mcq").status().rerun == "01_captions_to_mcq"
    assert other.stage("simple_cot").status().state == "stale"


def test_a_run_written_before_the_registry_is_stale(tmp_path):
    run = _run(tmp_path)
    d = run.stage_dir("mcq")
    d.mkdir(parents=True)
    _mcqs().to_parquet(d / "data.parquet")
    (d / "manifest.json").write_text(json.dumps({"stage": "01_mcq", "settings_hash": "0123456789abcdef",
                                                 "inputs": {}}))
    st = run.stage("mcq").status()
    assert st.state == "stale" and "before stage hashes covered" in st.reason
    assert run.stale()["01_mcq"].state == "stale" and run.stale()["02_simple_cot"].state == "missing"


def test_rows_must_match_the_stage_record(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(ValueError, match=r"missing \['mcq_id'\]"):
        run.stage("mcq").write(_mcqs().drop(columns="mcq_id"))
    with pytest.raises(ValueError, match=r"not declared \['colour'\]"):
        run.stage("mcq").write(_mcqs().assign(colour="red"))
    with pytest.raises(Exception):  # a type the record does not allow
        run.stage("mcq").write(_mcqs().assign(item_index="first"))


def test_parts_merge_without_repeats_and_sum_their_funnels(tmp_path):
    run = _run(tmp_path)
    run.stage("mcq").write(_mcqs(4))
    stage = run.stage("simple_cot")
    for k, ids in enumerate((["m0", "m1"], ["m1", "m2"], ["m3"])):
        f = Funnel()
        f.add("parse", len(ids) + 1, len(ids), {"unparsable": 1})
        stage.write(_simple(ids), funnel=f, counts={"n": len(ids)}, part=f"{k}-of-3")
    assert stage.parts() == ["0-of-3", "1-of-3", "2-of-3"] and stage.status().state == "missing"
    with pytest.raises(ValueError, match="3 of 4 parts"):
        stage.merge(expected=4)
    stage.merge(expected=3)
    df, m = stage.load(), stage.manifest()
    assert sorted(df.response_id) == ["m0-s0", "m1-s0", "m2-s0", "m3-s0"]
    assert m["counts"]["repeated_across_parts"] == 1 and m["funnel"][0] == {
        "step": "parse", "in": 8, "out": 5, "dropped": {"unparsable": 3}}
    assert stage.status()


def test_a_merge_sums_the_ground_truth_agreement_and_keeps_each_parts_extras(tmp_path):
    """Stage 1 run as shards: the merged manifest carries the writer's agreement over all parts (counts
    summed, shares recomputed), not only per part, and each part's other extras (its source report)."""
    from lpt_utils.pipeline.mcq import ground_truth_agreement

    stage = _run(tmp_path).stage("mcq")
    rows = _mcqs(5).to_dict("records")
    rows[3]["question_type"] = "counting and quantification"
    verdicts = [True, False, None, True, True]
    for k, (lo, hi) in enumerate(((0, 3), (3, 5))):
        stage.write(pd.DataFrame(rows[lo:hi]), part=f"{k}-of-2",
                    extra={"source": {"images": hi - lo}, "ground_truth_agreement": ground_truth_agreement(
                        rows[lo:hi], verdicts[lo:hi])})
    stage.merge(expected=2)
    m = stage.manifest()
    assert m["ground_truth_agreement"] == ground_truth_agreement(rows, verdicts)  # as one process would
    assert [r["question_type"] for r in m["ground_truth_agreement"]] == [
        "counting and quantification", "recognition", "all"]
    assert m["ground_truth_agreement"][-1] == {"question_type": "all", "mcqs": 5, "graded": 4, "agree": 3,
                                               "share": 0.75}
    assert m["part_extras"]["1-of-2"]["source"] == {"images": 2}

    with pytest.raises(ValueError, match=r"would overwrite the manifest's own"):
        stage.write(pd.DataFrame(rows[3:]), part="1-of-2", extra={"counts": {}})

    # a part written without a grader: no total that would read as covering every part
    stage.write(pd.DataFrame(rows[3:]), part="1-of-2", extra={"ground_truth_agreement": None})
    stage.merge(expected=2)
    assert stage.manifest()["ground_truth_agreement"] is None


def test_rerun_stale_runs_the_chain_from_the_first_stale_stage(tmp_path):
    from lpt_utils.reproduce import stale_chain

    run = _run(tmp_path)
    assert stale_chain(run)[0] == "01_captions_to_mcq"  # nothing written: everything, in order
    run.stage("mcq").write(_mcqs())
    run.stage("simple_cot").write(_simple(["m0"]))
    chain = stale_chain(run)
    assert chain[:2] == ["03_long_cot", "04_build_datasets"] and chain[-1] == "07_eval_benchmarks"
    run.stage("mcq").write(_mcqs(question="What shape?"))  # 01 again, other rows: 02 onwards is stale
    assert stale_chain(run)[0] == "02_simple_cot" and len(stale_chain(run)) == 6


def test_shards_split_by_mcq_id_whatever_the_row_order():
    df = pd.DataFrame({"mcq_id": [f"img{i // 3}-q{i % 3}" for i in range(60)], "sample": range(60)})
    parts = [stages.take_shard(df, "mcq_id", i, 3) for i in range(3)]
    assert sum(len(p) for p in parts) == 60 and all(len(p) for p in parts)
    assert set.union(*(set(p.mcq_id) for p in parts)) == set(df.mcq_id)
    assert not set(parts[0].mcq_id) & set(parts[1].mcq_id)  # an MCQ lives in one shard
    shuffled = df.sample(frac=1, random_state=0)
    assert set(stages.take_shard(shuffled, "mcq_id", 1, 3).mcq_id) == set(parts[1].mcq_id)
    assert stages.take_shard(df, "mcq_id", 0, 1) is df
    with pytest.raises(ValueError, match="shard_index 3 is not in 0..2"):
        stages.take_shard(df, "mcq_id", 3, 3)


def _images(*paths: Path) -> list[str]:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(p.name.encode())
    return [str(p) for p in paths]


def test_a_copied_run_reads_the_images_inside_the_copy_and_stays_current(tmp_path):
    """A run copied elsewhere (another machine, another mount) with its original gone: its rows name the
    images inside the copy, paths outside the run (a DOCCI folder) stay as they were, and no stage turns
    stale, since the files themselves are not rewritten."""
    run = _run(tmp_path)
    inside, outside = _images(run.run_dir / "00_sources" / "images" / "a.png", tmp_path / "docci" / "b.png")
    run.stage("mcq").write(_mcqs(2).assign(image_path=[inside, outside]))
    run.stage("simple_cot").write(_simple(["m0", "m1"]).assign(image_path=[inside, outside]))
    copy = tmp_path / "elsewhere" / "outputs"
    shutil.copytree(run.run_dir.parent, copy)
    shutil.rmtree(run.run_dir)

    moved = config.open_run("r", outputs=copy)
    here = str((copy / "r" / "00_sources" / "images" / "a.png").resolve())
    for stage in ("mcq", "simple_cot"):
        assert moved.stage(stage).status(), moved.stage(stage).status()
        assert moved.stage(stage).load().image_path.tolist() == [here, outside]
    assert Path(here).read_bytes() == b"a.png"
    assert artifacts.load_stage(moved.stage("mcq").dir).image_path.tolist() == [here, outside]
    assert artifacts.load_stage(moved.stage("mcq").dir, as_pandas=False)["image_path"] == [here, outside]
    # the file keeps what it was written with; only readers see the run where it is
    assert pd.read_parquet(moved.stage("mcq").dir / "data.parquet").image_path[0] == inside


def test_a_stage_folder_copied_into_another_run_without_its_images_keeps_their_paths(tmp_path):
    """Only a stage's folder copied into another run (its images left where they were): the rows keep
    naming the images that exist."""
    run = _run(tmp_path)
    (inside,) = _images(run.run_dir / "00_sources" / "images" / "a.png")
    run.stage("mcq").write(_mcqs(1).assign(image_path=[inside]))
    other = _run(tmp_path, **{"paths.outputs": str(tmp_path / "other")})
    shutil.copytree(run.stage("mcq").dir, other.stage("mcq").dir)
    assert other.stage("mcq").load().image_path.tolist() == [inside]


def test_parts_written_where_the_run_was_mounted_elsewhere_merge_onto_this_mount(tmp_path):
    """An array job whose nodes mount the run's folder at different paths: each part records its own,
    and the merged stage names every image where the run is mounted for the merge."""
    node = _run(tmp_path / "node")
    node.stage("mcq").write(_mcqs(2))
    stage = node.stage("simple_cot")
    stage.write(_simple(["m0"]).assign(image_path=_images(node.run_dir / "img" / "a.png")), part="0-of-2")
    here = tmp_path / "login" / "outputs"
    shutil.copytree(node.run_dir.parent, here)
    login = config.open_run("r", outputs=here)
    login.stage("simple_cot").write(_simple(["m1"]).assign(image_path=_images(login.run_dir / "img" / "b.png")),
                                    part="1-of-2")
    login.stage("simple_cot").merge(expected=2)
    got = login.stage("simple_cot").load().sort_values("mcq_id").image_path.tolist()
    assert got == [str((here / "r" / "img" / n).resolve()) for n in ("a.png", "b.png")]
