"""Generation through an OpenAI-compatible HTTP server (a vLLM server, or a hosted API).

Design notes:
- `openai.AsyncOpenAI` with its own retries disabled (``max_retries=0``); we retry with
  `tenacity`: exponential backoff with jitter on 429, 5xx, timeouts and connection errors, up to
  `cfg.max_retries` retries. Any other 4xx is not retried and raises `EngineRequestError`.
- At most `cfg.concurrency` requests are in flight (an `asyncio.Semaphore` held per attempt, not
  during the backoff sleep). If one request finally fails, the others of the batch are cancelled.
- Works from inside a running event loop (Jupyter): the batch then runs in a fresh thread with its
  own loop. A new client is made per batch (httpx clients are bound to their loop).
- Images: loaded and size-capped exactly like the vLLM backend, sent as base64 PNG data URLs.
- vLLM extensions in ``extra_body``: `top_k` and `repetition_penalty` always (else a vLLM server
  takes them from the model's generation_config.json), `bad_words` when set, an assistant prefix as
  ``continue_final_message=True, add_generation_prompt=False``, and ``return_token_ids`` when n > 1.
  Base URLs other than api.openai.com are assumed to be vLLM servers (other servers may reject
  these fields with a 400, reported clearly); for api.openai.com none is sent, and a request that
  needs one raises `ValueError` before anything is sent.
- `sampling.seed`, when set, is sent as the request's `seed` (on a CPU vLLM server per-request
  seeds can crash the engine; leave it None there).
- Token counts per sample, in order of preference: the server's per-choice token ids (vLLM with
  ``return_token_ids``); ``usage.completion_tokens`` when n == 1; the model's tokenizer if it can be
  loaded locally (re-tokenising the text: may differ by a token, e.g. a final end-of-turn token);
  else the number of whitespace-separated words (a rough stand-in; `token_count_method` says which
  one was last used). Finish reasons are the server's.
- Raw `prompt` requests use the completions endpoint, with the prefix appended to the prompt.
- The API key is read from ``os.environ[cfg.api_key_env]`` at construction and is never logged,
  stored in the config or put in the fingerprint. Without `api_key_env` the key is "EMPTY" (vLLM).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import urlsplit

import openai
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .base import GenerationRequest, GenerationResult, SamplingSettings
from .common import convert_messages, fingerprint, model_identity, safe_url
from .config import EngineConfig
from .images import load_image, to_data_url

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BACKOFF_S = 60.0


class EngineRequestError(RuntimeError):
    """A request the server refused (non-retryable status) or that failed after every retry."""


class MalformedResponse(RuntimeError):
    """A 200 answer that is not a completion: a body that is not JSON (a proxy's error page), or JSON
    without choices. Retried like a 5xx: such answers are usually a passing fault upstream."""


def is_retryable(e: BaseException) -> bool:
    """429, 5xx, timeouts, connection errors (dropped connections and cut-short bodies included) and
    malformed answers."""
    if isinstance(e, (openai.APIConnectionError, MalformedResponse)):  # includes APITimeoutError
        return True
    if isinstance(e, openai.APIStatusError):
        return e.status_code == 429 or e.status_code >= 500
    return False


def run_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        return ex.submit(lambda: asyncio.run(make())).result()


class OpenAIEngine:
    """`Engine` over an OpenAI-compatible server at `cfg.base_url`, serving `model_name`."""

    def __init__(self, cfg: EngineConfig, model_name: str):
        if not cfg.base_url:
            raise ValueError("the openai backend needs EngineConfig.base_url")
        self.cfg = cfg
        self.model_name = model_name
        self.batch_size = cfg.batch_size
        self.is_openai_api = (urlsplit(cfg.base_url).hostname or "").endswith("api.openai.com")
        if cfg.api_key_env:
            if not os.environ.get(cfg.api_key_env):
                raise ValueError(
                    f"environment variable {cfg.api_key_env} (EngineConfig.api_key_env) is not set"
                )
            self._api_key = os.environ[cfg.api_key_env]
        else:
            self._api_key = "EMPTY"
        # The served name is the resolved path for local models: fingerprint the configured name
        # and the local weights' identity instead, plus where the results come from.
        self.fingerprint = fingerprint(
            "openai", cfg, model_identity(model_name), base_url=safe_url(cfg.base_url)
        )
        self.token_count_method = "server"  # how the last fallback count was made: tokenizer/whitespace
        self._tokenizer: Any = None
        self._tokenizer_tried = False

    def __repr__(self) -> str:
        return f"OpenAIEngine(model={self.cfg.model!r}, base_url={safe_url(self.cfg.base_url)!r})"

    # ---- request building -------------------------------------------------------------------

    def _image_part(self, path: str) -> dict[str, Any]:
        img = load_image(path, self.cfg.max_pixels, self.cfg.longest_side, self.cfg.min_pixels)
        return {"type": "image_url", "image_url": {"url": to_data_url(img)}}

    def _vllm_extras(self, r: GenerationRequest) -> dict[str, Any]:
        """The vLLM-only request fields (sent in `extra_body`).

        top_k and repetition_penalty are always sent to vLLM servers, even at their neutral values:
        a vLLM server fills unsent fields from the model's generation_config.json (Qwen2.5-VL's
        sets top_k=1 and repetition_penalty=1.05), which the offline backend never does.
        """
        s = r.sampling
        if self.is_openai_api:
            unsupported = [name for name, used in (
                ("top_k", s.top_k not in (-1, 0)), ("repetition_penalty", s.repetition_penalty != 1.0),
                ("bad_words", bool(s.bad_words)),
                ("continue_final_message (assistant_prefix)", bool(r.assistant_prefix and r.messages is not None)),
            ) if used]
            if unsupported:
                raise ValueError(
                    f"api.openai.com does not support {', '.join(unsupported)} (vLLM server "
                    "extensions); use a vLLM server or drop these settings"
                )
            return {}
        extra: dict[str, Any] = {"top_k": -1 if s.top_k in (-1, 0) else s.top_k,
                                 "repetition_penalty": s.repetition_penalty}
        if s.bad_words:
            extra["bad_words"] = list(s.bad_words)
        if r.assistant_prefix and r.messages is not None:
            extra["continue_final_message"] = True
            extra["add_generation_prompt"] = False
        if s.n > 1:
            extra["return_token_ids"] = True
        return extra

    def _common_kwargs(self, s: SamplingSettings) -> dict[str, Any]:
        kw: dict[str, Any] = dict(model=self.model_name, n=s.n, temperature=s.temperature, top_p=s.top_p)
        if s.stop:
            kw["stop"] = list(s.stop)
        if s.seed is not None:
            kw["seed"] = s.seed
        return kw

    # ---- one request ------------------------------------------------------------------------

    async def _call(self, client: openai.AsyncOpenAI, r: GenerationRequest) -> list[tuple[str, int | None, str]]:
        """One HTTP request (no retries): [(text, token count or None, finish reason)] per choice."""
        s = r.sampling
        extra = self._vllm_extras(r)
        try:
            if r.prompt is not None:
                resp = await client.completions.create(
                    prompt=r.prompt + r.assistant_prefix, max_tokens=s.max_new_tokens,
                    extra_body=extra or None, **self._common_kwargs(s),
                )
                choices = sorted(resp.choices, key=lambda c: c.index)
                texts = [c.text for c in choices]
            else:
                resp = await client.chat.completions.create(
                    messages=convert_messages(r, self._image_part), max_completion_tokens=s.max_new_tokens,
                    extra_body=extra or None, **self._common_kwargs(s),
                )
                choices = sorted(resp.choices, key=lambda c: c.index)
                texts = [c.message.content or "" for c in choices]
        except (ValueError, TypeError, AttributeError) as e:  # a body that is not JSON, or no choices
            raise MalformedResponse(f"the server's 200 answer is not a completion ({type(e).__name__}: "
                                    f"{str(e)[:120]})") from e
        if len(choices) != s.n:
            raise EngineRequestError(f"server returned {len(choices)} choices for n={s.n}")
        usage = getattr(resp, "usage", None)
        counts: list[int | None] = []
        for c in choices:
            ids = getattr(c, "token_ids", None)
            if ids is not None:
                counts.append(len(ids))
            elif s.n == 1 and usage is not None and usage.completion_tokens is not None:
                counts.append(usage.completion_tokens)
            else:
                counts.append(None)
        return [(t, n, c.finish_reason or "unknown") for t, n, c in zip(texts, counts, choices)]

    async def _call_with_retries(self, client, sem: asyncio.Semaphore, i: int, r: GenerationRequest):
        attempts = AsyncRetrying(
            stop=stop_after_attempt(self.cfg.max_retries + 1),
            wait=wait_exponential_jitter(multiplier=self.cfg.retry_backoff_s, max=MAX_BACKOFF_S,
                                         jitter=self.cfg.retry_backoff_s),
            retry=retry_if_exception(is_retryable),
            before_sleep=lambda st: log.warning(
                "request %d: %s; retry %d/%d in %.2f s", i, _describe(st.outcome.exception()),
                st.attempt_number, self.cfg.max_retries, st.upcoming_sleep,
            ),
            reraise=True,
        )
        try:
            async for attempt in attempts:
                with attempt:
                    async with sem:
                        samples = await self._call(client, r)
            return samples
        except (openai.APIError, MalformedResponse) as e:
            if is_retryable(e):
                raise EngineRequestError(
                    f"request {i} failed after {self.cfg.max_retries + 1} attempts: {_describe(e)}"
                ) from e
            raise EngineRequestError(f"request {i} refused by {safe_url(self.cfg.base_url)}: {_describe(e)}") from e

    async def _generate(self, requests: list[GenerationRequest]):
        sem = asyncio.Semaphore(self.cfg.concurrency)
        client = openai.AsyncOpenAI(
            base_url=self.cfg.base_url, api_key=self._api_key, timeout=self.cfg.timeout_s, max_retries=0
        )
        try:
            tasks = [asyncio.create_task(self._call_with_retries(client, sem, i, r)) for i, r in enumerate(requests)]
            try:
                return await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            await client.close()

    # ---- Engine interface -------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        for r in requests:  # fail on unsupported settings before sending anything
            self._vllm_extras(r)
        raw = run_coroutine(lambda: self._generate(requests))
        results = []
        for r, samples in zip(requests, raw):
            results.append(
                GenerationResult(
                    key=r.key(self.fingerprint),
                    texts=[t for t, _, _ in samples],
                    num_tokens=[self._count_tokens(t) if n is None else n for t, n, _ in samples],
                    finish_reasons=[f for _, _, f in samples],
                )
            )
        return results

    def _count_tokens(self, text: str) -> int:
        if not self._tokenizer_tried:
            self._tokenizer_tried = True
            self._tokenizer = _local_tokenizer(self.model_name)
        if self._tokenizer is not None:
            self.token_count_method = "tokenizer"
            return len(self._tokenizer.encode(text, add_special_tokens=False))
        self.token_count_method = "whitespace"
        return len(text.split())

    def close(self) -> None:
        pass


def _local_tokenizer(model_name: str) -> Any:
    """The model's tokenizer if it is on this machine (a local directory or the hub cache), else None.
    Checked before importing transformers, which takes seconds."""
    try:
        from pathlib import Path

        from huggingface_hub import try_to_load_from_cache

        if not (Path(model_name) / "tokenizer_config.json").exists() and not isinstance(
            try_to_load_from_cache(model_name, "tokenizer_config.json"), str
        ):
            return None
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_name, local_files_only=True)
    except Exception:
        return None


def _describe(e: BaseException | None) -> str:
    if isinstance(e, openai.APIStatusError):
        return f"HTTP {e.status_code}: {str(e)[:300]}"
    return f"{type(e).__name__}: {str(e)[:300]}"
