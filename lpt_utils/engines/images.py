"""Image loading and the size cap shared by every backend.

We resize images ourselves, before a backend sees them, rather than asking each backend's image
processor to do it: then vLLM (offline or served) and transformers all receive the same pixels for
the same `EngineConfig`. The model's own processor may still round the size to its patch grid
(Qwen2.5-VL snaps to multiples of 28) — it does so identically in every backend.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

from PIL import Image

RESAMPLE = Image.Resampling.BICUBIC


def capped_size(width: int, height: int, max_pixels: int | None, longest_side: int | None) -> tuple[int, int]:
    """The (width, height) an image is resized to; aspect ratio kept, each side at least 1.

    `longest_side` scales (up or down) so the longer side has that length; then `max_pixels`
    shrinks, never enlarges, until width*height <= max_pixels.
    """
    w, h = float(width), float(height)
    if longest_side is not None:
        s = longest_side / max(w, h)
        w, h = w * s, h * s
    if max_pixels is not None and w * h > max_pixels:
        s = math.sqrt(max_pixels / (w * h))
        w, h = w * s, h * s
    nw, nh = max(1, round(w)), max(1, round(h))
    # Rounding may push the area a pixel row over the cap; step down the longer side until it fits.
    while max_pixels is not None and nw * nh > max_pixels and max(nw, nh) > 1:
        if nw >= nh:
            nw -= 1
        else:
            nh -= 1
    return nw, nh


def load_image(path: str | Path, max_pixels: int | None = None, longest_side: int | None = None) -> Image.Image:
    """Open an image file as RGB and apply the size cap."""
    with Image.open(path) as im:
        img = im.convert("RGB")
    size = capped_size(img.width, img.height, max_pixels, longest_side)
    if size != img.size:
        img = img.resize(size, RESAMPLE)
    return img


def to_data_url(img: Image.Image) -> str:
    """A base64 PNG data URL (lossless, so an HTTP server decodes exactly our pixels)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
