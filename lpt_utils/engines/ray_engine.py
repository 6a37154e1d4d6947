"""Scale-out: the same backend run by a pool of Ray actors (one per GPU on a cluster, or a few CPU
workers on one machine), through Ray Data's `map_batches`, with every result flowing back to the
driver, which alone writes the request store: resume, one writer per store and staleness work as in
a one-process run, and the request keys are the same (the fingerprint is the local backend's).

    scale_out: {backend: ray, ray: {address: auto, actors: 8, gpus_per_actor: 1}}   # a profile's setting

`RayEngine.stream` yields each result as its batch comes back; `run_requests` appends them to the
store as they arrive, so a run killed mid-way keeps what came back. Images travel as paths: on a
cluster they must be on storage every node sees (the run folder on a shared file system).
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from typing import Any, Iterator

from .base import GenerationRequest, GenerationResult
from .config import EngineConfig

# What a CPU-only local cluster needs (measured: ../shared/notes/cpu-stack.md); set before ray starts.
_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
# The engine environment the actors need (vLLM's, as the local backend sets it).
_ACTOR_ENV = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK",
              "HF_HUB_OFFLINE", "VLLM_LOGGING_LEVEL")


def local_engine(cfg: EngineConfig, model_path: str):
    """The one-process backend `cfg.backend` names, for `model_path` (started lazily by the backends)."""
    if cfg.backend == "vllm":
        from .vllm_engine import VLLMEngine

        return VLLMEngine(cfg, model_path)
    if cfg.backend == "openai":
        from .openai_engine import OpenAIEngine

        return OpenAIEngine(cfg, model_path)
    if cfg.backend == "hf":
        from .hf_engine import HFEngine

        return HFEngine(cfg, model_path)
    raise ValueError(f"unknown backend {cfg.backend!r}")


class EngineActor:
    """One Ray actor: a backend of its own, answering the batches Ray Data hands it."""

    def __init__(self, cfg: dict[str, Any], model_path: str):
        self.engine = local_engine(EngineConfig.from_dict(cfg), model_path)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        requests = [pickle.loads(b) for b in batch["request"]]
        results = self.engine.generate(requests)
        return {"i": batch["i"], "result": [json.dumps(r.to_json()) for r in results]}


class RayEngine:
    """`Engine` whose `generate` / `stream` run on a pool of Ray actors (module docstring)."""

    def __init__(self, cfg: EngineConfig, model_path: str, ray_settings: dict[str, Any]):
        self.cfg, self.model_path, self.settings = cfg, model_path, dict(ray_settings or {})
        self.fingerprint = local_engine(cfg, model_path).fingerprint  # the same keys as one process
        self.actors = int(self.settings.get("actors") or 1)
        # requests per call of run_requests: every actor busy, results stored as each batch returns
        self.batch_size = int(self.settings.get("batch_size") or cfg.batch_size) * self.actors * 4
        self._started_ray = False

    def _ensure_ray(self):
        import ray

        if not ray.is_initialized():
            for k, v in _RAY_ENV.items():
                os.environ.setdefault(k, v)
            kw: dict[str, Any] = {"address": self.settings.get("address"), "include_dashboard": False,
                                  "log_to_driver": False}
            if not kw["address"]:  # a local cluster on this machine
                # logical CPUs: the actors' and some to spare for Ray Data's own tasks (with none
                # to spare the pipeline waits forever)
                cpus = self.actors * float(self.settings.get("cpus_per_actor") or 1)
                kw.update(num_cpus=self.settings.get("num_cpus") or int(max(os.cpu_count() or 1, cpus + 2)),
                          object_store_memory=512 * 1024 * 1024,
                          _temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
            env = {k: os.environ[k] for k in _ACTOR_ENV if k in os.environ}
            ray.init(runtime_env={"env_vars": env}, **kw)
            self._started_ray = True
        return ray

    def stream(self, requests: list[GenerationRequest]) -> Iterator[tuple[int, GenerationResult]]:
        """(position in `requests`, result), as the actors' batches come back."""
        if not requests:
            return
        ray = self._ensure_ray()
        per_actor = int(self.settings.get("batch_size") or self.cfg.batch_size)
        ds = ray.data.from_items([{"i": i, "request": pickle.dumps(r)} for i, r in enumerate(requests)])
        out = ds.map_batches(EngineActor, fn_constructor_kwargs={"cfg": self.cfg.to_dict(), "model_path": self.model_path},
                             batch_size=per_actor, concurrency=self.actors,
                             num_cpus=float(self.settings.get("cpus_per_actor") or 1),
                             num_gpus=float(self.settings.get("gpus_per_actor") or 0))
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            for i, res in zip(batch["i"], batch["result"]):
                yield int(i), GenerationResult.from_json(json.loads(res))

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        got = dict(self.stream(requests))
        return [got[i] for i in range(len(requests))]

    def close(self) -> None:
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
