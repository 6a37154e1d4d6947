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


def make_engine(cfg: EngineConfig, resolve: Callable[[str], str] | None = None,
                scale_out: dict | None = None) -> Engine:
    """Build the backend `cfg.backend` for `cfg.model`, loading what `resolve` (a model resolver, e.g.
    `Run.resolve_model`) turns the id into; without one, the id as given. With `scale_out` (a profile's
    `scale_out` section) set to `backend: ray`, the backend runs on a pool of Ray actors instead
    (`engines.ray_engine`); the requests' keys are the same either way."""
    model = resolve(cfg.model) if resolve else cfg.model
    if scale_out and scale_out.get("backend", "local") == "ray":
        from .ray_engine import RayEngine  # ray is imported only when a profile asks for it

        return RayEngine(cfg, model, scale_out.get("ray") or {})
    if scale_out and scale_out.get("backend", "local") != "local":
        raise ValueError(f"scale_out.backend must be 'local' or 'ray', not {scale_out.get('backend')!r}")
    from .ray_engine import local_engine

    return local_engine(cfg, model)
