"""A benchmark written as a V*-shaped folder: `benchmark.jsonl` in V* Bench's layout (`image` a
relative path, `text` with "(A) ..." lines and a hint, `label`, `category`, `question_id`) plus its
images, read through V*'s own loader (`vstar.load_file`). The tiny profile's held-out benchmark is one:
the tiny world writes it (`plugins.benchmark_builders.synthetic`) on held-out scenes, with V*'s two
categories (direct_attributes: colour, shape, occupant, count; relative_position: position, relation).

Spec: `path` (the folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpt_utils.benchmarks.base import BenchItem, LoadReport, Task, require_dir
from lpt_utils.benchmarks.vstar import load_file

LAYOUT = "benchmark.jsonl (V*'s fields) + images/"


def load(spec: dict[str, Any], work_dir: Path) -> tuple[list[BenchItem], LoadReport]:
    root = require_dir(spec.get("path"), "synthetic", LAYOUT)
    file = root / "benchmark.jsonl" if root.is_dir() else root
    if not file.exists():
        raise FileNotFoundError(f"synthetic: no {file}; expected {LAYOUT}")
    return load_file([file], "synthetic", work_dir)


TASK = Task(name="synthetic", title="Synthetic (V*-style)", hf_id="(written by a builder plugin)", layout=LAYOUT,
            load=load, in_average=False, categories=("direct_attributes", "relative_position"))
