"""A benchmark written as a V*-shaped folder: `benchmark.jsonl` in V* Bench's layout (`image` a
relative path, `text` with "(A) ..." lines and a hint, `label`, `category`, `question_id`) plus its
images, read through V*'s own loader (`vstar.load_file`). The tiny profile's held-out benchmark is one:
the tiny world writes it (`plugins.benchmark_builders.synthetic`) on held-out scenes, with V*'s two
categories (direct_attributes: colour, shape, occupant, count; relative_position: position, relation),
and each record's question type (`type`) as the item's `subset`.

Spec: `path` (the folder).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lpt_utils.benchmarks.base import BenchItem, LoadReport, Task, read_jsonl, require_dir
from lpt_utils.benchmarks.vstar import load_file

LAYOUT = "benchmark.jsonl (V*'s fields) + images/"


def load(spec: dict[str, Any], work_dir: Path) -> tuple[list[BenchItem], LoadReport]:
    root = require_dir(spec.get("path"), "synthetic", LAYOUT)
    file = root / "benchmark.jsonl" if root.is_dir() else root
    if not file.exists():
        raise FileNotFoundError(f"synthetic: no {file}; expected {LAYOUT}")
    items, report = load_file([file], "synthetic", work_dir)
    # the question type each record names (recognition, counting, spatial) is the benchmark's own
    # division: notebook 07 reports accuracy per type (`evaluation.subset_intervals`)
    types = {str(r.get("question_id")): str(r.get("type") or "") for r in read_jsonl(file)}
    return [dataclasses.replace(it, subset=types.get(it.item_id, "")) for it in items], report


TASK = Task(name="synthetic", title="Synthetic (V*-style)", hf_id="(written by a builder plugin)", layout=LAYOUT,
            load=load, in_average=False, categories=("direct_attributes", "relative_position"))
