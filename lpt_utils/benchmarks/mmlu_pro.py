"""MMLU-Pro (TIGER-Lab/MMLU-Pro), test split: 12,032 text-only questions with up to ten options (A-J)
in 14 categories. The prompt names the question's domain (its category). The paper does not say
whether its MMLU-Pro average is over items or over categories: both are reported (`aggregate` is
the category mean; the item mean is always computed too). Not one of the five vision columns.

Layout: the dataset's parquet splits, `data/test-*.parquet` (a single `test.parquet` also works),
with the published fields `question_id`, `question`, `options` (list), `answer` (letter),
`answer_index`, `category`, `src`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
)

LAYOUT = "data/test-*.parquet (the test split's parquet files)"


def load(spec: dict[str, Any], work_dir: Path) -> tuple[list[BenchItem], LoadReport]:
    root = require_dir(spec.get("path"), "mmlu_pro", LAYOUT)
    files = find_files(root, ("**/test-*.parquet", "**/test.parquet"), "mmlu_pro", LAYOUT)
    report = LoadReport("mmlu_pro", files=[str(f) for f in files])
    items, seen = [], set()
    for r in read_parquet_rows(files):
        report.total += 1
        choices = [str(c) for c in as_list(r.get("options"))]
        right = letter(r.get("answer"), len(choices))
        idx = r.get("answer_index")
        if right and idx is not None and int(idx) >= 0 and "ABCDEFGHIJ".index(right) != int(idx):
            report.skip("answer_and_answer_index_disagree", r.get("question_id"))
            continue
        category = str(r.get("category") or "").strip()
        item = BenchItem("mmlu_pro", str(r.get("question_id")), str(r.get("question") or "").strip(), choices,
                         right or "", category=category, domain=category)
        if check_item(item, report, seen):
            items.append(item)
    report.kept = len(items)
    return items, report


TASK = Task(name="mmlu_pro", title="MMLU-Pro", hf_id="TIGER-Lab/MMLU-Pro", layout=LAYOUT, load=load,
            in_average=False, text_only=True)
