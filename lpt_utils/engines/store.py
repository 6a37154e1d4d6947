"""Resumable generation: an append-only JSONL store of results and the loop that fills it.

Every stage sends its requests through `run_requests`, which looks each request's key up in a
`RequestStore` and generates only what is missing, appending each finished batch to the file
(flushed and fsynced) before starting the next. A run that is killed loses at most the batch in
flight; running it again picks up where it stopped and answers every request exactly once.

File format: one JSON object per line, `GenerationResult.to_json()`. The first record for a key
wins; a later line with the same key (which `run_requests` never writes) is ignored. A line that
does not parse — typically the last one, cut short by a crash mid-write — is skipped and counted
in `RequestStore.corrupt_lines`; the next append starts on a fresh line.

One writer: a store holds a lock (`<file>.lock`, a POSIX record lock, which the kernel releases when
its process dies) from when it is opened until it is closed or collected. A second process opening
the same store refuses at once (`StoreBusy`), naming the run, the stage and the holder (host, PID,
start time), instead of generating and paying for every request a second time. A lock file left by
a process that has died is taken over with a notice. `run_requests` re-reads what was appended
since the store was opened before it decides what to generate.

Parts: the shards of one stage each write their own file (`name.part-<i>-of-<n>.jsonl`, so each has
its own writer) and read every part's and the whole stage's file (`name.jsonl`): a request answered
by any of them is never generated again, however the stage is run next.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm

from .base import Engine, GenerationRequest, GenerationResult

DEFAULT_BATCH_SIZE = 64
DEFAULT_STREAM_FLUSH = 8  # a streaming engine's answers are appended to the store in groups of this many


class StoreBusy(RuntimeError):
    """Another process is writing this store (one writer per stage part)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RequestStore:
    """Results keyed by request key, kept in memory and mirrored to an append-only JSONL file; the
    writer's lock is held while the store is open (`close()`, or use it as a context manager)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.corrupt_lines = 0  # lines skipped because they did not parse
        self._records: dict[str, GenerationResult] = {}
        self._ends_mid_line = False  # the file's last byte is not a newline
        self._offset = 0  # bytes of the file read so far
        self._sibling_offsets: dict[Path, int] = {}  # the same for the other parts' files (read only)
        self._lock_fd: int | None = None
        self._lock()
        self.refresh()

    # ------------------------------------------------------------------------- the writer's lock

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _where(self) -> str:
        stage = self.path.parent.parent if self.path.parent.name == "requests" else self.path.parent
        return f"run {stage.parent.name!r}, stage {stage.name}, store {self.path.name}"

    def _lock(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        holder = self._holder(fd)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            who = (f"host {holder.get('host')}, PID {holder.get('pid')}, since {holder.get('started')}"
                   if holder else "another process")
            raise StoreBusy(f"{self._where()} is being written by {who}: one writer per stage part. "
                            "Wait for it to finish, or stop it, then run again.") from None
        mine = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if holder and holder.get("pid") != mine["pid"]:
            dead = holder.get("host") == mine["host"] and not _alive(int(holder.get("pid", 0)))
            warnings.warn(f"{self._where()}: taking over the lock left by PID {holder.get('pid')} on "
                          f"{holder.get('host')} (since {holder.get('started')}"
                          f"{', no longer running' if dead else ''})", stacklevel=3)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        self._lock_fd = fd

    @staticmethod
    def _holder(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            return {}

    def close(self) -> None:
        """Release the writer's lock (the results stay readable in memory)."""
        if self._lock_fd is not None:
            try:
                os.ftruncate(self._lock_fd, 0)
            finally:
                os.close(self._lock_fd)  # closing the descriptor releases the record lock
                self._lock_fd = None

    def __enter__(self) -> "RequestStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # ------------------------------------------------------------------------- reading

    def siblings(self) -> list[Path]:
        """The other parts of this store: `name.jsonl` and every `name.part-<i>-of-<n>.jsonl` beside it
        (shards of one stage each write their own file; every part reads all of them)."""
        base = self.path.name.split(".part-")[0].removesuffix(".jsonl")
        found = [self.path.with_name(f"{base}.jsonl")] + sorted(self.path.parent.glob(f"{base}.part-*.jsonl"))
        return [p for p in found if p != self.path and p.exists()]

    def refresh(self) -> int:
        """Read what was appended to the file (and to its siblings' files) since it was last read;
        returns how many new records."""
        before = len(self._records)
        for sib in self.siblings():
            with open(sib, "rb") as f:
                f.seek(self._sibling_offsets.get(sib, 0))
                data = f.read()
            complete = data[:data.rfind(b"\n") + 1]  # a line in flight is read next time
            self._sibling_offsets[sib] = self._sibling_offsets.get(sib, 0) + len(complete)
            self._parse(complete)
        return self._refresh_own() + len(self._records) - before

    def _parse(self, chunk: bytes) -> None:
        for line in chunk.split(b"\n"):
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

    def _refresh_own(self) -> int:
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        if not data:
            return 0
        complete = data if data.endswith(b"\n") else data[:data.rfind(b"\n") + 1]
        # a final line without its newline is read when the file is first opened (a crash cut it
        # short: it is counted as corrupt); later, it may be another writer's line in flight
        tail = data[len(complete):]
        if self._offset == 0 and tail:
            complete, tail = data, b""
            self._ends_mid_line = True
        self._parse(complete)
        self._offset += len(complete)
        return 0

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
        self._refresh_own()  # what another store object of this process appended, so the offset stays exact
        encoded = payload.encode("utf-8")
        with open(self.path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # appends never interleave lines
            try:
                f.write(encoded)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        self._offset += len(encoded)
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
    store.refresh()  # what was appended since the store was opened
    todo = [k for k in first if not store.has(k)]
    stats = RunStats(requested=len(requests), unique=len(first), from_store=len(first) - len(todo))

    stream = getattr(engine, "stream", None)
    with tqdm(total=len(todo), desc=desc, unit="req", disable=not todo) as bar:
        for i in range(0, len(todo), bs):
            batch_keys = todo[i:i + bs]
            batch = [first[k] for k in batch_keys]
            if stream is None:
                results = engine.generate(batch)
                if len(results) != len(batch):
                    raise RuntimeError(f"engine returned {len(results)} results for {len(batch)} requests")
                store.append([_check(res, req, k) for res, req, k in zip(results, batch, batch_keys)])
                stats.generated += len(batch)
                bar.update(len(batch))
                continue
            # a streaming engine (Ray): store each answer as it comes back, whatever the order
            pending: list[GenerationResult] = []
            for j, res in stream(batch):
                pending.append(_check(res, batch[j], batch_keys[j]))
                if len(pending) >= DEFAULT_STREAM_FLUSH:
                    stats.generated += store.append(pending)
                    bar.update(len(pending))
                    pending = []
            stats.generated += store.append(pending)
            bar.update(len(pending))
            missing = [k for k in batch_keys if not store.has(k)]
            if missing:
                raise RuntimeError(f"the engine returned no result for {len(missing)} of {len(batch)} requests")

    out = []
    for k, r in zip(keys, requests):
        res = store.get(k)
        res.meta = dict(r.meta)
        out.append(res)
    return RunResults(out, stats)
