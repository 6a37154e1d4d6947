"""MMStar-V: the vision-centric part of MMStar (Lin-Chen/MMStar, val): the categories coarse
perception, fine-grained perception and instance reasoning; the score is the mean of the three
per-category accuracies. The other categories (logical reasoning, math, science & technology) are
left out by design and counted as such in the report.

Layout: `mmstar.parquet` with the published fields `index`, `question` (the options embedded after
"Options:" as "A: ..., B: ..."), `image` (bytes), `answer` (letter), `category`, `l2_category`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lpt_utils.benchmarks.base import (
    BenchItem,
    LoadReport,
    Task,
    check_item,
    find_files,
    letter,
    read_parquet_rows,
    require_dir,
    resolve_image,
    split_inline_options,
)

LAYOUT = "mmstar.parquet (image bytes; options inside the question after 'Options:')"
CATEGORIES = ("coarse perception", "fine-grained perception", "instance reasoning")
_OPTIONS = re.compile(r"\bOptions:\s*", re.I)


def split_question(text: str) -> tuple[str, list[str]]:
    """MMStar's question field: the question, then "Options: A: ..., B: ..., ..." (the last
    "Options:" marker counts). ("", []) when the options are not there."""
    marks = list(_OPTIONS.finditer(text or ""))
    if not marks:
        return (text or "").strip(), []
    m = marks[-1]
    options = split_inline_options(text[m.end():], r"(?:^|(?<=[\s,]))([A-J])\s*:\s")
    return text[:m.start()].strip(), options


def load(spec: dict[str, Any], work_dir: Path) -> tuple[list[BenchItem], LoadReport]:
    root = require_dir(spec.get("path"), "mmstar", LAYOUT)
    files = find_files(root, ("mmstar.parquet", "**/mmstar.parquet", "**/val-*.parquet", "**/*.parquet"),
                       "mmstar", LAYOUT)
    report = LoadReport("mmstar", files=[str(f) for f in files])
    items, seen = [], set()
    for r in read_parquet_rows(files):
        report.total += 1
        item_id = str(r.get("index"))
        category = str(r.get("category") or "").strip()
        if category.lower() not in CATEGORIES:
            report.filtered[f"category {category or '?'}"] += 1
            continue
        question, choices = split_question(str(r.get("question") or ""))
        path, problem = resolve_image(r.get("image"), files[0].parent, Path(work_dir), report, item_id)
        if problem:
            report.skip(problem, item_id)
            continue
        item = BenchItem("mmstar", item_id, question, choices, letter(r.get("answer"), len(choices)) or "",
                         category=category.lower(), image_path=str(path))
        if check_item(item, report, seen):
            items.append(item)
    report.kept = len(items)
    return items, report


TASK = Task(name="mmstar", title="MMStar-V", hf_id="Lin-Chen/MMStar", layout=LAYOUT, load=load,
            categories=CATEGORIES)
