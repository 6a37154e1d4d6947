"""End to end: the numbered notebooks, executed with papermill on the tiny profile, as a user runs them.

One chain per test session (module fixture): each notebook runs once into a temporary outputs folder,
and the tests below check what a user relies on in its artifacts, figures and executed copy.
"""

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from lpt_utils import artifacts, config
from lpt_utils.reproduce import notebooks, run_notebook

pytestmark = pytest.mark.slow


# Every path of the tiny profile, on fewer scenes than `make reproduce` draws (24 of 48 images; a
# 132-item benchmark of 24 held-out scenes instead of 618 items) and one SFT epoch instead of two, so
# that `make test` keeps its budget. Multi-epoch sweeps (resuming, early stopping, clean-up of the
# epochs not kept) are tested in tests/test_train.py.
CHAIN_SIZES = {"data.num_images": 24, "eval.benchmarks.synthetic.n_scenes": 24, "sft.lpt.max_epochs": 1}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    overrides = {"paths.outputs": str(root / "outputs"), "paths.figures": str(root / "figures"), **CHAIN_SIZES}
    run = config.resolve_run("tiny", "nbtest", overrides)
    executed = {}
    for nb in notebooks():
        executed[nb.stem[:2]] = run_notebook(nb, "tiny", "nbtest", overrides, out_dir=root / "executed")
    return run, executed


def rerun(run, number: str):
    """Run notebook `number` again into the same run; returns its executed copy."""
    overrides = {"paths.outputs": str(run.run_dir.parent), "paths.figures": str(run.figures_dir.parent), **CHAIN_SIZES}
    return run_notebook(notebooks([number])[0], "tiny", run.name, overrides, out_dir=run.run_dir / "rerun")


def stored_calls(stage) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (stage / "requests").glob("*.jsonl")}


def test_notebooks_are_committed_without_outputs():
    for nb in notebooks():
        doc = nbformat.read(nb, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in doc.cells), nb.name
        for c in doc.cells:
            if c.cell_type == "code":
                assert not c.outputs and c.execution_count is None, f"{nb.name} has outputs"


def test_01_writes_mcqs(tiny_run):
    run, executed = tiny_run
    stage = run.stage_dir("mcq")
    df = artifacts.load_stage(stage)
    manifest = artifacts.read_manifest(stage)
    for col in ("mcq_id", "image_id", "image_path", "description", "question", "choices", "answer",
                "answer_letter", "question_type", "choice_form", "answer_form", "is_valid",
                "invalid_reason", "raw_response", "reformatted_response"):
        assert col in df.columns, col
    valid = df[df.is_valid]
    assert len(valid) >= 20, manifest["funnel"]
    assert df.mcq_id.is_unique
    for _, r in valid.iterrows():
        assert len(r.choices) == 4 and r.choices["ABCD".index(r.answer_letter)] == r.answer
        assert Path(r.image_path).exists()
    assert manifest["counts"]["valid"] == len(valid)
    assert manifest["funnel"][-1]["out"] == len(valid)
    assert manifest["settings_hash"] == run.stage("mcq").hash
    assert (run.figures_dir / "01_question_types.png").stat().st_size > 1000
    # the synthetic source grades its MCQs against the scenes: every valid MCQ counted, per type and in all
    agreement = {row["question_type"]: row for row in manifest["ground_truth_agreement"]}
    assert agreement["all"]["mcqs"] == len(valid) and 0 < agreement["all"]["graded"] <= len(valid)
    assert sum(r["mcqs"] for k, r in agreement.items() if k != "all") == len(valid)
    # loadable with datasets, as the artifact promises
    assert artifacts.load_stage(stage, as_pandas=False).num_rows == len(df)
    # the executed copy kept its outputs
    doc = nbformat.read(executed["01"], as_version=4)
    assert any(c.get("outputs") for c in doc.cells if c.cell_type == "code")


def test_the_chain_leaves_every_stage_current(tiny_run):
    run, _ = tiny_run
    status = run.stale()
    assert all(status.values()), {k: str(v) for k, v in status.items()}


def test_01_rerun_calls_no_model_and_changes_nothing(tiny_run):
    run, _ = tiny_run
    stage = run.stage_dir("mcq")
    before = stored_calls(stage)
    rows_before = artifacts.load_stage(stage)
    out = rerun(run, "01")
    assert stored_calls(stage) == before  # nothing generated, nothing appended
    assert artifacts.load_stage(stage).equals(rows_before)
    text = json.dumps(nbformat.read(out, as_version=4).cells[-1].get("outputs", []))
    assert "wrote" in text


def test_02_writes_simple_cots_with_both_labels(tiny_run):
    run, _ = tiny_run
    mcqs = artifacts.load_stage(run.stage_dir("mcq"))
    df = artifacts.load_stage(run.stage_dir("simple_cot"))
    manifest = artifacts.read_manifest(run.stage_dir("simple_cot"))
    n = run.settings["simple_cot"]["sampling"]["n"]
    assert len(df) == n * int(mcqs.is_valid.sum())  # every valid MCQ, n samples, dropped rows kept
    assert set(df.mcq_id) == set(mcqs[mcqs.is_valid].mcq_id)
    assert df.response_id.is_unique
    for col in ("raw_text", "thought", "answer", "is_correct", "label", "num_tokens", "kept", "drop_reason"):
        assert col in df.columns, col
    assert df.raw_text.str.startswith("<think>").all()
    assert (df.raw_text.str.count("<think>") == 1).all()  # exactly one opening tag
    kept = df[df.kept]
    assert {"O", "X"} <= set(kept.label)  # both right and wrong simple CoTs occur
    assert (kept.label == "O").equals(kept.is_correct)
    assert set(df[~df.kept].drop_reason) <= {"unparsable", "duplicate"}
    assert manifest["counts"]["O"] == int((kept.label == "O").sum())
    assert manifest["funnel"][-1]["out"] == len(kept)
    for name in ("02_accuracy_by_type", "02_lengths", "02_funnel"):
        assert (run.figures_dir / f"{name}.png").exists(), name


def test_03_writes_long_cots_with_all_four_transitions(tiny_run):
    run, executed = tiny_run
    simple = artifacts.load_stage(run.stage_dir("simple_cot"))
    df = artifacts.load_stage(run.stage_dir("long_cot"))
    manifest = artifacts.read_manifest(run.stage_dir("long_cot"))
    L = run.settings["long_cot"]
    assert len(df) == L["sampling"]["n"] * int(simple.kept.sum())  # every kept simple CoT, n samples
    assert df.long_id.is_unique and set(df.simple_id) == set(simple[simple.kept].response_id)
    kept = df[df.kept]
    assert set(kept.transition) == {"O→O", "O→X", "X→O", "X→X"}
    assert set(df.cue) <= set(L["cues"]) and set(df.separator) <= set(L["separators"])
    # the prefix carries the simple thought with its own casing and ends with the cue
    for _, r in kept.head(50).iterrows():
        assert r.prefix.endswith(r.cue)
        assert r.simple_thought.strip()[1:] in r.prefix and r.prefix.count("<think>") == 1
        assert r.long_thought.endswith(r.added_thought) and r.cue in r.long_thought
        assert not r.banned_hits.tolist()
    assert set(df[~df.kept].drop_reason) <= {"unparsable", "banned word", "duplicate"}
    assert manifest["counts"]["transitions"] == kept.transition.value_counts().to_dict()
    assert manifest["funnel"][-1]["out"] == len(kept)
    assert manifest["ban_effect"]["filter only"]["continuations"] > 0  # the ban was measured
    # The tiny reasoner writes like an R1 distill: a summary between </think> and <answer> in at
    # least a third of what parses, the description named in some re-checks (dropped by the filter),
    # and what fails to parse is mostly what the token limit cut off.
    parsed = df[df.drop_reason != "unparsable"]
    assert (parsed.response_shape == "think_summary_answer").mean() >= 1 / 3
    assert (df.drop_reason == "banned word").sum() > 0
    # (a tiny model slips now and then, writing "<answer>" without closing its thought: at most 3% may;
    # the 720-step LM did in 29 of 1,353 continuations, 2.1%, measured)
    assert ((df.drop_reason == "unparsable") & (df.finish_reason != "length")).mean() <= 0.03
    # both verdicts are stored; the profile's rule labels the transition
    assert (df.rule == L["rule"]).all() and (kept.is_correct == kept[f"correct_{L['rule']}"]).all()
    for name in ("03_funnel", "03_transitions", "03_lengths"):
        assert (run.figures_dir / f"{name}.png").exists(), name
    text = json.dumps([c.get("outputs", []) for c in nbformat.read(executed["03"], as_version=4).cells])
    assert "lpt-card" in text and 'class=\\"cue\\"' in text  # the side-by-side examples were shown


def test_03_rerun_calls_no_model(tiny_run):
    run, _ = tiny_run
    stage = run.stage_dir("long_cot")
    before = stored_calls(stage)
    rows_before = artifacts.load_stage(stage)
    rerun(run, "03")
    assert stored_calls(stage) == before
    assert artifacts.load_stage(stage).equals(rows_before)


def test_04_writes_the_training_sets(tiny_run):
    run, _ = tiny_run
    stage = run.stage_dir("training_data")
    manifest = artifacts.read_manifest(stage)
    import pandas as pd

    from lpt_utils.pipeline import sharegpt
    from lpt_utils.pipeline.training_data import DPO_COLUMNS, SFT_COLUMNS

    sft = pd.read_parquet(stage / "sft_long.parquet")
    assert tuple(sft.columns) == SFT_COLUMNS and sft.id.is_unique
    assert set(sft.source) == {"O", "O→O", "X→O"}
    xo = sft[sft.source == "X→O"]
    assert (xo.assistant_prefix.str.len() > 0).all() and all(a.startswith(p) for a, p in zip(xo.assistant, xo.assistant_prefix))
    assert (sft[sft.source != "X→O"].assistant_prefix == "").all()
    simple = pd.read_parquet(stage / "sft_simple.parquet")
    assert set(simple.source) == {"O"}
    for name, families in (("dpo_O", {"O>O→X", "O>X"}), ("dpo_XO", {"X→O>X→X", "X→O>X"})):
        d = pd.read_parquet(stage / f"{name}.parquet")
        assert tuple(d.columns) == DPO_COLUMNS and set(d.pair_type) == families and (d.chosen != d.rejected).all()
    val = pd.read_parquet(stage / "val_mcqs.parquet")
    assert len(val) and not set(val.image_id) & set(sft.image_id)  # held-out images never train
    assert manifest["counts"]["sets"]["sft_long"] == len(sft)
    assert (stage / "README.md").read_text().count("parquet") >= 4
    assert sharegpt.read_release(stage / "sharegpt" / "sft_long.json", "sft") == sft.to_dict("records")
    assert (run.figures_dir / "04_dpo_pairs.png").exists()


def test_figures_rerender_from_artifacts_without_a_model(tiny_run, tmp_path, monkeypatch):
    import shutil

    from lpt_utils import engines
    from lpt_utils.config import open_run
    from lpt_utils.viz import figures

    run, _ = tiny_run
    monkeypatch.setattr(engines, "make_engine", lambda *a, **k: pytest.fail("figures called a model"))
    opened = open_run(run.name, run.run_dir.parent)
    assert opened.settings == run.settings
    shutil.rmtree(run.figures_dir)
    made = figures.render(opened)
    names = {p.name for paths in made.values() if isinstance(paths, list) for p in paths}
    for name in ("01_question_types", "02_accuracy_by_type", "03_transitions", "03_lengths", "03_behaviours",
                 "03_recovery_example", "04_dpo_pairs", "05_loss", "05_validation", "06_reward_margins",
                 "07_results", "07_length_vs_accuracy", "07_easy_vs_hard_tokens"):
        assert f"{name}.png" in names and (run.figures_dir / f"{name}.png").stat().st_size > 5000, name
    judged = pd.read_parquet(run.stage_dir("long_cot") / "behaviours.parquet")
    assert set(judged.kind) == {"simple", "long"}


def test_inspector_opens_in_02_to_04(tiny_run):
    """Each of notebooks 02-04 ends with the inspector: the executed copy holds the widget and the
    static snapshot that stands in where no kernel runs."""
    _, executed = tiny_run
    for nb in ("02", "03", "04"):
        last = nbformat.read(executed[nb], as_version=4).cells[-1]
        kinds = {k for o in last.get("outputs", []) for k in o.get("data", {})}
        text = json.dumps(last.get("outputs", []))
        assert "application/vnd.jupyter.widget-view+json" in kinds, nb
        assert "text/html" in kinds and "lpt-card" in text and "data:image/jpeg;base64" in text, nb


def test_05_and_06_train_save_and_plot(tiny_run):
    """SFT then DPO on the chain's stage-4 data: a model directory each, language weights changed,
    vision weights bit-identical, the sweep's best epoch kept and the rest cleaned up."""
    run, _ = tiny_run
    for stage in ("sft", "dpo"):
        d = run.stage_dir(stage)
        table = artifacts.load_stage(d)
        manifest = artifacts.read_manifest(d)
        assert table.is_best.sum() == 1 and len(table) == manifest["counts"]["epochs_trained"]
        assert manifest["weights"]["language_changed"] > 0 and manifest["weights"]["vision_changed"] == 0
        assert (d / "model" / "model.safetensors").exists() and (d / "model" / "processor_config.json").exists()
        assert json.loads((d / "model" / "selected_from.json").read_text())["is_best"]
        assert not list((d / "sweep").glob("*/checkpoints/checkpoint-*"))  # optimizer states removed
        assert not list((d / "sweep").glob("*/epoch-*/model"))  # only the kept model remains
    sft = artifacts.read_manifest(run.stage_dir("sft"))
    assert len(set(artifacts.load_stage(run.stage_dir("sft")).learning_rate)) == len(run.settings["sft"]["lpt"]["learning_rates"])
    assert sft["counts"]["with_masked_prefix"] == sft["counts"]["by_source"]["X→O"] > 0
    assert artifacts.read_manifest(run.stage_dir("dpo"))["reference_model"] == str(run.stage_dir("sft") / "model")
    # the simple-CoT control: trained on sft_simple at the kept learning rate, into 05_sft/control/
    control = sft["control"]
    assert control["data"] == "sft_simple" and control["learning_rate"] == sft["counts"]["kept_learning_rate"]
    assert (run.stage_dir("sft") / "control" / "model" / "model.safetensors").exists() and control["examples"] > 0
    for fig in ("05_loss", "05_validation", "06_loss", "06_reward_margins", "06_validation"):
        assert (run.figures_dir / f"{fig}.png").stat().st_size > 1000, fig


def test_07_scores_base_sft_dpo_beside_the_paper(tiny_run):
    run, executed = tiny_run
    stage = run.stage_dir("eval")
    df = artifacts.load_stage(stage)
    for col in ("model", "prompt", "benchmark", "item_id", "raw_output", "extracted", "answered", "correct"):
        assert col in df.columns, col
    rows = set(zip(df.model, df.prompt))
    assert rows == {("base", "direct"), ("base", "think"), ("sft", "think"), ("dpo", "think"), ("sft_simple", "think")}
    n_items = df[(df.model == "base") & (df.prompt == "direct")].item_id.nunique()
    assert n_items > 50 and all(len(g) == n_items for _, g in df.groupby(["model", "prompt"]))
    # the tiny student sometimes answers the direct prompt without answer tags: the fallbacks run
    direct = df[df.prompt == "direct"]
    assert (direct.source != "answer_tags").sum() > 0 and (direct.source == "answer_tags").sum() > 0
    results = (stage / "results.md").read_text()
    assert "base" in results and "dpo" in results and "Synthetic" in results
    # the paper's numbers are printed beside the real-benchmark columns
    text = json.dumps([c.get("outputs", []) for c in nbformat.read(executed["07"], as_version=4).cells])
    assert "58.47" in text and "61.87" in text
    assert (stage / "difficulty.parquet").exists()
    # the manifest names each scored model with the identity of its weights (a re-trained model differs)
    scored = artifacts.read_manifest(stage)["models"]
    assert set(scored) == {"base", "sft", "dpo", "sft_simple"}, scored
    assert scored["sft"]["identity"] and scored["sft"]["identity"] != scored["dpo"]["identity"]
    assert scored["base"]["identity"].startswith("recipe:")  # the tiny student, built from its recipe
    # every trained row against base/think, paired by item, under both rules
    paired = artifacts.read_manifest(stage)["paired_differences"]
    assert {(p["model"], p["rule"]) for p in paired} >= {(m, r) for m in ("sft", "dpo", "sft_simple")
                                                          for r in ("released", "strict")}
    assert all(p["ci_low"] <= p["difference"] <= p["ci_high"] and p["baseline"] == "base/think" for p in paired)
    # accuracy per question type of the synthetic benchmark, with its interval beside chance
    by_type = [g for g in artifacts.read_manifest(stage)["subset_intervals"] if (g["model"], g["prompt"]) == ("base", "think")]
    assert {g["subset"] for g in by_type} == {"recognition", "counting and quantification", "spatial and relational"}
    assert all(g["ci_low"] <= g["accuracy"] <= g["ci_high"] and g["chance"] == 25.0 for g in by_type)
    for fig in ("07_results", "07_length_vs_accuracy", "07_easy_vs_hard_tokens", "07_paired_differences"):
        assert (run.figures_dir / f"{fig}.png").stat().st_size > 1000, fig


def test_07_rerun_calls_no_model(tiny_run):
    run, _ = tiny_run
    stage = run.stage_dir("eval")
    before = stored_calls(stage)
    rows_before = artifacts.load_stage(stage)
    rerun(run, "07")
    assert stored_calls(stage) == before
    assert artifacts.load_stage(stage).equals(rows_before)


def test_05_rerun_trains_nothing(tiny_run):
    run, _ = tiny_run
    stage = run.stage_dir("sft")
    model = (stage / "model" / "model.safetensors").read_bytes()
    table = artifacts.load_stage(stage)
    out = rerun(run, "05")
    text = json.dumps([c.get("outputs", []) for c in nbformat.read(out, as_version=4).cells])
    control = artifacts.read_manifest(stage)["control"]  # the control's epochs are reused too
    assert "resuming" in text and text.count("finished in an earlier run, reused") == len(table) + control["epochs_trained"]
    assert "scored in an earlier run" in text and "its answers are in" in text  # the kept model's score read back
    assert (stage / "model" / "model.safetensors").read_bytes() == model
    assert artifacts.load_stage(stage)[["learning_rate", "epoch", "val_accuracy"]].equals(
        table[["learning_rate", "epoch", "val_accuracy"]])


def test_inspector_works_in_jupyterlab(tiny_run, tmp_path, chromium):
    """In a real JupyterLab, driven through headless chromium by Playwright: the inspector's widget
    draws over the chain's run, `next ▶` steps to the second MCQ, the transition filter narrows the list
    to the MCQs the library says match, and `export HTML` writes that selection's page."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import CHROMIUM_FLAGS

    from lpt_utils.viz import inspector

    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    run, _ = tiny_run
    view = inspector.load_view(run)
    all_ids = inspector.matching_mcqs(view, inspector.Filters())
    xo_ids = inspector.matching_mcqs(view, inspector.Filters(transition="X→O"))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "lpt", "display_name": "LPT (.venv)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(f"from lpt_utils.viz import inspector\ninspector.inspect({str(run.run_dir)!r})")]
    nbformat.write(nb, tmp_path / "inspect.ipynb")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
         "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={tmp_path}",
         "--LabApp.extension_manager=readonly"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=5)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, (tmp_path / "lab.log").read_text()[-2000:]
                time.sleep(1)
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = chrome.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"http://127.0.0.1:{port}/lab/tree/inspect.ipynb")
            page.wait_for_selector(".jp-Notebook .jp-Cell .jp-InputArea-editor", timeout=120_000)
            page.wait_for_selector("text=LPT (.venv) | Idle", timeout=120_000)
            page.click(".jp-Cell .jp-InputArea-editor")
            page.keyboard.press("Shift+Enter")
            page.wait_for_selector(".widget-button >> text=next ▶", timeout=180_000)
            # The MCQ view's first MCQ id, waited for (never read at once: the kernel's updates
            # reach the page when they reach it).
            shown_js = ("id => { const v = document.querySelector('.lpt-mcq-view');"
                        " const m = v && v.innerText.match(/tw\\d+-q\\d+/); return m && m[0] === id; }")

            def wait_shown(mcq_id: str) -> None:
                page.wait_for_function(shown_js, arg=mcq_id, timeout=60_000)

            wait_shown(all_ids[0])
            page.locator(".widget-button", has_text="next ▶").first.click()
            wait_shown(all_ids[1])
            transition = next(d for d in page.locator(".widget-dropdown select").all()
                              if "X→O" in d.locator("option").all_inner_texts())
            transition.select_option("X→O")
            page.wait_for_selector(f"text=of {len(xo_ids)} matching MCQs", timeout=60_000)
            wait_shown(xo_ids[0])
            page.locator(".widget-button", has_text="export HTML").click()
            page.wait_for_selector("text=wrote", timeout=30_000)
            chrome.close()
        exported = run.run_dir / "inspector" / "transition-XtoO.html"
        assert "transition: X→O" in exported.read_text() and xo_ids[0] in exported.read_text()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_three_shards_and_a_merge_give_the_one_process_run(tiny_run, tmp_path, monkeypatch):
    """Notebook 02 as an array job of three shards (split by MCQ id) plus `--merge 02`, against one
    process, greedy, both on the chain's MCQs: the same request keys, the same rows, the same figures;
    the merge joins the parts without running a notebook."""
    import shutil

    from lpt_utils import reproduce

    chain, _ = tiny_run
    overrides = {"paths.outputs": str(tmp_path / "outputs"), "paths.figures": str(tmp_path / "figures"),
                 **CHAIN_SIZES, "simple_cot.sampling.temperature": 0.0, "simple_cot.sampling.n": 1}
    whole = config.resolve_run("tiny", "whole", overrides)
    sharded = config.resolve_run("tiny", "sharded", overrides)
    for r in (whole, sharded):  # the same MCQs (and image paths); stage 1 is not what this test is about
        shutil.copytree(chain.stage_dir("mcq"), r.stage_dir("mcq"))
    run_notebook(notebooks(["02"])[0], "tiny", "whole", overrides, out_dir=tmp_path / "executed")
    for i in range(3):
        run_notebook(notebooks(["02"])[0], "tiny", "sharded", overrides, out_dir=tmp_path / "executed", shard=(i, 3))
    assert sorted(p.name for p in (sharded.stage_dir("simple_cot") / "requests").glob("*.jsonl")) == [
        f"student.part-{i}-of-3.jsonl" for i in range(3)]
    # each shard draws its share apart; none draws the run's figures, which the merge draws from every part
    assert all((sharded.figures_dir / "parts" / f"{i}-of-3" / "02_accuracy_by_type.png").exists() for i in range(3))
    assert not list(sharded.figures_dir.glob("02_*.png"))
    monkeypatch.setattr(reproduce, "run_notebook", lambda *a, **k: pytest.fail("the merge of 02 ran a notebook"))
    reproduce.main(["--profile", "tiny", "--run", "sharded", "--merge", "02", "--shards", "3",
                    *[a for k, v in overrides.items() for a in ("-o", f"{k}={v}")]])
    for name in ("02_funnel.png", "02_accuracy_by_type.png", "02_lengths.png"):  # the whole run's, to the byte
        assert (sharded.figures_dir / name).read_bytes() == (whole.figures_dir / name).read_bytes(), name
    a = whole.stage("simple_cot").load().sort_values("response_id").reset_index(drop=True)
    b = sharded.stage("simple_cot").load().sort_values("response_id").reset_index(drop=True)
    assert len(a) == len(b) > 0 and a.drop(columns="image_path").equals(b.drop(columns="image_path"))
    keys = {json.loads(x)["key"] for p in (sharded.stage_dir("simple_cot") / "requests").glob("*.jsonl")
            for x in p.read_text().splitlines()}
    assert keys == {json.loads(x)["key"] for x in stored_calls(whole.stage_dir("simple_cot"))["student.jsonl"]
                    .decode().splitlines()}
    assert sharded.stage("simple_cot").status() and sharded.stage("simple_cot").manifest()["counts"][
        "repeated_across_parts"] == 0


def test_07_in_two_shards_then_merged_scores_every_item_as_one_process_did(tiny_run, tmp_path):
    """Notebook 07 as an array job of two shards (by benchmark and item id), then `--merge 07`: each
    shard answers its own items into its own part, with requests the chain's one-process run also made;
    the merge refuses while a part is missing, then runs 07 whole, which calls no model and scores every
    item as the chain did (the base model: this run trained none; 40 of the chain's items, `eval.limit`)."""
    from lpt_utils.reproduce import main

    chain, _ = tiny_run
    overrides = {"paths.outputs": str(tmp_path / "outputs"), "paths.figures": str(tmp_path / "figures"),
                 **CHAIN_SIZES, "eval.limit": 40}
    run = config.resolve_run("tiny", "sharded07", overrides)
    stage = run.stage("eval")
    for i in range(2):
        run_notebook(notebooks(["07"])[0], "tiny", "sharded07", overrides, out_dir=tmp_path / "executed", shard=(i, 2))
    assert stage.parts() == ["0-of-2", "1-of-2"] and stage.manifest() is None
    items = [set(pd.read_parquet(stage.folder(p) / "data.parquet").item_id) for p in stage.parts()]
    assert items[0] and items[1] and not items[0] & items[1] and len(items[0] | items[1]) == 40
    assert (run.figures_dir / "parts" / "0-of-2" / "07_results.png").exists()
    assert not (run.figures_dir / "07_results.png").exists()  # no shard draws the whole run's figures

    def keys(folder, pattern):
        return {json.loads(x)["key"] for p in (folder / "requests").glob(pattern) for x in p.read_text().splitlines()}

    chain_eval = chain.stage_dir("eval")
    made = keys(stage.dir, "*.part-*.jsonl")
    assert made and made <= keys(chain_eval, "base.jsonl") | keys(chain_eval, "difficulty.jsonl")

    argv = ["--profile", "tiny", "--run", "sharded07", "--merge", "07"]
    argv += [a for k, v in overrides.items() for a in ("-o", f"{k}={v}")]
    with pytest.raises(ValueError, match="2 of 3 parts"):
        main([*argv, "--shards", "3"])
    assert stage.manifest() is None
    main([*argv, "--shards", "2"])
    assert keys(stage.dir, "base.jsonl") == set() and keys(stage.dir, "difficulty.jsonl") == set()
    cols = ["model", "prompt", "benchmark", "item_id", "raw_output", "correct", "correct_released"]
    got = stage.load()[cols].sort_values(cols[:4]).reset_index(drop=True)
    want = chain.stage("eval").load(check=False)  # other tests of this file re-run the chain's 05 after its 07
    want = want[(want.model == "base") & want.item_id.isin(items[0] | items[1])]
    want = want[cols].sort_values(cols[:4]).reset_index(drop=True)
    assert len(got) == 80 and got.equals(want)
    assert stage.status() and (run.figures_dir / "07_results.png").exists()
