"""MMVP (MMVP/MMVP): 300 two-option questions on 150 "CLIP-blind" image pairs. Plain accuracy.

Layout: `Questions.csv` with the published columns `Index`, `Question`, `Options` ("(a) Open (b)
Closed"), `Correct Answer` ("(a)"), beside a folder `MMVP Images/` holding `{Index}.jpg`.

Known label corrections (`CORRECTIONS`, applied when `eval.mmvp_corrections` is on): the two
elephant-tusk items and the two standing/sitting items have their answers swapped in the original
release. The corrected values below come from lmms-eval's MMVP task
(EvolvingLMMs-Lab/lmms-eval, `lmms_eval/tasks/mmvp/utils.py`, `GROUND_TRUTH_CORRECTIONS`, and its
README's table; they cite lmms-eval issue #1018 and tsb0601/MMVP issue #30). lmms-eval keys them by
0-based row; here they are keyed by the published 1-based `Index`. Where a copy of the data already
carries the fix, the correction changes nothing.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lpt_utils.benchmarks.base import (
    BenchItem,
    LoadReport,
    Task,
    check_item,
    find_files,
    letter,
    require_dir,
    resolve_image,
    split_inline_options,
)

LAYOUT = "Questions.csv + 'MMVP Images/{Index}.jpg'"
# Index (1-based, as in Questions.csv) -> the right option's letter.
CORRECTIONS = {
    99: "B",   # elephant, "long or short tusks": the image shows short tusks
    100: "A",  # its pair: long tusks
    279: "B",  # elderly person, "standing or sitting": sitting on a bench
    280: "A",  # its pair: standing
}


def load(spec: dict[str, Any], work_dir: Path) -> tuple[list[BenchItem], LoadReport]:
    root = require_dir(spec.get("path"), "mmvp", LAYOUT)
    csv_path = find_files(root, ("Questions.csv", "**/Questions.csv"), "mmvp", LAYOUT)[0]
    image_dir = csv_path.parent / "MMVP Images"
    report = LoadReport("mmvp", files=[str(csv_path)])
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    items, seen = [], set()
    for r in rows:
        report.total += 1
        raw_index = str(r.get("Index") or "").strip()
        choices = split_inline_options(str(r.get("Options") or ""), r"\(([a-j])\)")
        path, problem = resolve_image(f"{raw_index}.jpg" if raw_index else None, image_dir, Path(work_dir), report,
                                      raw_index)
        if problem:
            report.skip(problem, raw_index or f"row {report.total}")
            continue
        fix = CORRECTIONS.get(int(raw_index)) if raw_index.isdigit() else None
        item = BenchItem("mmvp", raw_index, str(r.get("Question") or "").strip(), choices,
                         letter(r.get("Correct Answer"), len(choices)) or "", image_path=str(path),
                         corrected_letter=fix or "")
        if check_item(item, report, seen):
            items.append(item)
    report.kept = len(items)
    changed = sum(1 for it in items if it.corrected_letter and it.corrected_letter != it.answer_letter)
    report.notes.append(f"{changed} published labels differ from the known corrections (lmms-eval)")
    return items, report


TASK = Task(name="mmvp", title="MMVP", hf_id="MMVP/MMVP", layout=LAYOUT, load=load, aggregate="item_mean")
