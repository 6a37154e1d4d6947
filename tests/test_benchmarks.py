"""Benchmark loaders (lpt_utils.benchmarks): each reads a small file in its benchmark's published
schema and layout, as docs/evaluation.md ("Getting the data") and each loader's docstring describe them, and
keeps, filters or skips records for the right reason.
Fixture files in tests/data/benchmarks/ (built by its build.py): CV-Bench's two parquet files and an
MME-RealWorld JSON with its image folders."""

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from lpt_utils.benchmarks import TASKS, get_task
from lpt_utils.benchmarks.base import letter, split_inline_options, split_lettered_lines
from lpt_utils.benchmarks.mmstar import split_question

DATA = Path(__file__).parent / "data" / "benchmarks"


def png(colour=(200, 30, 30), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def jpg_file(path: Path, colour=(20, 160, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), colour).save(path, format="JPEG")
    return path


def hf_image(data: bytes, name: str = "x.png") -> dict:
    """How a Hugging Face Image feature sits in a parquet file: a struct of bytes and path."""
    return {"bytes": data, "path": name}


def load(name, spec, tmp_path):
    return get_task(name).load(spec, tmp_path / "cache" / name)


# ----------------------------------------------------------------------------- CV-Bench


def cv_bench_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    same = png((10, 10, 200))
    rows_2d = [
        {"idx": 0, "type": "2D", "task": "Count", "image": hf_image(same), "question": "How many cars?",
         "choices": ["1", "2", "3", "0"], "answer": "(B)", "prompt": "...", "source": "ADE20K"},
        {"idx": 1, "type": "2D", "task": "Relation", "image": hf_image(same),
         "question": "Is the lamp left or right of the bed?", "choices": ["left", "right"], "answer": "(A)",
         "prompt": "...", "source": "COCO"},
        {"idx": 2, "type": "2D", "task": "Count", "image": hf_image(b"not an image"), "question": "How many?",
         "choices": ["1", "2"], "answer": "(A)", "prompt": "...", "source": "COCO"},
    ]
    rows_3d = [
        {"idx": 0, "type": "3D", "task": "Depth", "image": hf_image(png((0, 90, 0))),
         "question": "Which is closer to the camera?", "choices": ["the chair", "the table"], "answer": "(B)",
         "prompt": "...", "source": "Omni3D"},
        {"idx": 1, "type": "3D", "task": "Distance", "image": hf_image(png((90, 0, 90))),
         "question": "Which is closer to the lamp?", "choices": ["the sofa", "the door"], "answer": "(E)",
         "prompt": "...", "source": "Omni3D"},
    ]
    pd.DataFrame(rows_2d).to_parquet(root / "test_2d.parquet")
    pd.DataFrame(rows_3d).to_parquet(root / "test_3d.parquet")
    return root


def test_cv_bench_reads_both_parquets_and_writes_images_once(tmp_path):
    root = cv_bench_dir(tmp_path / "cv")
    items, report = load("cv_bench", {"path": str(root)}, tmp_path)
    assert [it.item_id for it in items] == ["2D-0", "2D-1", "3D-0"]
    assert [it.category for it in items] == ["Count", "Relation", "Depth"]
    assert [it.answer_letter for it in items] == ["B", "A", "B"]
    assert items[0].choices == ["1", "2", "3", "0"] and items[0].question == "How many cars?"
    assert report.total == 5 and report.kept == 3
    assert report.skipped == {"unreadable_image": 1, "answer_names_no_option": 1}
    # identical image bytes share one cached file; a second load writes nothing new
    assert items[0].image_path == items[1].image_path and Path(items[0].image_path).suffix == ".png"
    cached = sorted((tmp_path / "cache" / "cv_bench").iterdir())
    mtimes = [p.stat().st_mtime_ns for p in cached]
    load("cv_bench", {"path": str(root)}, tmp_path)
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache" / "cv_bench").iterdir())] == mtimes
    assert set(TASKS["cv_bench"].categories) >= {it.category for it in items}
    assert [it.subset for it in items] == ["ADE20K", "COCO", "Omni3D"]  # the record's `source`


def test_cv_bench_fixture_gives_the_authors_aggregate_end_to_end(tmp_path):
    from lpt_utils.engines.base import GenerationResult
    from lpt_utils.pipeline import evaluation as ev

    items, report = load("cv_bench", {"path": str(DATA / "cv_bench")}, tmp_path)
    assert report.kept == report.total == 12 and not report.notes
    assert {(it.item_id[:2], it.subset) for it in items} == {("2D", "ADE20K"), ("2D", "COCO"), ("3D", "Omni3D")}
    # a model that answers (A) to everything: right where the label is (A)
    out = [GenerationResult(key="k", texts=["<answer> (A) </answer>"], num_tokens=[4], finish_reasons=["stop"])
           for _ in items]
    df = ev.to_frame(ev.predictions("base", "m", "direct", items, out))
    right = {it.item_id: it.answer_letter == "A" for it in items}
    acc = {src: sum(right[it.item_id] for it in items if it.subset == src)
           / sum(1 for it in items if it.subset == src) for src in ("ADE20K", "COCO", "Omni3D")}
    expected = 100 * ((acc["ADE20K"] + acc["COCO"]) / 2 + acc["Omni3D"]) / 2
    s = ev.benchmark_scores(df).set_index("rule")
    assert s.loc["released", "authors_score"] == pytest.approx(expected)
    assert s.loc["strict", "authors_score"] == pytest.approx(expected)
    tasks = {t: [right[it.item_id] for it in items if it.category == t] for t in TASKS["cv_bench"].categories}
    assert s.loc["strict", "score"] == pytest.approx(100 * sum(sum(v) / len(v) for v in tasks.values()) / 4)


def test_cv_bench_with_one_file_says_so(tmp_path):
    root = cv_bench_dir(tmp_path / "cv")
    (root / "test_3d.parquet").unlink()
    items, report = load("cv_bench", {"path": str(root)}, tmp_path)
    assert {it.item_id[:2] for it in items} == {"2D"}
    assert any("only test_2d.parquet" in n for n in report.notes)


# ----------------------------------------------------------------------------- V*


def vstar_text(question, options):
    lines = [question] + [f"({'ABCD'[i]}) {o}" for i, o in enumerate(options)]
    return "\n".join(lines + ["Answer with the option's letter from the given choices directly."])


def test_vstar_jsonl_with_relative_image_paths(tmp_path):
    root = tmp_path / "vstar"
    jpg_file(root / "direct_attributes" / "sa_1.jpg")
    jpg_file(root / "relative_position" / "sa_2.jpg")
    rows = [
        {"image": "direct_attributes/sa_1.jpg", "text": vstar_text("What is the colour of the cup?",
                                                                   ["red", "blue", "white", "black"]),
         "label": "C", "category": "direct_attributes", "question_id": 0},
        {"image": "relative_position/sa_2.jpg",
         "text": vstar_text("Is the dog on the left or right side of the cat?", ["left", "right"]),
         "label": "A", "category": "relative_position", "question_id": 1},
        {"image": "direct_attributes/missing.jpg", "text": vstar_text("Q?", ["a", "b"]), "label": "A",
         "category": "direct_attributes", "question_id": 2},
    ]
    (root / "test_questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items, report = load("vstar", {"path": str(root)}, tmp_path)
    assert [it.item_id for it in items] == ["0", "1"]
    a = items[0]
    assert a.question == "What is the colour of the cup?"  # the hint line is dropped
    assert a.choices == ["red", "blue", "white", "black"] and a.answer_letter == "C"
    assert a.category == "direct_attributes" and Path(a.image_path) == (root / "direct_attributes" / "sa_1.jpg").resolve()
    assert report.skipped == {"missing_image": 1}


def test_vstar_parquet_with_image_bytes(tmp_path):
    root = tmp_path / "vstar_hf" / "data"
    root.mkdir(parents=True)
    pd.DataFrame([{"image": hf_image(png()), "text": vstar_text("Where is the clock?", ["up", "down"]),
                   "label": "B", "category": "relative_position", "question_id": 7}]).to_parquet(
        root / "test-00000-of-00001.parquet")
    items, _ = load("vstar", {"path": str(tmp_path / "vstar_hf")}, tmp_path)
    [it] = items
    assert it.answer_letter == "B" and it.choices == ["up", "down"]
    assert Path(it.image_path).parent == (tmp_path / "cache" / "vstar").resolve()


# ----------------------------------------------------------------------------- MMVP


def mmvp_dir(root: Path) -> Path:
    rows = [(1, "Is the door open or closed?", "(a) Open (b) Closed", "(a)"),
            (99, "Does the elephant have long or short tusks?", "(a) Long (b) Short", "(a)"),
            (100, "Does the elephant have long or short tusks?", "(a) Long (b) Short", "(b)"),
            (3, "Is the arrow pointing up or down?", "(a) Up (b) Down", "(b)")]
    root.mkdir(parents=True)
    with open(root / "Questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Index", "Question", "Options", "Correct Answer"])
        w.writerows(rows)
    for idx in (1, 99, 100):
        jpg_file(root / "MMVP Images" / f"{idx}.jpg")
    return root


def test_mmvp_csv_images_and_label_corrections(tmp_path):
    items, report = load("mmvp", {"path": str(mmvp_dir(tmp_path / "mmvp"))}, tmp_path)
    assert [it.item_id for it in items] == ["1", "99", "100"]
    assert report.skipped == {"missing_image": 1}  # 3.jpg is not there
    door, e99, e100 = items
    assert door.choices == ["Open", "Closed"] and door.answer_letter == "A" and door.corrected_letter == ""
    # lmms-eval's corrections: index 99 -> (b), index 100 -> (a)
    assert (e99.answer_letter, e99.corrected_letter) == ("A", "B")
    assert (e100.answer_letter, e100.corrected_letter) == ("B", "A")
    assert e99.right_letter(corrections=True) == "B" and e99.right_letter(corrections=False) == "A"
    assert door.category == "" and TASKS["mmvp"].aggregate == "item_mean"
    assert any("2 published labels differ" in n for n in report.notes)


# ----------------------------------------------------------------------------- MMStar


def test_mmstar_parquet_keeps_the_three_vision_categories(tmp_path):
    root = tmp_path / "mmstar"
    root.mkdir()
    rows = [
        {"index": 0, "question": "Which option describes the scene?\nOptions: A: a beach, with sand, B: a forest, "
                                 "C: a city, D: a desert", "image": png(), "answer": "A",
         "category": "coarse perception", "l2_category": "image scene and topic"},
        {"index": 1, "question": "What colour is the bus? Options: A: red, B: blue, C: green, D: white",
         "image": png(), "answer": "D", "category": "fine-grained perception", "l2_category": "attribute"},
        {"index": 2, "question": "Solve for x. Options: A: 1, B: 2, C: 3, D: 4", "image": png(),
         "answer": "B", "category": "math", "l2_category": "numeric"},
        {"index": 3, "question": "Is the man behind the car?", "image": png(), "answer": "A",
         "category": "instance reasoning", "l2_category": "relation"},
    ]
    pd.DataFrame(rows).to_parquet(root / "mmstar.parquet")
    items, report = load("mmstar", {"path": str(root)}, tmp_path)
    assert [it.item_id for it in items] == ["0", "1"]
    assert items[0].question == "Which option describes the scene?"
    assert items[0].choices == ["a beach, with sand", "a forest", "a city", "a desert"]
    assert items[1].question == "What colour is the bus?" and items[1].answer_letter == "D"
    assert report.filtered == {"category math": 1} and report.skipped == {"options_not_parsed": 1}
    assert {it.category for it in items} <= set(TASKS["mmstar"].categories)


def test_mmstar_split_question_edge_cases():
    assert split_question("Q? Options: A: x B: y") == ("Q?", ["x", "y"])
    assert split_question("Q?\nOptions: A: 3:4, B: 4:3") == ("Q?", ["3:4", "4:3"])
    assert split_question("no options here") == ("no options here", [])


# ----------------------------------------------------------------------------- MME-RealWorld


def test_mme_realworld_json_keeps_three_subtasks_by_task_and_subtask(tmp_path):
    root = tmp_path / "mme"
    jpg_file(root / "AutonomousDriving" / "a.jpg")
    jpg_file(root / "monitoring_images" / "m.jpg")
    jpg_file(root / "remote_sensing" / "r.jpg")
    jpg_file(root / "diagram_and_table" / "d.jpg")
    choices = ["(A) one", "(B) two", "(C) three", "(D) four", "(E) The image does not feature it."]
    recs = [
        {"Question_id": "Perception/Autonomous_Driving/x/0000", "Image": "AutonomousDriving/a.jpg",
         "Text": "How many cars?", "Answer choices": choices, "Ground truth": "B", "Task": "Perception",
         "Subtask": "Autonomous_Driving", "Category": "Objects_Identify"},
        {"Question_id": "reasoning/monitoring/0001", "Image": "monitoring_images/m.jpg", "Text": "Why?",
         "Answer choices": choices, "Ground truth": "E", "Task": "Reasoning", "Subtask": "Monitoring",
         "Category": "intention"},
        {"Question_id": "perception/remote_sensing/0002", "Image": "remote_sensing/r.jpg", "Text": "Colour?",
         "Answer choices": choices, "Ground truth": "A", "Task": "Perception", "Subtask": "Remote Sensing",
         "Category": "color"},
        {"Question_id": "perception/diagram/0003", "Image": "diagram_and_table/d.jpg", "Text": "Value?",
         "Answer choices": choices, "Ground truth": "A", "Task": "Perception", "Subtask": "Diagram and Table",
         "Category": "diagram"},
        {"Question_id": "perception/remote_sensing/0004", "Image": "remote_sensing/r.jpg", "Text": "Bad options",
         "Answer choices": ["(A) x", "(C) y"], "Ground truth": "A", "Task": "Perception",
         "Subtask": "Remote Sensing", "Category": "color"},
    ]
    (root / "MME_RealWorld.json").write_text(json.dumps(recs))
    items, report = load("mme_realworld", {"path": str(root)}, tmp_path)
    assert [it.category for it in items] == ["Perception/Autonomous_Driving", "Reasoning/Monitoring",
                                             "Perception/Remote Sensing"]
    assert items[0].choices == ["one", "two", "three", "four", "The image does not feature it."]
    assert items[1].answer_letter == "E"
    assert report.filtered == {"subtask Diagram and Table": 1} and report.skipped == {"options_not_parsed": 1}
    # images somewhere else: image_root
    moved = tmp_path / "elsewhere"
    (root).rename(moved)
    (tmp_path / "json_only").mkdir()
    (moved / "MME_RealWorld.json").rename(tmp_path / "json_only" / "MME_RealWorld.json")
    items2, _ = load("mme_realworld", {"path": str(tmp_path / "json_only"), "image_root": str(moved)}, tmp_path)
    assert len(items2) == 3


# ----------------------------------------------------------------------------- images over PIL's size limit


@pytest.fixture
def low_pil_limit(monkeypatch):
    """PIL's decompression-bomb limit lowered to 2,000 pixels, so the fixture's small remote-sensing
    images stand for MME-RealWorld's huge ones: 96 x 64 is over twice the limit (PIL refuses to open
    it), 56 x 40 between once and twice (PIL warns); the other images are under it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    return 2000


def test_mme_realworld_images_over_pils_limit_load_and_are_counted(tmp_path, low_pil_limit):
    import warnings

    big = DATA / "mme_realworld" / "remote_sensing" / "03553.jpg"
    with pytest.raises(Image.DecompressionBombError):  # what a plain PIL open does with it
        Image.open(big)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither PIL's warning nor its error reaches the loader
        items, report = load("mme_realworld", {"path": str(DATA / "mme_realworld")}, tmp_path)
    assert [it.category for it in items] == ["Perception/Remote Sensing", "Perception/Remote Sensing",
                                             "Perception/Autonomous_Driving", "Reasoning/Monitoring"]
    assert report.kept == 4 and not report.skipped and report.filtered == {"subtask Diagram and Table": 1}
    assert report.over_pil_limit == 2
    assert report.examples["over_pil_limit"] == ["perception/remote_sensing/color/0001",
                                                 "perception/remote_sensing/count/0002"]
    assert "images over PIL's size limit (2,000 px): 2, loaded" in str(report)
    assert report.as_dict()["over_pil_limit"] == 2
    assert Image.MAX_IMAGE_PIXELS == low_pil_limit  # the limit is put back


def test_the_engines_image_path_loads_and_downscales_an_image_over_pils_limit(low_pil_limit):
    import warnings

    from lpt_utils.engines.images import check_image, load_image

    big = DATA / "mme_realworld" / "remote_sensing" / "03553.jpg"  # 96 x 64 = 6,144 px
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = load_image(big, max_pixels=1536, min_pixels=256)
        warned = load_image(DATA / "mme_realworld" / "remote_sensing" / "03554.jpg")  # 56 x 40: PIL would warn
    assert img.mode == "RGB" and img.size == (48, 32)  # area cap: sqrt(1536 / 6144) = 1/2
    assert warned.size == (56, 40)
    assert check_image(big).over_pil_limit and check_image(big).size == (96, 64)
    assert not check_image(DATA / "mme_realworld" / "AutonomousDriving" / "nuscenes_0001.jpg").over_pil_limit
    assert Image.MAX_IMAGE_PIXELS == low_pil_limit


def test_images_under_the_limit_are_not_counted(tmp_path):
    items, report = load("mme_realworld", {"path": str(DATA / "mme_realworld")}, tmp_path)
    assert report.kept == 4 and report.over_pil_limit == 0 and "PIL" not in str(report)


# ----------------------------------------------------------------------------- MMLU-Pro


def test_mmlu_pro_parquet_split_is_text_only_with_ten_options(tmp_path):
    data = tmp_path / "mmlu_pro" / "data"
    data.mkdir(parents=True)
    opts = [f"option {i}" for i in range(10)]
    rows = [
        {"question_id": 70, "question": "Which law applies?", "options": opts, "answer": "J", "answer_index": 9,
         "cot_content": "", "category": "law", "src": "ori_mmlu-law"},
        {"question_id": 71, "question": "What is 2+2?", "options": ["3", "4", "5"], "answer": "B", "answer_index": 1,
         "cot_content": "", "category": "math", "src": "x"},
        {"question_id": 72, "question": "Broken", "options": ["3", "4"], "answer": "A", "answer_index": 1,
         "cot_content": "", "category": "math", "src": "x"},
    ]
    pd.DataFrame(rows).to_parquet(data / "test-00000-of-00001.parquet")
    pd.DataFrame(rows[:1]).to_parquet(data / "validation-00000-of-00001.parquet")  # not read
    items, report = load("mmlu_pro", {"path": str(tmp_path / "mmlu_pro")}, tmp_path)
    assert [it.item_id for it in items] == ["70", "71"]
    assert items[0].choices == opts and items[0].answer_letter == "J" and items[0].image_path is None
    assert items[0].domain == "law" == items[0].category
    assert report.skipped == {"answer_and_answer_index_disagree": 1} and len(report.files) == 1
    assert TASKS["mmlu_pro"].text_only and not TASKS["mmlu_pro"].in_average


# ----------------------------------------------------------------------------- synthetic (tiny profile)


def test_synthetic_benchmark_is_built_and_read_through_the_vstar_loader(tmp_path):
    from lpt_utils.tiny_world.plugin import (
        build_benchmark,  # the tiny profile's builder plugin
    )

    spec = {"path": str(tmp_path / "heldout"), "n_scenes": 4, "seed": 0}
    build_benchmark(spec, tmp_path / "heldout")
    items, report = load("synthetic", spec, tmp_path)
    assert report.kept == len(items) >= 8 and not report.skipped
    assert {it.category for it in items} == {"direct_attributes", "relative_position"}
    rows = [json.loads(x) for x in (tmp_path / "heldout" / "benchmark.jsonl").read_text().splitlines()]
    for it, row in zip(items, rows):
        assert it.choices == row["choices"] and it.choices["ABCD".index(it.answer_letter)] == row["answer"]
        assert it.question == row["question"] and Path(it.image_path).exists()
    # built again: the same bytes, the same items
    before = (tmp_path / "heldout" / "benchmark.jsonl").read_bytes()
    build_benchmark(spec, tmp_path / "heldout")
    assert (tmp_path / "heldout" / "benchmark.jsonl").read_bytes() == before
    again, _ = load("synthetic", {"path": str(tmp_path / "heldout")}, tmp_path)
    assert [a.item_id for a in again] == [b.item_id for b in items]


# ----------------------------------------------------------------------------- errors and helpers


@pytest.mark.parametrize("name", ["cv_bench", "vstar", "mmvp", "mmstar", "mme_realworld", "mmlu_pro"])
def test_missing_data_names_the_expected_layout(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="expected"):
        load(name, {"path": str(tmp_path / "nowhere")}, tmp_path)
    (tmp_path / "empty").mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError, match="expected"):
        load(name, {"path": str(tmp_path / "empty")}, tmp_path)
    with pytest.raises(ValueError, match="path is not set"):
        load(name, {"path": None}, tmp_path)


def test_option_helpers():
    assert split_inline_options("(a) Open (b) Closed", r"\(([a-j])\)") == ["Open", "Closed"]
    # a marker out of order belongs to the option text
    assert split_inline_options("(a) see (c) below (b) no", r"\(([a-j])\)") == ["see (c) below", "no"]
    assert split_lettered_lines("Q?\n(A) x\n(B) y\nHint") == ("Q?", ["x", "y"])
    assert split_lettered_lines("Q?\n(B) x\n(A) y") == ("", [])
    import numpy as np

    assert [letter(v, 4) for v in ("B", "(c)", "d.", 0, np.int64(2), "E", 7, None, "AB")] == [
        "B", "C", "D", "A", "C", None, None, None, None]
