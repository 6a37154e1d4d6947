"""Offline generation with `vllm.LLM` (the main backend; GPU in the real runs, CPU in tests).

Design notes:
- Images are loaded and size-capped by `lpt_utils.engines.images` and handed to vLLM as PIL
  images (``{"type": "image_pil", ...}`` chat parts), so the cap is the same as in the other
  backends; vLLM's processor only snaps that size to the model's patch grid.
- Chat requests go through `LLM.chat`, one call per batch (two when the batch mixes requests with
  and without an assistant prefix, since `continue_final_message` is per call). A prefix becomes a
  final assistant message continued with ``add_generation_prompt=False,
  continue_final_message=True``; vLLM returns only the continuation, so texts exclude the prefix.
  Raw `prompt` requests go through `LLM.generate` with the prefix appended to the prompt.
- Seeding: the engine is seeded once (``LLM(seed=cfg.seed)``); per-request `sampling.seed` is NOT
  passed to vLLM (on CPU a per-request seed can kill the engine: "CPU Generator does not use
  offset"). A fresh engine with the same seed given the same batches in the same order samples the
  same texts; outputs of a resumed run (different batch history) are equally valid samples but not
  the same ones.
- Texts are decoded with vLLM's default ``skip_special_tokens=True``: tokens registered as
  special (e.g. ``<|im_end|>``) never appear in texts, so markers a stage must parse (``</think>``)
  must not be special tokens of the tokenizer.
- `bad_words`: vLLM bans each word's token sequence (with and without a leading space).
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from .base import GenerationRequest, GenerationResult, SamplingSettings
from .common import convert_messages, fingerprint, model_info
from .config import EngineConfig
from .images import load_image

log = logging.getLogger(__name__)


def set_vllm_env() -> None:
    """Environment vLLM reads at import; `setdefault`, so values set by the user win.

    Always: no usage stats, no hub access (HF_HUB_OFFLINE=1; set it to 0 yourself to download).
    Without CUDA: in-process engine core (start-up 3-12 s instead of 30-50 s) and a 1 GiB KV cache.
    """
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # start-up chatter drowns a notebook
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def sampling_params(s: SamplingSettings) -> Any:
    """SamplingSettings -> vllm.SamplingParams (no per-request seed; see the module docstring)."""
    from vllm import SamplingParams

    return SamplingParams(
        n=s.n,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=0 if s.top_k in (-1, 0) else s.top_k,
        repetition_penalty=s.repetition_penalty,
        max_tokens=s.max_new_tokens,
        stop=list(s.stop) or None,
        bad_words=list(s.bad_words) or None,
    )


class VLLMEngine:
    """`Engine` over an in-process `vllm.LLM`."""

    def __init__(self, cfg: EngineConfig, model_path: str):
        set_vllm_env()
        import torch

        self.cfg = cfg
        self.batch_size = cfg.batch_size
        info = model_info(model_path)
        self.is_vlm = info.is_vlm
        self.fingerprint = fingerprint("vllm", cfg, info.identity)
        kwargs: dict[str, Any] = dict(
            model=model_path,
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            enforce_eager=cfg.enforce_eager,
            seed=cfg.seed,
            tensor_parallel_size=cfg.tensor_parallel_size,
        )
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        if self.is_vlm:
            kwargs["limit_mm_per_prompt"] = {"image": 1, "video": 0}
        # vLLM's CPU worker replaces torch.set_num_threads with a no-op for the whole process;
        # close() puts it back so later work in the same process (a notebook, pytest) is unaffected.
        self._torch_threads = (torch.set_num_threads, torch.get_num_threads())
        self._kwargs = kwargs
        self._llm: Any = None
        self._warned_seed = False

    @property
    def llm(self) -> Any:
        """The `vllm.LLM`, started on first use: a re-run whose requests are all in the store
        never loads the model."""
        if self._llm is None:
            from vllm import LLM

            self._llm = LLM(**self._kwargs)
        return self._llm

    def _image_part(self, path: str) -> dict[str, Any]:
        if not self.is_vlm:
            raise ValueError(f"request has an image but {self.cfg.model} is not a vision-language model")
        img = load_image(path, self.cfg.max_pixels, self.cfg.longest_side, self.cfg.min_pixels)
        return {"type": "image_pil", "image_pil": img}

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if not self._warned_seed and any(r.sampling.seed is not None for r in requests):
            log.warning("vLLM backend ignores per-request seeds; the engine is seeded with %d", self.cfg.seed)
            self._warned_seed = True
        outputs: list[Any] = [None] * len(requests)
        groups: dict[str, list[int]] = {"prompt": [], "chat": [], "chat+prefix": []}
        for i, r in enumerate(requests):
            kind = "prompt" if r.prompt is not None else ("chat+prefix" if r.assistant_prefix else "chat")
            groups[kind].append(i)

        if groups["prompt"]:
            idx = groups["prompt"]
            outs = self.llm.generate(
                [requests[i].prompt + requests[i].assistant_prefix for i in idx],
                [sampling_params(requests[i].sampling) for i in idx],
                use_tqdm=False,
            )
            for i, o in zip(idx, outs):
                outputs[i] = o
        for kind in ("chat", "chat+prefix"):
            idx = groups[kind]
            if not idx:
                continue
            prefix = kind == "chat+prefix"
            outs = self.llm.chat(
                [convert_messages(requests[i], self._image_part) for i in idx],
                [sampling_params(requests[i].sampling) for i in idx],
                use_tqdm=False,
                add_generation_prompt=not prefix,
                continue_final_message=prefix,
            )
            for i, o in zip(idx, outs):
                outputs[i] = o

        results = []
        for r, o in zip(requests, outputs):
            samples = sorted(o.outputs, key=lambda c: c.index)
            results.append(
                GenerationResult(
                    key=r.key(self.fingerprint),
                    texts=[c.text for c in samples],
                    num_tokens=[len(c.token_ids) for c in samples],
                    finish_reasons=[c.finish_reason or "unknown" for c in samples],
                )
            )
        return results

    def close(self) -> None:
        """Drop the engine and free its memory (the process can then start another one)."""
        llm, self._llm = self._llm, None
        if llm is not None:
            core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            del llm
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        set_num_threads, n_threads = self._torch_threads
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(n_threads)
