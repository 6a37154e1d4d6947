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

Memory holds an index only (key -> where its line is); `get`/`get_many` read the lines back. Opening
a store indexes its files: lines in the store's own shape by one regular-expression pass, any other
line parsed. So that a large store is not read whole at every open, the writer keeps a sidecar index
beside its file (`<file>.idx`): a header (format version; `covered`, the bytes of the JSONL it covers,
always ending with a complete line; a sha256 of the first and of the last <= 4096 covered bytes; the
corrupt lines among them; a CRC of the rest), then the keys (joined by newlines) and their byte
offsets (int64), the first line of each key in file order. Opening a file (the store's own and its
siblings alike) loads a valid sidecar and reads only the bytes after `covered`; a sidecar that is
missing, of another version, damaged, or that no longer matches its file (shorter than `covered`, or
the hashed bytes differ: the file was rewritten) is ignored and the whole file read. The writer (the
lock holder; a sibling's sidecar is only read) writes its sidecar (a temporary file, then renamed)
when it closes, if the file grew since the sidecar was read or written, and after every 64 MB
appended, so a killed run leaves at most that much to read again. An unfinished last line is never
covered: it is read again at each open. A store whose keys contain a newline writes no sidecar.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
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
_FILE_MASK = (1 << _FILE_BITS) - 1


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


# ----------------------------------------------------------------------------- the sidecar index

_SIDECAR_MAGIC = b"lpt-request-store-index\n"
_SIDECAR_VERSION = 1
_SIDECAR_CHECKED = 4096  # bytes of the JSONL hashed at each end of the covered range
_SIDECAR_EVERY = 64 << 20  # the writer rewrites its sidecar once this many bytes were appended since


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".idx")


def _ends_sha(path: Path, covered: int) -> tuple[str, str]:
    """sha256 of the first and of the last (at most `_SIDECAR_CHECKED`) bytes of `path[:covered]`."""
    with open(path, "rb") as f:
        head = f.read(min(covered, _SIDECAR_CHECKED))
        f.seek(max(0, covered - _SIDECAR_CHECKED))
        tail = f.read(covered - max(0, covered - _SIDECAR_CHECKED))
    return hashlib.sha256(head).hexdigest(), hashlib.sha256(tail).hexdigest()


def _load_sidecar(path: Path) -> tuple[int, int, list[str], np.ndarray] | None:
    """(covered, corrupt lines, keys, byte offsets) from the sidecar of the JSONL `path`; None when it
    is missing or cannot be trusted (another version, damaged, or its file changed under it)."""
    try:
        with open(_sidecar_path(path), "rb") as f:
            data = f.read()
        if not data.startswith(_SIDECAR_MAGIC):
            return None
        start = len(_SIDECAR_MAGIC)
        stop = data.index(b"\n", start)
        head = json.loads(data[start:stop])
        if not isinstance(head, dict) or head.get("version") != _SIDECAR_VERSION:
            return None
        covered, corrupt, n, blob_len = (int(head[k]) for k in ("covered", "corrupt", "keys", "keys_bytes"))
        body = memoryview(data)[stop + 1:]
        if min(covered, corrupt, n, blob_len) < 0 or len(body) != blob_len + 8 * n or \
                zlib.crc32(body) != head["crc32"]:
            return None  # cut short or damaged
        if os.path.getsize(path) < covered or _ends_sha(path, covered) != (head["head_sha256"], head["tail_sha256"]):
            return None  # the JSONL was rewritten since
        keys = str(body[:blob_len], "utf-8", "surrogatepass").split("\n") if n else []
        offsets = np.frombuffer(body, dtype="<i8", count=n, offset=blob_len).astype(np.int64)
        if len(keys) != n or (n and (offsets[0] < 0 or offsets[-1] >= covered or np.any(offsets[1:] <= offsets[:-1]))):
            return None
        return covered, corrupt, keys, offsets
    except Exception:  # unreadable or nonsense: never trusted, never fatal (the file is read instead)
        return None


def _write_sidecar(path: Path, covered: int, corrupt: int, keys: list[str], offsets: np.ndarray) -> bool:
    """Write the sidecar of the JSONL `path` (`keys` at `offsets`, in file order, cover its first
    `covered` bytes) atomically: a temporary file renamed over the old one. False (nothing written)
    when a key holds a newline."""
    blob = "\n".join(keys).encode("utf-8", "surrogatepass")
    if keys and blob.count(b"\n") != len(keys) - 1:
        return False
    body = blob + np.ascontiguousarray(offsets, dtype="<i8").tobytes()
    head_sha, tail_sha = _ends_sha(path, covered)
    head = {"version": _SIDECAR_VERSION, "covered": covered, "head_sha256": head_sha, "tail_sha256": tail_sha,
            "corrupt": corrupt, "keys": len(keys), "keys_bytes": len(blob), "crc32": zlib.crc32(body)}
    target = _sidecar_path(path)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, os.stat(path).st_mode & 0o777)  # readable by whoever reads the JSONL (not 0600)
            f.write(_SIDECAR_MAGIC + json.dumps(head).encode() + b"\n")
            f.write(body)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


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
        self._files: list[Path] = [self.path]  # by file number; the store's own file is number 0
        self._ends_mid_line = False  # the file's last byte is not a newline
        self._offset = 0  # bytes of the file read so far
        self._sibling_offsets: dict[Path, int] = {}  # the same for the other parts' files (read only)
        # what the own file's sidecar is written from, besides the index
        self._own_read = False  # the own file was read once (its sidecar loaded, a cut last line taken)
        self._own_corrupt = 0  # corrupt lines counted in the own file
        self._line_end = 0  # where the own file's last complete line read ends: what a sidecar covers
        self._tail_corrupt = 0  # corrupt lines counted past `_line_end` (an unfinished last line)
        self._shadowed: dict[str, int] = {}  # own-file offsets of keys indexed from a sibling first
        self._saved = 0  # bytes of the own file that its sidecar on disk covers (as loaded or written)
        self._lock_fd: int | None = None
        self._lock()
        self.refresh()

    # ------------------------------------------------------------------------- the writer's lock

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def sidecar_path(self) -> Path:
        return _sidecar_path(self.path)

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

    def close(self, save_index: bool = True) -> None:
        """Write the sidecar index if the file grew since it was last loaded or written, then release
        the writer's lock (the results stay readable)."""
        if self._lock_fd is not None:
            try:
                if save_index:
                    self._save_sidecar()
                os.ftruncate(self._lock_fd, 0)
            finally:
                os.close(self._lock_fd)  # closing the descriptor releases the record lock
                self._lock_fd = None

    def __enter__(self) -> "RequestStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:  # at interpreter exit the sidecar is not written (open and friends may be gone)
            self.close(save_index=not sys.is_finalizing())
        except Exception:  # at interpreter exit (modules torn down) or after a failed __init__
            pass

    # ------------------------------------------------------------------------- the sidecar index

    def _save_sidecar(self) -> None:
        """Write the own file's sidecar if it covers less than what was read: the writer only (the lock
        is held), never raising (a missing sidecar costs a longer read at the next open)."""
        covered = self._line_end
        if self._lock_fd is None or covered <= self._saved:
            return
        self._saved = covered  # tried once per change, whatever happens below
        try:
            if len(self._files) == 1:  # no siblings: every key is the own file's, in file order
                keys = list(self._index)
                offsets = np.fromiter(self._index.values(), np.int64, len(keys)) >> _FILE_BITS
            else:
                keys = [k for k, w in self._index.items() if not w & _FILE_MASK]
                offsets = np.fromiter((w >> _FILE_BITS for w in self._index.values() if not w & _FILE_MASK),
                                      np.int64, len(keys))
                if self._shadowed:  # the own file's lines for keys that a sibling's file held first
                    keys += list(self._shadowed)
                    offsets = np.concatenate([offsets, np.fromiter(self._shadowed.values(), np.int64)])
            if len(offsets) > 1 and np.any(offsets[1:] <= offsets[:-1]):
                order = np.argsort(offsets, kind="stable")
                keys, offsets = [keys[i] for i in order.tolist()], offsets[order]
            n = int(np.searchsorted(offsets, covered))  # keys of an unfinished last line are not covered
            _write_sidecar(self.path, covered, self._own_corrupt - self._tail_corrupt, keys[:n], offsets[:n])
        except Exception as e:
            warnings.warn(f"{self.path}: could not write the sidecar index ({e!r}); the next open reads "
                          "the whole file", stacklevel=2)

    def _load(self, path: Path) -> int:
        """Index what the sidecar of `path` covers, if it has one that can be trusted; returns the bytes
        it covers (0 without one: the whole file is read)."""
        found = _load_sidecar(path)
        if found is None:
            return 0
        covered, corrupt, keys, offsets = found
        file_id = self._file_id(path)
        wheres = (offsets << _FILE_BITS | file_id).tolist()
        index = self._index
        if not index:
            index.update(zip(keys, wheres))
        else:  # the first line for a key wins, and the files read before this one come first
            for key, where in zip(keys, wheres):
                if key not in index:
                    index[key] = where
                elif file_id == 0:  # nothing of the own file was read yet: a sibling's key
                    self._shadowed[key] = where >> _FILE_BITS
        self.corrupt_lines += corrupt
        if file_id == 0:
            self._own_corrupt += corrupt
        return covered

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
            if sib not in self._sibling_offsets:  # first read: what its sidecar covers is not read
                self._sibling_offsets[sib] = self._load(sib)
            self._sibling_offsets[sib] = self._read(sib, self._sibling_offsets[sib], take_tail=False)
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
            elif file_id == 0:
                self._shadow(key, base + m.start())
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
                    if file_id == 0:
                        self._own_corrupt += 1
                elif key not in self._index:
                    self._index[key] = (base + pos) << _FILE_BITS | file_id
                elif file_id == 0:
                    self._shadow(key, base + pos)
            pos = stop + 1

    def _shadow(self, key: str, offset: int) -> None:
        """A line of the own file for a key already indexed: if a sibling's file held it first, the own
        file's first line for it is kept for the sidecar (which lists the own file's keys only)."""
        if self._index[key] & _FILE_MASK and key not in self._shadowed:
            self._shadowed[key] = offset

    def _refresh_own(self) -> None:
        if not self.path.exists():
            return
        first = not self._own_read
        if first:  # what the sidecar covers is not read again
            self._own_read = True
            self._offset = self._line_end = self._saved = self._load(self.path)
        end = self._read(self.path, self._offset, take_tail=False)
        if end > self._offset:  # complete lines: the file ends with a newline
            self._offset = self._line_end = end
            self._ends_mid_line = False
            self._tail_corrupt = 0
        if first:
            # a final line without its newline is read when the file is first opened (a crash cut it
            # short: it is counted as corrupt); later, it may be another writer's line in flight. It
            # is never covered by the sidecar (`_line_end` stays before it)
            corrupt = self._own_corrupt
            end = self._read(self.path, self._offset, take_tail=True)
            if end > self._offset and self._last_byte_is_newline(end):  # whole lines appended meanwhile
                self._line_end = end
            elif end > self._offset:
                self._ends_mid_line = True
                self._tail_corrupt = self._own_corrupt - corrupt
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
        with open(self._files[where & _FILE_MASK], "rb") as f:
            f.seek(where >> _FILE_BITS)
            return GenerationResult.from_json(json.loads(f.readline()))

    def get_many(self, keys: Iterable[str]) -> list[GenerationResult]:
        """The stored results of `keys`, in their order (KeyError if one is absent, before anything is
        read), as `get` returns them (a fresh object each, a key asked twice included), read in one
        pass: the lines sorted by file and offset, each file opened once."""
        wheres = [self._index[k] for k in keys]
        out: list = [None] * len(wheres)
        if not wheres:
            return out
        packed = np.fromiter(wheres, np.int64, len(wheres))
        order = np.lexsort((packed >> _FILE_BITS, packed & _FILE_MASK))  # by file, then by offset
        f = None
        file_id = last = -1
        pos = 0  # where the file's reader stands
        line = b""
        try:
            for i in order.tolist():
                where = wheres[i]
                if where != last:  # a key asked twice is read once (and parsed twice)
                    if where & _FILE_MASK != file_id:
                        if f is not None:
                            f.close()
                        file_id = where & _FILE_MASK
                        f = open(self._files[file_id], "rb")
                        pos = 0
                    if where >> _FILE_BITS != pos:
                        pos = where >> _FILE_BITS
                        f.seek(pos)
                    line = f.readline()
                    pos += len(line)
                    last = where
                out[i] = GenerationResult.from_json(json.loads(line))
        finally:
            if f is not None:
                f.close()
        return out

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
        self._own_read = True  # the file exists now, and all of it is read
        start = self._offset
        self._offset = self._line_end = self._offset + len(encoded)
        self._ends_mid_line = False
        self._tail_corrupt = 0
        self._scan(encoded, 0, start)
        if self._line_end - self._saved >= _SIDECAR_EVERY:
            self._save_sidecar()  # a run killed later leaves at most this much to read again
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

    out = store.get_many(keys)  # one pass over the files, a fresh result for each request
    for res, r in zip(out, requests):
        res.meta = dict(r.meta)
    return RunResults(out, stats)
