"""Figures the notebooks show and save under `figures/<run>/`: small, readable, one function each."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from PIL import Image


def save(fig, figures_dir: Path, name: str) -> Path:
    """Save as PNG (and keep the figure open for the notebook to display)."""
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def mcq_cards(rows: pd.DataFrame, n: int = 3, width: int = 60):
    """A few MCQs beside their images: question, options (right one marked), type."""
    rows = rows.head(n)
    if rows.empty:
        print("(no MCQs to show)")
        return None
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.2 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.6]})
    for (ax_img, ax_txt), (_, r) in zip(axes, rows.iterrows()):
        with Image.open(r["image_path"]) as im:
            ax_img.imshow(im.convert("RGB"))
        ax_img.set_axis_off()
        ax_img.set_title(r["mcq_id"], fontsize=8)
        lines = textwrap.wrap(r["question"], width) + [""]
        for i, c in enumerate(r["choices"]):
            mark = "✔" if r["is_valid"] and chr(65 + i) == r["answer_letter"] else " "
            lines += textwrap.wrap(f"{mark} ({chr(65 + i)}) {c}", width)
        lines += ["", f"type: {r['question_type']}",
                  f"forms: {r['choice_form']} / {r['answer_form']}"]
        if not r["is_valid"]:
            lines += [f"INVALID: {r['invalid_reason']}"]
        ax_txt.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=9, family="monospace")
        ax_txt.set_axis_off()
    fig.tight_layout()
    return fig


def bar_counts(counts: pd.Series, title: str, xlabel: str = "count"):
    """A horizontal bar chart of counts (largest on top)."""
    counts = counts.sort_values()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(counts) + 1.2))
    ax.barh([str(i) for i in counts.index], counts.values, color="#4C72B0")
    for y, v in enumerate(counts.values):
        ax.text(v, y, f" {v}", va="center", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    return fig


def funnel_chart(funnel_steps: list[dict], title: str):
    """The stage's funnel, one bar per step scaled to 100% of what entered it: kept (green) vs
    dropped (red), labelled with counts and drop reasons."""
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(funnel_steps) + 1.2))
    for y, s in enumerate(reversed(funnel_steps)):
        kept = s["out"] / s["in"] if s["in"] else 0.0
        ax.barh(y, kept, color="#55A868")
        ax.barh(y, 1 - kept, left=kept, color="#C44E52")
        why = ", ".join(f"{k} {v}" for k, v in s["dropped"].items())
        ax.text(1.01, y, f"{s['out']}/{s['in']} kept" + (f"\n{why}" if why else ""), va="center", fontsize=8)
    ax.set_yticks(range(len(funnel_steps)), [s["step"] for s in reversed(funnel_steps)], fontsize=8)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def caption_cards(records, n: int = 3, width: int = 70, max_lines: int = 14):
    """A few caption records: the image and the start of its description."""
    records = list(records)[:n]
    if not records:
        print("(no records to show)")
        return None
    fig, axes = plt.subplots(len(records), 2, figsize=(10, 2.8 * len(records)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.8]})
    for (ax_img, ax_txt), r in zip(axes, records):
        with Image.open(r.image_path) as im:
            ax_img.imshow(im.convert("RGB"))
        ax_img.set_axis_off()
        ax_img.set_title(r.image_id, fontsize=8)
        lines = textwrap.wrap(r.description, width)
        text = "\n".join(lines[:max_lines]) + (" …" if len(lines) > max_lines else "")
        ax_txt.text(0, 1, text, va="top", ha="left", fontsize=8)
        ax_txt.set_axis_off()
    fig.tight_layout()
    return fig


def validation_cards(result, mcqs: pd.DataFrame | None, store: Path, n: int = 3):
    """A trained model's validation (`training.validation.ValidationResult`, or None without validation): its
    accuracy overall and by type, then `n` of its scored held-out answers beside their images."""
    if result is None:
        print("the profile trains without validation: no held-out answers to show")
        return None
    print({"accuracy": round(result.accuracy, 3), **result.accuracy_by_type})
    if not result.rows:  # a re-run reads the score back; the answers stay in the request store
        print(f"scored in an earlier run; its answers are in {store}")
        return None
    from lpt_utils.pipeline import simple_cot

    return cot_cards(pd.DataFrame(simple_cot.to_rows(result.rows)).head(n), mcqs)


def cot_cards(cots: pd.DataFrame, mcqs: pd.DataFrame, width: int = 70, max_lines: int = 10):
    """Responses beside their image: question, options (right one marked), thought, answer, label."""
    if cots.empty:
        print("(no responses to show)")
        return None
    by_id = mcqs.set_index("mcq_id")
    fig, axes = plt.subplots(len(cots), 2, figsize=(11, 3.0 * len(cots)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.2]})
    for (ax_img, ax_txt), (_, r) in zip(axes, cots.iterrows()):
        m = by_id.loc[r["mcq_id"]]
        with Image.open(m["image_path"]) as im:
            ax_img.imshow(im.convert("RGB"))
        ax_img.set_axis_off()
        ax_img.set_title(r["response_id"], fontsize=8)
        opts = "  ".join(("✔" if chr(65 + i) == m["answer_letter"] else "") + f"({chr(65 + i)}) {c}"
                         for i, c in enumerate(m["choices"]))
        thought = textwrap.wrap(r["thought"], width)
        lines = textwrap.wrap(m["question"], width) + textwrap.wrap(opts, width) + [""]
        lines += ["thought: " + (thought[0] if thought else "")] + thought[1:max_lines]
        lines += [f"answer: {r['answer']}   →  {r['label']}"]
        ax_txt.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=8, family="monospace",
                    color="#1b5e20" if r["label"] == "O" else "#b71c1c")
        ax_txt.set_axis_off()
    fig.tight_layout()
    return fig


def accuracy_by(df: pd.DataFrame, by: str, title: str):
    """Accuracy (share of `is_correct`) per group, with the number of responses on each bar."""
    g = df.groupby(by)["is_correct"].agg(["mean", "size"]).sort_values("mean")
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(g) + 1.3))
    ax.barh([str(i) for i in g.index], g["mean"], color="#4C72B0")
    for y, (acc, n) in enumerate(zip(g["mean"], g["size"])):
        ax.text(acc, y, f" {acc:.0%} of {n}", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def length_hist(groups: dict[str, pd.Series], title: str, xlabel: str = "tokens"):
    """Overlaid histograms of lengths, one per named group."""
    fig, ax = plt.subplots(figsize=(7, 3))
    for name, values in groups.items():
        if len(values):
            ax.hist(values, bins=30, alpha=0.55, label=f"{name} (n={len(values)}, median {values.median():.0f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("responses")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def transition_grid(table: pd.DataFrame, title: str):
    """One 2×2 panel per row of `long_cot.transition_table` (all, then per cue): simple CoT's label
    down, long CoT's across; each cell its count and its rate given the simple label."""
    groups = list(table.index)
    fig, axes = plt.subplots(1, len(groups), figsize=(2.6 * len(groups), 2.9), squeeze=False)
    for ax, g in zip(axes[0], groups):
        r = table.loc[g]
        counts = [[int(r["O→O"]), int(r["O→X"])], [int(r["X→O"]), int(r["X→X"])]]
        ax.imshow([[c / max(sum(row), 1) for c in row] for row in counts], cmap="Greens", vmin=0, vmax=1)
        for i, row in enumerate(counts):
            for j, c in enumerate(row):
                rate = c / max(sum(row), 1)
                ax.text(j, i, f"{c}\n{rate:.0%}", ha="center", va="center", fontsize=9,
                        color="white" if rate > 0.6 else "black")
        ax.set_xticks([0, 1], ["→ O", "→ X"])
        ax.set_yticks([0, 1], ["O", "X"])
        ax.set_title(f"{g} (n={int(r['n'])})", fontsize=9)
    axes[0][0].set_ylabel("simple CoT")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def behaviour_bars(shares: pd.DataFrame, title: str):
    """Share of CoTs showing each cognitive behaviour at least once: one bar per kind (columns of
    `shares`, e.g. simple / long) for each behaviour (rows)."""
    fig, ax = plt.subplots(figsize=(7.5, 3))
    kinds = list(shares.columns)
    width = 0.8 / max(len(kinds), 1)
    for k, kind in enumerate(kinds):
        vals = shares[kind].astype(float).fillna(0).values
        xs = [i + (k - (len(kinds) - 1) / 2) * width for i in range(len(shares))]
        ax.bar(xs, vals, width, label=f"{kind} CoTs")
        for x, v in zip(xs, vals):
            ax.text(x, v, f"{v:.0%}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(shares)), list(shares.index))
    ax.set_ylim(0, 1.1)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_ylabel("share of CoTs")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def recovery_example(row: dict, mcq: dict, width: int = 72):
    """The paper's qualitative figure: the image, the question, a wrong simple thought, the cue and
    the recovery (simple thought in black, cue in orange, added thought in blue)."""
    fig, (ax_img, ax_txt) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 2.4]})
    with Image.open(mcq["image_path"]) as im:
        ax_img.imshow(im.convert("RGB"))
    ax_img.set_axis_off()
    opts = "   ".join(("✔" if chr(65 + i) == mcq["answer_letter"] else "") + f"({chr(65 + i)}) {c}"
                      for i, c in enumerate(mcq["choices"]))
    blocks = [("\n".join(textwrap.wrap(mcq["question"], width) + textwrap.wrap(opts, width)), "black", "bold"),
              ("\n".join(textwrap.wrap("Simple CoT: " + row["simple_thought"], width)), "#b71c1c", "normal"),
              (row["cue"], "#e65100", "bold"),
              ("\n".join(textwrap.wrap(row["added_thought"], width)), "#0d47a1", "normal"),
              (f"answer: {row['answer']}   ({row['transition']})", "black", "bold")]
    y = 1.0
    for text, colour, weight in blocks:
        ax_txt.text(0, y, text, va="top", ha="left", fontsize=9, color=colour, weight=weight, family="monospace")
        y -= 0.075 * (text.count("\n") + 1) + 0.04
    ax_txt.set_axis_off()
    fig.tight_layout()
    return fig
