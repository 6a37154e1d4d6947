"""CV-Bench (nyu-visionx/CV-Bench), test split, 2D and 3D: counting and spatial relations (2D),
depth order and relative distance (3D).

Layout: `test_2d.parquet` and `test_3d.parquet` (either alone is accepted, and the report says which
were read), one row per question with the published fields `idx`, `type` ("2D"/"3D"), `task`
(Count, Relation, Depth, Distance), `image` (a Hugging Face Image value: bytes), `question`,
`choices` (list), `answer` ("(A)"), `prompt`, `source`. The score is the mean of the four per-task
accuracies (FACTS.md). Images are written once to `work_dir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpt_utils.benchmarks.base import (BenchItem, LoadReport, Task, as_list, check_item, find_files,
                                       letter, read_parquet_rows, require_dir, resolve_image)

LAYOUT = "test_2d.parquet and/or test_3d.parquet (HF Image bytes) in one folder"
FILES = ("test_2d.parquet", "test_3d.parquet")


def load(spec: dict[str, Any], work_dir: Path) -> tuple[list[BenchItem], LoadReport]:
    root = require_dir(spec.get("path"), "cv_bench", LAYOUT)
    files = [root] if root.is_file() else [root / f for f in FILES if (root / f).exists()]
    if not files:  # a snapshot whose files sit one level down
        files = find_files(root, tuple(f"**/{f}" for f in FILES), "cv_bench", LAYOUT)
    report = LoadReport("cv_bench", files=[str(f) for f in files])
    if len(files) == 1 and not root.is_file():
        report.notes.append(f"only {files[0].name} was found: the score covers part of CV-Bench")
    items, seen = [], set()
    for r in read_parquet_rows(files):
        report.total += 1
        kind = str(r.get("type") or "")
        item_id = f"{kind}-{r.get('idx')}"
        choices = [str(c) for c in as_list(r.get("choices"))]
        path, problem = resolve_image(r.get("image"), files[0].parent, Path(work_dir))
        if problem:
            report.skip(problem, item_id)
            continue
        item = BenchItem("cv_bench", item_id, str(r.get("question") or ""), choices,
                         letter(r.get("answer"), len(choices)) or "", category=str(r.get("task") or ""),
                         image_path=str(path))
        if check_item(item, report, seen):
            items.append(item)
    report.kept = len(items)
    return items, report


TASK = Task(name="cv_bench", title="CV-Bench", hf_id="nyu-visionx/CV-Bench", layout=LAYOUT, load=load,
            categories=("Count", "Relation", "Depth", "Distance"))
