"""CV-Bench (nyu-visionx/CV-Bench), test split, 2D and 3D: counting and spatial relations (2D),
depth order and relative distance (3D).

Layout: `test_2d.parquet` and `test_3d.parquet` (either alone is accepted, and the report says which
were read), one row per question with the published fields `idx`, `type` ("2D"/"3D"), `task`
(Count, Relation, Depth, Distance), `image` (a Hugging Face Image value: bytes), `question`,
`choices` (list), `answer` ("(A)"), `prompt`, `source` (ADE20K, COCO: the 2D items; Omni3D: the 3D
items). Images are written once to `work_dir`.

Two aggregates:
- the paper's column: the mean of the four per-task accuracies (docs/evaluation.md, "What is evaluated,
  and how"; `Task.aggregate`);
- the CV-Bench authors' own (`authors_score`, the column "CV-Bench (authors')"): the mean of the 2D and
  the 3D accuracy, where 2D is the mean of the ADE20K and the COCO accuracy and 3D the Omni3D accuracy
  (the dataset card's evaluation code on the Hugging Face hub, nyu-visionx/CV-Bench). The record's
  `source` is kept as the item's `subset` for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from lpt_utils.benchmarks.base import (
    BenchItem,
    LoadReport,
    Task,
    as_list,
    check_item,
    find_files,
    letter,
    read_parquet_rows,
    require_dir,
    resolve_image,
)

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
        path, problem = resolve_image(r.get("image"), files[0].parent, Path(work_dir), report, item_id)
        if problem:
            report.skip(problem, item_id)
            continue
        item = BenchItem("cv_bench", item_id, str(r.get("question") or ""), choices,
                         letter(r.get("answer"), len(choices)) or "", category=str(r.get("task") or ""),
                         image_path=str(path), subset=str(r.get("source") or ""))
        if check_item(item, report, seen):
            items.append(item)
    report.kept = len(items)
    missing = [s for s in SOURCES if s not in {it.subset for it in items}]
    if missing:
        report.notes.append(f"no items from {', '.join(missing)}: the CV-Bench authors' aggregate is left empty")
    return items, report


SOURCES = ("ADE20K", "COCO", "Omni3D")


def authors_score(g: pd.DataFrame, column: str) -> float:
    """The CV-Bench authors' overall accuracy, in percent, of the predictions `g` (one model, prompt
    and rule; `column` holds the verdicts, `subset` the record's source): ((ADE20K + COCO) / 2 +
    Omni3D) / 2. NaN when a source has no item (e.g. only one of the two files was read)."""
    if "subset" not in g.columns:
        return float("nan")
    acc = g.groupby("subset")[column].mean()
    if any(s not in acc.index for s in SOURCES):
        return float("nan")
    two_d = (acc["ADE20K"] + acc["COCO"]) / 2
    three_d = acc["Omni3D"]
    return 100.0 * float(two_d + three_d) / 2


TASK = Task(name="cv_bench", title="CV-Bench", hf_id="nyu-visionx/CV-Bench", layout=LAYOUT, load=load,
            categories=("Count", "Relation", "Depth", "Distance"),
            authors_score=authors_score, authors_title="CV-Bench (authors')")
