"""V* Bench (craigwu/vstar_bench), test split: attribute and relative-position questions about small
details in high-resolution images.

Layout, either copy: a JSON-lines file (`test_questions.jsonl`, or the folder's only `*.jsonl`) whose
`image` is a path relative to the file's folder (`direct_attributes/sa_4690.jpg`), or parquet files
whose `image` holds the image (a Hugging Face Image value). Fields as published: `image`, `text`
(the question, then "(A) ..." lines, then an answer hint that is dropped: our prompt asks in its own
words), `label` (letter), `category` (direct_attributes, relative_position), `question_id`. The score
is the mean of the two per-category accuracies.

The tiny profile's held-out synthetic benchmark is written in this layout and read by `load_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpt_utils.benchmarks.base import (
    BenchItem,
    LoadReport,
    Task,
    check_item,
    find_files,
    letter,
    read_jsonl,
    read_parquet_rows,
    require_dir,
    resolve_image,
    split_lettered_lines,
)

LAYOUT = "test_questions.jsonl + image folders (image = relative path), or parquet with image bytes"


def load_file(files: list[Path], benchmark: str, work_dir: Path) -> tuple[list[BenchItem], LoadReport]:
    """Read V*-shaped records from JSON-lines or parquet files."""
    report = LoadReport(benchmark, files=[str(f) for f in files])
    rows: list[tuple[Path, dict[str, Any]]] = []
    for f in files:
        recs = read_jsonl(f) if f.suffix in (".jsonl", ".json") else read_parquet_rows([f])
        rows += [(f.parent, r) for r in recs]
    items, seen = [], set()
    for root, r in rows:
        report.total += 1
        item_id = str(r.get("question_id", report.total - 1))
        question, choices = split_lettered_lines(str(r.get("text") or ""))
        path, problem = resolve_image(r.get("image"), root, Path(work_dir), report, item_id)
        if problem:
            report.skip(problem, item_id)
            continue
        item = BenchItem(benchmark, item_id, question, choices, letter(r.get("label"), len(choices)) or "",
                         category=str(r.get("category") or ""), image_path=str(path))
        if check_item(item, report, seen):
            items.append(item)
    report.kept = len(items)
    return items, report


def load(spec: dict[str, Any], work_dir: Path) -> tuple[list[BenchItem], LoadReport]:
    root = require_dir(spec.get("path"), "vstar", LAYOUT)
    files = find_files(root, ("test_questions.jsonl", "*.jsonl", "**/test-*.parquet", "**/*.parquet"),
                       "vstar", LAYOUT)
    return load_file(files, "vstar", work_dir)


TASK = Task(name="vstar", title="V*", hf_id="craigwu/vstar_bench", layout=LAYOUT, load=load,
            categories=("direct_attributes", "relative_position"))
