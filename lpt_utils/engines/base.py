"""The one generation interface every stage uses, whatever the backend.

A stage builds `GenerationRequest`s (chat messages or a raw prompt, images, an optional pre-filled
beginning of the assistant turn, sampling settings) and hands them to an engine through
`lpt_utils.engines.store.run_requests`, which skips what a previous run already finished.

Messages follow the OpenAI chat shape. A message's `content` is a string or a list of parts:
``{"type": "text", "text": ...}`` or ``{"type": "image", "image": "<path to an image file>"}``.
Backends translate that into what they need (vLLM chat parts, base64 data URLs, processor inputs).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

# Bump when the way requests are turned into model inputs changes (templates, image handling):
# every stored result keyed with an older version is then recomputed rather than reused.
TEMPLATE_VERSION = "1"


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    bad_words: tuple[str, ...] = ()
    seed: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamplingSettings":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("stop", "bad_words"):
            if k in known and known[k] is not None:
                known[k] = tuple(known[k])
        return cls(**known)


@dataclass
class GenerationRequest:
    """One prompt, sampled `sampling.n` times.

    Exactly one of `messages` or `prompt` is set. `assistant_prefix` is text the assistant turn is
    forced to begin with; the model continues it and the returned texts do NOT include it.
    `meta` travels with the request (e.g. the MCQ id) and is not part of its key.
    """

    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    assistant_prefix: str = ""
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a GenerationRequest needs exactly one of `messages` or `prompt`")

    def image_paths(self) -> list[str]:
        paths: list[str] = []
        for m in self.messages or []:
            if isinstance(m.get("content"), list):
                paths += [p["image"] for p in m["content"] if p.get("type") == "image"]
        return paths

    def key(self, engine_fingerprint: str) -> str:
        """Hash of everything that shapes the output: engine (model + its settings), messages with
        each image named by its bytes (never its path: the same call made from a copy of the files
        elsewhere is served from the copied store, and the same picture under two names is one request), prefix,
        sampling settings and the template version."""
        payload = {
            "engine": engine_fingerprint,
            "messages": self._messages_by_content(),
            "prompt": self.prompt,
            "assistant_prefix": self.assistant_prefix,
            "sampling": asdict(self.sampling),
            "template_version": TEMPLATE_VERSION,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]

    def _messages_by_content(self) -> list[dict[str, Any]] | None:
        """The messages with each image part's path replaced by the sha256 of the file's bytes."""
        if self.messages is None:
            return None
        out = []
        for m in self.messages:
            content = m.get("content")
            if isinstance(content, list):
                content = [{**part, "image": "sha256:" + file_digest(part["image"])} if part.get("type") == "image"
                           else part for part in content]
            out.append({**m, "content": content})
        return out


@dataclass
class GenerationResult:
    """The `n` samples of one request. `texts` exclude the assistant prefix."""

    key: str
    texts: list[str]
    num_tokens: list[int]
    finish_reasons: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "GenerationResult":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class Engine(Protocol):
    """What every backend provides."""

    fingerprint: str  # model id + every engine setting that changes outputs (dtype, pixel cap, ...)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Results in the order of `requests`. Raises on failure; never returns a failed result."""
        ...

    def close(self) -> None: ...


_DIGESTS: dict[tuple[str, float], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, memoised on (path, mtime) within the process."""
    p = Path(path)
    st = p.stat()
    k = (str(p.resolve()), st.st_mtime)
    if k not in _DIGESTS:
        _DIGESTS[k] = hashlib.sha256(p.read_bytes()).hexdigest()
    return _DIGESTS[k]
