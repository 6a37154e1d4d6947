"""The result store and `run_requests`: resume after a crash, exactly-once answers, corrupt lines.

`CountingEngine` is a deterministic stand-in for a backend (a test double for the store logic;
the real backends are tested in test_engines_*.py). Run as a script, this module is the worker
that the SIGKILL test kills mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lpt_utils.engines import (  # noqa: E402
    GenerationRequest,
    GenerationResult,
    RequestStore,
    SamplingSettings,
    StoreBusy,
    run_requests,
)


class CountingEngine:
    """Answers prompt p with texts "p#0".."p#{n-1}"; optionally fails on batch `fail_on_batch`
    (1-based) or sleeps per batch. Records every request it was asked."""

    fingerprint = "counting-engine"

    def __init__(self, batch_size: int = 3, fail_on_batch: int | None = None, sleep_s: float = 0.0,
                 hang_on_batch: int | None = None):
        self.batch_size = batch_size
        self.fail_on_batch = fail_on_batch
        self.hang_on_batch = hang_on_batch  # this batch never returns (the SIGKILL test kills it there)
        self.sleep_s = sleep_s
        self.batches = 0
        self.seen: list[str] = []

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.batches += 1
        if self.fail_on_batch == self.batches:
            raise RuntimeError("engine died")
        if self.hang_on_batch == self.batches:
            while True:
                time.sleep(3600)
        time.sleep(self.sleep_s)
        self.seen += [r.prompt for r in requests]
        return [
            GenerationResult(
                key=r.key(self.fingerprint),
                texts=[f"{r.prompt}#{i}" for i in range(r.sampling.n)],
                num_tokens=[len(r.prompt)] * r.sampling.n,
                finish_reasons=["stop"] * r.sampling.n,
            )
            for r in requests
        ]

    def close(self) -> None:
        pass


def make_requests(n: int, samples: int = 2) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=f"p{i}", sampling=SamplingSettings(n=samples), meta={"i": i}) for i in range(n)]


def file_keys(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()]


def check_answers(results, requests) -> None:
    assert [r.texts for r in results] == [[f"{q.prompt}#0", f"{q.prompt}#1"] for q in requests]
    assert [r.meta for r in results] == [q.meta for q in requests]


def test_resume_after_crash_answers_each_request_once(tmp_path: Path):
    path = tmp_path / "gen.jsonl"
    requests = make_requests(10)
    with pytest.raises(RuntimeError, match="engine died"):
        run_requests(CountingEngine(fail_on_batch=3), requests, RequestStore(path))
    before = path.read_bytes()
    assert len(file_keys(path)) == 6  # two batches of 3 finished before the crash

    engine = CountingEngine()
    results = run_requests(engine, requests, RequestStore(path))
    check_answers(results, requests)
    assert engine.seen == [f"p{i}" for i in range(6, 10)]
    assert results.stats.from_store == 6 and results.stats.generated == 4
    keys = file_keys(path)
    assert len(keys) == len(set(keys)) == 10
    assert path.read_bytes().startswith(before)  # earlier results untouched

    again = CountingEngine()
    run_requests(again, requests, RequestStore(path))
    assert again.seen == [] and path.read_bytes().count(b"\n") == 10


def test_duplicates_within_a_call_are_generated_once(tmp_path: Path):
    reqs = make_requests(3) + make_requests(3)
    for j, r in enumerate(reqs):
        r.meta = {"j": j}
    engine = CountingEngine(batch_size=2)
    results = run_requests(engine, reqs, RequestStore(tmp_path / "s.jsonl"))
    assert engine.seen == ["p0", "p1", "p2"]
    assert [r.meta["j"] for r in results] == list(range(6))
    assert results[0].texts == results[3].texts
    assert (results.stats.requested, results.stats.unique, results.stats.generated) == (6, 3, 3)


def test_truncated_last_line_is_skipped_counted_and_appended_after(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    requests = make_requests(4)
    run_requests(CountingEngine(), requests[:2], RequestStore(path))
    with open(path, "ab") as f:
        f.write(b'{"key": "abc", "texts": ["hal')  # a crash mid-write
    store = RequestStore(path)
    assert store.corrupt_lines == 1 and len(store) == 2

    results = run_requests(CountingEngine(), requests, store)
    check_answers(results, requests)
    reopened = RequestStore(path)
    assert reopened.corrupt_lines == 1 and len(reopened) == 4


def test_corrupt_middle_line_and_duplicate_lines(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    run_requests(CountingEngine(), make_requests(2), RequestStore(path))
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "not json", '{"no": "fields"}', lines[1], lines[0]]) + "\n")
    store = RequestStore(path)
    assert store.corrupt_lines == 2 and len(store) == 2


def test_a_line_cut_anywhere_is_never_taken_for_a_result(tmp_path: Path):
    """A crash can cut the last line at any byte; later appends start on a fresh line, so the cut
    line ends up in the middle of the file. Whatever the cut, it is counted as corrupt, the results
    around it are read, and nothing is indexed that `get` cannot read back."""
    path = tmp_path / "s.jsonl"
    run_requests(CountingEngine(), make_requests(2), RequestStore(path))
    first, second = path.read_text().splitlines()
    for cut in range(1, len(second)):
        path.write_text(first + "\n" + second[:cut] + "\n" + second + "\n")
        store = RequestStore(path)
        assert (store.corrupt_lines, len(store)) == (1, 2), cut
        assert [store.get(k).texts for k in store.keys()] == [["p0#0", "p0#1"], ["p1#0", "p1#1"]]
        store.close()


def test_results_written_in_another_shape_are_read(tmp_path: Path):
    """Lines this store did not write (keys in another order, nested meta, indented JSON on one
    line) are parsed and read like its own."""
    path = tmp_path / "s.jsonl"
    rows = [{"texts": ["a"], "key": "k1", "num_tokens": [1], "finish_reasons": ["stop"], "meta": {}},
            {"key": "k2", "texts": ["b"], "num_tokens": [1], "finish_reasons": ["length"],
             "meta": {"usage": {"prompt_tokens": 3}}}]
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
    store = RequestStore(path)
    assert store.corrupt_lines == 0 and store.keys() == ["k1", "k2"]
    assert store.get("k2").meta == {"usage": {"prompt_tokens": 3}} and store.get("k1").texts == ["a"]


def test_a_store_larger_than_one_read_is_indexed_across_the_boundaries(tmp_path: Path, monkeypatch):
    """The file is read a block at a time (memory stays flat); lines that straddle two blocks are
    read whole, and the first result for a key wins."""
    import lpt_utils.engines.store as store_module

    monkeypatch.setattr(store_module, "_CHUNK", 97)  # far smaller than a line: every line straddles
    path = tmp_path / "s.jsonl"
    requests = make_requests(30)
    run_requests(CountingEngine(), requests, RequestStore(path))
    with open(path, "a") as f:  # a later duplicate of the first line is ignored
        f.write(json.dumps({**json.loads(path.read_text().splitlines()[0]), "texts": ["x", "y"]}) + "\n")
    store = RequestStore(path)
    assert len(store) == 30 and store.corrupt_lines == 0
    check_answers([store.get(r.key(CountingEngine.fingerprint)) for r in requests], requests)


def test_wrong_number_of_samples_is_never_stored(tmp_path: Path):
    class Short(CountingEngine):
        def generate(self, requests):
            out = super().generate(requests)
            out[-1].texts = out[-1].texts[:1]
            return out

    path = tmp_path / "s.jsonl"
    with pytest.raises(RuntimeError, match="n=2"):
        run_requests(Short(batch_size=2), make_requests(3), RequestStore(path))
    assert not path.exists() or path.read_text() == ""


def test_sigkill_mid_run_loses_nothing_and_duplicates_nothing(tmp_path: Path):
    path = tmp_path / "killed.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, str(path)], env=env)
    try:
        # The worker stores two batches (4 requests), then hangs inside the third: the kill lands
        # mid-run however busy the machine is (waiting for 4 lines, not for a moment).
        deadline = time.time() + 120
        while (not path.exists() or path.read_bytes().count(b"\n") < 4) and proc.poll() is None:
            assert time.time() < deadline, "the worker stored nothing in 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    before = path.read_bytes()
    with pytest.warns(UserWarning, match="no longer running"):  # the killed worker's lock is taken over
        store = RequestStore(path)
    done = len(store)
    assert done == 4

    requests = make_requests(20)
    engine = CountingEngine(batch_size=2)
    results = run_requests(engine, requests, store)
    check_answers(results, requests)
    assert len(engine.seen) == 20 - done
    keys = file_keys(path)
    assert len(keys) == len(set(keys)) == 20
    assert path.read_bytes().startswith(before)


# A process that opens a store, says so, and holds it until its stdin closes (or it is killed).
HOLDER = ("import sys; from lpt_utils.engines import RequestStore; s = RequestStore(sys.argv[1]); "
          "print('holding', flush=True); sys.stdin.read(); s.close()")


def _holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "holding"  # waits for exactly this: the lock is taken
    return proc


def test_a_second_process_on_the_same_store_refuses_at_once_naming_the_holder(tmp_path: Path):
    path = tmp_path / "myrun" / "02_simple_cot" / "requests" / "student.jsonl"
    proc = _holder(path)
    try:
        with pytest.raises(StoreBusy) as err:
            RequestStore(path)
        msg = str(err.value)
        assert "run 'myrun', stage 02_simple_cot, store student.jsonl" in msg and f"PID {proc.pid}" in msg
        assert "host " in msg and "since 20" in msg
    finally:
        proc.stdin.close()  # the holder closes its store and exits
        proc.wait(60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # released cleanly: no notice
        RequestStore(path).close()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_notice(tmp_path: Path):
    path = tmp_path / "r" / "03_long_cot" / "requests" / "reasoner.jsonl"
    proc = _holder(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(60)
    with pytest.warns(UserWarning, match=f"taking over the lock left by PID {proc.pid}.*no longer running"):
        store = RequestStore(path)
    store.close()


def test_the_store_rereads_what_was_appended_since_it_was_opened(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    requests = make_requests(4)
    late = RequestStore(path)  # opened before anything was written
    run_requests(CountingEngine(), requests, RequestStore(path))  # another writer of this process
    engine = CountingEngine()
    results = run_requests(engine, requests, late)
    check_answers(results, requests)
    assert engine.seen == [] and results.stats.from_store == 4  # nothing generated twice


if __name__ == "__main__":  # the worker killed by the test above
    run_requests(CountingEngine(batch_size=2, hang_on_batch=3), make_requests(20), RequestStore(sys.argv[1]))


def test_identical_requests_keep_their_own_meta(tmp_path: Path):
    reqs = [GenerationRequest(prompt="same", meta={"index": i}) for i in range(3)]
    out = run_requests(CountingEngine(), reqs, RequestStore(tmp_path / "s.jsonl"))
    assert [r.meta["index"] for r in out] == [0, 1, 2]
    assert out.stats.generated == 1


def test_shards_write_their_own_part_and_every_store_of_the_stage_reads_them_all(tmp_path: Path):
    requests = make_requests(9)
    stage = tmp_path / "run" / "02_simple_cot" / "requests"
    parts = [stage / f"student.part-{i}-of-3.jsonl" for i in range(3)]
    for i, path in enumerate(parts):  # three shards, three writers, three files
        mine = [r for k, r in enumerate(requests) if k % 3 == i]
        with RequestStore(path) as store:
            run_requests(CountingEngine(), mine, store)
    assert [len(file_keys(p)) for p in parts] == [3, 3, 3]
    engine = CountingEngine()
    with RequestStore(stage / "student.jsonl") as whole:  # the stage run again, unsharded
        results = run_requests(engine, requests, whole)
    check_answers(results, requests)
    assert engine.seen == [] and not (stage / "student.jsonl").exists()
    with RequestStore(parts[0]) as again:  # a shard sees the other shards' answers too
        assert len(again) == 9


# ----------------------------------------------------------------------------- the sidecar index

import random  # noqa: E402

import lpt_utils.engines.store as store_module  # noqa: E402


def snapshot(store: RequestStore) -> tuple:
    """Everything a reader sees: keys in order, corrupt lines, every result."""
    return store.keys(), store.corrupt_lines, [store.get(k).to_json() for k in store.keys()]


def full_scan(path: Path, monkeypatch) -> tuple:
    """What the store reads with every sidecar ignored: the reference for a sidecar's results."""
    with monkeypatch.context() as m:
        m.setattr(store_module, "_load_sidecar", lambda p: None)
        store = RequestStore(path)
        seen = snapshot(store)
        store._lock_fd, fd = None, store._lock_fd  # closed without writing its own sidecar
        os.close(fd)
    return seen


def forbid_whole_reads(monkeypatch, *paths: Path) -> list:
    """Reading any of `paths` from its first byte fails: opening must start where its sidecar ends.
    Returns the (file name, offset) of every read, as they happen."""
    real = store_module._complete_lines
    reads = []

    def spy(path, offset, take_tail):
        reads.append((Path(path).name, offset))
        if offset == 0 and Path(path) in paths:
            raise AssertionError(f"{path} was read whole")
        return real(path, offset, take_tail)

    monkeypatch.setattr(store_module, "_complete_lines", spy)
    return reads


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".idx")


def test_reopening_reads_the_sidecar_instead_of_the_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "s.jsonl"
    run_requests(CountingEngine(), make_requests(5), RequestStore(path))
    other = {"texts": ["é"], "key": 'ключ "q"', "num_tokens": [1], "finish_reasons": ["stop"], "meta": {"a": {}}}
    with open(path, "a") as f:  # a corrupt line, a result in another shape (parsed), a later duplicate
        f.write("not json\n" + json.dumps(other, ensure_ascii=False) + "\n" + path.read_text().splitlines()[0] + "\n")
    run_requests(CountingEngine(), make_requests(8), RequestStore(path))
    expected = full_scan(path, monkeypatch)
    assert expected[1] == 1 and len(expected[0]) == 9
    assert store_module._load_sidecar(path)[0] == path.stat().st_size  # written by the last store, collected

    reads = forbid_whole_reads(monkeypatch, path)
    with RequestStore(path) as store:
        assert snapshot(store) == expected
        assert reads == [("s.jsonl", path.stat().st_size)] * 2  # complete lines, then a cut last line
        check_answers(run_requests(CountingEngine(), make_requests(8), store), make_requests(8))


def test_a_cut_last_line_is_never_covered_and_is_counted_again(tmp_path: Path, monkeypatch):
    path = tmp_path / "s.jsonl"
    run_requests(CountingEngine(), make_requests(3), RequestStore(path))
    good = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b'{"key": "abc", "texts": ["hal')  # a crash mid-write
    sidecar(path).unlink()
    RequestStore(path).close()  # reads the whole file, counts it, writes a sidecar up to the line before
    assert store_module._load_sidecar(path)[:2] == (good, 0)
    forbid_whole_reads(monkeypatch, path)
    store = RequestStore(path)
    assert (len(store), store.corrupt_lines) == (3, 1)
    results = run_requests(CountingEngine(), make_requests(5), store)  # appended after a fresh newline
    check_answers(results, make_requests(5))
    store.close()
    assert store_module._load_sidecar(path)[:2] == (path.stat().st_size, 1)  # now a whole (corrupt) line
    again = RequestStore(path)
    assert (len(again), again.corrupt_lines) == (5, 1)


def test_a_rewritten_file_is_read_again_whatever_its_sidecar_says(tmp_path: Path, monkeypatch):
    path = tmp_path / "s.jsonl"
    run_requests(CountingEngine(), make_requests(10), RequestStore(path))
    lines = path.read_text().splitlines(keepends=True)
    assert store_module._load_sidecar(path) is not None
    rewrites = [
        lines[::-1],  # the same length, other offsets: only the hashes tell
        lines[:4],  # shorter than what the sidecar covers
        lines[5:] + ["not json\n"] + lines[:5] + lines[:2],  # longer, the lines moved
    ]
    for rewrite in rewrites:
        path.write_text("".join(rewrite))
        store = RequestStore(path)
        assert snapshot(store) == full_scan(path, monkeypatch)
        assert all(store.get(k).key == k for k in store.keys())  # every offset points at its own line
        store.close()  # writes a sidecar for this content
        assert store_module._load_sidecar(path)[0] == path.stat().st_size


@pytest.mark.parametrize("damage", ["garbage", "empty", "cut", "flipped", "version", "offsets"])
def test_a_damaged_sidecar_is_ignored(tmp_path: Path, monkeypatch, damage):
    path = tmp_path / "s.jsonl"
    run_requests(CountingEngine(), make_requests(6), RequestStore(path))
    path.write_text(path.read_text() + "not json\n")
    expected = full_scan(path, monkeypatch)
    RequestStore(path).close()
    data = sidecar(path).read_bytes()
    magic_and_head = data[:data.index(b"\n", data.index(b"\n") + 1) + 1]
    head = json.loads(magic_and_head.splitlines()[1])
    body = bytearray(data[len(magic_and_head):])
    if damage == "garbage":
        data = bytes(random.Random(0).randrange(256) for _ in range(len(data)))
    elif damage == "empty":
        data = b""
    elif damage == "cut":
        data = data[:len(data) // 2]
    elif damage == "flipped":  # one bit of a key: the CRC tells
        body[3] ^= 0x01
        data = magic_and_head + bytes(body)
    elif damage == "version":
        data = data.replace(b'"version": 1,', b'"version": 99,')
    elif damage == "offsets":  # offsets out of order, the CRC made to match: the sanity checks tell
        body[-16:] = body[-8:] + body[-16:-8]
        import zlib
        head["crc32"] = zlib.crc32(bytes(body))
        data = magic_and_head.splitlines()[0] + b"\n" + json.dumps(head).encode() + b"\n" + bytes(body)
    sidecar(path).write_bytes(data)
    assert store_module._load_sidecar(path) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ignored silently
        store = RequestStore(path)
        assert snapshot(store) == expected
        store.close()  # and replaced by a good one
    assert store_module._load_sidecar(path)[0] == path.stat().st_size


def test_the_writer_saves_its_sidecar_as_it_grows_and_a_killed_writer_loses_only_the_tail(tmp_path: Path,
                                                                                           monkeypatch):
    path = tmp_path / "killed.jsonl"
    monkeypatch.setattr(store_module, "_SIDECAR_EVERY", 1)  # after every append, not every 64 MB
    store = RequestStore(path)
    run_requests(CountingEngine(), make_requests(3), store)
    assert store_module._load_sidecar(path)[0] == path.stat().st_size  # written while still open
    store.close()
    monkeypatch.undo()
    covered = path.stat().st_size

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, str(path)], env=env)
    try:  # the worker (64 MB between its sidecars) stores two batches of 2, then hangs
        deadline = time.time() + 120
        while path.read_bytes().count(b"\n") < 7 and proc.poll() is None:
            assert time.time() < deadline, "the worker stored nothing in 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert store_module._load_sidecar(path)[0] == covered  # the killed worker never wrote its own
    reads = forbid_whole_reads(monkeypatch, path)
    with pytest.warns(UserWarning, match="no longer running"):
        store = RequestStore(path)
    assert reads[0] == (path.name, covered) and len(store) == 7  # the sidecar, then what it appended
    engine = CountingEngine()
    check_answers(run_requests(engine, make_requests(20), store), make_requests(20))
    assert len(engine.seen) == 13


def test_parts_are_read_from_their_sidecars_and_a_part_keeps_keys_a_sibling_held_first(tmp_path: Path,
                                                                                         monkeypatch):
    stage = tmp_path / "requests"
    parts = [stage / f"student.part-{i}-of-3.jsonl" for i in range(3)]
    requests = make_requests(9)
    for i, path in enumerate(parts):
        with RequestStore(path) as store:
            run_requests(CountingEngine(), [r for k, r in enumerate(requests) if k % 3 == i], store)
    # part 0 also holds (earlier in the order, with other texts) two of part 2's results
    theirs = [json.loads(line) for line in parts[2].read_text().splitlines()[:2]]
    with open(parts[0], "a") as f:
        f.writelines(json.dumps({**rec, "texts": ["x", "y"]}) + "\n" for rec in theirs)
    RequestStore(parts[0]).close()
    expected = full_scan(parts[2], monkeypatch)

    reads = forbid_whole_reads(monkeypatch, *parts)
    with RequestStore(parts[2]) as store:
        assert snapshot(store) == expected and len(store) == 9
        assert store.get(theirs[0]["key"]).texts == ["x", "y"]  # the first file read wins
        assert {name for name, _ in reads} == {p.name for p in parts}
        extra = make_requests(11)[9:]
        run_requests(CountingEngine(), extra, store)  # its sidecar is written from a merged index
    monkeypatch.undo()
    parts[0].unlink()  # the sibling that held them first is gone: part 2 still has its own lines
    expected = full_scan(parts[2], monkeypatch)
    forbid_whole_reads(monkeypatch, *parts)
    with RequestStore(parts[2]) as store:
        assert snapshot(store) == expected and len(store) == 11 - 3
        assert store.get(theirs[0]["key"]).texts == [f"{requests[2].prompt}#0", f"{requests[2].prompt}#1"]


def test_keys_holding_a_newline_get_no_sidecar(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    rows = [{"key": "a\nb", "texts": ["t"], "num_tokens": [1], "finish_reasons": ["stop"], "meta": {}},
            {"key": "c", "texts": ["u"], "num_tokens": [1], "finish_reasons": ["stop"], "meta": {}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    RequestStore(path).close()
    assert not sidecar(path).exists()
    store = RequestStore(path)
    assert store.keys() == ["a\nb", "c"] and store.get("a\nb").texts == ["t"]


def test_get_many_reads_what_get_reads_across_files_in_any_order(tmp_path: Path):
    stage = tmp_path / "requests"
    requests = make_requests(12)
    for i in range(3):
        with RequestStore(stage / f"m.part-{i}-of-3.jsonl") as store:
            run_requests(CountingEngine(), requests[i::3], store)
    store = RequestStore(stage / "m.jsonl")
    run_requests(CountingEngine(), make_requests(15), store)  # its own file: the last three
    keys = store.keys()
    assert len(keys) == 15 and len(store._files) == 4
    rng = random.Random(0)
    orders = [keys, keys[::-1], rng.sample(keys, len(keys)), [keys[3], keys[14], keys[3], keys[0], keys[14]], []]
    for order in orders:
        many = store.get_many(order)
        assert [r.to_json() for r in many] == [store.get(k).to_json() for k in order]
        assert len({id(r) for r in many}) == len(many)  # a key asked twice: two objects
    with pytest.raises(KeyError):
        store.get_many([keys[0], "nope"])


def test_a_copy_of_a_run_elsewhere_is_served_from_the_copied_store(tmp_path: Path):
    """Request keys name each image by its bytes, not its path: the same requests made from a copy of
    the run's folder call no model again, while other bytes under the same file name are a new request."""
    import shutil

    from PIL import Image

    def requests(folder: Path) -> list[GenerationRequest]:
        return [GenerationRequest(messages=[{"role": "user", "content": [
            {"type": "image", "image": str(folder / "images" / f"{i}.png")}, {"type": "text", "text": "Colour?"}]}],
            sampling=SamplingSettings(n=2)) for i in range(2)]

    class ImageEngine(CountingEngine):
        def generate(self, requests):
            self.seen += [r.image_paths()[0] for r in requests]
            return [GenerationResult(key=r.key(self.fingerprint), texts=["seen"] * 2, num_tokens=[1, 1],
                                     finish_reasons=["stop"] * 2) for r in requests]

    run = tmp_path / "run"
    (run / "images").mkdir(parents=True)
    for i, colour in enumerate(("red", "blue")):
        Image.new("RGB", (8, 8), colour).save(run / "images" / f"{i}.png")
    first = ImageEngine()
    run_requests(first, requests(run), RequestStore(run / "gen.jsonl"))
    assert len(first.seen) == 2

    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, moved)
    again = ImageEngine()
    out = run_requests(again, requests(moved), RequestStore(moved / "gen.jsonl"))
    assert again.seen == [] and out.stats.from_store == 2

    image = moved / "images" / "0.png"
    Image.new("RGB", (8, 8), "green").save(image)
    later = image.stat().st_mtime + 10  # the digest is memoised per (path, mtime): make the change visible
    os.utime(image, (later, later))
    changed = ImageEngine()
    out = run_requests(changed, requests(moved), RequestStore(moved / "gen.jsonl"))
    assert changed.seen == [str(image)] and out.stats.from_store == 1
