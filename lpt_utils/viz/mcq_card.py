"""One card per example, drawn the same way everywhere: an MCQ's image, its question, its options (the
right one ticked, the one an answer named flagged) and what the pipeline made of it, in sections whose
*role* decides how they look (the simple thought, the cue, the added thought, banned words, a loss-masked
prefix, the answer and its O/X label, a model's output, a DPO pair's sides).

    card = mcq_card.long_cot_card(row, mcq)        # an `MCQCard`, built from stage rows
    mcq_card.show([card])                          # HTML in a notebook (the inspector, the exported page)
    fig = mcq_card.figure([card])                  # matplotlib: the PNGs under figures/<run>/

The model (`MCQCard`, `Option`, `Section`, `Segment`) is plain data. `card` builds one from an MCQ row
(a stage-1 row, or any row with `question`, `choices` and `answer_letter` / `right_letter`); the other
builders add the sections of one kind of row. Both renderers read `ROLES` for colours and
`Option.mark` / `Option.suffix` for the marks, so an option line reads the same in a notebook, in the
inspector and in a PNG. The HTML wraps in the browser; the figure wraps at `width` characters of a
monospace font (`wrap`), so a long thought stays inside its card.
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lpt_utils.engines.images import load_image

# ----------------------------------------------------------------------------- roles: how a part looks


@dataclass(frozen=True)
class Style:
    """How one role looks, in both renderers (`css` adds what only a browser can draw)."""

    colour: str = "#222222"
    background: str | None = None
    bold: bool = False
    underline: bool = False
    small: bool = False
    css: str = ""


ROLES: dict[str, Style] = {
    "text": Style(),
    "question": Style(bold=True),
    "meta": Style(colour="#777777", small=True),
    "note": Style(colour="#555555", small=True),
    "drop": Style(colour="#b71c1c", bold=True, small=True),
    "hits": Style(colour="#c62828", small=True),
    "cue": Style(background="#ffe082", bold=True),
    "added": Style(colour="#0d47a1", background="#e3f2fd"),
    "banned": Style(colour="#b71c1c", background="#ffcdd2", underline=True),
    "masked": Style(colour="#999999", background="#eeeeee",
                    css="background:repeating-linear-gradient(45deg,#f4f4f4,#f4f4f4 4px,#eee 4px,#eee 8px)"),
    "answer": Style(bold=True),
    "right": Style(colour="#1b5e20", bold=True),  # the right option; a verdict "right"
    "wrong": Style(colour="#b71c1c", bold=True),  # the named option when wrong; a verdict "wrong"
    "chosen": Style(colour="#2e7d32", bold=True),
    "rejected": Style(colour="#c62828", bold=True),
    "label": Style(bold=True),  # O / X / X→O …: each letter in its verdict's colour
}
LABEL_COLOURS = {"O": "#2e7d32", "X": "#c62828"}
TONES = {"O": "#2e7d32", "X": "#c62828", "chosen": "#2e7d32", "rejected": "#c62828"}  # a section's border
RIGHT_MARK, NAMED_WRONG_MARK, NAMED_SUFFIX = "✔", "✘", "◀ answered"


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Option:
    """One option line: its letter and text, whether it is the right one, whether the answer named it."""

    letter: str
    text: str
    right: bool = False
    named: bool = False

    @property
    def mark(self) -> str:
        """✔ on the right option; ✘ on a wrongly named one; nothing otherwise."""
        return RIGHT_MARK if self.right else (NAMED_WRONG_MARK if self.named else "")

    @property
    def suffix(self) -> str:
        return NAMED_SUFFIX if self.named else ""

    @property
    def role(self) -> str:
        return "right" if self.right else ("wrong" if self.named else "text")

    @property
    def line(self) -> str:
        """The line as both renderers show it (the figure pads unmarked lines to align them)."""
        return " ".join(p for p in (self.mark, f"({self.letter}) {self.text}", self.suffix) if p)


@dataclass(frozen=True)
class Segment:
    """A run of text with one role; `banned` words inside it are marked (role "banned"); `hint` is a
    tooltip in HTML. A "\\n" in the text breaks the line."""

    text: str
    role: str = "text"
    banned: tuple[str, ...] = ()
    hint: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; roles: {', '.join(ROLES)}")


@dataclass(frozen=True)
class Section:
    """A paragraph of the card: segments that flow together (the simple thought, the cue and the
    added thought read as one text), under a small heading. `depth` 1 nests it under the section
    before (a long expansion under its simple CoT); `tone` colours its border (O, X, chosen,
    rejected); `pre` keeps the text's line breaks and spaces (prompts, raw outputs)."""

    segments: tuple[Segment, ...]
    heading: tuple[Segment, ...] = ()
    depth: int = 0
    tone: str = ""
    dropped: bool = False
    pre: bool = False


@dataclass(frozen=True)
class MCQCard:
    """An image, a header line, a question with its options, an optional note, and sections."""

    image_path: str | None
    header: tuple[Segment, ...] = ()
    question: str = ""
    options: tuple[Option, ...] = ()
    note: str = ""
    sections: tuple[Section, ...] = field(default_factory=tuple)

    @property
    def right_letter(self) -> str | None:
        return next((o.letter for o in self.options if o.right), None)

    @property
    def named_letter(self) -> str | None:
        return next((o.letter for o in self.options if o.named), None)


# ----------------------------------------------------------------------------- builders


def _text(value: Any) -> str:
    """A cell as text: "" for None and NaN."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def letters(n: int) -> list[str]:
    return [chr(65 + i) for i in range(n)]


def options(mcq: Mapping[str, Any], named: str | None = None) -> tuple[Option, ...]:
    """The options of an MCQ row: the right one is `right_letter` (what a benchmark item was scored
    against) or else `answer_letter` (a stage-1 MCQ; "" when invalid: none is right)."""
    right = _text(mcq.get("right_letter")) or _text(mcq.get("answer_letter"))
    return tuple(Option(letter, _text(text), right=letter == right, named=bool(named) and letter == named)
                 for letter, text in zip(letters(len(mcq["choices"])), mcq["choices"]))


def header(*parts: str | Segment) -> tuple[Segment, ...]:
    """A header line: plain strings in grey, segments as they are, joined by " · "."""
    out: list[Segment] = []
    for p in parts:
        if not p or (isinstance(p, Segment) and not p.text):
            continue
        if out:
            out.append(Segment(" · ", "meta"))
        out.append(p if isinstance(p, Segment) else Segment(str(p), "meta"))
    return tuple(out)


def drop(reason: str) -> Segment | str:
    return Segment(f"dropped: {reason}", "drop") if reason else ""


def card(mcq: Mapping[str, Any], *, named: str | None = None, title: str | None = None,
         header_parts: Sequence[str | Segment] = (), note: str = "",
         sections: Iterable[Section] = ()) -> MCQCard:
    """The one builder from an MCQ row: its image, question and options (the right one flagged, and
    the option `named` by an answer), a header (the MCQ id, or `title`, then `header_parts`), a note and
    the given sections."""
    return MCQCard(image_path=_text(mcq.get("image_path")) or None,
                   header=header(title if title is not None else _text(mcq.get("mcq_id")), *header_parts),
                   question=_text(mcq.get("question")), options=options(mcq, named or None), note=note,
                   sections=tuple(sections))


def answer_line(answer: Any, label: str, lead: str = "answer: ") -> tuple[Segment, ...]:
    """"answer: <answer>  <label>", the label (O, X, X→O, …) in its verdict's colours."""
    return (Segment(lead), Segment(_text(answer) or "—", "answer"), Segment("  "),
            Segment(label or "unparsable", "label" if label else "meta"))


def simple_section(cot: Mapping[str, Any], *, heading: bool = True) -> Section:
    """A simple CoT (stage 2): its thought, its answer and O/X."""
    drop_reason = _text(cot.get("drop_reason"))
    tokens = f"{int(cot['num_tokens'])} tokens" if cot.get("num_tokens") is not None else ""
    return Section(
        segments=(Segment(_text(cot.get("thought")) or _text(cot.get("raw_text")), "text"), Segment("\n"),
                  *answer_line(cot.get("answer"), _text(cot.get("label")))),
        heading=header(_text(cot.get("response_id")), tokens, drop(drop_reason)) if heading else (),
        tone=_text(cot.get("label")), dropped=bool(drop_reason))


def long_section(row: Mapping[str, Any], *, with_simple: bool = True, depth: int = 0,
                 heading: bool = True) -> Section:
    """A long CoT (stage 3): the simple thought (or, under its simple CoT, only a mark of the
    separator), the cue, the added thought (banned words marked), the answer and the transition."""
    hits = tuple(str(h) for h in (row.get("banned_hits") if row.get("banned_hits") is not None else []))
    newline = row.get("separator") == "\n"
    lead = ((Segment(_text(row.get("simple_thought"))), Segment("\n" if newline else " "))
            if with_simple else (Segment("↵ " if newline else "… "),))
    drop_reason = _text(row.get("drop_reason"))
    return Section(
        segments=(*lead, Segment(_text(row.get("cue")), "cue"), Segment(" "),
                  Segment(_text(row.get("added_thought")), "added", banned=hits), Segment("\n"),
                  *answer_line(row.get("answer"), _text(row.get("transition")))),
        heading=header(_text(row.get("long_id")), drop(drop_reason),
                       Segment(f"banned: {', '.join(hits)}", "hits") if hits else "") if heading else (),
        depth=depth, tone=_text(row.get("transition"))[-1:], dropped=bool(drop_reason))


def caption_card(record: Any, max_chars: int = 900) -> MCQCard:
    """A caption record (a `captions.CaptionRecord`, or a row with `image_id`, `image_path`,
    `description`): the image and the start of its description; no question yet."""
    get = record.get if isinstance(record, Mapping) else lambda k: getattr(record, k, None)
    text = _text(get("description"))
    text = text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + " …"
    return MCQCard(image_path=_text(get("image_path")) or None, header=header(_text(get("image_id"))),
                   sections=(Section((Segment(text),)),))


def mcq_only_card(mcq: Mapping[str, Any]) -> MCQCard:
    """A stage-1 MCQ: its reasoning type and surface forms; an invalid one with its reason."""
    invalid = "" if mcq.get("is_valid", True) else f"invalid MCQ: {_text(mcq.get('invalid_reason')) or '?'}"
    return card(mcq, header_parts=(_text(mcq.get("question_type")),
                                   f"forms {_text(mcq.get('choice_form'))} / {_text(mcq.get('answer_form'))}",
                                   drop(invalid)),
                note=f"the writer's answer: {_text(mcq.get('answer'))}" if invalid else "")


def simple_cot_card(cot: Mapping[str, Any], mcq: Mapping[str, Any]) -> MCQCard:
    """A simple CoT beside its MCQ, the option its answer named flagged."""
    return card(mcq, named=_text(cot.get("named_letter")), title=_text(cot.get("response_id")),
                header_parts=(_text(mcq.get("question_type")),), sections=(simple_section(cot, heading=False),))


def long_cot_card(row: Mapping[str, Any], mcq: Mapping[str, Any]) -> MCQCard:
    """A long CoT beside its MCQ: the simple thought, the cue, the added thought, the answer."""
    drop_reason = _text(row.get("drop_reason"))
    return card(mcq, named=_text(row.get("named_letter")), title=_text(row.get("long_id")),
                header_parts=(_text(mcq.get("question_type")), drop(drop_reason)),
                sections=(long_section(row, heading=False),))


def inspector_card(mcq: Mapping[str, Any], simples: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]],
                   note: str = "") -> MCQCard:
    """One MCQ with each of its simple CoTs and, under each, its long expansions: `simples` is a list
    of (stage-2 row, [stage-3 rows])."""
    invalid = "" if mcq.get("is_valid", True) else f"invalid MCQ: {_text(mcq.get('invalid_reason')) or '?'}"
    if invalid:  # no option is marked right: say what the writer gave as the answer
        note = f"the writer's answer: {_text(mcq.get('answer'))}" + (f"; {note}" if note else "")
    sections = []
    for cot, longs in simples:
        sections.append(simple_section(cot))
        sections += [long_section(r, with_simple=False, depth=1) for r in longs]
    return card(mcq, header_parts=(_text(mcq.get("question_type")), drop(invalid)), note=note, sections=sections)


def prediction_card(pred: Mapping[str, Any], max_chars: int = 600) -> MCQCard:
    """A benchmark prediction (stage 7): the item, the model's output (its start) and what each
    answer rule extracted, with its verdict; the option the strict rule read flagged."""
    out = " ".join(_text(pred.get("raw_output")).split())
    out = out if len(out) <= max_chars else out[:max_chars] + " …"
    answered = bool(pred.get("answered"))
    strict = "unanswered" if not answered else ("right" if pred.get("correct") else "wrong")
    lines = [Segment(f"{pred['model']} / {pred['prompt']}: ", "meta"), Segment(out), Segment("\n"),
             Segment("strict:   extracted "),
             Segment(repr(_text(pred.get("extracted"))) if answered else "(none)", "answer"),
             Segment("  → "), Segment(strict, strict if answered else "meta")]
    if "correct_released" in pred:
        rel = "right" if pred["correct_released"] else "wrong"
        extracted = _text(pred.get("extracted_released"))
        lines += [Segment("\n"), Segment("released: extracted "),
                  Segment(repr(extracted[:40] + ("…" if len(extracted) > 40 else "")), "answer"),
                  Segment("  → "), Segment(rel, rel)]
    return card(pred, named=_text(pred.get("named_letter")) if answered else None,
                title=f"{pred['benchmark']} {pred['item_id']}", header_parts=(_text(pred.get("category")),),
                sections=(Section(tuple(lines)),))


def sft_card(row: Mapping[str, Any]) -> MCQCard:
    """An SFT row (stage 4): the user turn as the student sees it, then the assistant turn, its
    loss-masked prefix (an X→O row's wrong simple thought) shown as masked."""
    prefix, rest = _text(row.get("assistant_prefix")), _text(row["assistant"])
    if prefix and rest.startswith(prefix):
        rest = rest[len(prefix):]
    assistant = ((Segment(prefix, "masked", hint="no loss on these tokens"),) if prefix else ()) + (Segment(rest),)
    return MCQCard(image_path=_text(row.get("image_path")) or None,
                   header=header(_text(row.get("id")), f"source {_text(row.get('source'))}",
                                 "grey = loss-masked prefix" if prefix else ""),
                   sections=(Section((Segment(_text(row["user"])),), pre=True),
                             Section(assistant, heading=header("assistant"), pre=True)))


def dpo_card(row: Mapping[str, Any]) -> MCQCard:
    """A DPO pair (stage 4): the user turn, then the chosen and the rejected assistant turns."""
    return MCQCard(image_path=_text(row.get("image_path")) or None,
                   header=header(_text(row.get("id")), f"rule {_text(row.get('pair_type'))}"),
                   sections=(Section((Segment(_text(row["user"])),), pre=True),
                             Section((Segment(_text(row["chosen"])),), heading=(Segment("chosen", "chosen"),),
                                     tone="chosen", pre=True),
                             Section((Segment(_text(row["rejected"])),), heading=(Segment("rejected", "rejected"),),
                                     tone="rejected", pre=True)))


# ----------------------------------------------------------------------------- banned words


def banned_spans(text: str, words: Iterable[str]) -> list[tuple[str, bool]]:
    """`text` cut into (piece, is a banned word) pieces: whole-word, case-insensitive occurrences."""
    words = [w for w in words if w]
    if not words:
        return [(text, False)] if text else []
    pattern = re.compile(r"(?<![A-Za-z0-9'])(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
                         + r")(?![A-Za-z0-9])", re.IGNORECASE)
    out, at = [], 0
    for m in pattern.finditer(text):
        if m.start() > at:
            out.append((text[at:m.start()], False))
        out.append((m.group(0), True))
        at = m.end()
    if at < len(text):
        out.append((text[at:], False))
    return out


# ----------------------------------------------------------------------------- HTML


def _css_rule(role: str, s: Style) -> str:
    decl = [f"color:{s.colour}"] if s.colour != ROLES["text"].colour else []
    if s.background:
        decl.append(f"background:{s.background}")
    if s.css:
        decl.append(s.css)
    if s.bold:
        decl.append("font-weight:600")
    if s.underline:
        decl.append("text-decoration:underline")
    if s.small:
        decl.append("font-size:11px")
    if s.background:
        decl.append("padding:0 1px")
    return f".lpt-card .{role}{{{';'.join(decl)}}}"


CSS = "<style>\n" + "\n".join([
    (".lpt-card{display:flex;gap:12px;border:1px solid #ddd;border-radius:6px;padding:8px;margin:6px 0;"
     "font-family:system-ui,sans-serif;font-size:13px;line-height:1.35}"),
    ".lpt-card img{width:160px;height:160px;object-fit:contain;flex:none}",
    ".lpt-card .body{flex:1;min-width:0}",
    ".lpt-card .options{margin:2px 0 4px}",
    ".lpt-card .sec{border-left:3px solid #bbb;padding:2px 0 2px 8px;margin:8px 0 4px}",
    ".lpt-card .sec.sub{border-left:2px dashed #bbb;margin:6px 0 2px 20px}",
    ".lpt-card .sec.pre{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px}",
    ".lpt-card .dropped{opacity:.7}",
    ".lpt-card .tag{display:inline-block;border-radius:3px;padding:0 4px;color:#fff;font-size:12px}",
    (".lpt-card .noimg{width:160px;height:160px;flex:none;border:1px dashed #ccc;color:#999;font-size:11px;"
     "display:flex;align-items:center;justify-content:center;text-align:center;overflow:hidden}"),
    ".lpt-page{font-family:system-ui,sans-serif;font-size:13px;max-width:1100px;margin:12px auto;padding:0 12px}",
    ".lpt-page h1{font-size:18px;margin:4px 0}.lpt-page h2{font-size:15px;margin:16px 0 4px}",
    ".lpt-page .note{color:#555;font-size:12px;margin:2px 0}",
    *(f".lpt-card .sec.is-{t}{{border-color:{c}}}" for t, c in TONES.items()),
    *(f".lpt-card .tag.{t}{{background:{c}}}" for t, c in LABEL_COLOURS.items()),
    *(_css_rule(r, s) for r, s in ROLES.items() if r != "text"),
]) + "\n</style>\n"


def image_data_url(path: str, size: int = 256) -> str:
    """The image, shrunk to at most `size` px, as a JPEG data URL (a page that needs no files and stays
    small with photographs: a 256 px DOCCI photo is a few kB as JPEG, ~100 kB as PNG)."""
    im = load_image(path, max_pixels=4 * size * size)
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def image_tag(path: str | None, size: int = 256) -> str:
    """`<img>` with the image inlined, or a placeholder naming the file when it cannot be read."""
    try:
        if not path:
            raise FileNotFoundError("no image")
        return f'<img src="{image_data_url(path, size)}" alt="{_html.escape(str(path))}">'
    except (OSError, ValueError):
        return f'<div class="noimg">image not found<br>{_html.escape(str(path or ""))}</div>'


def _label_html(label: str) -> str:
    return "".join(f'<span class="tag {c}">{c}</span>' if c in LABEL_COLOURS else _html.escape(f" {c} ")
                   for c in label)


def _segment_html(seg: Segment, pre: bool) -> str:
    if seg.role == "label":
        return _label_html(seg.text)
    body = "".join(f'<span class="banned">{_html.escape(p)}</span>' if hit else _html.escape(p)
                   for p, hit in banned_spans(seg.text, seg.banned))
    if not pre:
        body = body.replace("\n", "<br>")
    if seg.role == "text":
        return body
    hint = f' title="{_html.escape(seg.hint)}"' if seg.hint else ""
    return f'<span class="{seg.role}"{hint}>{body}</span>'


def _segments_html(segments: Iterable[Segment], pre: bool = False) -> str:
    return "".join(_segment_html(s, pre) for s in segments)


def option_html(opt: Option) -> str:
    text = _html.escape(opt.line)
    if opt.right:
        return f'<span class="right" title="the right option">{text}</span>'
    if opt.named:
        return f'<span class="wrong" title="the option the answer named">{text}</span>'
    return text


def _section_html(sec: Section) -> str:
    cls = " ".join(c for c in ("sec", "sub" if sec.depth else "", f"is-{sec.tone}" if sec.tone else "",
                                "dropped" if sec.dropped else "", "pre" if sec.pre else "") if c)
    head = f'<div class="meta">{_segments_html(sec.heading)}</div>' if sec.heading else ""
    return f'<div class="{cls}">{head}{_segments_html(sec.segments, sec.pre)}'


def html(c: MCQCard) -> str:
    """One card as HTML (needs `CSS` once on the page: `html_cards` adds it)."""
    parts = [f'<div class="lpt-card">{image_tag(c.image_path)}<div class="body">']
    if c.header:
        parts.append(f'<div class="meta">{_segments_html(c.header)}</div>')
    if c.question:
        parts.append(f'<b class="question">{_html.escape(c.question)}</b>')
    if c.options:
        parts.append('<div class="options">' + "<br>".join(option_html(o) for o in c.options) + "</div>")
    if c.note:
        parts.append(f'<div class="note">{_html.escape(c.note)}</div>')
    open_top = False  # a depth-0 section stays open so that the depth-1 ones after it nest inside
    for sec in c.sections:
        if sec.depth == 0 and open_top:
            parts.append("</div>")
            open_top = False
        parts.append(_section_html(sec))
        if sec.depth == 0:
            open_top = True
        else:
            parts.append("</div>")
    if open_top:
        parts.append("</div>")
    parts.append("</div></div>")
    return "".join(parts)


def html_cards(cards: Iterable[MCQCard]) -> str:
    """Several cards with the stylesheet, ready for `IPython.display.HTML` or a page."""
    return CSS + "".join(html(c) for c in cards)


def show(cards: Iterable[MCQCard]) -> None:
    """Display cards in a notebook (as HTML: they show in an executed copy without a kernel)."""
    from IPython.display import HTML, display

    cards = list(cards)
    if not cards:
        print("(nothing to show)")
        return
    display(HTML(html_cards(cards)))


def html_page(title: str, body: str, subtitle: str = "") -> str:
    """A whole, self-contained page: every style inline, no scripts, images as data URLs."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_html.escape(title)}</title>{CSS}</head>"
            f'<body><div class="lpt-page"><h1>{_html.escape(title)}</h1>'
            + (f'<p class="note">{_html.escape(subtitle)}</p>' if subtitle else "")
            + body + "</div></body></html>\n")


# ----------------------------------------------------------------------------- text layout (figures)

Run = tuple[str, str]  # (text, role)


def wrap(segments: Iterable[Segment], width: int, indent: int = 0) -> list[list[Run]]:
    """Lay segments out in lines of at most `width` characters (breaking at spaces, a word longer
    than a line cut), keeping each run's role; banned words become runs of role "banned"; "\\n"
    breaks the line. Lines that wrap go on `indent` characters in."""
    if not 0 <= indent < width:
        raise ValueError(f"indent {indent} does not fit in width {width}")
    lines: list[list[Run]] = [[]]
    col = start = 0  # the column now; where the current line's text starts

    def put(text: str, role: str) -> None:
        nonlocal col
        line = lines[-1]
        if line and line[-1][1] == role:
            line[-1] = (line[-1][0] + text, role)
        else:
            line.append((text, role))
        col += len(text)

    def end_line() -> None:
        while lines[-1] and not lines[-1][-1][0].rstrip(" "):
            lines[-1].pop()
        if lines[-1]:
            text, role = lines[-1][-1]
            lines[-1][-1] = (text.rstrip(" "), role)

    def newline(hanging: bool) -> None:
        nonlocal col, start
        end_line()
        lines.append([])
        col = start = 0
        if hanging and indent:
            put(" " * indent, "text")
            start = indent

    for seg in segments:
        for piece, hit in banned_spans(seg.text, seg.banned):
            role = "banned" if hit else seg.role
            for k, chunk in enumerate(piece.split("\n")):
                if k:
                    newline(False)
                for word in re.findall(r"\S+\s*|\s+", chunk):
                    bare, space = word.rstrip(), word[len(word.rstrip()):]
                    if bare and col > start and col + len(bare) > width:
                        newline(True)
                    while bare and len(bare) > width - col:  # longer than a whole line: cut it
                        room = width - col
                        put(bare[:room], role)
                        bare = bare[room:]
                        newline(True)
                    put(bare + space, role)
    end_line()
    return lines


def _clip(lines: list[list[Run]], max_lines: int | None) -> list[list[Run]]:
    if max_lines is None or len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    kept[-1] = kept[-1] + [(" …", "meta")]
    return kept


@dataclass
class _Row:
    runs: list[Run]
    indent: int = 0  # characters
    bar: str | None = None  # a section's border colour, drawn left of its lines


def layout(c: MCQCard, width: int = 76, max_lines: int | None = 12) -> list[_Row]:
    """The card's text as rows of styled runs, at most `width` characters wide (the option marks in a
    two-character gutter, nested sections indented); each section at most `max_lines` lines."""
    rows: list[_Row] = []
    if c.header:
        rows += [_Row(r) for r in wrap(c.header, width)]
    if c.question:
        rows += [_Row(r) for r in wrap([Segment(c.question, "question")], width)]
    for o in c.options:
        body = wrap([Segment(f"({o.letter}) {o.text}" + (f" {o.suffix}" if o.suffix else ""), o.role)],
                    width - 2, indent=4)
        rows.append(_Row([(o.mark or " ", o.role), (" ", "text")] + body[0]))
        rows += [_Row([("  ", "text")] + r) for r in body[1:]]
    if c.note:
        rows += [_Row(r) for r in wrap([Segment(c.note, "note")], width)]
    for sec in c.sections:
        inset = 2 + 3 * sec.depth  # room for the border bar
        bar = TONES.get(sec.tone, "#bbbbbb")
        rows.append(_Row([]))
        if sec.heading:
            rows += [_Row(r, inset, bar) for r in wrap(sec.heading, width - inset)]
        rows += [_Row(r, inset, bar) for r in _clip(wrap(sec.segments, width - inset), max_lines)]
    return rows


# ----------------------------------------------------------------------------- matplotlib

FONT_SIZE = 8.0  # points
CHAR_WIDTH = 0.602  # DejaVu Sans Mono's advance, in ems
LINE_HEIGHT = 1.45  # in ems
IMAGE_INCHES = 2.0


def _draw_image(ax, path: str | None) -> None:
    ax.set_axis_off()
    try:
        if not path:
            raise FileNotFoundError("no image")
        ax.imshow(load_image(path, max_pixels=512 * 512))
    except (OSError, ValueError):
        ax.text(0.5, 0.5, f"image not found\n{path or ''}", ha="center", va="center", fontsize=7,
                color="#999999", wrap=True, transform=ax.transAxes)


def _draw_text(fig, ax, rows: list[_Row], font_size: float) -> None:
    """Each row's runs one after the other: the first at the row's indent, each next one placed at the
    right edge of the one before as drawn (so the font's hinting at the output's dpi cannot open gaps
    or overlaps between runs); rows at fixed baselines. Runs carry gid "row<i>" (tests read them)."""
    from matplotlib.transforms import offset_copy

    cw, lh = CHAR_WIDTH * font_size, LINE_HEIGHT * font_size
    ax.set_axis_off()
    font = {"fontsize": font_size, "family": "monospace", "va": "baseline", "ha": "left", "annotation_clip": False}
    for i, row in enumerate(rows):
        y = -(i * lh + font_size)  # the row's baseline, in points below the top
        baseline = offset_copy(ax.transAxes, fig=fig, y=y, units="points")
        if row.bar:
            ax.annotate("│", xy=(0, 1), xycoords=offset_copy(ax.transAxes, fig=fig, x=(row.indent - 1.3) * cw, y=y,
                                                               units="points"),
                        color=row.bar, gid="bar", **font)
        prev = None
        for text, role in row.runs:
            if not text:
                continue
            s = ROLES[role]
            chars = list(text) if role == "label" else [text]  # a label: each letter in its verdict's colour
            for piece in chars:
                where = ((prev, baseline) if prev is not None
                         else offset_copy(ax.transAxes, fig=fig, x=row.indent * cw, y=y, units="points"))
                box = ({"boxstyle": "square,pad=0.08", "facecolor": s.background, "edgecolor": "none"}
                       if s.background and piece.strip() else None)
                colour = LABEL_COLOURS.get(piece, s.colour) if role == "label" else s.colour
                art = ax.annotate(piece, xy=(1, 1) if prev is not None else (0, 1), xycoords=where, color=colour,
                                  weight="bold" if s.bold else "normal", bbox=box, gid=f"row{i}", **font)
                if s.underline and piece.strip():
                    ax.annotate("_" * len(piece.rstrip()), xy=(1, 1) if prev is not None else (0, 1),
                                xycoords=where, color=colour, gid="underline", **font)
                prev = art


def figure(cards: Sequence[MCQCard], width: int = 76, max_lines: int | None = 12,
           font_size: float = FONT_SIZE, title: str | None = None):
    """Cards stacked in one matplotlib figure: image left, text right, wrapped at `width` characters
    (each section at most `max_lines` lines); the figure is as tall as its text needs. None (and a
    message) when there is nothing to draw."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    cards = list(cards)
    if not cards:
        print("(nothing to show)")
        return None
    layouts = [layout(c, width, max_lines) for c in cards]
    lh_in = LINE_HEIGHT * font_size / 72
    text_w = width * CHAR_WIDTH * font_size / 72 * 1.06 + 0.1  # hinting may widen a glyph
    pad, gap, top = 0.15, 0.25, (0.35 if title else 0.0)
    heights = [max(IMAGE_INCHES, (len(rows) + 0.5) * lh_in) + 2 * pad for rows in layouts]
    fig_w, fig_h = pad + IMAGE_INCHES + gap + text_w + pad, sum(heights) + top
    fig = plt.figure(figsize=(fig_w, fig_h))
    if title:
        fig.suptitle(title, x=pad / fig_w, y=1 - 0.08 / fig_h, ha="left", va="top", fontsize=10, weight="bold")
    y_top = fig_h - top
    for k, (c, rows, h) in enumerate(zip(cards, layouts, heights)):
        bottom = y_top - h
        ax_img = fig.add_axes((pad / fig_w, (y_top - pad - IMAGE_INCHES) / fig_h, IMAGE_INCHES / fig_w,
                               IMAGE_INCHES / fig_h))
        _draw_image(ax_img, c.image_path)
        ax_txt = fig.add_axes(((pad + IMAGE_INCHES + gap) / fig_w, (bottom + pad) / fig_h, text_w / fig_w,
                               (h - 2 * pad) / fig_h))
        _draw_text(fig, ax_txt, rows, font_size)
        if k:
            fig.add_artist(Line2D([pad / fig_w, 1 - pad / fig_w], [y_top / fig_h] * 2, color="#dddddd", lw=0.8))
        y_top = bottom
    return fig
