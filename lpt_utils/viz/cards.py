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
    """The image, shrunk to at most `size` px, as a JPEG data URL (so the page needs no files, and
    stays small with photographs: a 256 px DOCCI photo is a few kB as JPEG, ~100 kB as PNG)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


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
        f'<span class="added">{mark_banned(row["added_thought"], list(row["banned_hits"]) if row.get("banned_hits") is not None else [])}</span><br>'
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


# ----------------------------------------------------------------------------- the CoT inspector
# One MCQ with every simple CoT and, under each, its long expansions; and whole pages that open
# without a kernel (lpt_utils.viz.inspector renders its selection with these).

INSPECTOR_CSS = """
<style>
.lpt-page{font-family:system-ui,sans-serif;font-size:13px;max-width:1100px;margin:12px auto;padding:0 12px}
.lpt-page h1{font-size:18px;margin:4px 0}.lpt-page h2{font-size:15px;margin:16px 0 4px}
.lpt-page .note,.lpt-card .note{color:#555;font-size:12px;margin:2px 0}
.lpt-card .cots{flex:1;min-width:0}
.lpt-card .simple{border-left:3px solid #bbb;padding:2px 0 2px 8px;margin:10px 0 4px}
.lpt-card .simple.is-O{border-color:#2e7d32}.lpt-card .simple.is-X{border-color:#c62828}
.lpt-card .long{border-left:2px dashed #bbb;padding:2px 0 2px 8px;margin:6px 0 2px 20px}
.lpt-card .dropped{opacity:.7}
.lpt-card .drop{color:#b71c1c;font-weight:600}
.lpt-card .hits{color:#c62828;font-size:11px}
.lpt-card .noimg{width:160px;height:160px;flex:none;border:1px dashed #ccc;color:#999;font-size:11px;
 display:flex;align-items:center;justify-content:center;text-align:center;overflow:hidden}
</style>
"""


def image_tag(path: str, size: int = 256) -> str:
    """`<img>` with the image inlined, or a placeholder naming the file when it cannot be read."""
    try:
        return f'<img src="{image_data_url(path, size)}" alt="{html.escape(str(path))}">'
    except (OSError, ValueError):
        return f'<div class="noimg">image not found<br>{html.escape(str(path))}</div>'


def choices_html(mcq: dict[str, Any]) -> str:
    """The options, one a line, the right one (`answer_letter`) marked with a tick."""
    lines = []
    for i, c in enumerate(mcq["choices"]):
        letter = chr(65 + i)
        if letter == mcq.get("answer_letter"):
            lines.append(f'<span class="right" title="the right option">✔ ({letter}) {html.escape(str(c))}</span>')
        else:
            lines.append(f"({letter}) {html.escape(str(c))}")
    return "<br>".join(lines)


def _drop(reason: str | None) -> str:
    return f' · <span class="drop">dropped: {html.escape(reason)}</span>' if reason else ""


def _transition_tag(transition: str) -> str:
    return _labels(transition) if transition else '<span class="tag" style="background:#777">unparsable</span>'


def long_expansion_html(row: dict[str, Any]) -> str:
    """One long expansion under its simple CoT: the separator and the cue (highlighted), the added
    thought (banned words underlined and listed), the answer and the transition."""
    hits = [str(h) for h in (row.get("banned_hits") if row.get("banned_hits") is not None else [])]
    listed = (f' · <span class="hits">banned: {html.escape(", ".join(hits))}</span>' if hits else "")
    sep = "↵ " if row["separator"] == "\n" else "… "
    return (
        f'<div class="long{" dropped" if row.get("drop_reason") else ""}">'
        f'<div class="meta">{html.escape(row["long_id"])}{_drop(row.get("drop_reason"))}{listed}</div>'
        f'{sep}<span class="cue">{html.escape(row["cue"])}</span> '
        f'<span class="added">{mark_banned(row["added_thought"], hits)}</span><br>'
        f'answer: <b>{html.escape(row["answer"] or "—")}</b> &nbsp; {_transition_tag(row["transition"])}</div>'
    )


def simple_cot_html(row: dict[str, Any], expansions: list[dict[str, Any]] = ()) -> str:
    """One simple CoT (thought, answer, O/X, drop reason) with its long expansions under it."""
    label = row.get("label") or ""
    tag = _transition_tag(label)
    return (
        f'<div class="simple is-{label or "none"}{" dropped" if row.get("drop_reason") else ""}">'
        f'<div class="meta">{html.escape(row["response_id"])} · {int(row["num_tokens"])} tokens'
        f'{_drop(row.get("drop_reason"))}</div>'
        f'{html.escape(row["thought"] or row["raw_text"])}<br>'
        f'answer: <b>{html.escape(row["answer"] or "—")}</b> &nbsp; {tag}'
        + "".join(long_expansion_html(e) for e in expansions) + "</div>"
    )


def mcq_cot_card(mcq: dict[str, Any], simples: list[tuple[dict[str, Any], list[dict[str, Any]]]],
                 note: str = "") -> str:
    """One MCQ (image, question, options with the right one marked, validity) and its simple CoTs,
    each with its long expansions: `simples` is a list of (stage-2 row, [stage-3 rows])."""
    invalid = "" if mcq.get("is_valid", True) else _drop(f'invalid MCQ: {mcq.get("invalid_reason") or "?"}')
    if invalid:  # no option is marked right: show what the writer gave as the answer
        note = f'the writer\'s answer: {mcq.get("answer", "")}' + (f"; {note}" if note else "")
    body = "".join(simple_cot_html(s, longs) for s, longs in simples)
    return (
        f'<div class="lpt-card">{image_tag(mcq["image_path"])}<div class="cots">'
        f'<div class="meta">{html.escape(mcq["mcq_id"])} · {html.escape(mcq["question_type"])}{invalid}</div>'
        f'<b>{html.escape(mcq["question"])}</b><br>{choices_html(mcq)}'
        + (f'<div class="note">{html.escape(note)}</div>' if note else "")
        + body + "</div></div>"
    )


def html_page(title: str, body: str, subtitle: str = "") -> str:
    """A whole, self-contained page: every style inline, no scripts, images as data URLs."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>{CSS}{SFT_CSS}{INSPECTOR_CSS}</head>"
        f'<body><div class="lpt-page"><h1>{html.escape(title)}</h1>'
        + (f'<p class="note">{html.escape(subtitle)}</p>' if subtitle else "")
        + body + "</div></body></html>\n"
    )
