"""Caption sources: images with dense descriptions, the input of stage 1.

- `docci`: Google's DOCCI release as published — a descriptions JSON-lines file (`example_id`,
  `split`, `image_file`, `description`) beside an `images/` folder.
- `table`: any JSONL or CSV file of image paths and descriptions (the user names the columns).
- `hf`: any Hugging Face dataset on disk (`save_to_disk` folder or a local data folder), with an
  image column holding images or paths, and a description column.
- a source a plugin reads (the profile's `plugins.caption_sources`): the tiny profile's `synthetic`
  draws scenes in DOCCI's own layout and reads them with `load_docci`.

A record whose image is missing or unreadable, or whose description is empty, is skipped, counted
by reason in a `SourceReport` and never crashes the load.
"""

from __future__ import annotations

import csv
import json
import random
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lpt_utils.engines.images import check_image


@dataclass
class CaptionRecord:
    image_id: str
    image_path: str
    description: str
    split: str = ""
    source: str = ""


@dataclass
class SourceReport:
    """What a load kept and what it skipped, by reason (with a few example ids per reason)."""

    source: str
    total: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, record_id: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(record_id)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "total": self.total, "kept": self.kept,
                "skipped": dict(self.skipped), "skipped_examples": self.examples}

    def __str__(self) -> str:
        s = f"{self.source}: {self.kept}/{self.total} records kept"
        if self.skipped:
            s += "; skipped " + ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
        return s


def image_problem(path: Path) -> str:
    """'' if the file is a readable image, else why not (`engines.images.check_image`: the one place
    images are checked; an image over PIL's size limit is readable)."""
    return check_image(path).problem


def _check(rows: Iterable[tuple[str, Path, Any, str]], report: SourceReport) -> list[CaptionRecord]:
    out, seen = [], set()
    for image_id, path, description, split in rows:
        report.total += 1
        desc = description.strip() if isinstance(description, str) else ""
        if not image_id:
            report.skip("missing_id", f"row {report.total}")
        elif image_id in seen:
            report.skip("duplicate_id", image_id)
        elif not desc:
            report.skip("empty_description", image_id)
        elif problem := image_problem(path):
            report.skip(problem, image_id)
        else:
            seen.add(image_id)
            out.append(CaptionRecord(image_id=image_id, image_path=str(path.resolve()), description=desc,
                                     split=split, source=report.source))
    report.kept = len(out)
    return out


def _lines(path: Path, report: SourceReport):
    """(line number, text) of a text file read as bytes, line by line: a line that is not UTF-8 is
    counted (`undecodable_line`, with file and line) and the rest of the file is still read."""
    with path.open("rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                yield i, raw.decode("utf-8")
            except UnicodeDecodeError:
                report.total += 1
                report.skip("undecodable_line", f"{path.name}:{i}")


def _read_jsonl(path: Path, report: SourceReport) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; a line that is not JSON (`malformed_line`), or JSON that
    is not an object (`not_an_object`: a list, a number, null), is counted with its file and line."""
    rows = []
    for i, line in _lines(path, report):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            report.total += 1
            report.skip("malformed_line", f"{path.name}:{i}")
            continue
        if not isinstance(obj, dict):
            report.total += 1
            report.skip("not_an_object", f"{path.name}:{i}")
            continue
        rows.append(obj)
    return rows


def _read_csv(path: Path, report: SourceReport) -> list[dict[str, Any]]:
    """The rows of a CSV file with a header; undecodable lines are counted as in `_lines`."""
    return list(csv.DictReader(line for _, line in _lines(path, report)))


def _require_columns(path: Path, rows: list[dict[str, Any]], needed: dict[str, str | None]) -> None:
    """Every column the profile names must be in the file: an error naming the columns seen."""
    seen = sorted({k for r in rows for k in r})
    missing = {what: col for what, col in needed.items() if col and all(col not in r for r in rows)}
    if rows and missing:
        names = ", ".join(f"{what} column {col!r}" for what, col in missing.items())
        raise KeyError(f"{path}: no {names} (columns seen: {', '.join(seen) or 'none'}); set data.image_column / "
                       "data.description_column / data.id_column in the profile")


def _nonempty(records: list[CaptionRecord], report: SourceReport, path: Path, seen: str = "") -> list[CaptionRecord]:
    """A source that yields no record at all is an error (with what it skipped), never an empty run."""
    if not records:
        raise ValueError(f"{path}: no usable record ({report}){seen}")
    return records


def find_docci_file(path: Path) -> Path:
    """The descriptions file of a DOCCI-layout folder (or the file itself)."""
    if path.is_file():
        return path
    for pattern in ("docci_descriptions.jsonlines", "*.jsonlines", "descriptions.jsonl", "*.jsonl"):
        hits = sorted(path.glob(pattern))
        if hits:
            return hits[0]
    raise FileNotFoundError(f"no DOCCI descriptions file (*.jsonlines / *.jsonl) in {path}")


def load_docci(path: str | Path, split: str | None = "train") -> tuple[list[CaptionRecord], SourceReport]:
    """DOCCI as Google publishes it; `split=None` keeps every split."""
    path = Path(path)
    desc_file = find_docci_file(path)
    images = desc_file.parent / "images"
    report = SourceReport(source=f"docci:{desc_file}")
    every = _read_jsonl(desc_file, report)
    _require_columns(desc_file, every, {"id": "example_id", "image": "image_file", "description": "description"})
    rows = [r for r in every if split is None or r.get("split") == split]
    if every and not rows:
        splits = sorted({str(r.get("split")) for r in every})
        raise ValueError(f"{desc_file}: no record of split {split!r} (splits there: {', '.join(splits)})")
    records = _check(((str(r.get("example_id") or ""), images / str(r.get("image_file") or "?"),
                       r.get("description"), r.get("split", "")) for r in rows), report)
    return _nonempty(records, report, desc_file), report


def load_table(path: str | Path, image_column: str, description_column: str,
               id_column: str | None = None, image_root: str | Path | None = None
               ) -> tuple[list[CaptionRecord], SourceReport]:
    """A JSONL or CSV file of image paths + descriptions. Relative paths are taken from
    `image_root`, else from the file's folder."""
    path = Path(path)
    report = SourceReport(source=f"table:{path}")
    if path.suffix == ".csv":
        rows = _read_csv(path, report)
    elif path.suffix in (".jsonl", ".jsonlines"):
        rows = _read_jsonl(path, report)
    else:
        raise ValueError(f"table source {path}: expected .csv, .jsonl or .jsonlines")
    _require_columns(path, rows, {"image": image_column, "description": description_column, "id": id_column})
    root = Path(image_root) if image_root else path.parent
    records = _check(((str(r.get(id_column) if id_column else i), root / str(r.get(image_column) or "?"),
                       r.get(description_column), str(r.get("split", ""))) for i, r in enumerate(rows)), report)
    return _nonempty(records, report, path), report


def load_hf(path: str | Path, image_column: str, description_column: str, id_column: str | None,
            image_cache_dir: str | Path, split: str | None = "train"
            ) -> tuple[list[CaptionRecord], SourceReport]:
    """A Hugging Face dataset on disk. Images held in the dataset are written once as PNG files to
    `image_cache_dir` (later stages and the inspector need paths)."""
    import datasets

    path = Path(path)
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split or "train"]
    else:
        ds = datasets.load_dataset(str(path), split=split or "train")
    for col in (image_column, description_column):
        if col not in ds.column_names:
            raise KeyError(f"{path} has columns {ds.column_names}; no column {col!r}")
    cache = Path(image_cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    report = SourceReport(source=f"hf:{path}")
    ds = ds.cast_column(image_column, datasets.Image(decode=False)) if isinstance(
        ds.features[image_column], datasets.Image) else ds

    def rows():
        for i, r in enumerate(ds):
            image_id = str(r[id_column]) if id_column else str(i)
            img = r[image_column]
            if isinstance(img, dict):  # an Image feature, undecoded: bytes and/or a path
                if img.get("bytes"):
                    # The bytes as stored (no re-encoding); a corrupt one fails the image check.
                    p = cache / f"{image_id}{Path(img.get('path') or 'x.img').suffix or '.img'}"
                    if not p.exists():
                        p.write_bytes(img["bytes"])
                else:
                    p = Path(img.get("path") or "?")
            else:
                p = Path(str(img)) if img else Path("?")
            yield image_id, p, r[description_column], split or ""

    return _check(rows(), report), report


def take_subset(records: list[CaptionRecord], num_images: int | str, seed: int = 42) -> list[CaptionRecord]:
    """The first `num_images` after a seeded shuffle of the records sorted by id (so the subset
    does not depend on file order); 'all' keeps every record (shuffled the same way). Asking for more
    than there are warns with both numbers and keeps them all."""
    ordered = sorted(records, key=lambda r: r.image_id)
    random.Random(seed).shuffle(ordered)
    if num_images == "all":
        return ordered
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images <= 0:
        raise ValueError(f"data.num_images must be a positive integer or 'all', got {num_images!r}")
    if num_images > len(ordered):
        warnings.warn(f"data.num_images asks for {num_images} images; the source has {len(ordered)} usable "
                      f"ones: all {len(ordered)} are used", stacklevel=2)
    return ordered[:num_images]


def load_captions(data: dict[str, Any], work_dir: Path, plugin=None) -> tuple[list[CaptionRecord], SourceReport]:
    """Dispatch on `data.source` (the profile's `data` section): `docci`, `table`, `hf`, or a source a
    plugin reads (`plugin`, from the profile's `plugins.caption_sources`: `Run.caption_source()`), which
    gets the data settings and `work_dir`, where a source may write files (scenes it draws, images it
    exports)."""
    source = data["source"]
    if plugin is not None:
        return plugin(data, Path(work_dir))
    if not data.get("path"):
        raise ValueError(f"data.source={source!r} needs data.path")
    if source == "docci":
        return load_docci(data["path"], split=data.get("split"))
    if source == "table":
        return load_table(data["path"], data["image_column"], data["description_column"],
                          data.get("id_column"), data.get("image_root"))
    if source == "hf":
        return load_hf(data["path"], data["image_column"], data["description_column"],
                       data.get("id_column"), Path(work_dir) / "images", split=data.get("split"))
    raise ValueError(f"unknown data.source {source!r}: docci | table | hf, or one named in plugins.caption_sources")
