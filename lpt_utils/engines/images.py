"""Opening images, checking them, and the size cap shared by every backend: the one place where an
image file is opened (the engines, training and the benchmark loaders all come through here).

We resize images ourselves, before a backend sees them, rather than asking each backend's image
processor to do it: then vLLM (offline or served) and transformers all receive the same pixels for
the same `EngineConfig`. The model's own processor may still round the size to its patch grid
(Qwen2.5-VL snaps to multiples of 28) — it does so identically in every backend.

**The area cap** (`capped_size`) follows LLaMA-Factory's image regularisation, which the authors'
released generation and evaluation scripts run (`image_max_pixels`, `image_min_pixels`): an image
whose area is over `max_pixels` is scaled by sqrt(max_pixels / area) on both sides, and one under
`min_pixels` by sqrt(min_pixels / area); sizes are cut to integers (`int()`, as there), aspect kept.
Where that cut leaves an up-scaled image a row short of `min_pixels`, its shorter side grows until it
fits (LLaMA-Factory leaves it short). `longest_side` (an engine option that no profile sets now)
first scales the longer side to that length.

**Very large images.** PIL refuses to open an image of more than 2 × `Image.MAX_IMAGE_PIXELS`
(≈179M pixels; it only warns above 1 ×) as a possible decompression bomb. Benchmark images are
trusted files and some are that large (MME-RealWorld's remote-sensing photographs), so `open_image`
lifts the limit for the one call and says whether the image was over it; the benchmark loaders count
those images in their load report (`over_pil_limit`), and they are downscaled to the cap like any other.
"""

from __future__ import annotations

import base64
import io
import math
import threading
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

RESAMPLE = Image.Resampling.BICUBIC

_LIMIT_LOCK = threading.Lock()  # PIL's limit is a module global: lift and restore it one call at a time


def pil_limit() -> int | None:
    """PIL's decompression-bomb limit now (`Image.MAX_IMAGE_PIXELS`; None: no limit)."""
    return Image.MAX_IMAGE_PIXELS


def over_pil_limit(width: int, height: int) -> bool:
    """Whether an image of this size is over PIL's limit (PIL warns above it, refuses above twice it)."""
    limit = pil_limit()
    return limit is not None and width * height > limit


@contextmanager
def _pil_limit_lifted():
    """PIL's decompression-bomb limit off for the block (warning and error), then put back."""
    with _LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def open_image(path: str | Path) -> Image.Image:
    """`Image.open(path)` without PIL's decompression-bomb check (neither its warning nor its error):
    the image is opened lazily, as `Image.open` does; close it (or use it in a `with`)."""
    with _pil_limit_lifted():
        return Image.open(path)


@dataclass(frozen=True)
class ImageCheck:
    """What `check_image` found: `problem` is "" (a readable image), "missing_image" or
    "unreadable_image"; `size` is (width, height) when readable; `over_pil_limit` says the image is
    larger than PIL's decompression-bomb limit (it is read all the same)."""

    problem: str
    size: tuple[int, int] | None = None
    over_pil_limit: bool = False


def check_image(path: str | Path) -> ImageCheck:
    """Whether `path` is a readable image (PIL's `verify`), whatever its size."""
    p = Path(path)
    if not p.is_file():
        return ImageCheck("missing_image")
    try:
        with open_image(p) as im:
            size = im.size
            im.verify()
    except Exception:  # PIL raises many types for corrupt files
        return ImageCheck("unreadable_image")
    return ImageCheck("", size, over_pil_limit(*size))


def capped_size(width: int, height: int, max_pixels: int | None = None, longest_side: int | None = None,
                min_pixels: int | None = None) -> tuple[int, int]:
    """The (width, height) an image is resized to (module docstring): aspect kept, each side at
    least 1, the area at most `max_pixels` and at least `min_pixels` (when they are set)."""
    w, h = int(width), int(height)
    if longest_side is not None:
        s = longest_side / max(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
    if max_pixels is not None and w * h > max_pixels:
        s = math.sqrt(max_pixels / (w * h))
        w, h = max(1, int(w * s)), max(1, int(h * s))
        # only where max_pixels is below the smallest possible area of this aspect (a side floored to 1)
        while w * h > max_pixels and max(w, h) > 1:
            w, h = (w - 1, h) if w >= h else (w, h - 1)
    if min_pixels is not None and w * h < min_pixels:
        s = math.sqrt(min_pixels / (w * h))
        w, h = max(1, int(w * s)), max(1, int(h * s))
        while w * h < min_pixels:
            w, h = (w + 1, h) if w <= h else (w, h + 1)
    return w, h


def load_image(path: str | Path, max_pixels: int | None = None, longest_side: int | None = None,
               min_pixels: int | None = None) -> Image.Image:
    """Open an image file as RGB (whatever its size: `open_image`) and apply the size cap."""
    with open_image(path) as im:
        # decoding checks the limit again in a few formats (GIF frames): keep it lifted for large images
        with _pil_limit_lifted() if over_pil_limit(*im.size) else nullcontext():
            img = im.convert("RGB")
    size = capped_size(img.width, img.height, max_pixels, longest_side, min_pixels)
    if size != img.size:
        img = img.resize(size, RESAMPLE)
    return img


def to_data_url(img: Image.Image) -> str:
    """A base64 PNG data URL (lossless, so an HTTP server decodes exactly our pixels)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
