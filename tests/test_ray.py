"""Scale-out on a local Ray cluster (CPU, the tiny LM): the same requests answered by a pool of two Ray
actors and by one process give the same request keys, the same number of answers and, greedy, the
same texts; the driver alone writes the store, and a re-run is served from it."""

from __future__ import annotations

import json

import pytest

from lpt_utils.engines import EngineConfig, GenerationRequest, RequestStore, SamplingSettings, make_engine, run_requests

pytestmark = pytest.mark.slow
pytest.importorskip("ray")


def _requests(n: int) -> list[GenerationRequest]:
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=16)
    return [GenerationRequest(prompt=f"Scene {i}: the picture shows {i % 4 + 1} shapes. The", sampling=greedy,
                              meta={"i": i}) for i in range(n)]


def test_a_pool_of_ray_actors_answers_as_one_process_does(tmp_path, resolve, tiny_lm_dir, all_cores):
    cfg = EngineConfig(model="tiny:lm", max_model_len=1024, batch_size=4)
    requests = _requests(16)
    local = make_engine(cfg, resolve)
    one = run_requests(local, requests, RequestStore(tmp_path / "one.jsonl"))
    local.close()
    pool = make_engine(cfg, resolve, {"backend": "ray", "ray": {"actors": 2, "batch_size": 3}})
    assert pool.fingerprint == local.fingerprint  # the same keys as one process
    try:
        store = RequestStore(tmp_path / "ray.jsonl")
        many = run_requests(pool, requests, store)
        assert many.stats.generated == 16
        again = run_requests(pool, requests, store)  # served from the driver's store
        assert again.stats.from_store == 16 and again.stats.generated == 0
    finally:
        pool.close()
    keys = lambda p: sorted(json.loads(x)["key"] for x in p.read_text().splitlines())  # noqa: E731
    assert keys(tmp_path / "ray.jsonl") == keys(tmp_path / "one.jsonl")
    assert [r.texts for r in many] == [r.texts for r in one] and [r.meta for r in many] == [r.meta for r in one]
    print(f"\n16 requests: one process and 2 Ray actors gave the same {len(set(keys(tmp_path / 'one.jsonl')))} "
          "keys and the same greedy texts; the re-run called no actor")
