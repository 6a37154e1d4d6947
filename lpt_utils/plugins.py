"""Code outside the pipeline that the pipeline calls by name: the profile's `plugins` section.

The pipeline never imports such code; a profile names it as "module:attribute" and it is looked up
when a run needs it. The tiny profile plugs the tiny world in this way (`lpt_utils/tiny_world/plugin.py`:
its models, its scenes, its held-out benchmark); your own code plugs in the same way.

    plugins:
      model_resolver: my_pkg.models:resolve            # (model id, models_dir) -> what a backend loads
      caption_sources: {my_scans: my_pkg.data:load}    # data.source -> (data settings, work_dir) -> (records, report)
      benchmark_builders: {my_bench: my_pkg.bench:build}  # eval.run name -> (spec, folder): writes its files
      mcq_graders: {my_scans: my_pkg.truth:grade}      # data.source -> (sources folder, MCQ rows) -> a verdict each
"""

from __future__ import annotations

import importlib
from typing import Any

KINDS = ("model_resolver", "caption_sources", "benchmark_builders", "mcq_graders")


def load(ref: str, where: str) -> Any:
    """The object a "module:attribute" reference names; `where` (the setting) is named in errors."""
    module, sep, attr = str(ref).partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{where}: {ref!r} is not a 'module:attribute' reference")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{where}: cannot import {module!r} ({e})") from e
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise AttributeError(f"{where}: module {module!r} has no {attr!r}") from None


def named(settings: dict[str, Any], kind: str, name: str | None = None) -> Any | None:
    """The plugin of `kind` (for `name`, in the kinds that map names to plugins), or None."""
    if kind not in KINDS:
        raise KeyError(f"unknown plugin kind {kind!r}; known: {', '.join(KINDS)}")
    section = (settings.get("plugins") or {}).get(kind)
    if name is None:
        return load(section, f"plugins.{kind}") if section else None
    ref = (section or {}).get(name)
    return load(ref, f"plugins.{kind}.{name}") if ref else None
