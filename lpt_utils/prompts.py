"""Prompt templates: every prompt the pipeline sends lives in `lpt_utils/templates/*.j2`.

Rendering goes through one jinja2 environment with StrictUndefined, so a template that names a
variable the caller did not pass fails loudly instead of sending a prompt with a hole in it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


def render(name: str, **variables) -> str:
    """Render `templates/<name>.j2`; surrounding whitespace is stripped."""
    return _environment().get_template(f"{name}.j2").render(**variables).strip()


def template_names() -> list[str]:
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.j2"))
