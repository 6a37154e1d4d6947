"""Kills at random points: a worker answering requests through the store is SIGKILLed after a random
number of stored answers (four trials over HTTP, one through vLLM), then run to the end. Every
time the store ends with each request's key once and the same answers as an uninterrupted run
(greedy decoding). Each test prints what it tried and what held."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fault_server import FaultServer

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "kill_worker.py"


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _run(backend: str, where: str, store: Path, n: int, kill_after: int | None) -> str:
    """Run the worker; with `kill_after`, SIGKILL it once that many answers are stored (waiting for
    exactly that, however long the machine takes). Returns what happened."""
    proc = subprocess.Popen([sys.executable, str(WORKER), backend, where, str(store), str(n)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    if kill_after is None:
        assert proc.wait(600) == 0
        return "ran to the end"
    deadline = time.time() + 600
    while _lines(store) < kill_after and proc.poll() is None:
        assert time.time() < deadline, "the worker stored nothing for 10 minutes"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(60)
    return f"killed after {_lines(store)} stored"


def _answers(store: Path) -> dict[str, list[str]]:
    rows = [json.loads(x) for x in store.read_text().splitlines() if x.strip()]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "a key was stored twice"
    return {r["key"]: r["texts"] for r in rows}


def _trials(backend: str, where: str, tmp_path: Path, n: int, trials: int, seed: int) -> None:
    reference = tmp_path / "reference.jsonl"
    _run(backend, where, reference, n, None)
    expected = _answers(reference)
    assert len(expected) == n
    rng = random.Random(seed)
    report = []
    for t in range(trials):
        store = tmp_path / f"trial{t}.jsonl"
        steps = []
        for k in sorted(rng.sample(range(1, n), 2)):  # two kills at random points, then to the end
            k = max(k, _lines(store) + 1)  # each kill lands after the run has stored something new
            if k < n:
                steps.append(_run(backend, where, store, n, k))
        steps.append(_run(backend, where, store, n, None))
        got = _answers(store)
        held = got == expected
        report.append(f"trial {t}: {'; '.join(steps)} -> {len(got)} keys, each once, "
                      f"answers {'identical' if held else 'DIFFERENT'}")
        assert held, report[-1]
    print(f"\n{backend}: {n} requests, {trials} trials\n  " + "\n  ".join(report))


def test_kills_at_random_points_over_http_lose_and_repeat_nothing(tmp_path):
    with FaultServer(answer_delay_s=0.05) as srv:
        _trials("http", srv.base_url, tmp_path, n=24, trials=4, seed=1)


@pytest.mark.slow
def test_kills_at_random_points_through_vllm_lose_and_repeat_nothing(tmp_path, models_dir, tiny_lm_dir):
    # one trial of two kills: each worker start loads vLLM (~45 s); the HTTP test above draws four
    _trials("vllm", str(models_dir), tmp_path, n=12, trials=1, seed=2)


def test_bodies_cut_short_or_not_json_are_retried_and_never_stored(tmp_path):
    from lpt_utils.engines import RequestStore, run_requests

    from kill_worker import engine, requests

    faults = ["truncated", "malformed", "no_choices", "truncated"]
    with FaultServer(script=faults) as srv:
        results = run_requests(engine("http", srv.base_url), requests(4, "http"), RequestStore(tmp_path / "s.jsonl"))
        tried = [c.fault for c in srv.calls]
    assert [r.texts for r in results] == [[f"reply[0]: q{i}"] for i in range(4)]
    stored = _answers(tmp_path / "s.jsonl")
    assert sorted(t for texts in stored.values() for t in texts) == sorted(f"reply[0]: q{i}" for i in range(4))
    print(f"\nfaults {faults}: {len(tried)} calls ({tried.count(None)} answered), 4 answers stored, none faulty")
