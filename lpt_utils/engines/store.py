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
import re
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


# A line in the shape this store writes, `{"key": "<key>", ..., "meta": {<flat>}}`. Only a whole line
# matches: `, "meta": {` cannot occur inside a JSON string (a quote there is always escaped), and a
# flat meta closes at its first brace, so a line cut short by a crash never looks like one. Any other
# line (nested meta, an escaped key, another writer's shape) is parsed instead.
_LINE = re.compile(rb'^\{"key": "([^"\\\n]*)", [^\n]*, "meta": \{[^{}\n]*\}\}$', re.M)


def _parsed_key(line: bytes) -> str | None:
    """The key of a line of any other shape that is still a result (parsed); None when it is not."""
    if not line.strip():
        return None
    try:
        rec = GenerationResult.from_json(json.loads(line))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    return rec.key if isinstance(rec.key, str) and isinstance(rec.texts, list) else None


_CHUNK = 16 << 20  # bytes read at a time while indexing (memory stays flat however large the file)
_FILE_BITS = 16  # the index packs (byte offset << 16 | file number) into one int


def _complete_lines(path: Path, offset: int, take_tail: bool):
    """(chunk, start) pieces of the file from byte `offset` on, each ending on a line boundary, read
    `_CHUNK` bytes at a time. A last line without its newline is kept back (another writer may be
    writing it) unless `take_tail`."""
    pos = offset
    with open(path, "rb") as f:
        f.seek(offset)
        carry = b""
        while True:
            block = f.read(_CHUNK)
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n") + 1
            if cut:
                yield data[:cut], pos
                pos += cut
            carry = data[cut:]
        if carry and take_tail:
            yield carry, pos


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
        # key -> where its line is (byte offset << 16 | file number): the results stay in the files,
        # memory holds the index only
        self._index: dict[str, int] = {}
        self._files: list[Path] = []
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
        before = len(self._index)
        for sib in self.siblings():
            self._sibling_offsets[sib] = self._read(sib, self._sibling_offsets.get(sib, 0), take_tail=False)
        self._refresh_own()
        return len(self._index) - before

    def _read(self, path: Path, offset: int, take_tail: bool) -> int:
        """Index the lines of `path` from `offset` on; returns the offset read up to."""
        file_id = self._file_id(path)
        end = offset
        for chunk, start in _complete_lines(path, offset, take_tail):
            self._scan(chunk, file_id, start)
            end = start + len(chunk)
        return end

    def _file_id(self, path: Path) -> int:
        if path not in self._files:
            if len(self._files) >= 1 << _FILE_BITS:
                raise ValueError(f"{self.path}: more than {1 << _FILE_BITS} part files beside it")
            self._files.append(path)
        return self._files.index(path)

    def _scan(self, chunk, file_id: int, base: int) -> None:
        """Index the complete lines of `chunk` (bytes or an mmap, starting at byte `base` of file
        `file_id`): a key and where its line is. Lines in this store's own shape are found by one
        regular-expression pass and indexed without being parsed (a million in about a second); any
        other line is parsed, and counted as corrupt if it is not a result."""
        index = self._index
        expected = 0  # where the next line starts if every line so far had this store's shape
        for m in _LINE.finditer(chunk):
            if m.start() > expected:
                self._scan_slowly(chunk, expected, m.start(), file_id, base)
            key = m.group(1).decode("ascii", "replace")
            if key not in index:
                index[key] = (base + m.start()) << _FILE_BITS | file_id
            expected = m.end() + 1
        if expected < len(chunk):
            self._scan_slowly(chunk, expected, len(chunk), file_id, base)

    def _scan_slowly(self, chunk, start: int, end: int, file_id: int, base: int) -> None:
        """The lines between `start` and `end` that the expression did not take: blank lines, results
        written in another shape (parsed), and corrupt lines (counted)."""
        pos = start
        while pos < end:
            nl = chunk.find(b"\n", pos, end)
            stop = end if nl < 0 else nl
            line = bytes(chunk[pos:stop])
            if line.strip():
                key = _parsed_key(line)
                if key is None:
                    self.corrupt_lines += 1
                elif key not in self._index:
                    self._index[key] = (base + pos) << _FILE_BITS | file_id
            pos = stop + 1

    def _refresh_own(self) -> None:
        if not self.path.exists():
            return
        # a final line without its newline is read when the file is first opened (a crash cut it
        # short: it is counted as corrupt); later, it may be another writer's line in flight
        first = self._offset == 0
        end = self._read(self.path, self._offset, take_tail=first)
        if first and end and not self._last_byte_is_newline(end):
            self._ends_mid_line = True
        self._offset = end

    def _last_byte_is_newline(self, end: int) -> bool:
        with open(self.path, "rb") as f:
            f.seek(end - 1)
            return f.read(1) == b"\n"

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def has(self, key: str) -> bool:
        return key in self._index

    def get(self, key: str) -> GenerationResult:
        """The stored result (KeyError if absent), read from its line: a fresh object every time."""
        where = self._index[key]
        with open(self._files[where & ((1 << _FILE_BITS) - 1)], "rb") as f:
            f.seek(where >> _FILE_BITS)
            return GenerationResult.from_json(json.loads(f.readline()))

    def keys(self) -> list[str]:
        return list(self._index)

    def append(self, results: Iterable[GenerationResult]) -> int:
        """Write results whose key is not stored yet; flush and fsync. Returns how many were written."""
        new: list[GenerationResult] = []
        seen: set[str] = set()
        for r in results:
            if r.key not in self._index and r.key not in seen:
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
        start = self._offset
        self._offset += len(encoded)
        self._ends_mid_line = False
        self._scan(encoded, self._file_id(self.path), start)
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
