"""A worker the kill tests start and kill: answers `n` requests through `run_requests` into a store,
over HTTP (a FaultServer the test runs) or through vLLM on the tiny LM, in batches of two."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lpt_utils.engines import (EngineConfig, GenerationRequest, RequestStore, SamplingSettings,  # noqa: E402
                               make_engine, run_requests)


def requests(n: int, backend: str) -> list[GenerationRequest]:
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=12)
    if backend == "http":
        return [GenerationRequest(messages=[{"role": "user", "content": f"q{i}"}], sampling=greedy) for i in range(n)]
    return [GenerationRequest(prompt=f"The picture shows {i} shapes. The", sampling=greedy) for i in range(n)]


def engine(backend: str, where: str):
    if backend == "http":
        cfg = EngineConfig(model="fault-model", backend="openai", base_url=where, timeout_s=10.0,
                           retry_backoff_s=0.01, max_retries=5, concurrency=2, batch_size=2)
        return make_engine(cfg)
    from lpt_utils.tiny_world.plugin import resolve_model

    cfg = EngineConfig(model="tiny:lm", max_model_len=1024, batch_size=2)
    return make_engine(cfg, lambda m: resolve_model(m, where))


if __name__ == "__main__":
    backend, where, store, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    run_requests(engine(backend, where), requests(n, backend), RequestStore(store))
