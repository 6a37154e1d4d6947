"""Resumable generation: an append-only JSONL store of results and the loop that fills it.

Every stage sends its requests through `run_requests`, which looks each request's key up in a
`RequestStore` and generates only what is missing, appending each finished batch to the file
(flushed and fsynced) before starting the next. A run that is killed loses at most the batch in
flight; running it again picks up where it stopped and answers every request exactly once.

File format: one JSON object per line, `GenerationResult.to_json()`. The first record for a key
wins; a later line with the same key (which `run_requests` never writes) is ignored. A line that
does not parse — typically the last one, cut short by a crash mid-write — is skipped and counted
in `RequestStore.corrupt_lines`; the next append starts on a fresh line.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm

from .base import Engine, GenerationRequest, GenerationResult

DEFAULT_BATCH_SIZE = 64


class RequestStore:
    """Results keyed by request key, kept in memory and mirrored to an append-only JSONL file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.corrupt_lines = 0  # lines skipped on open because they did not parse
        self._records: dict[str, GenerationResult] = {}
        self._ends_mid_line = False  # the file's last byte is not a newline
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        self._ends_mid_line = bool(data) and not data.endswith(b"\n")
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                rec = GenerationResult.from_json(d)
                if not isinstance(rec.key, str) or not isinstance(rec.texts, list):
                    raise ValueError("not a GenerationResult")
            except (ValueError, TypeError, UnicodeDecodeError):
                self.corrupt_lines += 1
                continue
            self._records.setdefault(rec.key, rec)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def has(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> GenerationResult:
        """A copy of the stored result (KeyError if absent)."""
        r = self._records[key]
        return replace(r, texts=list(r.texts), num_tokens=list(r.num_tokens),
                       finish_reasons=list(r.finish_reasons), meta=dict(r.meta))

    def keys(self) -> list[str]:
        return list(self._records)

    def append(self, results: Iterable[GenerationResult]) -> int:
        """Write results whose key is not stored yet; flush and fsync. Returns how many were written."""
        new: list[GenerationResult] = []
        seen: set[str] = set()
        for r in results:
            if r.key not in self._records and r.key not in seen:
                new.append(r)
                seen.add(r.key)
        if not new:
            return 0
        # Serialise everything before touching the file, so a bad record writes nothing.
        lines = [json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in new]
        payload = ("\n" if self._ends_mid_line else "") + "".join(lines)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # two processes appending never interleave lines
            try:
                f.write(payload.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        self._ends_mid_line = False
        for r in new:
            self._records[r.key] = r
        return len(new)


@dataclass
class RunStats:
    """What one `run_requests` call did."""

    requested: int = 0  # requests passed in
    unique: int = 0  # distinct keys among them
    from_store: int = 0  # distinct keys already in the store
    generated: int = 0  # distinct keys generated (and stored) by this call


class RunResults(list):
    """The list of results `run_requests` returns, with its `RunStats` as `.stats`."""

    stats: RunStats

    def __init__(self, items: Iterable[GenerationResult], stats: RunStats):
        super().__init__(items)
        self.stats = stats


def _check(result: GenerationResult, req: GenerationRequest, key: str) -> GenerationResult:
    n = req.sampling.n
    if not (len(result.texts) == len(result.num_tokens) == len(result.finish_reasons) == n):
        raise RuntimeError(
            f"engine returned {len(result.texts)} texts / {len(result.num_tokens)} token counts / "
            f"{len(result.finish_reasons)} finish reasons for a request with n={n}"
        )
    if result.key and result.key != key:
        raise RuntimeError("engine returned a result for another request (keys differ)")
    # The stored record carries the meta of the first request with this key, for reading the file.
    return replace(result, key=key, meta=dict(req.meta))


def run_requests(
    engine: Engine,
    requests: list[GenerationRequest],
    store: RequestStore,
    *,
    batch_size: int | None = None,
    desc: str = "generating",
) -> RunResults:
    """Answer every request, generating only those whose key is not in `store`.

    Identical requests (same key) are generated once. Missing ones go to `engine.generate` in
    batches of `batch_size` (default: the engine's `batch_size` attribute, else 64); each batch is
    appended to the store before the next starts. If the engine raises, finished batches stay
    stored and the exception propagates. Returns results in the order of `requests`, each with
    `meta` copied from its request; `.stats` on the returned list says how many came from the
    store and how many were generated.
    """
    bs = batch_size or getattr(engine, "batch_size", None) or DEFAULT_BATCH_SIZE
    fp = engine.fingerprint
    keys = [r.key(fp) for r in requests]
    first: dict[str, GenerationRequest] = {}
    for k, r in zip(keys, requests):
        first.setdefault(k, r)
    todo = [k for k in first if not store.has(k)]
    stats = RunStats(requested=len(requests), unique=len(first), from_store=len(first) - len(todo))

    with tqdm(total=len(todo), desc=desc, unit="req", disable=not todo) as bar:
        for i in range(0, len(todo), bs):
            batch_keys = todo[i:i + bs]
            batch = [first[k] for k in batch_keys]
            results = engine.generate(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"engine returned {len(results)} results for {len(batch)} requests")
            store.append([_check(res, req, k) for res, req, k in zip(results, batch, batch_keys)])
            stats.generated += len(batch)
            bar.update(len(batch))

    out = []
    for k, r in zip(keys, requests):
        res = store.get(k)
        res.meta = dict(r.meta)
        out.append(res)
    return RunResults(out, stats)
