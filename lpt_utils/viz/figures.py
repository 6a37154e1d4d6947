"""The paper's figures, made from a run's artifacts only (no model is ever called here).

The notebooks call the stage functions with the frames they are about to write; `make figures`
(`python -m lpt_utils.viz.figures --run NAME`) calls `render`, which reads every finished stage of a run
and re-renders its figures into `figures/<run>/`. Which paper figure each one corresponds to is in
`PAPER_FIGURES` (and in the README).

Example cards (`*_examples`: which rows a stage shows) are chosen here, so that a notebook's HTML cards
(`mcq_card.show`) and the PNGs written here (`save_cards`, `*_cards.png`) show the same rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

from lpt_utils import artifacts
from lpt_utils.pipeline import behaviours
from lpt_utils.viz import mcq_card, plots
from lpt_utils.viz.mcq_card import MCQCard

PAPER_FIGURES = {
    "01_funnel": "— (stage-1 bookkeeping)",
    "01_question_types": "reasoning types of the generated MCQs (§3.1)",
    "01_mcq_cards": "— (three valid MCQs beside their images)",
    "02_funnel": "— (stage-2 bookkeeping)",
    "02_accuracy_by_type": "— (the student's simple-CoT accuracy per reasoning type)",
    "02_lengths": "— (simple-CoT lengths, O vs X)",
    "02_cot_cards": "— (three right and three wrong simple CoTs)",
    "03_funnel": "— (stage-3 bookkeeping)",
    "03_transitions": "the O/X transition statistics after the cue (§3.3)",
    "03_lengths": "CoT length distribution, simple vs long (paper: length histogram)",
    "03_lengths_by_cue": "CoT length distribution per cue",
    "03_behaviours": "cognitive behaviours in simple vs long CoTs (paper: behaviour bar chart)",
    "03_recovery_example": "the qualitative example: a wrong simple CoT, \"Wait,\" and the recovery",
    "03_cot_cards": "— (one long CoT per transition: O→O, O→X, X→O, X→X)",
    "04_sft_lengths": "— (training-set lengths per source)",
    "04_dpo_pairs": "— (DPO pairs per rule)",
    "05_loss": "— (SFT training loss per learning rate)",
    "05_validation": "— (SFT validation accuracy per epoch: the early stopping of the appendix)",
    "06_loss": "— (DPO loss per learning rate)",
    "06_reward_margins": "— (DPO reward margins)",
    "06_validation": "— (DPO validation accuracy per epoch)",
    "07_results": "Table 1 as bars (base / + CoT prompt / SFT / SFT + DPO), the paper's numbers as ticks",
    "07_length_vs_accuracy": "response length vs accuracy of the trained models",
    "07_easy_vs_hard_tokens": "output-token histograms on easy vs hard questions",
    "07_prediction_cards": "— (three predictions: right, wrong, unanswered; both rules' readings)",
}


# ----------------------------------------------------------------------------- examples, as cards
# Which rows a notebook shows as examples, chosen here so that the notebook (HTML cards) and `render`
# (PNG cards, `save_cards`) show the same ones.


def save_cards(cards: list[MCQCard], figures_dir: Path, name: str, title: str | None = None, **kw) -> Path | None:
    """Draw cards with `mcq_card.figure` and save them as a PNG; the figure is closed (a notebook shows
    the same cards as HTML). None when there are no cards."""
    import matplotlib.pyplot as plt

    fig = mcq_card.figure(cards, title=title, **kw)
    if fig is None:
        return None
    path = plots.save(fig, figures_dir, name)
    plt.close(fig)
    return path


def _some(path: Path | None) -> list[Path]:
    return [path] if path is not None else []


def _by_id(mcqs: pd.DataFrame) -> dict[str, dict]:
    return {m["mcq_id"]: m for m in mcqs.to_dict("records")}


def mcq_examples(df: pd.DataFrame, n: int = 3) -> list[MCQCard]:
    """`n` valid MCQs of stage 1, drawn with a fixed seed."""
    valid = df[df.is_valid]
    return [mcq_card.mcq_only_card(m) for m in valid.sample(min(n, len(valid)), random_state=0).to_dict("records")]


def simple_cot_examples(df: pd.DataFrame, mcqs: pd.DataFrame, n: int = 3) -> list[MCQCard]:
    """`n` right (O) and `n` wrong (X) kept simple CoTs of stage 2, drawn with a fixed seed."""
    kept, by_id = df[df.kept], _by_id(mcqs)
    picks = [kept[kept.label == k] for k in ("O", "X")]
    rows = pd.concat([p.sample(min(n, len(p)), random_state=0) for p in picks])
    return [mcq_card.simple_cot_card(r, by_id[r["mcq_id"]]) for r in rows.to_dict("records")]


def transition_examples(df: pd.DataFrame, mcqs: pd.DataFrame) -> list[MCQCard]:
    """One kept long CoT per transition (X→O first: the recovery example, `recovery_pick`)."""
    kept, by_id = df[df.kept], _by_id(mcqs)
    rows = []
    for t in ("X→O", "O→O", "O→X", "X→X"):
        pick = recovery_pick(kept, mcqs) if t == "X→O" else next(iter(kept[kept.transition == t].to_dict("records")),
                                                                   None)
        if pick is not None:
            rows.append(pick)
    return [mcq_card.long_cot_card(r, by_id[r["mcq_id"]]) for r in rows]


def prediction_examples(df: pd.DataFrame) -> list[MCQCard]:
    """Three predictions of stage 7, one right, one wrong, one unanswered (strict rule), where there
    are such, drawn with a fixed seed."""
    picks = [df[df.correct], df[df.answered & ~df.correct], df[~df.answered]]
    rows = pd.concat([p.sample(1, random_state=0) for p in picks if len(p)] or [df.head(0)])
    return [mcq_card.prediction_card(r) for r in rows.to_dict("records")]


def mcq_figures(df: pd.DataFrame, funnel_steps: list[dict], figures_dir: Path) -> list[Path]:
    """Funnel, reasoning types, three example cards."""
    valid = df[df.is_valid]
    return [plots.save(plots.funnel_chart(funnel_steps, "Stage 1 funnel"), figures_dir, "01_funnel"),
            plots.save(plots.bar_counts(valid.question_type.value_counts(),
                                        f"Reasoning types of {len(valid)} valid MCQs"), figures_dir,
                       "01_question_types"),
            *_some(save_cards(mcq_examples(df), figures_dir, "01_mcq_cards", "Valid MCQs (the right option ticked)"))]


def simple_cot_figures(df: pd.DataFrame, funnel_steps: list[dict], figures_dir: Path, *,
                       mcqs: pd.DataFrame | None = None) -> list[Path]:
    """Funnel, accuracy by question type, lengths O vs X; with the MCQs, example cards."""
    kept = df[df.kept]
    cards = (save_cards(simple_cot_examples(df, mcqs), figures_dir, "02_cot_cards",
                        "Simple CoTs: right (O), then wrong (X); ✔ the right option, ◀ the one answered")
             if mcqs is not None else None)
    return [
        plots.save(plots.funnel_chart(funnel_steps, "Stage 2 funnel"), figures_dir, "02_funnel"),
        plots.save(plots.accuracy_by(kept, "question_type",
                                     f"Simple-CoT accuracy by question type ({len(kept)} responses)"),
                   figures_dir, "02_accuracy_by_type"),
        plots.save(plots.length_hist({"O (right)": kept[kept.label == "O"].num_tokens,
                                      "X (wrong)": kept[kept.label == "X"].num_tokens}, "Simple-CoT length"),
                   figures_dir, "02_lengths"),
        *_some(cards),
    ]


def long_cot_figures(df: pd.DataFrame, funnel_steps: list[dict], figures_dir: Path, *,
                     mcqs: pd.DataFrame | None = None, judged: pd.DataFrame | None = None) -> list[Path]:
    """Funnel, transitions per cue, simple vs long lengths (overall and per cue, in the student's
    tokens: columns `simple_thought_tokens`, `long_thought_tokens`), behaviours (when judged); with
    the MCQs, the recovery example (when an X→O exists) and one card per transition."""
    from lpt_utils.pipeline import long_cot

    kept = df[df.kept]
    out = [plots.save(plots.funnel_chart(funnel_steps, "Stage 3 funnel"), figures_dir, "03_funnel"),
           plots.save(plots.transition_grid(long_cot.transition_table(df, by="cue"),
                                            "Transitions after the cue (kept long CoTs)"), figures_dir,
                      "03_transitions")]
    simple_len = kept.drop_duplicates("simple_id").simple_thought_tokens
    out.append(plots.save(plots.length_hist({"simple thoughts": simple_len, "long thoughts": kept.long_thought_tokens},
                                            "Thought length, simple vs long"), figures_dir, "03_lengths"))
    by_cue = {f"long, {c}": d.long_thought_tokens for c, d in kept.groupby("cue")}
    out.append(plots.save(plots.length_hist({"simple thoughts": simple_len, **by_cue}, "Thought length per cue"),
                          figures_dir, "03_lengths_by_cue"))
    if judged is not None and len(judged):
        judge = judged.judge.iloc[0]
        out.append(plots.save(plots.behaviour_bars(behaviours.shares(judged),
                                                   f"Cognitive behaviours (judge: {judge})"),
                              figures_dir, "03_behaviours"))
    if mcqs is not None:
        if (pick := recovery_pick(kept, mcqs)) is not None:
            out += _some(save_cards([mcq_card.long_cot_card(pick, _by_id(mcqs)[pick["mcq_id"]])], figures_dir,
                                    "03_recovery_example", "A wrong simple thought, the cue, and the recovery (X→O)",
                                    max_lines=None))
        out += _some(save_cards(transition_examples(df, mcqs), figures_dir, "03_cot_cards",
                                "One long CoT per transition: simple thought, cue (yellow), added thought (blue)"))
    return out


def recovery_pick(kept: pd.DataFrame, mcqs: pd.DataFrame) -> dict | None:
    """The X→O row to show: preferably one whose answer names the option cleanly (its text or its
    letter, not just a leading letter) and whose added thought names the right option's text; the
    median-length one among those, so the pick is typical and stable."""
    rec = kept[kept.transition == "X→O"]
    if rec.empty:
        return None
    right = mcqs.set_index("mcq_id").answer.str.lower()
    clean = rec[rec.match.isin(["text", "letter"])]
    names = clean[[str(right.get(m, "")) in a.lower() for m, a in zip(clean.mcq_id, clean.added_thought)]]
    pool = next(p for p in (names, clean, rec) if len(p))
    pool = pool.assign(n=pool.added_thought.str.len()).sort_values(["n", "long_id"])
    return pool.iloc[len(pool) // 2].to_dict()


def training_data_figures(sets: dict[str, pd.DataFrame], figures_dir: Path) -> list[Path]:
    sft = {n: d for n, d in sets.items() if n.startswith("sft_")}
    dpo = pd.concat([d for n, d in sets.items() if n.startswith("dpo_")] or [pd.DataFrame({"pair_type": []})])
    return [
        plots.save(plots.length_hist({f"{n}: {s}": d[d.source == s].num_tokens for n, d in sft.items()
                                      for s in sorted(d.source.unique())}, "SFT rows: thought length"),
                   figures_dir, "04_sft_lengths"),
        plots.save(plots.bar_counts(dpo.pair_type.value_counts(), "DPO pairs by rule", "pairs"), figures_dir,
                   "04_dpo_pairs"),
    ]


def sft_figures(sweep_dir: Path, table: pd.DataFrame, figures_dir: Path, *, data: str,
                best_lr: float | None, base_accuracy: float | None) -> list[Path]:
    """Notebook 05's figures: loss per learning rate, validation accuracy per epoch."""
    from lpt_utils.training.sweep import load_histories
    from lpt_utils.viz import train_plots

    histories = load_histories(sweep_dir)
    return [plots.save(train_plots.loss_curves(histories, f"SFT training loss ({data})", best_lr), figures_dir,
                       "05_loss"),
            plots.save(train_plots.validation_curve(table, "SFT validation accuracy (held-out MCQs)", base_accuracy,
                                                    "base model"), figures_dir, "05_validation")]


def dpo_figures(sweep_dir: Path, table: pd.DataFrame, figures_dir: Path, *, best_lr: float | None,
                sft_accuracy: float | None) -> list[Path]:
    """Notebook 06's figures: loss, reward margins, validation accuracy (the SFT model as baseline)."""
    from lpt_utils.training.sweep import load_histories
    from lpt_utils.viz import train_plots

    histories = load_histories(sweep_dir)
    return [plots.save(train_plots.loss_curves(histories, "DPO training loss (preference + SFT term)", best_lr),
                       figures_dir, "06_loss"),
            plots.save(train_plots.reward_margins(histories, "DPO reward margins", best_lr), figures_dir,
                       "06_reward_margins"),
            plots.save(train_plots.validation_curve(table, "DPO validation accuracy (held-out MCQs)", sft_accuracy,
                                                    "SFT model"), figures_dir, "06_validation")]


def eval_figures(df: pd.DataFrame, difficulty: pd.DataFrame | None, figures_dir: Path, *,
                 title: str = "Scores") -> list[Path]:
    """Notebook 07's figures from its predictions (and the base model's difficulty samples): the
    results under the released rule beside the paper's numbers (the strict rule's scores as markers),
    length vs accuracy (released rule), output tokens on easy vs hard items."""
    from lpt_utils.pipeline import evaluation
    from lpt_utils.viz import eval_plots

    out = []
    scores = evaluation.benchmark_scores(df)
    released, strict = evaluation.results_table(scores, "released"), evaluation.results_table(scores, "strict")
    for name, fig in (("07_results", eval_plots.results_bars(released, title, strict=strict)),
                      ("07_length_vs_accuracy",
                       eval_plots.length_vs_accuracy(evaluation.length_vs_accuracy(df, "released"),
                                                     "Response length vs accuracy (released rule)")),
                      ("07_paired_differences", eval_plots.paired_differences(evaluation.paired_differences(df)))):
        if fig is not None:
            out.append(plots.save(fig, figures_dir, name))
    if difficulty is not None and not difficulty.empty:
        fig = eval_plots.easy_hard_hist(evaluation.with_difficulty(df[df.prompt == "think"], difficulty))
        if fig is not None:
            out.append(plots.save(fig, figures_dir, "07_easy_vs_hard_tokens"))
    out += _some(save_cards(prediction_examples(df), figures_dir, "07_prediction_cards",
                            "Predictions: right, wrong, unanswered (strict rule; ◀ the option it read)"))
    return out


def _stage(run, key: str) -> Path | None:
    d = run.stage_dir(key)
    return d if (d / artifacts.MANIFEST_FILE).exists() else None


def render(run, only: list[str] | None = None) -> dict[str, Any]:
    """Re-render every figure of a finished run from its artifacts, or those of the stages keyed in
    `only` (what a merge of shards' parts draws); stages not yet written are reported as skipped."""
    import matplotlib.pyplot as plt

    fig_dir = run.figures_dir

    def rows(key):  # figures show what a run wrote, current or not
        return run.stage(key).load(check=False)

    def funnel(key):
        return run.stage(key).manifest()["funnel"]

    def mcq(d):
        return mcq_figures(rows("mcq"), funnel("mcq"), fig_dir)

    def simple(d):
        return simple_cot_figures(rows("simple_cot"), funnel("simple_cot"), fig_dir, mcqs=rows("mcq"))

    def long(d):
        judged = pd.read_parquet(d / "behaviours.parquet") if (d / "behaviours.parquet").exists() else None
        return long_cot_figures(rows("long_cot"), funnel("long_cot"), fig_dir, mcqs=rows("mcq"), judged=judged)

    def training_data(d):
        sets = {p.stem: pd.read_parquet(p) for p in sorted(d.glob("*.parquet")) if p.stem.startswith(("sft_", "dpo_"))}
        return training_data_figures(sets, fig_dir)

    def sft(d):
        counts = run.stage("sft").manifest()["counts"]
        return sft_figures(d / "sweep", rows("sft"), fig_dir, data=run.settings["sft"]["lpt"]["data"],
                           best_lr=counts.get("kept_learning_rate"), base_accuracy=counts.get("base_val_accuracy"))

    def dpo(d):
        counts = run.stage("dpo").manifest()["counts"]
        same = run.settings["dpo"]["lpt"]["validation"] == run.settings["sft"]["lpt"]["validation"]
        sft_acc = run.stage("sft").manifest()["counts"].get("kept_val_accuracy") if same else None
        return dpo_figures(d / "sweep", rows("dpo"), fig_dir,
                           best_lr=counts.get("kept_learning_rate"), sft_accuracy=sft_acc)

    def evaluation(d):
        diff = pd.read_parquet(d / "difficulty.parquet") if (d / "difficulty.parquet").exists() else None
        return eval_figures(rows("eval"), diff, fig_dir, title=f"Scores ({run.profile})")

    stages = (("01_mcq", "mcq", mcq), ("02_simple_cot", "simple_cot", simple), ("03_long_cot", "long_cot", long),
              ("04_training_data", "training_data", training_data), ("05_sft", "sft", sft), ("06_dpo", "dpo", dpo),
              ("07_eval", "eval", evaluation))
    if only is not None:
        unknown = set(only) - {key for _, key, _ in stages}
        if unknown:
            raise ValueError(f"no figures for stage keys {sorted(unknown)}")
        stages = tuple(s for s in stages if s[1] in only)
    made: dict[str, Any] = {}
    for stage, key, draw in stages:
        if d := _stage(run, key):
            made[stage] = draw(d)
            plt.close("all")  # one stage's figures at a time (a finished run has ~30)
    made["skipped"] = [stage for stage, _, _ in stages if stage not in made]
    return made


def main(argv: list[str] | None = None) -> None:
    from lpt_utils.config import open_run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="tiny", help="run name (its settings are read from the run folder)")
    ap.add_argument("--outputs", default=None, help="outputs folder holding the run (default: outputs/)")
    args = ap.parse_args(argv)
    matplotlib.use("Agg")
    run = open_run(args.run, args.outputs)
    made = render(run)
    for stage, paths in made.items():
        if stage != "skipped":
            print(f"{stage}: " + ", ".join(p.name for p in paths))
    if made["skipped"]:
        print("no artifact yet (skipped): " + ", ".join(made["skipped"]))
    print(f"figures in {run.figures_dir}")


if __name__ == "__main__":
    main()
