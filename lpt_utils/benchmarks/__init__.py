"""Benchmark tasks for notebook 07: one module per benchmark, each ending in a `TASK`.

    from lpt_utils.benchmarks import get_task
    items, report = get_task("cv_bench").load({"path": "data/benchmarks/cv_bench"}, image_cache_dir)

Adding a benchmark = adding one module with a `load(spec, work_dir)` that reads the published files
into `BenchItem`s, a `Task(...)` record, and its line in `TASKS` below. Prompts, extraction, scoring
and aggregation are shared (`lpt_utils.pipeline.evaluation`).
"""

from __future__ import annotations

from lpt_utils.benchmarks import (
    cv_bench,
    mme_realworld,
    mmlu_pro,
    mmstar,
    mmvp,
    synthetic,
    vstar,
)
from lpt_utils.benchmarks.base import BenchItem, LoadReport, Task

# In the paper's column order (then the text-only MMLU-Pro, then the tiny profile's own benchmark).
TASKS: dict[str, Task] = {t.name: t for t in (
    cv_bench.TASK, vstar.TASK, mmvp.TASK, mmstar.TASK, mme_realworld.TASK, mmlu_pro.TASK, synthetic.TASK)}

__all__ = ["BenchItem", "LoadReport", "TASKS", "Task", "get_task"]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]
