"""`make bench` on a small scale: the store and post-processing measurements run, judge their targets
from their own figures, and write the JSON, the markdown table and the README block. (The generation
measurements need the vLLM engine and minutes; `make bench` runs them.)"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from lpt_utils import bench
from lpt_utils.pipeline.verify import response_shape


def test_bench_writes_its_table_and_judges_each_target_from_its_figures(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Project\n\n{bench.README_START}\nold table\n{bench.README_END}\n\nthe rest\n")
    results = bench.main(["--only", "postprocess", "store", "--records", "4000", "--repeats", "1",
                          "--out", str(tmp_path / "bench"), "--readme", str(readme)])
    by_name = {r.name: r for r in results}
    assert set(by_name) == {"post-processing", "store"}

    pp = by_name["post-processing"].figures
    assert pp["responses"] == 4000 and 0 < pp["O"] <= pp["kept"] <= pp["responses"] and pp["pairs"] > 0
    assert by_name["post-processing"].met == (pp["read + post-process s"] / pp["read s"] <= 3.0)
    st = by_name["store"].figures
    assert st["records"] == 4000 and st["file GB"] > 4000 * 900 / 1e9  # ~1 KB a record
    assert by_name["store"].met == (st["open s"] < 2.0 and st["peak memory GB"] < 0.5)

    saved = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert [r["name"] for r in saved["results"]] == ["post-processing", "store"]
    table = (tmp_path / "bench" / "bench.md").read_text()
    text = readme.read_text()
    assert "old table" not in text and table in text and text.endswith("the rest\n")
    assert not (tmp_path / "bench" / "work").exists()  # the synthetic files are removed


def test_a_readme_without_the_markers_is_refused_by_name(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="bench:start"):
        bench.write([], tmp_path / "out", "header", readme)


def test_the_synthetic_responses_come_in_the_shapes_real_models_write():
    mcqs = bench.synthetic_mcqs(400)
    rng = random.Random(1)
    shapes = Counter()
    for m in mcqs:
        for _ in range(8):
            text, finish = bench.synthetic_response(rng, m)
            shape = response_shape("<think>" + text)
            shapes[shape] += 1
            assert (finish == "length") == (shape == "cut_in_thought")
    assert {"think_answer", "think_summary_answer", "no_answer_block", "cut_in_thought"} <= set(shapes)
    assert shapes["think_answer"] > shapes["think_summary_answer"] > shapes["cut_in_thought"]
