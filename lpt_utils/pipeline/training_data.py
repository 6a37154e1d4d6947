"""Stage 4: the paper's SFT and DPO data from the O / X / O→O / X→O traces.

- `subsample`: the length-weighted per-MCQ subsampling (longest thought first, weight 0.5^rank,
  without replacement, seeded per MCQ id; shortfall filled from the rows left, seeded).
- SFT sets: "simple" (right simple CoTs, the paper's simple-CoT baseline) and "long" (O and O→O
  pooled, plus as many X→O rows, whose wrong simple thought is a loss-masked assistant prefix).
- DPO sets: the "O" family (O > O→X, O > X; deduplicated on the preferred text) and the "X→O"
  family (X→O > X→X, X→O > X; deduplicated on both texts). Which duplicate survives is decided by a
  seeded shuffle (the released code's shuffles were no-ops, so file order decided).
- A held-out split of the MCQs (by image) for validation accuracy; none of its MCQs trains.

Rows follow the contract notebooks 05/06 read (`SFT_COLUMNS`, `DPO_COLUMNS`); every ratio is a
profile setting (`training_data.*`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from lpt_utils.artifacts import Funnel
from lpt_utils.pipeline import sharegpt
from lpt_utils.pipeline.long_cot import splice_thought
from lpt_utils.pipeline.mcq import answer_in_form, student_messages
from lpt_utils.records import DPO_COLUMNS, SFT_COLUMNS, as_dict

PAIR_TYPES = {"O>O→X": "O", "O>X": "O", "X→O>X→X": "X→O", "X→O>X": "X→O"}


def stable_int(*parts: Any) -> int:
    """A 64-bit integer from the parts (a seed that depends on ids, never on row order)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


# ----------------------------------------------------------------------------- subsampling


def length_weights(lengths: Sequence[int]) -> np.ndarray:
    """0.5^rank with rank 0 the longest (ties keep their input order), normalised to sum to 1."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    w = np.empty(len(lengths))
    for rank, i in enumerate(order):
        w[i] = 0.5 ** rank
    return w / w.sum()


def subsample(rows: list[dict[str, Any]], total: int, length: Callable[[dict[str, Any]], int], *,
              seed: int, group: str = "mcq_id") -> list[dict[str, Any]]:
    """Draw `total` rows (all of them if fewer): each group (MCQ) gets total // groups rows, or all
    it has, drawn without replacement with weights 0.5^rank by length (longest first) and a seed from
    (seed, group id); any shortfall is filled from the rows not drawn, uniformly with `seed`.
    The result is in the input order, so it never depends on how groups were visited."""
    total = min(total, len(rows))
    if total <= 0:
        return []
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(str(r[group]), []).append(i)
    quota = total // len(groups)
    chosen: set[int] = set()
    for gid, idx in sorted(groups.items()):
        k = min(quota, len(idx))
        if k == 0:
            continue
        rng = np.random.default_rng(stable_int(seed, gid))
        p = length_weights([length(rows[i]) for i in idx])
        chosen.update(idx[j] for j in rng.choice(len(idx), size=k, replace=False, p=p))
    short = total - len(chosen)
    if short > 0:
        rest = [i for i in range(len(rows)) if i not in chosen]
        rng = np.random.default_rng(stable_int(seed, "fill"))
        chosen.update(rest[j] for j in rng.choice(len(rest), size=short, replace=False))
    return [rows[i] for i in sorted(chosen)]


# ----------------------------------------------------------------------------- assistant turns


LAYOUTS = {
    # R1 style, one part per line (the paper profile)
    "lines": "{open}\n{thought}\n{close}\n<answer>{answer}</answer>",
    # spaces between the parts: how the tiny student writes its own turns (and was warmed up on)
    "inline": "{open} {thought} {close} <answer> {answer} </answer>",
}


@dataclass(frozen=True)
class TurnFormat:
    """How a training turn is laid out: the think tag and one of `LAYOUTS` (profile:
    `training_data.layout`). Train in the layout the student already writes, or SFT spends its
    steps on whitespace."""

    think_tag: str = "<think>"
    layout: str = "lines"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"training_data.layout must be one of {sorted(LAYOUTS)}, not {self.layout!r}")

    def turn(self, thought: str, answer: str) -> str:
        """The student's whole assistant turn: think tags around the thought, then the answer tags."""
        close = self.think_tag.replace("<", "</", 1)
        return LAYOUTS[self.layout].format(open=self.think_tag, thought=thought.strip(), close=close,
                                           answer=answer.strip())

    def prefix(self, thought: str) -> str:
        """The start of `turn(thought + ..., ...)` up to the end of `thought`: the masked prefix."""
        return LAYOUTS[self.layout].split("{thought}")[0].format(open=self.think_tag) + thought.strip()


def assistant_turn(thought: str, answer: str, think_tag: str = "<think>", layout: str = "lines") -> str:
    return TurnFormat(think_tag, layout).turn(thought, answer)


def student_answer(mcq: dict[str, Any], named_letter: str, raw_answer: str, in_requested_form: bool) -> str:
    """The answer the student learns: the option named, written in the form its prompt asks for
    (when `in_requested_form` and the answer named exactly one option), else the answer as given."""
    return answer_in_form(mcq, named_letter) if in_requested_form and named_letter else raw_answer


def split_validation(mcqs: list[dict[str, Any]], fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(train image ids, validation image ids): whole images go to validation, chosen by a hash of
    (seed, image id) so adding images never moves an old one across the split."""
    images = sorted({m["image_id"] for m in mcqs})
    val = {i for i in images if fraction > 0 and stable_int(seed, "val", i) / 2 ** 64 < fraction}
    return set(images) - val, val


# ----------------------------------------------------------------------------- traces


@dataclass
class Trace:
    """One candidate training trace, whichever stage made it."""

    kind: str  # "O", "X" (simple CoTs) | "O→O", "O→X", "X→O", "X→X" (long CoTs)
    trace_id: str
    simple_id: str
    mcq_id: str
    thought: str  # the thought the student would learn (simple, or simple + cue + added)
    answer: str  # as the student would write it
    prefix_thought: str  # the (wrong) simple thought a long CoT starts from; "" for simple CoTs
    length: int  # tokens of `thought` (student tokenizer), for the length weighting
    added_length: int  # tokens of the added thought (long CoTs), for the X→O weighting


def collect_traces(mcqs: dict[str, dict[str, Any]], simple: list[dict[str, Any]], long: list[dict[str, Any]],
                   count_tokens: Callable[[list[str]], list[int]], *, in_requested_form: bool = True) -> list[Trace]:
    """Kept simple CoTs (O, X) and kept long CoTs (four transitions) as `Trace`s."""
    out = []
    texts = [r["thought"] for r in simple] + [r["long_thought"] for r in long] + [r["added_thought"] for r in long]
    lengths = count_tokens(texts)
    ls, ll, la = lengths[:len(simple)], lengths[len(simple):len(simple) + len(long)], lengths[len(simple) + len(long):]
    for r, n in zip(simple, ls):
        m = mcqs[r["mcq_id"]]
        out.append(Trace(r["label"], r["response_id"], r["response_id"], r["mcq_id"], r["thought"],
                         student_answer(m, r["named_letter"], r["answer"], in_requested_form), "", n, 0))
    for r, n, na in zip(long, ll, la):
        m = mcqs[r["mcq_id"]]
        out.append(Trace(r["transition"], r["long_id"], r["simple_id"], r["mcq_id"], r["long_thought"],
                         student_answer(m, r["named_letter"], r["answer"], in_requested_form),
                         splice_thought(r["simple_thought"]), n, na))
    return out


# ----------------------------------------------------------------------------- SFT


def _prompt(mcq: dict[str, Any], with_type: bool) -> tuple[str, str]:
    msgs = student_messages(mcq, with_type=with_type)
    user = next(p["text"] for p in msgs[1]["content"] if p["type"] == "text")
    return msgs[0]["content"], user


def sft_row(t: Trace, mcq: dict[str, Any], *, with_type: bool, fmt: TurnFormat = TurnFormat(),
            masked_prefix: bool = True) -> dict[str, Any]:
    system, user = _prompt(mcq, with_type)
    assistant = fmt.turn(t.thought, t.answer)
    prefix = fmt.prefix(t.prefix_thought) if (t.kind == "X→O" and masked_prefix) else ""
    if prefix and not assistant.startswith(prefix):
        raise ValueError(f"{t.trace_id}: the long thought does not begin with its simple thought")
    return {"id": t.trace_id, "mcq_id": t.mcq_id, "image_id": mcq["image_id"], "image_path": mcq["image_path"],
            "system": system, "user": user, "assistant": assistant, "assistant_prefix": prefix,
            "source": t.kind, "num_tokens": t.length, "simple_cot_id": t.simple_id,
            "long_cot_id": t.trace_id if "→" in t.kind else "", "extra_metadata": "{}"}


@dataclass
class SFTSets:
    simple: list[dict[str, Any]]
    long: list[dict[str, Any]]
    pools: dict[str, int]  # candidates per source before subsampling


def build_sft(traces: list[Trace], mcqs: dict[str, dict[str, Any]], *, simple_divisor: float,
              long_divisor: float, xo_per_pooled: float, seed: int, with_type: bool,
              fmt: TurnFormat = TurnFormat(), masked_prefix: bool = True) -> SFTSets:
    """The simple-CoT set (the O pool / `simple_divisor` rows; the paper: 1/3.75) and the long-CoT
    set (O and O→O pooled, / `long_divisor` rows (1/10), weighted by the thought trained on; plus
    X→O rows, `xo_per_pooled` times as many as the pooled sample (1), weighted by the added
    thought's length). Sizes are floors of pool / divisor (a divisor, not a float ratio, so 375 / 3.75
    is exactly 100)."""
    o = [as_dict(t) for t in traces if t.kind == "O"]
    oo = [as_dict(t) for t in traces if t.kind == "O→O"]
    xo = [as_dict(t) for t in traces if t.kind == "X→O"]
    simple = subsample(o, int(len(o) / simple_divisor), lambda r: r["length"], seed=seed)
    pooled = subsample(o + oo, int((len(o) + len(oo)) / long_divisor), lambda r: r["length"], seed=seed)
    recovered = subsample(xo, int(round(xo_per_pooled * len(pooled))), lambda r: r["added_length"], seed=seed)

    def rows(ts):
        return [sft_row(Trace(**t), mcqs[t["mcq_id"]], with_type=with_type, fmt=fmt,
                        masked_prefix=masked_prefix) for t in ts]

    return SFTSets(simple=rows(simple), long=rows(pooled + recovered),
                   pools={"O": len(o), "O→O": len(oo), "X→O": len(xo)})


# ----------------------------------------------------------------------------- DPO


def _pick(seed: int, t: Trace, pool: list[Trace]) -> Trace | None:
    """One of `pool` for trace `t`, drawn by a hash of the seed and the trace's id (the same draw
    whatever the order of the rows; no generator is built per trace)."""
    return pool[stable_int(seed, "pair", t.trace_id) % len(pool)] if pool else None


def dpo_pairs(traces: list[Trace], *, seed: int) -> list[tuple[str, Trace, Trace]]:
    """(pair type, preferred, rejected) by the four rules, before deduplication:
    O > O→X: the O→X long CoT against the right simple CoT it broke;
    O > X: every O against a wrong simple CoT of the same MCQ (drawn, seeded);
    X→O > X→X: every X→O against an X→X from the same simple CoT (else the same MCQ; drawn);
    X→O > X: every X→O against the wrong simple CoT it started from."""
    by_id = {t.trace_id: t for t in traces}
    by_mcq: dict[tuple[str, str], list[Trace]] = {}
    by_simple: dict[tuple[str, str], list[Trace]] = {}
    for t in traces:
        by_mcq.setdefault((t.mcq_id, t.kind), []).append(t)
        by_simple.setdefault((t.simple_id, t.kind), []).append(t)
    pairs = []
    for t in traces:
        if t.kind == "O→X" and t.simple_id in by_id:
            pairs.append(("O>O→X", by_id[t.simple_id], t))
        elif t.kind == "O":
            x = _pick(seed, t, by_mcq.get((t.mcq_id, "X"), []))
            if x:
                pairs.append(("O>X", t, x))
        elif t.kind == "X→O":
            xx = _pick(seed, t, by_simple.get((t.simple_id, "X→X"), []) or by_mcq.get((t.mcq_id, "X→X"), []))
            if xx:
                pairs.append(("X→O>X→X", t, xx))
            if t.simple_id in by_id:
                pairs.append(("X→O>X", t, by_id[t.simple_id]))
    return pairs


def dedup_pairs(pairs: list[tuple[str, Trace, Trace]], *, seed: int, family: str,
                fmt: TurnFormat = TurnFormat()) -> tuple[list[tuple[str, Trace, Trace]], int]:
    """One family's pairs after a seeded shuffle, deduplicated on the preferred text ("O") or on
    both texts ("X→O"). Returns (kept pairs, number dropped)."""
    fam = [p for p in pairs if PAIR_TYPES[p[0]] == family]
    order = np.random.default_rng(stable_int(seed, "dedup", family)).permutation(len(fam))
    seen_c, seen_r, kept = set(), set(), []
    for i in order:
        kind, c, r = fam[i]
        ct, rt = fmt.turn(c.thought, c.answer), fmt.turn(r.thought, r.answer)
        if ct in seen_c or (family == "X→O" and rt in seen_r):
            continue
        seen_c.add(ct)
        seen_r.add(rt)
        kept.append(fam[i])
    return kept, len(fam) - len(kept)


def dpo_row(kind: str, c: Trace, r: Trace, mcq: dict[str, Any], *, with_type: bool,
            fmt: TurnFormat = TurnFormat()) -> dict[str, Any]:
    system, user = _prompt(mcq, with_type)
    return {"id": f"{c.trace_id}>{r.trace_id}", "mcq_id": c.mcq_id, "image_id": mcq["image_id"],
            "image_path": mcq["image_path"], "system": system, "user": user,
            "chosen": fmt.turn(c.thought, c.answer), "rejected": fmt.turn(r.thought, r.answer), "pair_type": kind,
            "family": PAIR_TYPES[kind], "extra_metadata": "{}"}


def build_dpo(traces: list[Trace], mcqs: dict[str, dict[str, Any]], *, seed: int, with_type: bool,
              fmt: TurnFormat = TurnFormat()) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """{"O": rows, "X→O": rows} and the duplicates dropped per family. Rows sorted by id."""
    pairs = dpo_pairs(traces, seed=seed)
    out, dropped = {}, {}
    for family in ("O", "X→O"):
        kept, n_drop = dedup_pairs(pairs, seed=seed, family=family, fmt=fmt)
        out[family] = sorted((dpo_row(k, c, r, mcqs[c.mcq_id], with_type=with_type, fmt=fmt)
                              for k, c, r in kept), key=lambda d: d["id"])
        dropped[family] = n_drop
    return out, dropped


def counts(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    return dict(sorted(Counter(r[key] for r in rows).items()))


def funnel_for(traces: list[Trace], val_images: set[str], mcqs: dict[str, dict[str, Any]],
               sft: SFTSets, dpo: dict[str, list[dict[str, Any]]], dpo_dropped: dict[str, int]) -> Funnel:
    """Where every candidate went: held out for validation, subsampled, paired, deduplicated."""
    f = Funnel()
    n_all = len(traces)
    train = [t for t in traces if mcqs[t.mcq_id]["image_id"] not in val_images]
    f.add("traces outside the validation images", n_all, len(train), {"validation image": n_all - len(train)})
    o = sum(t.kind == "O" for t in train)
    f.add("simple-CoT SFT: O traces subsampled", o, len(sft.simple), {"not drawn": o - len(sft.simple)})
    cand = sum(t.kind in ("O", "O→O", "X→O") for t in train)
    f.add("long-CoT SFT: O, O→O and X→O traces subsampled", cand, len(sft.long), {"not drawn": cand - len(sft.long)})
    for fam in ("O", "X→O"):
        n = len(dpo[fam]) + dpo_dropped[fam]
        f.add(f"DPO {fam} family: pairs after deduplication", n, len(dpo[fam]), {"duplicate": dpo_dropped[fam]})
    return f


# ----------------------------------------------------------------------------- writing


FILES = {"sft_simple": "sft", "sft_long": "sft", "dpo_O": "dpo", "dpo_XO": "dpo"}


def write_sets(stage_dir, sets: dict[str, list[dict[str, Any]]], val_mcqs: list[dict[str, Any]]) -> dict[str, int]:
    """Each set as `<name>.parquet` (columns in contract order; loadable with `datasets`), plus
    `val_mcqs.parquet`; written to a temporary name first, then renamed."""
    import os
    from pathlib import Path

    import pandas as pd

    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, rows in {**sets, "val_mcqs": val_mcqs}.items():
        cols = {"sft": SFT_COLUMNS, "dpo": DPO_COLUMNS}.get(FILES.get(name, ""))
        df = pd.DataFrame(rows, columns=list(cols) if cols else None)
        tmp = stage_dir / f".{name}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, stage_dir / f"{name}.parquet")
        sizes[name] = len(df)
    return sizes


def write_training_data(stage_dir, settings: dict[str, Any], sets: dict[str, list[dict[str, Any]]],
                        val_mcqs: list[dict[str, Any]], pools: dict[str, int],
                        run_name: str) -> tuple[dict[str, int], dict[str, Any] | None]:
    """Stage 4's files, all but the manifest, from the profile's `training_data` settings: with
    `published.path`, the released 30K is first imported as `sft_published` (joined with the DOCCI
    images of `published.docci_dir`, MCQ ids derived from the question: `sharegpt.import_published`);
    then each set as parquet plus `val_mcqs.parquet` (`write_sets`), the dataset card (`README.md`)
    and, with `export_sharegpt`, the LLaMA-Factory sharegpt files (image paths relative to
    `sharegpt/`, plus a `<name>_stock.json` variant of each set with X→O rows) with their
    `dataset_info.json`. Returns (rows per file, the import's report or None)."""
    from pathlib import Path

    sets, published = dict(sets), None
    if settings["published"]["path"]:
        sets["sft_published"], published = sharegpt.import_published(settings["published"]["path"],
                                                                      settings["published"]["docci_dir"])
    sizes = write_sets(stage_dir, sets, val_mcqs)
    card = dataset_card(settings, {k: v for k, v in sets.items() if k in FILES}, pools, run_name)
    (Path(stage_dir) / "README.md").write_text(card)
    if settings["export_sharegpt"]:
        sharegpt.export(Path(stage_dir) / "sharegpt", {k: (FILES.get(k, "sft"), v) for k, v in sets.items()})
    return sizes, published


def length_stats(rows: list[dict[str, Any]], key: str = "num_tokens") -> dict[str, float]:
    v = np.array([r[key] for r in rows]) if rows else np.array([0])
    return {"mean": round(float(v.mean()), 1), "median": float(np.median(v)), "max": int(v.max())}


def prefix_share(rows: list[dict[str, Any]]) -> tuple[int, float]:
    """(rows with a masked prefix, share of all assistant-turn characters that lie in those prefixes):
    what a trainer that ignores `assistant_prefix` would wrongly train on."""
    total = sum(len(r["assistant"]) for r in rows)
    masked = sum(len(r.get("assistant_prefix") or "") for r in rows)
    return sum(bool(r.get("assistant_prefix")) for r in rows), (masked / total if total else 0.0)


def export_guide(sets: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The card's section on training with LLaMA-Factory or TRL on the export: which file, which
    settings, and why the `_stock` variant exists (with this run's share of masked text)."""
    with_prefix = [n for n, rows in sets.items()
                   if FILES.get(n) == "sft" and any(r.get("assistant_prefix") for r in rows)]
    stock = ", ".join(f"`{n}{sharegpt.STOCK_SUFFIX}`" for n in with_prefix)
    share = "; ".join(f"`{n}`: {k} of {len(sets[n])} rows, {100 * f:.0f}% of the assistant-turn characters"
                      for n in with_prefix for k, f in [prefix_share(sets[n])])
    context = sharegpt.STOCK_CONTEXT.format(thought="<the wrong simple thought>").strip().replace("\n", " ")
    return [
        "", "## Training on this data elsewhere (LLaMA-Factory, TRL)", "",
        "`sharegpt/` holds every set as a LLaMA-Factory sharegpt JSON file, each registered in "
        "`sharegpt/dataset_info.json` (DPO sets with `ranking: true`). Image paths are relative to "
        "`sharegpt/`, so the export keeps working when moved together with its images (the whole run folder "
        "when the images are inside it, as the tiny profile's scenes are; images elsewhere, such as "
        "`data/docci`, must keep their place relative to it). `metadata` keeps the ids under the released "
        "key names (`image_id`, `mcq_unique_id`, `simple_cot_unique_id`, `extended_cot_unique_id`) and ours.",
        "", "**LLaMA-Factory** (not a dependency of this repository): `dataset_dir: <this folder>/sharegpt`, "
        "`dataset: <entry name>`, `template: qwen2_vl` (Qwen2-VL / Qwen2.5-VL students); for DPO `stage: dpo` "
        "on `dpo_O` / `dpo_XO`. Leave `media_dir` unset: it defaults to `dataset_dir`, which the image paths "
        "are relative to (an image not found there is tried as written, relative to the working directory, "
        "with only a warning).", "",
        "Stock LLaMA-Factory drops `assistant_prefix` without a word (it reads only the columns it knows), "
        "so it would train each X→O row on the wrong simple thought the row is meant to mask"
        + (f" ({share}). Use the stock variant {stock} with stock LLaMA-Factory; the unmodified file only "
           "with the authors' patched fork, which honours `assistant_prefix`. Sets without X→O rows (such as "
           "`sft_simple`) and the DPO files need no variant." if with_prefix else
           ". No SFT set of this run has X→O rows, so no `_stock` variant was needed."), "",
        "The stock variant moves an X→O row's wrong simple thought out of the trained turn: the user turn "
        f"ends with \"{context}\", and the assistant turn is the opening think tag, the cue, the added "
        "thought and the answer. So no trained token comes from the wrong thought (with `train_on_prompt` "
        "off, its default), every assistant turn still "
        "opens with the think tag, and no setting is needed. (A prior assistant turn holding the thought "
        "would need `mask_history: true`, which is off by default, and LLaMA-Factory trains history replies "
        "otherwise.) The price: the thought reaches the model as user text, not as its own words, so the "
        "row teaches recovery from a shown attempt rather than from its own; for the paper's exact recipe "
        "train the unmodified set with a trainer that honours the prefix (the authors' fork, or notebook 05).", "",
        "**TRL**: load the parquet sets (`datasets.load_dataset(\"parquet\", data_files=\"sft_long.parquet\")`). "
        "To honour the prefix, build prompt-completion examples: prompt = system and user turns (with the "
        "image) rendered by the chat template with the generation prompt, followed by `assistant_prefix`; "
        "completion = the rest of `assistant`; train with `SFTConfig(completion_only_loss=True)` and load "
        "each `image_path` as the example's image. `python -m lpt_utils.training sft` (notebook 05) does exactly "
        "this; DPO sets map to `prompt` / `chosen` / `rejected` / `images` the same way. The JSON files load "
        "with `datasets.load_dataset(\"json\", data_files=\"sharegpt/<name>.json\")` (join each image path "
        "to `sharegpt/`); TRL knows nothing of `assistant_prefix` either, so from JSON use the `_stock` file, "
        "split as prompt = all messages but the last, completion = the last.",
    ]


def dataset_card(settings: dict[str, Any], sets: dict[str, list[dict[str, Any]]], pools: dict[str, int],
                 run_name: str) -> str:
    """A README for the stage-4 folder: the recipe, counts per source and pair type, lengths, and (with
    `export_sharegpt`) how to train on the export with LLaMA-Factory or TRL (`export_guide`)."""
    lines = [f"# LongPerceptualThoughts training data — run `{run_name}`", "",
             "Built by `notebooks/04_build_datasets.ipynb` from stages 1–3 of this run.", "",
             "## Recipe", "", "```yaml"]
    lines += [f"{k}: {v}" for k, v in settings.items()] + ["```", "",
              f"Candidate pools before subsampling: {pools}.", "", "## Files", "",
              "| file | rows | by source / pair type | tokens (mean / median / max) |", "|---|---|---|---|"]
    for name, rows in sets.items():
        key = "source" if FILES[name] == "sft" else "pair_type"
        by = ", ".join(f"{k}: {v}" for k, v in counts(rows, key).items()) or "—"
        if FILES[name] == "sft":
            st = length_stats(rows)
            lens = f"{st['mean']} / {st['median']} / {st['max']}"
        else:
            lens = "—"
        lines.append(f"| `{name}.parquet` | {len(rows)} | {by} | {lens} |")
    lines += ["", "`val_mcqs.parquet`: the held-out MCQs (whole images) scored for validation accuracy; "
              "none of them is in a training set.", "",
              "SFT columns: " + ", ".join(SFT_COLUMNS) + ". X→O rows carry `assistant_prefix` (the wrong "
              "simple thought), which begins `assistant` and carries no loss. `simple_cot_id` / `long_cot_id` "
              "name the traces; `extra_metadata` is a JSON object of any other metadata an imported release "
              "carried.",
              "DPO columns: " + ", ".join(DPO_COLUMNS) + "."]
    if settings.get("export_sharegpt"):
        lines += export_guide(sets)
    return "\n".join(lines) + "\n"
