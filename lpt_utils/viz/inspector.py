"""The CoT inspector: look at what the pipeline wrote before training on it.

    from lpt_utils.viz import inspector
    inspector.inspect(R)                 # R = config.resolve_run(...), or "outputs/<run>", or a run name

opens, over a run's artifacts (whichever of stages 01–04 exist):
- a list of MCQs narrowed by filters (question type; the simple CoT's O/X; the transition O→O, O→X,
  X→O, X→X; the cue; kept, or dropped and why) and stepped through one at a time, each shown with its
  image, question, options (the right one marked), every simple CoT and, under each, its long
  expansions (cue and added thought highlighted, banned-word hits underlined and listed);
- the SFT rows (the loss-masked prefix of an X→O row greyed out) and the DPO pairs (chosen beside
  rejected, with the rule that made the pair) of the selected MCQs, stepped through one at a time;
- an export of the current selection to one self-contained HTML page (`export_html`).

Filters work on *traces*: one row per (MCQ, simple CoT, long CoT) chain, a chain stopping where the
pipeline stopped it. An MCQ matches when one of its traces passes every filter, and by default only the
matching CoTs of an MCQ are shown. A trace is "kept" when it survived every stage it reached; otherwise
it is "dropped" at the first stage that dropped it, with that stage's reason.

Everything here is plain functions over a `RunView` (the loaded artifacts) and a `Selection` (filters
and positions); `Inspector` is a thin ipywidgets layer on top, and its tests drive its widgets directly.

Where no kernel runs (a papermill-executed copy opened later, a notebook rendered to HTML) a widget
cannot draw. So displaying an `Inspector` shows the live widget *and*, under it, a collapsed static
snapshot of its first page (the first matching MCQ, SFT row and DPO pair), which any renderer shows
without a kernel. `inspect(..., static=True)` shows only the snapshot (open), `static=False` only the
widget. For more than one page, export: the widget's "export HTML" button, or `export_html`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from lpt_utils import artifacts, config, stages
from lpt_utils.records import DPO_COLUMNS, SFT_COLUMNS, LongCoT, SimpleCoT
from lpt_utils.viz import mcq_card

SFT_SETS = ("sft_simple", "sft_long")
DPO_SETS = ("dpo_O", "dpo_XO")
ANY = "(any)"  # the dropdown entry that turns a filter off
DROPPED = "dropped"  # status filter: dropped at any stage, for any reason
KEPT = "kept"


# ----------------------------------------------------------------------------- the run's artifacts


@dataclass
class RunView:
    """Everything the inspector shows of one run; stages not written yet are empty frames."""

    name: str
    run_dir: Path
    stages: dict[str, bool]  # stage folder -> written (has a manifest)
    mcqs: pd.DataFrame  # stage 1, valid and invalid
    simple: pd.DataFrame  # stage 2, every response
    long: pd.DataFrame  # stage 3, every continuation
    sft: dict[str, pd.DataFrame] = field(default_factory=dict)  # stage 4 SFT sets that exist
    dpo: dict[str, pd.DataFrame] = field(default_factory=dict)  # stage 4 DPO sets that exist
    traces: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per MCQ → simple → long chain


def _stage_dirs(run_or_dir: config.Run | str | Path) -> tuple[str, Path, dict[str, Path]]:
    """(run name, run folder, stage key -> folder) for a `Run`, a run folder, or a run name under
    the default `outputs/`."""
    if isinstance(run_or_dir, config.Run):
        r = run_or_dir
        return r.name, r.run_dir, {k: r.stage_dir(k) for k in stages.FOLDERS}
    p = Path(run_or_dir)
    if not p.is_dir() and isinstance(run_or_dir, str) and "/" not in run_or_dir:
        p = config.REPO_ROOT / "outputs" / run_or_dir
    if not p.is_dir():
        raise FileNotFoundError(f"{run_or_dir!s}: no such run folder (pass a Run, outputs/<run>, or a run name)")
    p = p.resolve()
    return p.name, p, {k: p / folder for k, folder in stages.FOLDERS.items()}


def _written(stage_dir: Path) -> bool:
    return (stage_dir / artifacts.MANIFEST_FILE).exists()


def _empty(record_type) -> pd.DataFrame:
    return pd.DataFrame(columns=[f.name for f in fields(record_type)])


def _training_sets(stage_dir: Path, names: tuple[str, ...], columns: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    out = {}
    for name in names:
        p = stage_dir / f"{name}.parquet"
        if p.exists():
            out[name] = artifacts.read_rows(p, columns=list(columns))
    return out


def load_view(run_or_dir: config.Run | str | Path) -> RunView:
    """Load whichever stages of a run exist (stage 1 at least) into one `RunView`."""
    name, run_dir, dirs = _stage_dirs(run_or_dir)
    stages = {dirs[k].name: _written(dirs[k]) for k in ("mcq", "simple_cot", "long_cot", "training_data")}
    if not stages[dirs["mcq"].name]:
        raise FileNotFoundError(f"{dirs['mcq']} has no manifest: run notebook 01 for run {name!r} first")
    mcqs = artifacts.load_stage(dirs["mcq"])
    simple = artifacts.load_stage(dirs["simple_cot"]) if stages[dirs["simple_cot"].name] else _empty(SimpleCoT)
    long = artifacts.load_stage(dirs["long_cot"]) if stages[dirs["long_cot"].name] else _empty(LongCoT)
    sft, dpo = {}, {}
    if stages[dirs["training_data"].name]:
        sft = _training_sets(dirs["training_data"], SFT_SETS, SFT_COLUMNS)
        dpo = _training_sets(dirs["training_data"], DPO_SETS, DPO_COLUMNS)
    return RunView(name=name, run_dir=run_dir, stages=stages, mcqs=mcqs, simple=simple, long=long,
                   sft=sft, dpo=dpo, traces=trace_table(mcqs, simple, long))


def _status(valid: bool, invalid_reason: str, simple_drop: str, long_drop: str) -> str:
    """"kept", or "dropped · <stage>: <reason>" for the first stage that dropped the trace."""
    if not valid:
        return f"{DROPPED} · MCQ: {invalid_reason or 'invalid'}"
    if simple_drop:
        return f"{DROPPED} · simple CoT: {simple_drop}"
    if long_drop:
        return f"{DROPPED} · long CoT: {long_drop}"
    return KEPT


def trace_table(mcqs: pd.DataFrame, simple: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """One row per chain MCQ → simple CoT → long CoT (shorter where a stage has no row for it), in
    the order of stage 1, with what the filters look at."""
    m = mcqs[["mcq_id", "question_type", "is_valid", "invalid_reason"]]
    s = simple[["mcq_id", "response_id", "label", "drop_reason"]].rename(columns={"drop_reason": "simple_drop"})
    lo = long[["simple_id", "long_id", "cue", "transition", "drop_reason"]].rename(
        columns={"drop_reason": "long_drop", "simple_id": "response_id"})
    t = m.merge(s, on="mcq_id", how="left").merge(lo, on="response_id", how="left")
    text = ["invalid_reason", "response_id", "label", "simple_drop", "long_id", "cue", "transition", "long_drop"]
    t[text] = t[text].astype(object).where(t[text].notna(), "").astype(str)
    t["status"] = [_status(bool(v), ir, sd, ld) for v, ir, sd, ld in
                   zip(t.is_valid, t.invalid_reason, t.simple_drop, t.long_drop)]
    return t.reset_index(drop=True)


# ----------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    """Which traces to look at; None turns a filter off."""

    question_type: str | None = None
    label: str | None = None  # the simple CoT's "O" or "X"
    transition: str | None = None  # "O→O" | "O→X" | "X→O" | "X→X"
    cue: str | None = None
    status: str | None = None  # "kept", "dropped" (any reason), or one "dropped · <stage>: <reason>"

    def active(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def describe(self) -> str:
        names = {"question_type": "type", "label": "O/X", "transition": "transition", "cue": "cue",
                 "status": "status"}
        on = self.active()
        return " · ".join(f"{names[k]}: {v}" for k, v in on.items()) if on else "no filters"


TRACE_COLUMNS = ("question_type", "label", "transition", "cue")  # filters that match a trace column


def filter_options(view: RunView) -> dict[str, list[str]]:
    """The values each filter can take in this run (statuses: kept, dropped, then each reason)."""
    t = view.traces
    opts = {col: sorted(v for v in t[col].unique() if v) for col in TRACE_COLUMNS}
    reasons = sorted(s for s in t.status.unique() if s != KEPT)
    opts["status"] = [KEPT] + ([DROPPED] + reasons if reasons else [])
    return opts


def trace_mask(traces: pd.DataFrame, filters: Filters) -> pd.Series:
    """Which traces pass every filter that is on."""
    mask = pd.Series(True, index=traces.index)
    for key, value in filters.active().items():
        if key == "status":
            col = traces["status"]
            mask &= (col != KEPT) if value == DROPPED else (col == value)
        else:
            mask &= traces[key] == value
    return mask


def matching_mcqs(view: RunView, filters: Filters) -> list[str]:
    """Ids of the MCQs with at least one trace that passes the filters, in stage-1 order."""
    return list(pd.unique(view.traces.loc[trace_mask(view.traces, filters), "mcq_id"]))


# ----------------------------------------------------------------------------- one MCQ, grouped


@dataclass
class SimpleGroup:
    """A simple CoT (stage-2 row) and its long expansions (stage-3 rows)."""

    simple: dict[str, Any]
    expansions: list[dict[str, Any]]


@dataclass
class MCQGroup:
    mcq: dict[str, Any]
    simples: list[SimpleGroup]
    hidden: int = 0  # CoTs of this MCQ (simple and long) not shown because they do not match


def group_mcq(view: RunView, mcq_id: str, filters: Filters = Filters(), only_matching: bool = True) -> MCQGroup:
    """One MCQ with its simple CoTs, each with its long expansions; with `only_matching`, only the
    CoTs on traces that pass the filters."""
    mcq = view.mcqs[view.mcqs.mcq_id == mcq_id].iloc[0].to_dict()
    traces = view.traces[view.traces.mcq_id == mcq_id]
    shown = traces[trace_mask(traces, filters)] if only_matching else traces
    simple_ids, long_ids = set(shown.response_id) - {""}, set(shown.long_id) - {""}
    simple = view.simple[view.simple.mcq_id == mcq_id]
    long = view.long[view.long.mcq_id == mcq_id]
    groups = [SimpleGroup(s, [r for r in long[long.simple_id == s["response_id"]].to_dict("records")
                              if r["long_id"] in long_ids])
              for s in simple.to_dict("records") if s["response_id"] in simple_ids]
    hidden = len(simple) + len(long) - len(simple_ids) - len(long_ids)
    return MCQGroup(mcq=mcq, simples=groups, hidden=hidden)


def mcq_group_html(group: MCQGroup) -> str:
    note = (f"{group.hidden} CoTs of this MCQ do not match the filters and are not shown"
            if group.hidden else "")
    if not group.simples and group.mcq.get("is_valid", True):
        note = (note + "; " if note else "") + "no simple CoTs for this MCQ in this run"
    return mcq_card.html(mcq_card.inspector_card(group.mcq, [(g.simple, g.expansions) for g in group.simples], note))


# ----------------------------------------------------------------------------- SFT rows, DPO pairs


def training_rows(sets: dict[str, pd.DataFrame], name: str | None, mcq_ids: list[str] | None = None,
                  kind_column: str = "source", kind: str | None = None) -> pd.DataFrame:
    """The rows of one SFT or DPO set, of the given MCQs (all when None) and kind (SFT `source`,
    DPO `pair_type`; all when None)."""
    if name not in sets:
        return pd.DataFrame()
    df = sets[name]
    if mcq_ids is not None:
        df = df[df.mcq_id.isin(set(mcq_ids))]
    if kind is not None:
        df = df[df[kind_column] == kind]
    return df.reset_index(drop=True)


def clamp(index: int, n: int) -> int:
    """A position in a list of n items (0 when the list is empty)."""
    return max(0, min(index, n - 1)) if n else 0


# ----------------------------------------------------------------------------- the selection


@dataclass
class Selection:
    """What the inspector shows: filters, positions in the MCQ list and in the SFT and DPO sets."""

    view: RunView
    filters: Filters = Filters()
    only_matching: bool = True
    mcq_index: int = 0
    sft_set: str | None = None  # None: the first that exists
    sft_source: str | None = None  # "O" | "O→O" | "X→O"
    sft_index: int = 0
    dpo_set: str | None = None
    dpo_rule: str | None = None  # a pair type, e.g. "X→O>X"
    dpo_index: int = 0

    def __post_init__(self):
        self.sft_set = self.sft_set or next(iter(self.view.sft), None)
        self.dpo_set = self.dpo_set or next(iter(self.view.dpo), None)

    def mcq_ids(self) -> list[str]:
        return matching_mcqs(self.view, self.filters)

    def _scope(self) -> list[str] | None:
        return None if not self.filters.active() else self.mcq_ids()

    def sft_rows(self) -> pd.DataFrame:
        return training_rows(self.view.sft, self.sft_set, self._scope(), "source", self.sft_source)

    def dpo_rows(self) -> pd.DataFrame:
        return training_rows(self.view.dpo, self.dpo_set, self._scope(), "pair_type", self.dpo_rule)

    def title(self) -> str:
        return f"LPT inspector · run {self.view.name} · {self.filters.describe()}"


def stages_line(view: RunView) -> str:
    return "stages: " + ", ".join(f"{k} {'✓' if ok else '— not written yet'}" for k, ok in view.stages.items())


def mcqs_html(sel: Selection, ids: list[str], start: int, count: int) -> str:
    """The MCQ section: `count` matching MCQs from position `start`, each with its CoTs."""
    if not ids:
        return "<h2>MCQs</h2><p class='note'>no MCQ matches these filters</p>"
    head = f"<h2>MCQs {start + 1}–{start + len(ids[start:start + count])} of {len(ids)} matching</h2>"
    return head + "".join(mcq_group_html(group_mcq(sel.view, i, sel.filters, sel.only_matching))
                          for i in ids[start:start + count])


def _rows_section(title: str, rows: pd.DataFrame, start: int, count: int, card, missing: str) -> str:
    if missing:
        return f"<h2>{html.escape(title)}</h2><p class='note'>{html.escape(missing)}</p>"
    if rows.empty:
        return f"<h2>{html.escape(title)}</h2><p class='note'>no rows for this selection</p>"
    part = rows.iloc[start:start + count].to_dict("records")
    return (f"<h2>{html.escape(title)} {start + 1}–{start + len(part)} of {len(rows)}</h2>"
            + "".join(card(r) for r in part))


def _training_note(view: RunView, sets: dict[str, pd.DataFrame], name: str | None) -> str:
    if not view.stages.get(stages.FOLDERS["training_data"]):
        return f"stage {stages.FOLDERS['training_data']} is not written for run {view.name} yet"
    return "" if name in sets else "this set is not in the run's stage-4 folder"


def _card_html(build):
    """A row -> its card's HTML, for a card builder of `mcq_card`."""
    return lambda row: mcq_card.html(build(row))


def sft_html(sel: Selection, start: int, count: int) -> str:
    kind = f" · source {sel.sft_source}" if sel.sft_source else ""
    return _rows_section(f"SFT rows · {sel.sft_set or '—'}{kind} ·", sel.sft_rows(), start, count,
                         _card_html(mcq_card.sft_card), _training_note(sel.view, sel.view.sft, sel.sft_set))


def dpo_html(sel: Selection, start: int, count: int) -> str:
    kind = f" · rule {sel.dpo_rule}" if sel.dpo_rule else ""
    return _rows_section(f"DPO pairs · {sel.dpo_set or '—'}{kind} ·", sel.dpo_rows(), start, count,
                         _card_html(mcq_card.dpo_card), _training_note(sel.view, sel.view.dpo, sel.dpo_set))


def selection_html(sel: Selection, max_mcqs: int = 1, max_rows: int = 1) -> str:
    """The body of a page: from the current positions on, `max_mcqs` MCQs with their CoTs, then
    `max_rows` SFT rows and `max_rows` DPO pairs (of the selected MCQs when a filter is on)."""
    ids = sel.mcq_ids()
    scope = ("SFT rows and DPO pairs of the matching MCQs only" if sel.filters.active()
             else "all SFT rows and DPO pairs")
    return (f"<p class='note'>{html.escape(stages_line(sel.view))}<br>{html.escape(scope)}; "
            f"{'only the matching CoTs' if sel.only_matching else 'every CoT'} of each MCQ shown</p>"
            + mcqs_html(sel, ids, clamp(sel.mcq_index, len(ids)), max_mcqs)
            + sft_html(sel, sel.sft_index, max_rows) + dpo_html(sel, sel.dpo_index, max_rows))


def export_html(sel: Selection, path: str | Path, max_mcqs: int = 10, max_rows: int = 5) -> Path:
    """Write the selection (from its current positions: `max_mcqs` MCQs with their CoTs,
    `max_rows` SFT rows and DPO pairs) as one self-contained page, titled by the run and the filters;
    images inlined, CSS inline, no scripts. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = mcq_card.html_page(sel.title(), selection_html(sel, max_mcqs, max_rows),
                           subtitle=f"run folder {sel.view.run_dir}")
    path.write_text(page, encoding="utf-8")
    return path


def default_export_path(sel: Selection) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", sel.filters.describe().replace("→", "to")).strip("-")
    return sel.view.run_dir / "inspector" / f"{slug or 'selection'}.html"


def snapshot_html(sel: Selection, collapsed: bool = True) -> str:
    """The first page of the selection as static HTML, for copies of a notebook without a kernel."""
    body = mcq_card.CSS + (
        f'<div class="lpt-page"><b>{html.escape(sel.title())}</b>{selection_html(sel)}</div>')
    if not collapsed:
        return body
    return ("<details><summary>Static snapshot of the inspector (first MCQ, SFT row and DPO pair), for "
            "copies of this notebook opened without a kernel</summary>" + body + "</details>")


# ----------------------------------------------------------------------------- the widget


def _dropdown(description: str, values: list[str]):
    import ipywidgets as w

    return w.Dropdown(description=description, options=[ANY] + values, value=ANY,
                      disabled=not values, layout=w.Layout(width="260px"),
                      style={"description_width": "80px"})


class Inspector:
    """ipywidgets over a `Selection`: filter dropdowns, MCQ stepping, SFT and DPO stepping, export.
    Every widget is an attribute, so tests (and users) can set values and click buttons."""

    def __init__(self, view: RunView, static: bool | None = None, filters: Filters = Filters()):
        import ipywidgets as w

        self.static = static
        self.selection = Selection(view)
        self._ids: list[str] = []
        self._syncing = False
        opts = filter_options(view)
        self.type_filter = _dropdown("type", opts["question_type"])
        self.label_filter = _dropdown("O/X", opts["label"])
        self.transition_filter = _dropdown("transition", opts["transition"])
        self.cue_filter = _dropdown("cue", opts["cue"])
        self.status_filter = _dropdown("status", opts["status"])
        self.only_matching = w.Checkbox(value=True, description="only matching CoTs", indent=False)
        self._filter_widgets = {"question_type": self.type_filter, "label": self.label_filter,
                                "transition": self.transition_filter, "cue": self.cue_filter,
                                "status": self.status_filter}
        self.prev_mcq, self.next_mcq = w.Button(description="◀ previous"), w.Button(description="next ▶")
        self.mcq_number = w.BoundedIntText(value=1, min=1, max=1, description="MCQ", layout=w.Layout(width="160px"))
        self.mcq_count = w.HTML()
        self.mcq_view = w.HTML()
        self.mcq_view.add_class("lpt-mcq-view")  # a handle for browser tests
        self.sft_set = w.Dropdown(description="set", options=list(view.sft) or [""])
        self.sft_source = _dropdown("source", [])
        self.prev_sft, self.next_sft = w.Button(description="◀ previous"), w.Button(description="next ▶")
        self.sft_position, self.sft_view = w.HTML(), w.HTML()
        self.dpo_set = w.Dropdown(description="set", options=list(view.dpo) or [""])
        self.dpo_rule = _dropdown("rule", [])
        self.prev_dpo, self.next_dpo = w.Button(description="◀ previous"), w.Button(description="next ▶")
        self.dpo_position, self.dpo_view = w.HTML(), w.HTML()
        self.export_path = w.Text(description="export to", layout=w.Layout(width="520px"))
        self.export_button = w.Button(description="export HTML", button_style="primary")
        self.export_status = w.HTML()
        self._wire()
        self.widget = self._layout(w)
        self.set_filters(filters)

    # ---- layout and events

    def _layout(self, w):
        header = w.HTML(f"<b>LPT inspector · run {html.escape(self.selection.view.name)}</b> · "
                        f"{html.escape(stages_line(self.selection.view))}")
        filters = w.HBox([w.VBox([self.type_filter, self.label_filter, self.transition_filter]),
                          w.VBox([self.cue_filter, self.status_filter, self.only_matching])])
        mcq_tab = w.VBox([w.HBox([self.prev_mcq, self.mcq_number, self.next_mcq, self.mcq_count]), self.mcq_view])
        sft_tab = w.VBox([w.HBox([self.sft_set, self.sft_source]),
                          w.HBox([self.prev_sft, self.next_sft, self.sft_position]), self.sft_view])
        dpo_tab = w.VBox([w.HBox([self.dpo_set, self.dpo_rule]),
                          w.HBox([self.prev_dpo, self.next_dpo, self.dpo_position]), self.dpo_view])
        tabs = w.Tab(children=[mcq_tab, sft_tab, dpo_tab], titles=["MCQs and CoTs", "SFT rows", "DPO pairs"])
        export = w.HBox([self.export_path, self.export_button, self.export_status])
        return w.VBox([header, filters, tabs, export])

    def _wire(self) -> None:
        for widget in (*self._filter_widgets.values(), self.only_matching):
            widget.observe(lambda _: self._filters_changed(), "value")
        self.prev_mcq.on_click(lambda _: self.show_mcq(self.selection.mcq_index - 1))
        self.next_mcq.on_click(lambda _: self.show_mcq(self.selection.mcq_index + 1))
        self.mcq_number.observe(lambda c: None if self._syncing else self.show_mcq(c["new"] - 1), "value")
        self.sft_set.observe(lambda _: self._training_set_changed("sft"), "value")
        self.dpo_set.observe(lambda _: self._training_set_changed("dpo"), "value")
        self.sft_source.observe(lambda _: self.show_sft(0), "value")
        self.dpo_rule.observe(lambda _: self.show_dpo(0), "value")
        self.prev_sft.on_click(lambda _: self.show_sft(self.selection.sft_index - 1))
        self.next_sft.on_click(lambda _: self.show_sft(self.selection.sft_index + 1))
        self.prev_dpo.on_click(lambda _: self.show_dpo(self.selection.dpo_index - 1))
        self.next_dpo.on_click(lambda _: self.show_dpo(self.selection.dpo_index + 1))
        self.export_button.on_click(lambda _: self.export())

    def _kind_options(self, dropdown, sets: dict[str, pd.DataFrame], name: str, column: str) -> None:
        values = sorted(sets[name][column].unique()) if name in sets else []
        self._syncing = True
        try:
            dropdown.options, dropdown.value, dropdown.disabled = [ANY] + values, ANY, not values
        finally:
            self._syncing = False

    def _training_set_changed(self, which: str) -> None:
        v = self.selection.view
        if which == "sft":
            self.selection.sft_set = self.sft_set.value or None
            self._kind_options(self.sft_source, v.sft, self.sft_set.value, "source")
            self.show_sft(0)
        else:
            self.selection.dpo_set = self.dpo_set.value or None
            self._kind_options(self.dpo_rule, v.dpo, self.dpo_set.value, "pair_type")
            self.show_dpo(0)

    def _filters_changed(self) -> None:
        if self._syncing:
            return
        values = {k: (None if d.value == ANY else d.value) for k, d in self._filter_widgets.items()}
        self.selection.filters = Filters(**values)
        self.selection.only_matching = self.only_matching.value
        self._ids = self.selection.mcq_ids()
        self.show_mcq(0)
        self.show_sft(0)
        self.show_dpo(0)
        self.export_path.value = str(default_export_path(self.selection))

    # ---- what users and tests call

    def set_filters(self, filters: Filters) -> None:
        """Set every filter dropdown at once (one refresh); a value the run does not have is an error."""
        self._syncing = True
        try:
            for key, d in self._filter_widgets.items():
                value = getattr(filters, key)
                if value is not None and value not in d.options:
                    raise ValueError(f"filter {key}={value!r}: this run has {', '.join(d.options[1:]) or 'none'}")
                d.value = ANY if value is None else value
        finally:
            self._syncing = False
        self._training_set_changed("sft")
        self._training_set_changed("dpo")
        self._filters_changed()

    @property
    def mcq_ids(self) -> list[str]:
        """The MCQs that match the current filters."""
        return list(self._ids)

    @property
    def current_mcq(self) -> str | None:
        return self._ids[self.selection.mcq_index] if self._ids else None

    def show_mcq(self, index: int) -> None:
        n = len(self._ids)
        self.selection.mcq_index = i = clamp(index, n)
        self._syncing = True
        try:
            self.mcq_number.max = max(n, 1)
            self.mcq_number.value = i + 1
        finally:
            self._syncing = False
        self.prev_mcq.disabled, self.next_mcq.disabled = i <= 0, i >= n - 1
        # The view first, the count last: whoever sees the new count sees the new MCQ.
        self.mcq_view.value = mcq_card.CSS + (
            mcq_group_html(group_mcq(self.selection.view, self._ids[i], self.selection.filters,
                                     self.selection.only_matching)) if n else "")
        self.mcq_count.value = f"of {n} matching MCQs" if n else "no MCQ matches these filters"

    def _show_rows(self, rows: pd.DataFrame, index: int, attr: str, prev, nxt, position, view, render) -> None:
        n = len(rows)
        i = clamp(index, n)
        setattr(self.selection, attr, i)
        prev.disabled, nxt.disabled = i <= 0, i >= n - 1
        position.value = f"{i + 1} of {n}" if n else "none"
        view.value = render(self.selection, i, 1)

    def show_sft(self, index: int) -> None:
        if not self._syncing:
            self.selection.sft_source = None if self.sft_source.value == ANY else self.sft_source.value
            self._show_rows(self.selection.sft_rows(), index, "sft_index", self.prev_sft, self.next_sft,
                            self.sft_position, self.sft_view,
                            lambda s, i, k: mcq_card.CSS + sft_html(s, i, k))

    def show_dpo(self, index: int) -> None:
        if not self._syncing:
            self.selection.dpo_rule = None if self.dpo_rule.value == ANY else self.dpo_rule.value
            self._show_rows(self.selection.dpo_rows(), index, "dpo_index", self.prev_dpo, self.next_dpo,
                            self.dpo_position, self.dpo_view,
                            lambda s, i, k: mcq_card.CSS + dpo_html(s, i, k))

    def current_sft(self) -> dict[str, Any] | None:
        rows = self.selection.sft_rows()
        return rows.iloc[self.selection.sft_index].to_dict() if len(rows) else None

    def current_dpo(self) -> dict[str, Any] | None:
        rows = self.selection.dpo_rows()
        return rows.iloc[self.selection.dpo_index].to_dict() if len(rows) else None

    def export(self, path: str | Path | None = None, max_mcqs: int = 10, max_rows: int = 5) -> Path:
        """Export the current selection (see `export_html`) to `path` or the path in the text box."""
        out = export_html(self.selection, path or self.export_path.value or default_export_path(self.selection),
                          max_mcqs, max_rows)
        self.export_status.value = f"wrote {html.escape(str(out))} ({out.stat().st_size // 1024 + 1} KB)"
        return out

    def snapshot(self) -> str:
        """The first page of the current selection as static HTML (see `snapshot_html`)."""
        first = replace(self.selection, mcq_index=0, sft_index=0, dpo_index=0)
        return snapshot_html(first, collapsed=self.static is None)

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        if self.static is not True:
            display(self.widget)
        if self.static is not False:
            display(HTML(self.snapshot()))


def inspect(run_or_dir: config.Run | str | Path, *, static: bool | None = None, **filters: str) -> Inspector:
    """Open the inspector over a run (a `Run`, its folder, or a run name under `outputs/`), with
    optional starting filters (`question_type=`, `label=`, `transition=`, `cue=`, `status=`).

    Shown as a cell's result (or with `display`): the widget plus a collapsed static snapshot for
    copies without a kernel (`static=None`), only the snapshot (`static=True`), or only the widget
    (`static=False`)."""
    return Inspector(load_view(run_or_dir), static=static, filters=Filters(**filters))
