"""`make bench`: what the repository costs over the libraries it drives, measured side by side.

    python -m lpt_utils.bench                      # all four, the tiny profile, this machine
    python -m lpt_utils.bench --only store postprocess --records 100000
    python -m lpt_utils.bench --profile paper      # on a GPU machine: the real student through vLLM

Four measurements, each the median of `--repeats` runs (3), each with its target and whether it was
met (a missed target is reported, never hidden; the command still exits 0):

- **engine**: one stage's generation (notebook 07's requests for the student, greedy) through the
  repository (`run_requests`: keys hashed, images capped, results stored and fsynced batch by batch)
  against the same requests sent straight to the same `vllm.LLM` in one call. Engine start-up is
  excluded from both and reported on its own. Target: within 5%.
- **postprocess**: one million synthetic stage-2 responses, in the shapes real models write (clean,
  a summary between the thought and the answer, bare letters, option text, `\\boxed{}`, no answer
  block, cut off by the token limit), parsed, verified by both rules, labelled O/X, de-duplicated,
  turned into traces and O > X preference pairs, against only reading the same stored file.
  Target: reading plus post-processing within 3x of reading (the released code applied its checks
  row by row through pandas).
- **rerun**: a finished stage (07's `run_model`) run again from its store, timed at the stage
  function, against its first run; the re-run builds its engine but never starts it. Target: under 5%
  of the first run, no model call.
- **store**: a result store of one million records of ~1 KB: open (first, and again), look-up, append,
  the memory of a process that opens it, and its size on disk. Target: open under 2 s and under
  0.5 GB.

Results go to `outputs/bench/bench.json` and `outputs/bench/bench.md`, and (with `--readme`) into the
README between its `<!-- bench:start -->` and `<!-- bench:end -->` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from lpt_utils.config import REPO_ROOT, resolve_run
from lpt_utils.engines import GenerationResult, RequestStore, run_requests
from lpt_utils.engines.common import convert_messages
from lpt_utils.engines.images import load_image
from lpt_utils.engines.vllm_engine import sampling_params
from lpt_utils.pipeline import evaluation, simple_cot, training_data

BENCHES = ("engine", "postprocess", "rerun", "store")
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Result:
    """One measurement: its figures, the ratio or value judged, the target and whether it was met."""

    name: str
    what: str
    value: float  # the judged figure (a ratio, or seconds)
    target: str
    met: bool
    figures: dict[str, Any] = field(default_factory=dict)
    repeats: dict[str, list[float]] = field(default_factory=dict)

    def row(self) -> str:
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in self.figures.items())
        return f"| {self.name} | {self.what} | {shown} | {self.target} | {'yes' if self.met else '**missed**'} |"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_of(repeats: int, fn: Callable[[int], float], desc: str) -> list[float]:
    """`fn(i)` returns the seconds of repeat i; the list of them (the caller takes the median)."""
    return [fn(i) for i in tqdm(range(repeats), desc=desc, leave=False)]


# ----------------------------------------------------------------------------- synthetic responses

_COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "grey", "brown"]
_SENTENCES = ["The image shows a large circle near the top left corner.",
              "Looking more closely, the shape beside it is smaller and has straight edges.",
              "The background is plain, so the colours are easy to tell apart.",
              "I should compare each option with what is visible in the picture.",
              "There is no other object of that shape in the scene."]


def synthetic_mcqs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` stage-1 rows (four colour options, a right letter), enough for stage 2's post-processing."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        choices = rng.sample(_COLOURS, 4)
        out.append({"mcq_id": f"bench{i:07d}-q00", "image_id": f"bench{i // 4:07d}",
                    "image_path": f"images/bench{i // 4:07d}.png", "question": "What colour is the circle?",
                    "choices": choices, "answer_letter": "ABCD"[rng.randrange(4)], "answer_form": "paren_letter",
                    "choice_form": "paren", "question_type": "recognition"})
    return out


def synthetic_response(rng: random.Random, mcq: dict[str, Any]) -> tuple[str, str]:
    """(text after the forced `<think>`, finish reason) in one of the shapes real models write. As a
    real student does, the samples of one MCQ mostly keep one answer form (the one asked for) and name
    the right option or one favourite wrong one."""
    right = "ABCD".index(mcq["answer_letter"])
    favourite = (right + 1 + int(mcq["mcq_id"][5:12]) % 3) % 4  # the wrong option this MCQ's samples lean to
    r = rng.random()
    i = right if r < 0.55 else favourite if r < 0.9 else rng.randrange(4)
    letter, text = "ABCD"[i], mcq["choices"][i]
    thought = " ".join(rng.choice(_SENTENCES) for _ in range(rng.randint(2, 7)))
    r = rng.random()
    if r < 0.05:
        return " " + thought, "length"  # cut off in the thought
    if r < 0.10:
        return f" {thought}</think>\nSo the circle is {text}.", "stop"  # no answer block
    forms = [f"({letter}) {text}", f"({letter})", letter, text, f"{letter}. {text}", f"\\boxed{{{letter}}}"]
    asked = int(mcq["mcq_id"][5:12]) % len(forms)
    answer = forms[asked] if rng.random() < 0.85 else rng.choice(forms)
    between = "" if rng.random() < 0.7 else f"\n\nThe circle is {text}, which is option {letter}.\n"
    return f" {thought}</think>{between}\n<answer>{answer}</answer>", "stop"


def write_synthetic_store(path: Path, mcqs: list[dict[str, Any]], samples: int, seed: int = 0) -> int:
    """One stored result (`samples` responses) per MCQ, keyed by its id; returns the file's bytes."""
    rng = random.Random(seed)
    with RequestStore(path) as store:
        for start in tqdm(range(0, len(mcqs), 4096), desc="writing synthetic responses", leave=False):
            batch = []
            for m in mcqs[start:start + 4096]:
                texts, finishes = zip(*(synthetic_response(rng, m) for _ in range(samples)))
                batch.append(GenerationResult(key=m["mcq_id"], texts=list(texts),
                                              num_tokens=[len(t) // 4 for t in texts], finish_reasons=list(finishes),
                                              meta={"mcq_id": m["mcq_id"]}))
            store.append(batch)
    return path.stat().st_size


def postprocess(mcqs: list[dict[str, Any]], results: list[GenerationResult]) -> dict[str, int]:
    """What stages 2 and 4 do with stage 2's responses: parse, verify (both rules), label O/X,
    de-duplicate, make traces, then O > X pairs, de-duplicated. Token counts are whitespace words here
    (the stage uses the student's tokenizer)."""
    rows, _ = simple_cot.score(mcqs, results)
    kept = [r for r in simple_cot.to_rows(rows) if r["kept"]]
    by_id = {m["mcq_id"]: m for m in mcqs}
    traces = training_data.collect_traces(by_id, kept, [], lambda texts: [len(t.split()) for t in texts])
    pairs = training_data.dpo_pairs(traces, seed=0)
    kept_pairs, _ = training_data.dedup_pairs(pairs, seed=0, family="O")
    return {"responses": len(rows), "kept": len(kept), "O": sum(r["label"] == "O" for r in kept),
            "pairs": len(kept_pairs)}


def read_all(path: Path) -> list[GenerationResult]:
    """Only reading: open the store and read back every result in it."""
    with RequestStore(path) as store:
        return store.get_many(store.keys())


def bench_postprocess(work: Path, responses: int, repeats: int) -> Result:
    samples = 8
    mcqs = synthetic_mcqs(max(1, responses // samples))
    path = work / "responses.jsonl"
    size = write_synthetic_store(path, mcqs, samples)
    results: list[GenerationResult] = []

    def read(i: int) -> float:
        nonlocal results
        dt, results = timed(lambda: read_all(path))
        return dt

    counts: dict[str, int] = {}

    def both(i: int) -> float:
        nonlocal counts
        dt, counts = timed(lambda: postprocess(mcqs, read_all(path)))
        return dt

    reads = median_of(repeats, read, "postprocess: read only")
    fulls = median_of(repeats, both, "postprocess: read + post-process")
    r, f = statistics.median(reads), statistics.median(fulls)
    path.unlink()
    return Result("post-processing", f"{counts.get('responses', 0):,} synthetic stage-2 responses: read vs "
                  "read + parse, verify, label, dedupe, pairs", f / r, "≤ 3×", f / r <= 3.0,
                  {"read s": r, "read + post-process s": f, "ratio": f / r, "file MB": size / 1e6,
                   "µs per response": (f - r) / max(counts.get("responses", 1), 1) * 1e6, **counts},
                  {"read_s": reads, "full_s": fulls})


# ----------------------------------------------------------------------------- the store

_STORE_PROBE = """
import json, sys, time
sys.path.insert(0, {root!r})
from lpt_utils.engines import RequestStore

def high_water_mb():  # this process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

before = high_water_mb()
t0 = time.perf_counter()
store = RequestStore({path!r})
dt = time.perf_counter() - t0
print(json.dumps({{"open_s": dt, "records": len(store), "rss_before_mb": before, "rss_peak_mb": high_water_mb()}}))
store.close()
"""


def _probe_open(path: Path) -> dict[str, Any]:
    """Open the store in a fresh process (so its memory is the store's alone): seconds and peak RSS."""
    out = subprocess.run([sys.executable, "-c", _STORE_PROBE.format(root=str(REPO_ROOT), path=str(path))],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_store(work: Path, records: int, repeats: int) -> Result:
    path = work / "store.jsonl"
    filler = "word " * 180  # ~1 KB a record with its key and fields
    with RequestStore(path) as store:
        for start in tqdm(range(0, records, 10_000), desc="writing the store", leave=False):
            store.append([GenerationResult(key=f"{i:032x}", texts=[filler], num_tokens=[180], finish_reasons=["stop"],
                                           meta={"i": i}) for i in range(start, min(records, start + 10_000))])
    size = path.stat().st_size
    first = _probe_open(path)  # the first open after writing (a store's writer may leave an index behind)
    opens = median_of(repeats, lambda i: _probe_open(path)["open_s"], "store: open")
    probe = _probe_open(path)
    rng = random.Random(0)
    with RequestStore(path) as store:
        keys = [f"{rng.randrange(records):032x}" for _ in range(10_000)]
        look, _ = timed(lambda: [store.get(k) for k in keys])
        new = [GenerationResult(key=f"new{i:029x}", texts=[filler], num_tokens=[180], finish_reasons=["stop"])
               for i in range(6_400)]
        app, _ = timed(lambda: [store.append(new[i:i + 64]) for i in range(0, len(new), 64)])
    sidecars = sum(p.stat().st_size for p in path.parent.glob(path.name + ".*") if p.suffix != ".lock")
    open_s = statistics.median(opens)
    peak_gb = probe["rss_peak_mb"] / 1024  # the whole process: Python, its imports and the open store
    figures = {"records": records, "open s (first)": first["open_s"], "open s": open_s,
               "peak memory GB": peak_gb, "of which before opening GB": probe["rss_before_mb"] / 1024,
               "look-up µs": look / len(keys) * 1e6, "append µs/record (batches of 64, fsynced)": app / len(new) * 1e6,
               "file GB": size / 1e9, "index files MB": sidecars / 1e6}
    for p in path.parent.glob(path.name + "*"):
        p.unlink()
    return Result("store", f"{records:,} stored results of ~1 KB", open_s, "open < 2 s and < 0.5 GB",
                  open_s < 2.0 and peak_gb < 0.5, figures, {"open_s": opens})


# ----------------------------------------------------------------------------- generation


def _student_stage(profile: str, items: int, work: Path):
    """The run, the student's engine (not started), the think-prompt requests of the first evaluated
    benchmark, the model row and the benchmark."""
    run = resolve_run(profile, "world", {"paths.outputs": str(work), "eval.limit": items})
    settings = run.settings
    loaded = evaluation.load_benchmarks(settings, run)
    name, (bench_items, _) = next(iter(loaded.items()))
    model = settings["student"]["engine"]["model"]
    cfg = evaluation.engine_config(settings, model)
    prefix = evaluation.think_prefix(settings, run.resolve_model(model))
    sampling = evaluation.sampling_for(settings["eval"], settings["eval"]["benchmarks"].get(name) or {})
    reqs = evaluation.requests(bench_items, "think", sampling, prefix)
    row = evaluation.ModelRow("base", model, ["think"])
    return run, cfg, reqs, row, {name: bench_items}, prefix


def _direct(engine, reqs) -> list[str]:
    """The same requests straight to `vllm.LLM.chat`, in one call, images opened and capped as the
    engine's settings say (what a user of vLLM alone would write)."""
    cfg = engine.cfg

    def image(path: str) -> dict[str, Any]:
        return {"type": "image_pil", "image_pil": load_image(path, cfg.max_pixels, cfg.longest_side, cfg.min_pixels)}

    outs = engine.llm.chat([convert_messages(r, image) for r in reqs], [sampling_params(r.sampling) for r in reqs],
                           use_tqdm=False, add_generation_prompt=False, continue_final_message=True)
    return [o.outputs[0].text for o in outs]


def bench_generation(profile: str, work: Path, items: int, repeats: int) -> list[Result]:
    """The engine and the re-run measurements, on one started engine."""
    run, cfg, reqs, row, benchmarks, prefix = _student_stage(profile, items, work)
    engine = run.engine(cfg)
    startup, _ = timed(lambda: engine.llm)
    _direct(engine, reqs[:4])  # warm-up: the first batch pays for compiling and caches
    stores = work / "stores"

    def cold() -> None:
        """Each timed run starts without the other's prefix and multimodal caches (the second of two
        runs over the same requests would otherwise be served from them)."""
        for reset in ("reset_prefix_cache", "reset_mm_cache"):
            if hasattr(engine.llm, reset):
                getattr(engine.llm, reset)()

    def through_repo(i: int) -> float:
        shutil.rmtree(stores, ignore_errors=True)
        cold()
        with RequestStore(stores / f"repo-{i}.jsonl") as store:
            dt, _ = timed(lambda: run_requests(engine, reqs, store, desc="through the repository"))
        return dt

    def direct(i: int) -> float:
        cold()
        dt, _ = timed(lambda: _direct(engine, reqs))
        return dt

    repo_s, direct_s = [], []
    for i in tqdm(range(repeats), desc="engine: repository vs vLLM", leave=False):  # interleaved, the
        if i % 2:  # order alternating, so that neither side always runs on a warmer machine
            direct_s.append(direct(i))
            repo_s.append(through_repo(i))
        else:
            repo_s.append(through_repo(i))
            direct_s.append(direct(i))
    r, d = statistics.median(repo_s), statistics.median(direct_s)
    engine_result = Result("engine", f"{len(reqs)} requests of notebook 07 ({cfg.backend}, {profile} profile)",
                           r / d, "≤ 1.05×", r / d <= 1.05,
                           {"engine start-up s": startup, "vLLM alone s": d, "through the repository s": r,
                            "ratio": r / d}, {"repo_s": repo_s, "direct_s": direct_s})

    settings = run.settings
    firsts, reruns, calls = [], [], []
    for i in tqdm(range(repeats), desc="rerun: first run vs re-run", leave=False):
        path = stores / f"stage-{i}.jsonl"
        with RequestStore(path) as store:
            first, _ = timed(lambda: evaluation.run_model(engine, row, benchmarks, settings, store, prefix))
        again = run.engine(cfg)  # what the notebook builds on a re-run: started only if a request is missing
        with RequestStore(path) as store:
            second, _ = timed(lambda: evaluation.run_model(again, row, benchmarks, settings, store, prefix))
        calls.append(0 if getattr(again, "_llm", None) is None else 1)
        again.close()
        firsts.append(first)
        reruns.append(second)
    engine.close()
    f, s = statistics.median(firsts), statistics.median(reruns)
    rerun_result = Result("re-run", f"notebook 07's stage function, {len(reqs)} requests, from its store",
                          s / f, "< 5%, no model call", s / f < 0.05 and not any(calls),
                          {"first run s": f, "re-run s": s, "share": s / f, "engines started on re-run": sum(calls)},
                          {"first_s": firsts, "rerun_s": reruns})
    shutil.rmtree(stores, ignore_errors=True)
    return [engine_result, rerun_result]


# ----------------------------------------------------------------------------- report


def machine() -> str:
    cores = os.cpu_count()
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        gpu = "no GPU"
    return f"{platform.machine()}, {cores} cores, {gpu}, load {os.getloadavg()[0]:.1f} at start"


def markdown(results: list[Result], header: str) -> str:
    lines = [header, "", "| measurement | what | figures (medians) | target | met |", "|---|---|---|---|---|"]
    lines += [r.row() for r in results]
    return "\n".join(lines) + "\n"


def write(results: list[Result], out: Path, header: str, readme: Path | None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md"}
    paths["json"].write_text(json.dumps({"machine": header, "results": [asdict(r) for r in results]}, indent=1))
    table = markdown(results, header)
    paths["markdown"].write_text(table)
    if readme is not None:
        text = readme.read_text()
        if README_START not in text or README_END not in text:
            raise SystemExit(f"{readme} has no {README_START} ... {README_END} markers to write the table between")
        block = f"{README_START}\n{table}{README_END}"
        readme.write_text(re.sub(re.escape(README_START) + r".*?" + re.escape(README_END), lambda _: block, text,
                                 flags=re.S))
        paths["readme"] = readme
    return paths


def main(argv: list[str] | None = None) -> list[Result]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    ap.add_argument("--profile", default="tiny", help="the student model and engine of the generation benches")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--records", type=int, default=1_000_000, help="store records and post-processed responses")
    ap.add_argument("--items", type=int, default=200, help="benchmark items of the generation benches")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "bench")
    ap.add_argument("--readme", type=Path, default=None, help="write the table into this README's bench markers")
    args = ap.parse_args(argv)

    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    header = (f"Measured {time.strftime('%Y-%m-%d')} on {machine()}; medians of {args.repeats} repeats; "
              "`make bench` wrote it.")
    results: list[Result] = []
    if "engine" in args.only or "rerun" in args.only:
        gen = bench_generation(args.profile, work, args.items, args.repeats)
        results += [r for r in gen if ("engine" if r.name == "engine" else "rerun") in args.only]
    if "postprocess" in args.only:
        results.append(bench_postprocess(work, args.records, args.repeats))
    if "store" in args.only:
        results.append(bench_store(work, args.records, args.repeats))
    shutil.rmtree(work, ignore_errors=True)
    paths = write(results, args.out, header, args.readme)
    print(markdown(results, header))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return results


if __name__ == "__main__":
    main()
