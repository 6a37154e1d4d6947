"""Helpers shared by the backends: what a model directory holds, fingerprints, message conversion."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from .base import GenerationRequest
from .config import EngineConfig

log = logging.getLogger(__name__)

_EDGE_BYTES = 1 << 20  # bytes hashed at each end of a weight file
WEIGHTS_IDENTITY = "weights:"  # how a local folder's content identity starts (`model_identity`)
# What else in a model folder shapes its outputs (tokenizer, chat template, image processor, the
# generation defaults vLLM reads), hashed whole into a local model's identity.
_TEXT_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
               "chat_template.json", "preprocessor_config.json", "processor_config.json", "generation_config.json")


@dataclass(frozen=True)
class ModelInfo:
    """What the backends need to know about a model before loading it."""

    config: dict[str, Any]  # its config.json ({} when it cannot be read)
    is_vlm: bool  # config.json has a `vision_config`
    identity: str  # recipe hash, weights digest, or "" for a hub id (see `model_identity`)


def read_model_config(model_path: str) -> dict[str, Any]:
    """config.json of a local directory, or of a hub id from the local Hugging Face cache."""
    p = Path(model_path)
    if p.is_dir():
        f = p / "config.json"
        return json.loads(f.read_text()) if f.exists() else {}
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(model_path, "config.json")).read_text())
    except Exception as e:  # offline and not cached: the backend will report it when loading
        log.warning("could not read config.json of %s: %s", model_path, e)
        return {}


def model_identity(model_path: str) -> str:
    """A short string that changes when a local model's weights change.

    - A directory with `recipe_hash.txt` (tiny models write it): that hash.
    - Another local directory: sha256 over config.json, the tokenizer, chat-template, processor and
      generation-config files and, for each weight file, its name, size and the bytes of its first and
      last MiB — cheap even for 7B checkpoints, and different after any re-training that rewrites the
      weights, so stored results are not reused for a new model.
    - A hub id: "" (the id itself is the identity).
    """
    p = Path(model_path)
    if not p.is_dir():
        return ""
    recipe = p / "recipe_hash.txt"
    if recipe.exists():
        return "recipe:" + recipe.read_text().strip()
    h = hashlib.sha256()
    for name in ("config.json", *_TEXT_FILES):
        if (p / name).is_file():
            h.update(name.encode() + b"\0" + (p / name).read_bytes())
    for f in sorted(p.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file():
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with open(f, "rb") as fh:
                h.update(fh.read(_EDGE_BYTES))
                if size > 2 * _EDGE_BYTES:
                    fh.seek(size - _EDGE_BYTES)
                    h.update(fh.read(_EDGE_BYTES))
    return WEIGHTS_IDENTITY + h.hexdigest()[:16]


def model_info(model_path: str) -> ModelInfo:
    cfg = read_model_config(model_path)
    return ModelInfo(config=cfg, is_vlm="vision_config" in cfg, identity=model_identity(model_path))


def safe_url(url: str | None) -> str:
    """`url` without user info, query or fragment (nothing secret ends up in a fingerprint)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def fingerprint(backend: str, cfg: EngineConfig, identity: str, **extra: Any) -> str:
    """Readable engine fingerprint: backend, model as configured (e.g. "tiny:vlm" rather than the
    directory it resolved to, so results survive moving the models folder; a local folder that has an
    identity is named by it alone, so calls to a run's own trained models are found again from a copy
    of the run elsewhere), its identity, and the settings that change outputs."""
    parts = {
        "backend": backend,
        "model": "local folder" if identity.startswith(WEIGHTS_IDENTITY) else cfg.model,
        "identity": identity,
        "dtype": cfg.dtype,
        "max_model_len": cfg.max_model_len,
        "max_pixels": cfg.max_pixels,
        "longest_side": cfg.longest_side,
        # only when set, so the fingerprints (and stored calls) of engines without it stay as they were
        **({"min_pixels": cfg.min_pixels} if cfg.min_pixels is not None else {}),
        **extra,
    }
    return "|".join(f"{k}={v}" for k, v in parts.items())


def convert_messages(
    request: GenerationRequest, image_part: Callable[[str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The request's chat messages with each ``{"type": "image", "image": path}`` part replaced by
    `image_part(path)`, and the assistant prefix (if any) appended as a final assistant message."""
    out: list[dict[str, Any]] = []
    for m in request.messages or []:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    parts.append(image_part(part["image"]))
                else:
                    parts.append(dict(part))
            m = {**m, "content": parts}
        else:
            m = dict(m)
        out.append(m)
    if request.assistant_prefix:
        out.append({"role": "assistant", "content": request.assistant_prefix})
    return out
