"""Figures of notebook 07 (saved with `lpt_utils.viz.plots.save` under `figures/<run>/`): the results as
grouped bars beside the paper's numbers, response length vs accuracy, output-token histograms on
easy vs hard items (predictions beside their image: `figures.prediction_examples`, `mcq_card`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lpt_utils.pipeline.evaluation import paper_value


def results_bars(table: pd.DataFrame, title: str = "Benchmark scores", strict: pd.DataFrame | None = None):
    """One group per column of the results table (the released rule's: the one the paper's numbers
    were computed with), one bar per (model, prompt); the paper's number, where it has one, as a
    black tick on the bar; with `strict` (the same table under the strict rule), its score as a
    white diamond on the bar."""
    cols = [c for c in table.columns if c not in ("rule", "model", "prompt")]
    if table.empty or not cols:
        print("(no scores to plot)")
        return None
    other: dict[tuple[str, str, str], float] = {}
    if strict is not None and not strict.empty:
        for _, r in strict.iterrows():
            for c in cols:
                if c in strict.columns and not pd.isna(r[c]):
                    other[(r["model"], r["prompt"], c)] = float(r[c])
    n = len(table)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cols) + 2), 3.8))
    x = np.arange(len(cols))
    for k, (_, r) in enumerate(table.iterrows()):
        vals = [r[c] for c in cols]
        pos = x - 0.4 + width * (k + 0.5)
        ax.bar(pos, [0 if pd.isna(v) else v for v in vals], width, label=f"{r['model']} / {r['prompt']}")
        for p, c, v in zip(pos, cols, vals):
            paper = paper_value(r["model"], r["prompt"], c)
            if paper is not None:
                ax.plot([p - width / 2, p + width / 2], [paper, paper], color="black", lw=2)
            if (r["model"], r["prompt"], c) in other:
                ax.plot(p, other[(r["model"], r["prompt"], c)], marker="D", ms=4, mfc="white", mec="black",
                        ls="none", zorder=4)
            if not pd.isna(v):
                ax.text(p, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, cols, fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    how = "bars: released rule (the paper's); black ticks: the paper's numbers"
    if other:
        how += "; ◇: strict rule (this project's correction)"
    ax.set_title(f"{title}\n({how})", fontsize=9)
    ax.legend(fontsize=7, ncol=min(4, n), loc="upper right")
    fig.tight_layout()
    return fig


def length_vs_accuracy(points: pd.DataFrame, title: str = "Response length vs accuracy"):
    """Mean output tokens (x) against the benchmark's score (y): one marker per (model, prompt) and
    benchmark; colour = benchmark, shape = model and prompt."""
    if points.empty:
        print("(no predictions to plot)")
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    markers = "osD^vP*X"
    rows = list(dict.fromkeys(zip(points.model, points.prompt)))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (bench, g) in enumerate(points.groupby("benchmark", sort=False)):
        colour = colours[k % len(colours)]
        ax.scatter([], [], marker="s", color=colour, label=bench)
        for _, r in g.iterrows():
            m = markers[rows.index((r["model"], r["prompt"])) % len(markers)]
            ax.scatter(r["mean_tokens"], r["score"], marker=m, color=colour, s=45, alpha=0.8, zorder=3)
    for k, (model, prompt) in enumerate(rows):
        ax.scatter([], [], marker=markers[k % len(markers)], color="grey", label=f"{model} / {prompt}")
    ax.set_xlabel("mean output tokens")
    ax.set_ylabel("score (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def easy_hard_hist(df: pd.DataFrame, title: str = "Output tokens on easy vs hard items"):
    """Per benchmark (rows) and (model, prompt) (columns): histograms of output tokens on the easy
    and the hard half of the items (`evaluation.with_difficulty`)."""
    if df.empty:
        print("(no items with a difficulty)")
        return None
    benches = list(dict.fromkeys(df.benchmark))
    rows = list(dict.fromkeys(zip(df.model, df.prompt)))
    fig, axes = plt.subplots(len(benches), len(rows), figsize=(3.2 * len(rows), 2.4 * len(benches)),
                             squeeze=False, sharex=True)
    bins = np.linspace(0, max(1, df.num_tokens.max()), 25)
    for i, b in enumerate(benches):
        for j, (model, prompt) in enumerate(rows):
            ax = axes[i][j]
            g = df[(df.benchmark == b) & (df.model == model) & (df.prompt == prompt)]
            for half, colour in (("easy", "#55A868"), ("hard", "#C44E52")):
                v = g[g.half == half].num_tokens
                if len(v):
                    ax.hist(v, bins=bins, alpha=0.55, color=colour, label=f"{half} (n={len(v)}, median {v.median():.0f})")
            ax.set_title(f"{b}: {model} / {prompt}", fontsize=8)
            ax.legend(fontsize=6)
            if i == len(benches) - 1:
                ax.set_xlabel("output tokens", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def paired_differences(table: pd.DataFrame, title: str = "Differences from the base model, paired by item"):
    """Each row's difference from the baseline (percentage points) with its 95% interval, one panel per
    benchmark; a filled marker where the difference exceeds twice its standard error."""
    if table.empty:
        return None
    benches = list(dict.fromkeys(table["benchmark"]))
    fig, axes = plt.subplots(1, len(benches), figsize=(max(7.0, 4.2 * len(benches)), 0.9 + 0.5 * table.groupby(
        "benchmark").size().max()), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        g = table[table.benchmark == bench].reset_index(drop=True)
        y = np.arange(len(g))[::-1]
        ax.axvline(0, color="grey", lw=0.8)
        ax.errorbar(g["difference"], y, xerr=[g["difference"] - g["ci_low"], g["ci_high"] - g["difference"]],
                    fmt="none", ecolor="tab:blue", capsize=3)
        for yi, (_, r) in zip(y, g.iterrows()):
            ax.plot(r["difference"], yi, "o", color="tab:blue", mfc="tab:blue" if r["beyond_2se"] else "white")
        ax.set_yticks(y, [f"{r.model}/{r.prompt} ({r.rule})" for r in g.itertuples()])
        ax.set_title(f"{bench} (n = {int(g['items'].max())})")
        ax.set_xlabel(f"accuracy − {g['baseline'].iloc[0]} (points)")
    fig.suptitle(title + "\n(bars: 95% interval; filled: beyond 2 SE)", fontsize=10)
    fig.tight_layout()
    return fig
