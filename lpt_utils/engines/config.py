"""Engine settings: which backend runs which model, and every knob that shapes its outputs.

An `EngineConfig` is plain data, built in a notebook or from a profile dictionary with
`EngineConfig.from_dict`, which rejects unknown keys so a misspelt setting fails loudly instead of
being silently ignored. API keys are never part of a config: `api_key_env` names the environment
variable that holds the key, and the key itself is read from the environment by the backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

BACKENDS = ("vllm", "openai", "hf")
DTYPES = ("float32", "bfloat16", "float16", "auto")
DEFAULT_BATCH_SIZE = {"vllm": 1024, "openai": 64, "hf": 64}


@dataclass(frozen=True)
class EngineConfig:
    """How to run a model.

    - `model`: a Hugging Face id, a local directory, or an id a model resolver knows (the tiny
      profile's ``"tiny:vlm"``; `make_engine` takes the resolver, `Run.resolve_model` is the run's).
    - `max_pixels` / `min_pixels`: the image area cap, applied by our own resize before any backend
      sees the image (`lpt_utils.engines.images.capped_size`), so every backend gets the same
      pixels: an image over `max_pixels` is shrunk, one under `min_pixels` enlarged, aspect kept, as
      LLaMA-Factory's `image_max_pixels` / `image_min_pixels` do. `longest_side` (no profile sets
      it) first scales the image so its longer side has that length.
    - `seed`: seeds the engine (vLLM ``LLM(seed=...)``, torch for the hf backend).
    - `base_url`, `api_key_env`, `concurrency`, `timeout_s`, `max_retries`, `retry_backoff_s`:
      the OpenAI-compatible HTTP backend (`max_retries` retries after the first attempt; the wait
      before retry i is about ``retry_backoff_s * 2**i`` seconds plus jitter, capped at a minute).
    - `batch_size`: how many requests `run_requests` hands the engine at once (and so how many are
      lost at most when a run is killed). None: the backend's default (`DEFAULT_BATCH_SIZE`): 1024
      for vLLM, whose scheduler runs a batch's requests together and idles as each batch drains (at
      64 a batch, 200 tiny requests took 1.36x as long as one call; `make bench`), 64 for the others.
    """

    model: str
    backend: str = "vllm"
    dtype: str = "float32"
    max_model_len: int = 4096
    max_pixels: int | None = None
    min_pixels: int | None = None
    longest_side: int | None = None
    enforce_eager: bool = True
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    seed: int = 0
    base_url: str | None = None
    api_key_env: str | None = None
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 5
    retry_backoff_s: float = 1.0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"EngineConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"EngineConfig.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not self.model:
            raise ValueError("EngineConfig.model is empty")
        if self.batch_size is None:
            object.__setattr__(self, "batch_size", DEFAULT_BATCH_SIZE[self.backend])
        for name in ("max_model_len", "tensor_parallel_size", "concurrency", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_pixels", "min_pixels", "longest_side"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"EngineConfig.{name} must be None or >= 1, got {v}")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"EngineConfig.min_pixels ({self.min_pixels}) is over max_pixels ({self.max_pixels})")
        if self.max_retries < 0 or self.timeout_s <= 0 or self.retry_backoff_s < 0:
            raise ValueError("EngineConfig: max_retries >= 0, timeout_s > 0, retry_backoff_s >= 0")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("EngineConfig.backend='openai' needs base_url")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EngineConfig":
        """Build from a dictionary (e.g. a profile). Unknown keys raise a ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown EngineConfig key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
