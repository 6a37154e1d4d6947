"""Fallback generation with transformers `generate` (no vLLM needed; slow, one request at a time).

- Model class from config.json: `AutoModelForImageTextToText` when it has a `vision_config`,
  else `AutoModelForCausalLM`; inputs through `AutoProcessor` / `AutoTokenizer`.
- Images are loaded and size-capped like in the other backends, then given to the processor.
- An assistant prefix is rendered with ``continue_final_message=True``; texts exclude it.
- Sampling: ``do_sample = temperature > 0``; top_k -1 means no top-k; `stop` via
  ``stop_strings`` (the returned text is cut before the stop string, as vLLM does); `bad_words`
  become ``bad_words_ids`` (each word tokenised with and without a leading space).
- Determinism: torch is seeded before each request with `sampling.seed`, or else with a number
  derived from `cfg.seed` and the request key, so a request's samples do not depend on which other
  requests ran before it.
"""

from __future__ import annotations

import gc
from typing import Any

from .base import GenerationRequest, GenerationResult, SamplingSettings
from .common import convert_messages, fingerprint, model_info
from .config import EngineConfig
from .images import load_image

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "auto": "auto"}


class HFEngine:
    """`Engine` over a transformers model in this process."""

    def __init__(self, cfg: EngineConfig, model_path: str):
        import torch
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        self.cfg = cfg
        self.batch_size = cfg.batch_size
        info = model_info(model_path)
        self.is_vlm = info.is_vlm
        self.fingerprint = fingerprint("hf", cfg, info.identity)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = _DTYPES[cfg.dtype]
        dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        if self.is_vlm:
            self.processor = AutoProcessor.from_pretrained(model_path)
            self.tokenizer = self.processor.tokenizer
            model_cls = AutoModelForImageTextToText
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            self.processor = None
            model_cls = AutoModelForCausalLM
        self.model = model_cls.from_pretrained(model_path, dtype=dtype).to(self.device).eval()

    # ---- inputs -----------------------------------------------------------------------------

    def _inputs(self, r: GenerationRequest) -> dict[str, Any]:
        if r.prompt is not None:
            return self.tokenizer(r.prompt + r.assistant_prefix, return_tensors="pt")
        cfg = self.cfg
        images = [load_image(p, cfg.max_pixels, cfg.longest_side, cfg.min_pixels) for p in r.image_paths()]
        if images and not self.is_vlm:
            raise ValueError(f"request has an image but {self.cfg.model} is not a vision-language model")
        messages = convert_messages(r, lambda _path: {"type": "image"})
        template_owner = self.processor or self.tokenizer
        text = template_owner.apply_chat_template(
            messages, tokenize=False,
            add_generation_prompt=not r.assistant_prefix,
            continue_final_message=bool(r.assistant_prefix),
        )
        if self.processor is not None:
            return self.processor(text=[text], images=images or None, return_tensors="pt")
        return self.tokenizer(text, return_tensors="pt", add_special_tokens=False)

    def _generate_kwargs(self, s: SamplingSettings) -> dict[str, Any]:
        kw: dict[str, Any] = dict(
            max_new_tokens=s.max_new_tokens,
            num_return_sequences=s.n,
            repetition_penalty=s.repetition_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if s.temperature > 0:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p,
                      top_k=0 if s.top_k in (-1, 0) else s.top_k)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.stop:
            kw.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        if s.bad_words:
            ids = []
            for w in s.bad_words:
                for form in (w.lstrip(), " " + w.lstrip()):
                    t = self.tokenizer.encode(form, add_special_tokens=False)
                    if t and t not in ids:
                        ids.append(t)
            kw["bad_words_ids"] = ids
        return kw

    # ---- Engine interface -------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        import torch

        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos_ids.add(self.tokenizer.eos_token_id)
        results = []
        for r in requests:
            key = r.key(self.fingerprint)
            seed = r.sampling.seed if r.sampling.seed is not None else (int(key[:8], 16) ^ self.cfg.seed)
            torch.manual_seed(seed)
            inputs = self._inputs(r).to(self.device)
            with torch.no_grad():
                out = self.model.generate(**inputs, **self._generate_kwargs(r.sampling))
            new = out[:, inputs["input_ids"].shape[1]:].tolist()
            texts, counts, reasons = [], [], []
            pad = self.tokenizer.pad_token_id
            for ids in new:
                while pad is not None and pad not in eos_ids and ids and ids[-1] == pad:
                    ids = ids[:-1]  # sequences that stopped early are padded to the longest one
                n_tok, reason = len(ids), "length"
                for j, t in enumerate(ids):
                    if t in eos_ids:
                        n_tok, reason = j + 1, "stop"
                        break
                text = self.tokenizer.decode(ids[:n_tok], skip_special_tokens=True)
                cut = min((text.find(s) for s in r.sampling.stop if s in text), default=-1)
                if cut >= 0:
                    text, reason = text[:cut], "stop"
                texts.append(text)
                counts.append(n_tok)
                reasons.append(reason)
            results.append(GenerationResult(key=key, texts=texts, num_tokens=counts, finish_reasons=reasons))
        return results

    def close(self) -> None:
        self.model = None
        gc.collect()
