"""What every benchmark task shares: the item record, the load report, the task record and the
small readers the loaders have in common.

A task (one module per benchmark, in the spirit of lmms-eval's tasks) is: where its data comes from
and in which layout (`Task.layout`), a `load(spec, work_dir)` that reads the published files into
`BenchItem`s, and how its score aggregates (`Task.aggregate`: the mean of per-category accuracies,
or plain accuracy). Prompts, answer extraction and scoring are the same for every task and live in
`lpt_utils.pipeline.evaluation`, so a task only has to say what its records mean.

Loaders never crash on one bad record: a record with a missing or unreadable image, options that do
not parse or an answer that names no option is skipped and counted by reason in a `LoadReport`.
A file layout that is not there at all (no such folder, no file of the expected kind) raises a
`FileNotFoundError` that names what was expected. Images are checked by `lpt_utils.engines.images`
(`check_image`), the same code that later opens them for the model: an image larger than PIL's
decompression-bomb limit is kept, and counted in the report (`over_pil_limit`), never skipped.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lpt_utils.engines.images import check_image, pil_limit

LETTERS = "ABCDEFGHIJ"
AGGREGATES = ("category_mean", "item_mean")


@dataclass
class BenchItem:
    """One multiple-choice question of a benchmark, in one shape for every task.

    `answer_letter` is the label as published; `corrected_letter` is set only where a known
    correction of the published label exists (MMVP), and scoring uses it when corrections are on.
    `image_path` is None for text-only tasks; `domain` (MMLU-Pro) is named in the prompt.
    `subset`: the benchmark's own division of its items where its authors aggregate by it (CV-Bench:
    the record's `source`, ADE20K / COCO / Omni3D); "" otherwise.
    """

    benchmark: str
    item_id: str
    question: str
    choices: list[str]
    answer_letter: str
    category: str = ""
    image_path: str | None = None
    corrected_letter: str = ""
    domain: str = ""
    subset: str = ""

    def right_letter(self, corrections: bool = True) -> str:
        return (self.corrected_letter or self.answer_letter) if corrections else self.answer_letter


@dataclass
class LoadReport:
    """What a load kept and what it skipped, by reason (a few example ids per reason), and how many
    records' images are larger than PIL's decompression-bomb limit (`over_pil_limit`: they are read
    all the same, and downscaled to the evaluation's area cap like every image; a few ids under
    `examples["over_pil_limit"]`)."""

    benchmark: str
    files: list[str] = field(default_factory=list)
    total: int = 0
    kept: int = 0
    filtered: Counter = field(default_factory=Counter)  # left out by design (e.g. MMStar categories)
    skipped: Counter = field(default_factory=Counter)  # bad records
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    over_pil_limit: int = 0

    def skip(self, reason: str, record_id: Any) -> None:
        self.skipped[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append(str(record_id))

    def large_image(self, record_id: Any) -> None:
        """Count an image over PIL's size limit (it is loaded, not skipped)."""
        self.over_pil_limit += 1
        ex = self.examples.setdefault("over_pil_limit", [])
        if len(ex) < 5:
            ex.append(str(record_id))

    def as_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "files": self.files, "total": self.total, "kept": self.kept,
                "filtered": dict(self.filtered), "skipped": dict(self.skipped),
                "over_pil_limit": self.over_pil_limit, "skipped_examples": self.examples, "notes": self.notes}

    def __str__(self) -> str:
        s = f"{self.benchmark}: {self.kept}/{self.total} records kept"
        if self.filtered:
            s += "; left out by design " + ", ".join(f"{n} {r}" for r, n in sorted(self.filtered.items()))
        if self.skipped:
            s += "; skipped " + ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
        if self.over_pil_limit:
            s += (f"; images over PIL's size limit ({pil_limit() or 0:,} px): {self.over_pil_limit}, loaded "
                  "(downscaled to the area cap)")
        return s


Loader = Callable[[dict[str, Any], Path], tuple[list[BenchItem], LoadReport]]


@dataclass(frozen=True)
class Task:
    """One benchmark: its name, the column it fills in the paper's table, its data and its score.

    - `name`: the key in the profile's `eval.benchmarks` and in the predictions.
    - `title`: the results table's column ("CV-Bench").
    - `hf_id`, `layout`: where the data comes from and the files the loader reads (docs/evaluation.md).
    - `load(spec, work_dir)`: `spec` is the profile's `eval.benchmarks.<name>` mapping (`path`, ...);
      `work_dir` is where the loader may write (images held as bytes are written there once).
    - `aggregate`: "category_mean" (the mean of per-category accuracies) or "item_mean".
    - `in_average`: one of the paper's five vision-centric columns that make up "Avg".
    - `categories`: the categories the paper averages over, where it names them (documentation
      and a check: an item outside them is a loader bug).
    - `authors_score(predictions, verdict_column) -> percent`, `authors_title`: the benchmark
      authors' own aggregate where it differs from the paper's (CV-Bench), shown as an extra column.
    """

    name: str
    title: str
    hf_id: str
    layout: str
    load: Loader
    aggregate: str = "category_mean"
    in_average: bool = True
    text_only: bool = False
    categories: tuple[str, ...] = ()
    authors_score: Callable[[Any, str], float] | None = None
    authors_title: str = ""

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"Task {self.name}: aggregate must be one of {AGGREGATES}")


# ----------------------------------------------------------------------------- shared readers


def require_dir(path: Any, benchmark: str, layout: str) -> Path:
    """The data folder (or file) named by the spec's `path`, or a clear error saying what to put there."""
    if not path:
        raise ValueError(f"{benchmark}: eval.benchmarks.{benchmark}.path is not set (expected: {layout})")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{benchmark}: {p} does not exist; expected {layout} (see docs/evaluation.md)")
    return p


def find_files(root: Path, patterns: tuple[str, ...], benchmark: str, layout: str) -> list[Path]:
    """Files under `root` matching the first of `patterns` that matches anything (recursive glob),
    sorted; `root` itself when it is a file. Raises FileNotFoundError naming the expected layout."""
    if root.is_file():
        return [root]
    for pat in patterns:
        hits = sorted(p for p in root.glob(pat) if p.is_file())
        if hits:
            return hits
    raise FileNotFoundError(f"{benchmark}: no {' or '.join(patterns)} under {root}; expected {layout}")


_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
          (b"RIFF", ".webp"))


def _suffix(data: bytes, name: str | None) -> str:
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return Path(name).suffix if name and Path(name).suffix else ".img"


def resolve_image(value: Any, root: Path, cache_dir: Path, report: LoadReport | None = None,
                  record_id: Any = None) -> tuple[Path | None, str]:
    """An image field as published, as a file path, and '' or the reason it is unusable.

    Accepts a path (relative to `root`), raw bytes, or a Hugging Face Image value (a dict with
    `bytes` and/or `path`, as parquet files store it). Bytes are written once, as they are, to
    `cache_dir/<sha256 prefix><ext>`, so identical images share one file and a re-run writes nothing.
    A readable image over PIL's size limit is usable, and counted in `report` (`over_pil_limit`).
    """
    data, name = None, None
    if isinstance(value, dict):
        data, name = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str) and value.strip():
        name = value.strip()
    if data:
        cache_dir.mkdir(parents=True, exist_ok=True)
        p = cache_dir / (hashlib.sha256(data).hexdigest()[:20] + _suffix(data, name))
        if not p.exists():
            tmp = p.with_suffix(p.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(p)
    elif name:
        p = Path(name) if Path(name).is_absolute() else root / name
    else:
        return None, "missing_image"
    check = check_image(p)
    if check.problem:
        return None, check.problem
    if check.over_pil_limit and report is not None:
        report.large_image(record_id if record_id is not None else p.name)
    return p.resolve(), ""


def letter(value: Any, n_choices: int) -> str | None:
    """A published answer label as an option letter: "B", "(B)", "b", "(b)", "B." or an index 1."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # numpy ints from parquet too
        return LETTERS[int(value)] if 0 <= value < n_choices else None
    m = re.fullmatch(r"\s*\(?([A-Ja-j])\)?\.?\s*", str(value))
    if not m:
        return None
    i = LETTERS.index(m.group(1).upper())
    return LETTERS[i] if i < n_choices else None


_OPTION_LINE = re.compile(r"^\s*\(([A-J])\)\s*(.*?)\s*$")


def split_lettered_lines(text: str) -> tuple[str, list[str]]:
    """V*-style text: the question, then "(A) ..." lines (any lines after them, such as an answer
    hint, are dropped). Returns (question, options); options are [] when there are none or their
    letters are not A, B, C, ... in order."""
    lines = (text or "").splitlines()
    first = next((i for i, ln in enumerate(lines) if _OPTION_LINE.match(ln)), None)
    if first is None:
        return (text or "").strip(), []
    options = []
    for ln in lines[first:]:
        m = _OPTION_LINE.match(ln)
        if not m:
            break
        if m.group(1) != LETTERS[len(options)]:
            return "", []
        options.append(m.group(2))
    return "\n".join(lines[:first]).strip(), options


def split_inline_options(text: str, pattern: str) -> list[str]:
    """Options written on one line, each opened by a marker such as "(a)" or "A:".

    `pattern` is a regex with one group for the letter (e.g. r"\\(([a-j])\\)"); markers must come
    in order A, B, C, ... (a later marker of a letter not next in line belongs to the option text).
    Each option is stripped of surrounding space and a trailing comma. [] when there is no "A".
    """
    rx = re.compile(pattern, re.I)
    starts: list[tuple[int, int]] = []  # (marker start, text start)
    pos = 0
    while True:
        want = LETTERS[len(starts)]
        m = next((m for m in rx.finditer(text, pos) if m.group(1).upper() == want), None)
        if m is None:
            break
        starts.append((m.start(), m.end()))
        pos = m.end()
    out = []
    for k, (_, begin) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(text)
        out.append(text[begin:end].strip().rstrip(",").strip())
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_parquet_rows(files: list[Path]) -> list[dict[str, Any]]:
    import pandas as pd

    frames = [pd.read_parquet(f) for f in files]
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return df.to_dict("records")


def as_list(value: Any) -> list[Any]:
    """A list column as read from parquet (numpy array) or JSON (list), or a JSON-encoded string."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return [v for v in list(value)]


def check_item(item: BenchItem, report: LoadReport, seen: set[str]) -> bool:
    """The checks every loader applies before keeping an item (skips are counted in `report`)."""
    if item.item_id in seen:
        report.skip("duplicate_id", item.item_id)
        return False
    if len(item.choices) < 2 or any(not str(c).strip() for c in item.choices):
        report.skip("options_not_parsed", item.item_id)
        return False
    if not item.question.strip():
        report.skip("empty_question", item.item_id)
        return False
    if not item.answer_letter:
        report.skip("answer_names_no_option", item.item_id)
        return False
    seen.add(item.item_id)
    return True
