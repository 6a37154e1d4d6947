"""The pipeline's stages, declared once: where each writes, what shapes it, what it reads, what it
writes. Everything else (folder names, settings hashes, staleness, the schema a stage's file is
checked against, merging the parts that several writers made) is derived from `SPECS`.

    stage = run.stage("long_cot")           # a `Stage`: this run's 03_long_cot
    simple = run.stage("simple_cot").load() # refuses a stale upstream, naming the notebook to re-run
    stage.write(df, funnel=funnel, counts=stats)

**Settings hash.** A stage's hash covers the settings it declares (`shaped_by`, dotted paths into the
resolved settings) *and the hashes of its upstream stages*, so a change anywhere upstream (another
writer model, another student tokenizer, another seed) changes the hash of every stage below it.

**Inputs.** A manifest records, for each upstream stage it read, that stage's settings hash and the
hash of its data as they were when it ran. A stage is *stale* when its own settings hash is not the
one the current settings give (other settings, or a run written before hashes covered upstream
stages), or when an upstream stage's manifest no longer matches what it recorded (that stage was run
again since). `Stage.load()` refuses a stale stage and names the notebook to re-run; `Stage.status()`
reports without refusing (figures and the inspector read old runs that way).

**Parts.** Several writers of one stage (shards of an array job) each take their rows
(`take_shard`: by a hash of the MCQ id) and call `write(..., part=part_name(i, n))`; `merge()` joins
the parts into the stage's file, drops rows repeated across parts (by `row_key`) and counts them, and
sums their funnels.

**Moving a run.** A manifest records where the run's folder was (`run_dir`); reading a stage's files
(`load`, `merge`) moves each image path that lay inside it to where the run is now
(`artifacts.rebase_paths`), so a run copied elsewhere, or parts written on nodes that mount it at other
paths, read their images where they are; the files and their data hashes are left as written.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lpt_utils.artifacts import (
    DATA_FILE,
    MANIFEST_FILE,
    RUN_DIR_KEY,
    Funnel,
    data_hash,
    read_rows,
    settings_hash,
)
from lpt_utils.records import MCQ, LongCoT, Prediction, SetSize, SimpleCoT, arrow_schema

PARTS_DIR = "parts"
# The entries `Stage.write` gives every manifest; anything else in one is a notebook's `extra`.
_MANIFEST_KEYS = {"stage", "rows", "settings_hash", "inputs", "data_hash", "counts", "funnel", "written_at", "part",
                  RUN_DIR_KEY}


@dataclass(frozen=True)
class StageSpec:
    """One stage: its key, folder and notebook; the settings that shape what it writes (dotted paths);
    the stages it reads (`upstream`; `optional_upstream`: read when they exist, as 07 reads the trained
    models); the record of its `data.parquet` rows (None: not checked) and the columns that identify a
    row."""

    key: str
    folder: str
    notebook: str
    shaped_by: tuple[str, ...]
    upstream: tuple[str, ...] = ()
    record: type | None = None
    row_key: tuple[str, ...] = ()
    optional_upstream: tuple[str, ...] = ()
    part_files: tuple[str, ...] = ()  # other parquet files each part writes, joined by `merge`
    # manifest tables of counts that `merge` sums over the parts: (key, label column, numerator,
    # denominator); each label's `share` is recomputed from the summed numerator and denominator
    summed_tables: tuple[tuple[str, str, str, str], ...] = ()


SPECS: tuple[StageSpec, ...] = (
    # where a caption source writes files (the synthetic scenes, images exported from a dataset)
    StageSpec("sources", "00_sources", "01_captions_to_mcq", ("data", "plugins.caption_sources")),
    StageSpec("mcq", "01_mcq", "01_captions_to_mcq", ("data", "plugins.caption_sources", "mcq"),
              record=MCQ, row_key=("mcq_id",),
              summed_tables=(("ground_truth_agreement", "question_type", "agree", "graded"),)),
    StageSpec("simple_cot", "02_simple_cot", "02_simple_cot", ("student.engine", "simple_cot"),
              upstream=("mcq",), record=SimpleCoT, row_key=("response_id",)),
    # the student's tokenizer counts the thoughts' tokens; the judge counts behaviours
    StageSpec("long_cot", "03_long_cot", "03_long_cot", ("long_cot", "behaviours", "student.engine.model"),
              upstream=("mcq", "simple_cot"), record=LongCoT, row_key=("long_id",),
              part_files=("behaviours.parquet",)),
    StageSpec("training_data", "04_training_data", "04_build_datasets", ("training_data", "student.engine.model"),
              upstream=("mcq", "simple_cot", "long_cot"), record=SetSize, row_key=("set",)),
    # validation generates with the student's engine and reads answers with stage 2's tag and rule
    StageSpec("sft", "05_sft", "05_sft", ("sft", "student.engine", "simple_cot.think_tag", "simple_cot.rule"),
              upstream=("training_data",)),
    StageSpec("dpo", "06_dpo", "06_dpo", ("dpo", "student.engine", "simple_cot.think_tag", "simple_cot.rule"),
              upstream=("training_data", "sft")),
    # the difficulty samples use stage 2's sampling
    StageSpec("eval", "07_eval", "07_eval_benchmarks", ("eval", "student.engine", "simple_cot.sampling",
                                                         "plugins.benchmark_builders"),
              record=Prediction, row_key=("model", "prompt", "benchmark", "item_id"),
              optional_upstream=("sft", "dpo")),
)
BY_KEY = {s.key: s for s in SPECS}
FOLDERS = {s.key: s.folder for s in SPECS}


def spec(stage: str) -> StageSpec:
    """A stage by key (`long_cot`) or folder (`03_long_cot`)."""
    for s in SPECS:
        if stage in (s.key, s.folder):
            return s
    raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(FOLDERS)}")


def setting(settings: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of the resolved settings (None where a profile has no such key)."""
    node: Any = settings
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def expected_hash(settings: dict[str, Any], stage: str) -> str:
    """The settings hash a stage written with `settings` carries: its declared settings and its
    upstream stages' hashes (optional upstream stages included: what 07 scores depends on them)."""
    s = spec(stage)
    ups = s.upstream + s.optional_upstream
    return settings_hash({"stage": s.key, "settings": {p: setting(settings, p) for p in s.shaped_by},
                          "upstream": {u: expected_hash(settings, u) for u in ups}})


class StaleStage(RuntimeError):
    """An artifact that the current settings or its upstream stages no longer describe."""


@dataclass(frozen=True)
class Status:
    state: str  # current | stale | missing
    reason: str = ""
    rerun: str = ""  # the notebook to run again

    def __bool__(self) -> bool:
        return self.state == "current"

    def __str__(self) -> str:
        return self.state if self else f"{self.state}: {self.reason} (run {self.rerun} again)"


class Stage:
    """One run's artifact of one stage (`Run.stage(key)`): its folder, manifest, status, load, write."""

    def __init__(self, run_dir: Path, settings: dict[str, Any], stage: str):
        self.spec = spec(stage)
        self.run_dir = Path(run_dir)
        self.settings = settings

    def __repr__(self) -> str:
        return f"Stage({self.spec.folder!r} of {self.run_dir})"

    @property
    def dir(self) -> Path:
        return self.run_dir / self.spec.folder

    @property
    def hash(self) -> str:
        return expected_hash(self.settings, self.spec.key)

    def folder(self, part: str | None = None) -> Path:
        """Where the stage (or one part of it) writes its files."""
        return self.dir / PARTS_DIR / part if part else self.dir

    def requests(self, name: str, part: str | None = None) -> Path:
        """The store file of one of the stage's models (`requests/<name>.jsonl`), or of one part's
        (`requests/<name>.part-<part>.jsonl`); every part's store reads the others' answers."""
        return self.dir / "requests" / (f"{name}.part-{part}.jsonl" if part else f"{name}.jsonl")

    def upstream(self, key: str) -> Stage:
        return Stage(self.run_dir, self.settings, key)

    def manifest(self) -> dict[str, Any] | None:
        p = self.dir / MANIFEST_FILE
        return json.loads(p.read_text()) if p.exists() else None

    def status(self) -> Status:
        """Whether the artifact is there and still what the current settings and upstream stages
        describe (module docstring)."""
        m = self.manifest()
        nb = self.spec.notebook
        if m is None:
            return Status("missing", f"{self.spec.folder} has not been written", nb)
        if m.get("settings_hash") != self.hash:
            return Status("stale", f"{self.spec.folder} was written with other settings, or before stage "
                                   "hashes covered their upstream stages", nb)
        recorded = m.get("inputs") or {}
        for key in self.spec.upstream + self.spec.optional_upstream:
            up = self.upstream(key)
            now = up.manifest()
            if key in self.spec.optional_upstream and now is None and up.spec.folder not in recorded:
                continue
            was = recorded.get(up.spec.folder)
            if now is None or was != _identity(now):
                return Status("stale", f"{self.spec.folder} was made from another {up.spec.folder} than the "
                                       "one there now", nb)
        return Status("current")

    def check(self) -> None:
        """Raise `StaleStage` unless the artifact is current."""
        st = self.status()
        if not st:
            raise StaleStage(f"run {self.run_dir.name}: {st}")

    def load(self, check: bool = True, file: str = DATA_FILE) -> pd.DataFrame:
        """The stage's rows (or another of its parquet files), after `check()` unless told not to; image
        paths inside the run's folder point to where the run is now (`artifacts.rebase_paths`)."""
        if check:
            self.check()
        elif self.manifest() is None:
            raise FileNotFoundError(f"{self.dir / MANIFEST_FILE} does not exist: run {self.spec.notebook} first")
        return read_rows(self.dir / file)

    # ------------------------------------------------------------------------- writing

    def table(self, df: pd.DataFrame) -> pa.Table:
        """`df` as the stage's parquet table: exactly its record's columns, with its types."""
        if self.spec.record is None:
            return pa.Table.from_pandas(df, preserve_index=False)
        schema = arrow_schema(self.spec.record)
        missing = [c for c in schema.names if c not in df.columns]
        extra = [c for c in df.columns if c not in schema.names]
        if missing or extra:
            raise ValueError(f"{self.spec.folder}: rows do not match {self.spec.record.__name__} "
                             f"(missing {missing}, not declared {extra}; see lpt_utils/records.py)")
        return pa.Table.from_pandas(df[list(schema.names)], schema=schema, preserve_index=False)

    def write(self, df: pd.DataFrame, *, funnel: Funnel | None = None, counts: dict[str, Any] | None = None,
              extra: dict[str, Any] | None = None, part: str | None = None) -> Path:
        """Write the rows and the manifest (settings hash, inputs, data hash, counts, funnel)
        atomically; with `part`, as one writer's part of the stage (`merge` joins them)."""
        table = self.table(df)
        folder = self.folder(part)
        if clash := sorted(_MANIFEST_KEYS & set(extra or {})):
            raise ValueError(f"{self.spec.folder}: extra manifest entries {clash} would overwrite the manifest's own")
        manifest = {"stage": self.spec.folder, "rows": table.num_rows, "settings_hash": self.hash,
                    "inputs": self._inputs(), "data_hash": data_hash(table), "counts": counts or {},
                    "funnel": (funnel or Funnel()).steps, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    RUN_DIR_KEY: str(self.run_dir.resolve()), **({"part": part} if part else {})}
        assert set(manifest) <= _MANIFEST_KEYS, "a new manifest entry belongs in _MANIFEST_KEYS"
        manifest.update(extra or {})
        _write_atomically(folder, table, manifest)
        return folder

    def _inputs(self) -> dict[str, dict[str, str]]:
        out = {}
        for key in self.spec.upstream + self.spec.optional_upstream:
            up = self.upstream(key)
            m = up.manifest()
            if m is None:
                if key in self.spec.optional_upstream:
                    continue
                raise StaleStage(f"{self.spec.folder} reads {up.spec.folder}, which has not been written")
            out[up.spec.folder] = _identity(m)
        return out

    def parts(self) -> list[str]:
        d = self.dir / PARTS_DIR
        return sorted(p.name for p in d.iterdir() if (p / MANIFEST_FILE).exists()) if d.exists() else []

    def written_parts(self, expected: int | None = None) -> list[str]:
        """The parts written so far; none, or with `expected` another number of them, is an error that
        says how many there are."""
        names = self.parts()
        if not names:
            raise FileNotFoundError(f"{self.dir / PARTS_DIR}: no parts to merge")
        if expected is not None and len(names) != expected:
            raise ValueError(f"{self.spec.folder}: {len(names)} of {expected} parts written ({', '.join(names)})")
        return names

    def merge(self, expected: int | None = None) -> Path:
        """Join the parts into the stage's file: rows repeated across parts (same `row_key`) are kept
        once and counted; funnels are summed step by step; each part's counts are kept; the stage's
        `part_files` (03's `behaviours.parquet`) are concatenated beside it; the spec's `summed_tables`
        (01's ground-truth agreement) are summed, every other extra manifest entry is kept per part under
        `part_extras`. With
        `expected`, fewer parts than that is an error naming the missing ones' count."""
        names = self.written_parts(expected)
        manifests = [json.loads((self.dir / PARTS_DIR / n / MANIFEST_FILE).read_text()) for n in names]
        hashes = {m["settings_hash"] for m in manifests}
        if hashes != {self.hash}:
            raise StaleStage(f"{self.spec.folder}: parts written with other settings than the current ones")
        # each part's paths as seen from here (parts written on nodes that mount the run elsewhere)
        df = pd.concat([read_rows(self.dir / PARTS_DIR / n / DATA_FILE) for n in names], ignore_index=True)
        before = len(df)
        if self.spec.row_key:
            df = df.drop_duplicates(list(self.spec.row_key), keep="first").reset_index(drop=True)
        for name in self.spec.part_files:
            found = [self.dir / PARTS_DIR / n / name for n in names if (self.dir / PARTS_DIR / n / name).exists()]
            if found:
                pd.concat([pd.read_parquet(f) for f in found], ignore_index=True).to_parquet(self.dir / name, index=False)
        funnel = _sum_funnels([m["funnel"] for m in manifests])
        counts = {"parts": {n: m["counts"] for n, m in zip(names, manifests)},
                  "repeated_across_parts": before - len(df)}
        extras = [{k: v for k, v in m.items() if k not in _MANIFEST_KEYS} for m in manifests]
        extra = {key: _sum_table([e.get(key) for e in extras], label, num, den)
                 for key, label, num, den in self.spec.summed_tables}
        if any(extras):
            extra["part_extras"] = {n: e for n, e in zip(names, extras) if e}
        return self.write(df, funnel=funnel, counts=counts, extra=extra)


def shard_of(key: str, num_shards: int) -> int:
    """Which of `num_shards` shards a row belongs to, from a hash of its key (an MCQ id: each MCQ's
    samples, de-duplication and pairs stay in one shard), whatever the order of the rows."""
    return int.from_bytes(hashlib.sha256(str(key).encode()).digest()[:8], "big") % num_shards


def part_name(shard_index: int, num_shards: int) -> str:
    """The name of one shard's part of a stage ("1-of-3"; shards count from 0)."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} is not in 0..{num_shards - 1}")
    return f"{shard_index}-of-{num_shards}"


def take_shard(rows, key, shard_index: int, num_shards: int):
    """The rows of one shard (all of them when `num_shards` is 1), in their order: a DataFrame's rows
    by the hash of column `key`, or a list's items by the hash of `key(item)`."""
    part_name(shard_index, num_shards)
    if num_shards == 1:
        return rows
    if isinstance(rows, pd.DataFrame):
        mask = rows[key].map(lambda k: shard_of(k, num_shards) == shard_index)
        return rows[mask.to_numpy()].reset_index(drop=True)
    return [r for r in rows if shard_of(key(r), num_shards) == shard_index]


def _identity(manifest: dict[str, Any]) -> dict[str, str]:
    """What a downstream stage records of an upstream one: its settings hash and its data hash."""
    return {"settings_hash": manifest.get("settings_hash", ""), "data_hash": manifest.get("data_hash", "")}


def _sum_table(tables: list[list[dict[str, Any]] | None], label: str, num: str,
               den: str) -> list[dict[str, Any]] | None:
    """Rows of count tables summed by `label` (numeric columns added; `share` = num / den again, None
    without a denominator); None when a part has no table (a sum over some parts would read as all).
    Rows in label order, a total row labelled "all" last."""
    if not tables or any(t is None for t in tables):
        return None
    out: dict[str, dict[str, Any]] = {}
    for table in tables:
        for row in table:
            acc = out.setdefault(row[label], {label: row[label]})
            for k, v in row.items():
                if k not in (label, "share") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    acc[k] = acc.get(k, 0) + v
    rows = sorted(out.values(), key=lambda r: (r[label] == "all", str(r[label])))
    for r in rows:
        r["share"] = round(r[num] / r[den], 3) if r.get(den) else None
    return rows


def _sum_funnels(funnels: list[list[dict[str, Any]]]) -> Funnel:
    out = Funnel()
    order: list[str] = []
    total: dict[str, dict[str, Any]] = {}
    for steps in funnels:
        for s in steps:
            t = total.setdefault(s["step"], {"in": 0, "out": 0, "dropped": {}})
            if s["step"] not in order:
                order.append(s["step"])
            t["in"] += s["in"]
            t["out"] += s["out"]
            for k, v in s["dropped"].items():
                t["dropped"][k] = t["dropped"].get(k, 0) + v
    for step in order:
        out.add(step, total[step]["in"], total[step]["out"], total[step]["dropped"])
    return out


def _write_atomically(folder: Path, table: pa.Table, manifest: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{DATA_FILE}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / DATA_FILE)
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, folder / MANIFEST_FILE)
