"""Text generation behind one interface: vLLM offline (main), an OpenAI-compatible server, or
transformers `generate` (fallback), plus a resumable result store.

    cfg = EngineConfig(model="tiny:vlm", max_pixels=224 * 224)
    engine = make_engine(cfg, models_dir)
    results = run_requests(engine, requests, RequestStore(path))   # results.stats: RunStats

Backends are imported only when chosen (vLLM is heavy).
"""

from __future__ import annotations

from pathlib import Path

from .base import Engine, GenerationRequest, GenerationResult, SamplingSettings
from .config import EngineConfig, resolve_model
from .store import RequestStore, RunResults, RunStats, run_requests

__all__ = [
    "Engine", "EngineConfig", "GenerationRequest", "GenerationResult", "RequestStore", "RunResults",
    "RunStats", "SamplingSettings", "make_engine", "resolve_model", "run_requests",
]


def make_engine(cfg: EngineConfig, models_dir: Path) -> Engine:
    """Build the backend `cfg.backend` for `cfg.model` (tiny models are built on first use)."""
    model = resolve_model(cfg.model, Path(models_dir))
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
