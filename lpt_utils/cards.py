"""Self-contained HTML cards of chains of thought: the image (inlined), the question, the choices
with the right one marked, the simple thought, the cue highlighted, the added thought, the answer
and its label. They show in a notebook (and in its papermill-executed copy) without a kernel."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from PIL import Image

CSS = """
<style>
.lpt-card{display:flex;gap:12px;border:1px solid #ddd;border-radius:6px;padding:8px;margin:6px 0;
 font-family:system-ui,sans-serif;font-size:13px;line-height:1.35}
.lpt-card img{width:160px;height:160px;object-fit:contain;flex:none}
.lpt-card .cue{background:#ffe082;font-weight:600;padding:0 2px}
.lpt-card .added{background:#e3f2fd}
.lpt-card .banned{background:#ffcdd2;text-decoration:underline}
.lpt-card .right{color:#1b5e20;font-weight:600}
.lpt-card .tag{display:inline-block;border-radius:3px;padding:0 4px;color:#fff;font-size:12px}
.lpt-card .O{background:#2e7d32}.lpt-card .X{background:#c62828}
.lpt-card .meta{color:#777;font-size:11px}
</style>
"""


def image_data_url(path: str, size: int = 256) -> str:
    """The image, shrunk to at most `size` px, as a PNG data URL (so the page needs no files)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _labels(transition: str) -> str:
    return "".join(f'<span class="tag {c}">{c}</span>' if c in "OX" else " → " for c in transition)


def mark_banned(text: str, hits: list[str]) -> str:
    """Escape `text` and underline every whole-word occurrence of the banned words in `hits`."""
    import re

    out = html.escape(text)
    for w in hits:
        out = re.sub(r"(?<![A-Za-z0-9'])(" + re.escape(html.escape(w)) + r")(?![A-Za-z0-9])",
                     r'<span class="banned">\1</span>', out, flags=re.I)
    return out


def long_cot_card(row: dict[str, Any], mcq: dict[str, Any]) -> str:
    """One long CoT: simple thought, then the cue (highlighted), then the added thought."""
    choices = "<br>".join(
        (f'<span class="right">✔ ({chr(65 + i)}) {html.escape(c)}</span>' if chr(65 + i) == mcq["answer_letter"]
         else f"({chr(65 + i)}) {html.escape(c)}") for i, c in enumerate(mcq["choices"]))
    sep = "<br>" if row["separator"] == "\n" else " "
    drop = f' · dropped: {html.escape(row["drop_reason"])}' if row.get("drop_reason") else ""
    return (
        f'<div class="lpt-card"><img src="{image_data_url(mcq["image_path"])}">'
        f'<div><div class="meta">{html.escape(row["long_id"])} · {html.escape(mcq["question_type"])}{drop}</div>'
        f'<b>{html.escape(mcq["question"])}</b><br>{choices}<br><br>'
        f'{html.escape(row["simple_thought"])}{sep}<span class="cue">{html.escape(row["cue"])}</span> '
        f'<span class="added">{mark_banned(row["added_thought"], list(row.get("banned_hits") or []))}</span><br>'
        f'answer: <b>{html.escape(row["answer"])}</b> &nbsp; {_labels(row["transition"] or "?")}'
        f'</div></div>'
    )


def long_cot_cards(rows, mcqs) -> str:
    """HTML for several long CoTs (`rows`: stage-3 records; `mcqs`: stage-1 records by id)."""
    by_id = {m["mcq_id"]: m for m in mcqs}
    return CSS + "".join(long_cot_card(r, by_id[r["mcq_id"]]) for r in rows)

SFT_CSS = """
<style>
.lpt-card .masked{color:#999;background:repeating-linear-gradient(45deg,#f4f4f4,#f4f4f4 4px,#eee 4px,#eee 8px)}
.lpt-card pre{white-space:pre-wrap;margin:2px 0;font-size:12px}
.lpt-card .pair{display:flex;gap:8px}.lpt-card .pair>div{flex:1;border-left:3px solid #ccc;padding-left:6px}
.lpt-card .chosen{border-color:#2e7d32 !important}.lpt-card .rejected{border-color:#c62828 !important}
</style>
"""


def sft_card(row: dict[str, Any]) -> str:
    """One SFT row: the prompt, then the assistant turn with its loss-masked prefix greyed out."""
    prefix, rest = row.get("assistant_prefix") or "", row["assistant"]
    if prefix:
        rest = rest[len(prefix):]
    masked = (f'<span class="masked" title="no loss on these tokens">{html.escape(prefix)}</span>'
              if prefix else "")
    return (
        f'<div class="lpt-card"><img src="{image_data_url(row["image_path"])}">'
        f'<div><div class="meta">{html.escape(str(row["id"]))} · source {html.escape(row["source"])}'
        f'{" · grey = loss-masked prefix" if prefix else ""}</div>'
        f'<pre>{html.escape(row["user"])}</pre><pre>{masked}{html.escape(rest)}</pre></div></div>'
    )


def dpo_card(row: dict[str, Any]) -> str:
    """One DPO pair: the prompt, then chosen (green) beside rejected (red), and the rule."""
    return (
        f'<div class="lpt-card"><img src="{image_data_url(row["image_path"])}">'
        f'<div style="flex:1"><div class="meta">{html.escape(str(row["id"]))} · rule {html.escape(row["pair_type"])}</div>'
        f'<pre>{html.escape(row["user"])}</pre><div class="pair">'
        f'<div class="chosen"><b>chosen</b><pre>{html.escape(row["chosen"])}</pre></div>'
        f'<div class="rejected"><b>rejected</b><pre>{html.escape(row["rejected"])}</pre></div>'
        f'</div></div></div>'
    )


def training_cards(sft_rows=(), dpo_rows=()) -> str:
    return CSS + SFT_CSS + "".join(sft_card(r) for r in sft_rows) + "".join(dpo_card(r) for r in dpo_rows)
