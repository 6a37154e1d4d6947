"""MME-RW-V: the vision-centric part of the full MME-RealWorld (yifanzhang114/MME-RealWorld, not the
lite set): the items whose `Subtask` is Autonomous_Driving, Monitoring or Remote Sensing. The score is
the mean of the per-`Task.Subtask` accuracies (e.g. "Perception/Monitoring", "Reasoning/Monitoring").
The other subtasks (OCR with Complex Context, Diagram and Table) are left out by design.

Layout: one JSON file (`MME_RealWorld.json`, a list of records) with the published fields
`Question_id`, `Image` (a path relative to the image root), `Text`, `Answer choices` (list of
"(A) ..." strings, up to E), `Ground truth` (letter), `Task`, `Subtask`, `Category`. The image root
is the JSON's folder unless the spec names `image_root`.
"""

from __future__ import annotations

import json
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
    require_dir,
    resolve_image,
)

LAYOUT = "MME_RealWorld.json + its image folders (Image = path relative to the JSON's folder)"
SUBTASKS = ("Autonomous_Driving", "Monitoring", "Remote Sensing")
_CHOICE = re.compile(r"^\s*\(([A-J])\)\s*(.*?)\s*$", re.S)


def _key(s: str) -> str:
    return re.sub(r"[\s_]+", " ", s).strip().lower()


def parse_choices(raw: list[Any]) -> list[str]:
    """["(A) x", "(B) y", ...] -> ["x", "y", ...]; [] when a letter is missing or out of order."""
    out = []
    for i, c in enumerate(raw):
        m = _CHOICE.match(str(c))
        if not m or m.group(1) != "ABCDEFGHIJ"[i]:
            return []
        out.append(m.group(2))
    return out


def load(spec: dict[str, Any], work_dir: Path) -> tuple[list[BenchItem], LoadReport]:
    root = require_dir(spec.get("path"), "mme_realworld", LAYOUT)
    json_path = find_files(root, ("MME_RealWorld.json", "**/MME_RealWorld.json", "*.json"),
                           "mme_realworld", LAYOUT)[0]
    image_root = Path(spec["image_root"]) if spec.get("image_root") else json_path.parent
    report = LoadReport("mme_realworld", files=[str(json_path)])
    records = json.loads(json_path.read_text(encoding="utf-8"))
    wanted = {_key(s): s for s in SUBTASKS}
    items, seen = [], set()
    for r in records:
        report.total += 1
        subtask = str(r.get("Subtask") or "")
        if _key(subtask) not in wanted:
            report.filtered[f"subtask {subtask or '?'}"] += 1
            continue
        item_id = str(r.get("Question_id") or f"row {report.total}")
        choices = parse_choices(list(r.get("Answer choices") or []))
        path, problem = resolve_image(r.get("Image"), image_root, Path(work_dir), report, item_id)
        if problem:
            report.skip(problem, item_id)
            continue
        task = str(r.get("Task") or "").strip().capitalize()
        item = BenchItem("mme_realworld", item_id, str(r.get("Text") or "").strip(), choices,
                         letter(r.get("Ground truth"), len(choices)) or "",
                         category=f"{task}/{wanted[_key(subtask)]}", image_path=str(path))
        if check_item(item, report, seen):
            items.append(item)
    report.kept = len(items)
    return items, report


TASK = Task(name="mme_realworld", title="MME-RW-V", hf_id="yifanzhang114/MME-RealWorld", layout=LAYOUT,
            load=load)
