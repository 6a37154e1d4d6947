"""Text generation behind one interface: vLLM offline (main), an OpenAI-compatible server, or
transformers `generate` (fallback), plus a resumable result store.

    cfg = EngineConfig(model="tiny:vlm", max_pixels=224 * 224)
    engine = make_engine(cfg, run.resolve_model)   # the resolver turns "tiny:vlm" into a folder
    results = run_requests(engine, requests, RequestStore(path))   # results.stats: RunStats

Backends are imported only when chosen (vLLM is heavy).
"""

from __future__ import annotations

from typing import Callable

from .base import Engine, GenerationRequest, GenerationResult, SamplingSettings
from .config import EngineConfig
from .store import RequestStore, RunResults, RunStats, StoreBusy, run_requests

__all__ = [
    "Engine", "EngineConfig", "GenerationRequest", "GenerationResult", "RequestStore", "RunResults",
    "RunStats", "SamplingSettings", "StoreBusy", "make_engine", "run_requests",
]


def make_engine(cfg: EngineConfig, resolve: Callable[[str], str] | None = None) -> Engine:
    """Build the backend `cfg.backend` for `cfg.model`, loading what `resolve` (a model resolver, e.g.
    `Run.resolve_model`) turns the id into; without one, the id as given."""
    model = resolve(cfg.model) if resolve else cfg.model
    if cfg.backend == "vllm":
        from .vllm_engine import VLLMEngine

        return VLLMEngine(cfg, model)
    if cfg.backend == "openai":
        from .openai_engine import OpenAIEngine

        return OpenAIEngine(cfg, model)
    if cfg.backend == "hf":
        from .hf_engine import HFEngine

        return HFEngine(cfg, model)
    raise ValueError(f"unknown backend {cfg.backend!r}")
