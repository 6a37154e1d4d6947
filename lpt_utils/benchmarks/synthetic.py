"""The tiny profile's benchmark: ground-truth questions on held-out synthetic scenes, V*-shaped.

`lpt_utils.tiny_world.questions.make_benchmark` draws scenes from the held-out split (disjoint from
every scene the tiny models trained on, by construction) and writes `benchmark.jsonl` in V* Bench's
layout (`image` a relative path, `text` with "(A) ..." lines and a hint, `label`, `category`,
`question_id`), with V*'s two categories (direct_attributes: colour, shape, occupant, count;
relative_position: position, relation). It is read through V*'s own loader (`vstar.load_file`).

Spec: `path` (the folder), and `n_scenes` + `seed`: when `n_scenes` is set the folder is (re)built
first — deterministic, so a rebuild writes the same bytes; without it an existing folder is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpt_utils.benchmarks.base import BenchItem, LoadReport, Task, require_dir
from lpt_utils.benchmarks.vstar import load_file

LAYOUT = "benchmark.jsonl (V*'s fields) + images/, as written by tiny_world.questions.make_benchmark"


def load(spec: dict[str, Any], work_dir: Path) -> tuple[list[BenchItem], LoadReport]:
    if spec.get("n_scenes"):
        if not spec.get("path"):
            raise ValueError("synthetic: a folder (`path`) to build the benchmark in is needed")
        from lpt_utils.tiny_world.questions import make_benchmark

        make_benchmark(spec["path"], n_scenes=int(spec["n_scenes"]), seed=int(spec.get("seed") or 0),
                       image_size=int(spec.get("image_size") or 224))
    root = require_dir(spec.get("path"), "synthetic", LAYOUT)
    file = root / "benchmark.jsonl" if root.is_dir() else root
    if not file.exists():
        raise FileNotFoundError(f"synthetic: no {file}; expected {LAYOUT}")
    items, report = load_file([file], "synthetic", work_dir)
    report.notes.append("held-out synthetic scenes: the tiny models never trained on them")
    return items, report


TASK = Task(name="synthetic", title="Synthetic (V*-style)", hf_id="(generated: tiny_world)", layout=LAYOUT,
            load=load, in_average=False, categories=("direct_attributes", "relative_position"))
