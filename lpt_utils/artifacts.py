"""Stage artifacts: `outputs/<run>/<NN_stage>/data.parquet` (loadable with `datasets`) and a small
`manifest.json` (counts, settings hash, the funnel of what was dropped and why, inputs read).

A notebook reads earlier stages only through `load_stage`, never through their variables.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"
# Where the run's folder was when a stage wrote it (a manifest entry), and the columns whose paths
# inside that folder follow the run when it is moved or copied (`rebase_paths`).
RUN_DIR_KEY = "run_dir"
PATH_COLUMNS = ("image_path",)


def settings_hash(obj: Any) -> str:
    """A short, stable hash of (part of) the settings, for manifests and caches."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_hash(table: pa.Table) -> str:
    """A short hash of a table's content (columns, types and values; not how pandas described it)."""
    sink = io.BytesIO()
    table = table.replace_schema_metadata(None)
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()[:16]


@dataclass
class Funnel:
    """Ordered steps of a stage, each with what came in, what went on and why the rest dropped."""

    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, step: str, n_in: int, n_out: int, dropped: dict[str, int] | Counter | None = None) -> None:
        dropped = {k: int(v) for k, v in (dropped or {}).items() if v}
        if n_in - n_out != sum(dropped.values()):
            raise ValueError(f"funnel step {step!r}: {n_in} in, {n_out} out, but drops add to "
                             f"{sum(dropped.values())}: every drop needs a reason")
        self.steps.append({"step": step, "in": n_in, "out": n_out, "dropped": dropped})

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"step": s["step"], "in": s["in"], "out": s["out"],
                              "dropped": ", ".join(f"{k}: {v}" for k, v in s["dropped"].items()) or "-"}
                             for s in self.steps])


def write_stage(stage_dir: Path, rows: list[dict[str, Any]] | pd.DataFrame, *, stage: str,
                settings_hash: str, funnel: Funnel | None = None, counts: dict[str, Any] | None = None,
                inputs: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write rows + manifest atomically (temp file, then rename) and return the stage folder."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    tmp = stage_dir / f".{DATA_FILE}.tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, stage_dir / DATA_FILE)
    manifest = {
        "stage": stage,
        "rows": len(df),
        "settings_hash": settings_hash,
        "counts": counts or {},
        "funnel": (funnel or Funnel()).steps,
        "inputs": inputs or {},
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    tmp = stage_dir / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, stage_dir / MANIFEST_FILE)
    return stage_dir


def read_manifest(stage_dir: Path) -> dict[str, Any]:
    p = Path(stage_dir) / MANIFEST_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist: run the notebook that writes {Path(stage_dir).name} first")
    return json.loads(p.read_text())


def load_stage(stage_dir: Path, as_pandas: bool = True):
    """The rows of an earlier stage, as a DataFrame (default) or a `datasets.Dataset`, with their
    paths inside the run's folder where that folder is now (`rebase_paths`)."""
    read_manifest(stage_dir)  # clear error when the stage has not run
    df = read_rows(Path(stage_dir) / DATA_FILE)
    if as_pandas:
        return df
    import datasets

    return datasets.Dataset.from_pandas(df, preserve_index=False)


def read_rows(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet file of a stage's folder (its `data.parquet`, 04's training sets), with the paths it
    records inside the run's folder rebased onto where that folder is now (`rebase_paths`)."""
    path = Path(path)
    return rebase_paths(pd.read_parquet(path, columns=columns), path.parent)


def rebase_paths(df: pd.DataFrame, stage_dir: Path) -> pd.DataFrame:
    """`df`, read from a file of `stage_dir` (a stage's folder, or one part's), with each path of
    `PATH_COLUMNS` that lay inside the run's folder when the stage was written (the manifest's
    `run_dir`) moved to the same place inside the folder the run is in now, where a file is there;
    a path with no file there (a stage folder copied into another run without the images) keeps
    what it recorded. Other paths (a DOCCI folder elsewhere) and files written before manifests
    recorded `run_dir` are left as they are.

    A stage's files keep the absolute paths they were written with: their data hash, and so what
    later stages recorded of them, does not change when a run is moved, copied or mounted elsewhere
    (an array job's nodes), and each reader sees the paths of the run where it is read."""
    stage_dir = Path(stage_dir)
    mpath = stage_dir / MANIFEST_FILE
    if not mpath.exists() or not any(c in df.columns for c in PATH_COLUMNS):
        return df
    manifest = json.loads(mpath.read_text())
    was = manifest.get(RUN_DIR_KEY)
    # a stage's folder sits in the run's folder; a part's in <run>/<stage>/parts/
    now = str((stage_dir.parents[2] if manifest.get("part") else stage_dir.parent).resolve())
    if not was or was == now:
        return df
    prefix = was.rstrip(os.sep) + os.sep

    def here(p: Any) -> Any:
        if not (isinstance(p, str) and p.startswith(prefix)):
            return p
        moved = os.path.join(now, p[len(prefix):])
        return moved if os.path.exists(moved) else p

    df = df.copy()
    for col in PATH_COLUMNS:
        if col in df.columns:
            seen = {p: here(p) for p in df[col].dropna().unique()}
            df[col] = [seen.get(p, p) if isinstance(p, str) else p for p in df[col]]
    return df
