"""Figures the notebooks show and save under `figures/<run>/`: small, readable, one function each
(example cards of captions, MCQs and CoTs: `lpt_utils.viz.mcq_card`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd


def save(fig, figures_dir: Path, name: str) -> Path:
    """Save as PNG (and keep the figure open for the notebook to display)."""
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


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
