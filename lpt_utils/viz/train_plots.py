"""Figures of notebooks 05-06 (training): loss curves, validation accuracy per epoch, DPO reward margins.
Each takes what `lpt_utils.training.sweep` returns (`load_histories`, `results_table`) and returns a figure;
`lpt_utils.viz.plots.save` writes it under `figures/<run>/`. `validation_examples`: the kept model's
held-out answers as cards (`lpt_utils.viz.mcq_card`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from lpt_utils.viz import mcq_card


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(e["epoch"], e[key]) for e in history if key in e and "epoch" in e]
    return [p[0] for p in pts], [p[1] for p in pts]


def _lr_label(lr: float, best_lr: float | None) -> str:
    return f"lr {lr:g}" + (" (kept)" if best_lr is not None and lr == best_lr else "")


def loss_curves(histories: dict[float, list[dict]], title: str, best_lr: float | None = None,
                key: str = "loss"):
    """The logged training loss against epochs, one line per learning rate."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    drawn = 0
    for lr, hist in histories.items():
        x, y = _series(hist, key)
        if x:
            ax.plot(x, y, marker=".", lw=1.8 if lr == best_lr else 1.0, label=_lr_label(lr, best_lr))
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, f"no '{key}' logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    ax.set_title(title)
    if drawn:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def validation_curve(table: pd.DataFrame, title: str, baseline: float | None = None,
                     baseline_label: str = "before training"):
    """Validation accuracy after each epoch, one line per learning rate; the kept epoch starred; the
    starting model's accuracy as a dashed line when given."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls="--", lw=1, label=f"{baseline_label}: {baseline:.0%}")
    scored = table.dropna(subset=["val_accuracy"]) if "val_accuracy" in table else table.iloc[0:0]
    if scored.empty:
        ax.text(0.5, 0.5, "no validation (the profile trains without it)", ha="center", va="center",
                transform=ax.transAxes)
    for lr, g in scored.groupby("learning_rate", sort=False):
        ax.plot(g["epoch"], g["val_accuracy"], marker="o", label=f"lr {lr:g}")
    best = scored[scored.get("is_best", False) == True]  # a boolean column (`is True` would not compare per row)
    if not best.empty:
        ax.scatter(best["epoch"], best["val_accuracy"], marker="*", s=220, color="gold", edgecolor="k",
                   zorder=3, label="kept")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    if not scored.empty:
        ax.set_xticks(sorted(scored["epoch"].unique()))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def reward_margins(histories: dict[float, list[dict]], title: str, best_lr: float | None = None):
    """DPO's implicit reward margin (chosen minus rejected, β-scaled log-ratios against the reference) and
    the share of pairs whose chosen turn wins, against epochs, one line per learning rate."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.2))
    for lr, hist in histories.items():
        for ax, key in ((ax1, "rewards/margins"), (ax2, "rewards/accuracies")):
            x, y = _series(hist, key)
            if x:
                ax.plot(x, y, marker=".", lw=1.8 if lr == best_lr else 1.0, label=_lr_label(lr, best_lr))
    ax1.axhline(0, color="grey", lw=0.8)
    ax1.set_ylabel("reward margin")
    ax2.set_ylabel("chosen wins")
    ax2.set_ylim(0, 1)
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def validation_examples(result, mcqs: pd.DataFrame | None, store: Path, n: int = 3) -> list[mcq_card.MCQCard]:
    """A trained model's validation (`training.validation.ValidationResult`; None: the profile trains
    without validation): prints its accuracy overall and by type, and returns `n` of its scored
    held-out answers as cards (none when the score was read back from an earlier run: the answers
    stay in the request `store`)."""
    if result is None:
        print("the profile trains without validation: no held-out answers to show")
        return []
    print({"accuracy": round(result.accuracy, 3), **result.accuracy_by_type})
    if not result.rows:
        print(f"scored in an earlier run; its answers are in {store}")
        return []
    from lpt_utils.pipeline import simple_cot

    by_id = {m["mcq_id"]: m for m in mcqs.to_dict("records")}
    rows = simple_cot.to_rows(result.rows)[:n]
    return [mcq_card.simple_cot_card(r, by_id[r["mcq_id"]]) for r in rows]
