"""Smoke checks of the tiny models through vLLM: do their outputs parse, and how often are they right?

`check_vlm` asks the student held-out ground-truth MCQs in the stage-2 prompt (forced `<think>`,
sampled) and reports the parse rate, accuracy per question kind and per answer form, and how many
MCQs got both right and wrong samples. `check_lm` runs the stage-1 writer on held-out (or train)
descriptions and the reformat pass on loose lists, and reports how many responses parse into valid
MCQs and how many of those agree with the scene graph (`questions.grade_mcq`), per question kind.

Run as `python -m lpt_utils.tiny_world check`. vLLM runs in-process (engine start-up ~10-20 s with
`VLLM_ENABLE_V1_MULTIPROCESSING=0`), one engine per process; never alongside a training run.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from lpt_utils.pipeline import mcq
from lpt_utils.pipeline.verify import parse_response, verify
from lpt_utils.tiny_world import corpus
from lpt_utils.tiny_world.questions import grade_mcq, scene_mcqs, template_kind
from lpt_utils.tiny_world.scenes import describe, iter_split_scenes, render

VLLM_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def _llm(model_dir: str | Path, seed: int = 0):
    for k, v in VLLM_ENV.items():
        os.environ.setdefault(k, v)
    from vllm import LLM  # heavy: only when a check runs

    return LLM(model=str(model_dir), dtype="float32", enforce_eager=True, max_model_len=2048, seed=seed,
               limit_mm_per_prompt={"image": 1, "video": 0})


def parse_student(text: str) -> tuple[str, str] | None:
    """(thought, answer) from `<think>` + the sampled continuation, or None (stage 2's parser)."""

    p = parse_response("<think>" + text)
    return (p.thought, p.answer) if p.ok else None


def check_vlm(model_dir: str | Path, n_scenes: int = 60, samples: int = 4, temperature: float = 0.7,
              top_p: float = 0.8, seed: int = 0, llm=None) -> dict[str, Any]:
    from vllm import SamplingParams  # heavy: only when a check runs


    llm = llm or _llm(model_dir, seed)
    tok = llm.get_tokenizer()
    it = iter_split_scenes("heldout", seed)
    rows, prompts, scenes_seen = [], [], []
    for _ in range(n_scenes):
        scene = next(it)
        scenes_seen.append(scene)
        image = render(scene)
        rng = random.Random(f"tiny-world-check:{seed}:{scene.id}")
        for i, item in enumerate(scene_mcqs(scene, rng)):
            row = corpus.student_row(scene, item, i, seed, f"{scene.id}.png")
            text = tok.apply_chat_template(mcq.student_messages(row), add_generation_prompt=True, tokenize=False)
            rows.append(row)
            prompts.append({"prompt": text + "<think>", "multi_modal_data": {"image": image}})
    params = SamplingParams(n=samples, temperature=temperature, top_p=top_p, repetition_penalty=1.05,
                            max_tokens=128)
    outs = llm.generate(prompts, params, use_tqdm=False)
    stats: dict[str, Any] = {"mcqs": len(rows), "samples": 0, "parsed": 0, "correct": 0, "mixed_mcqs": 0}
    by_kind = defaultdict(lambda: [0, 0])
    by_form = defaultdict(lambda: [0, 0])
    examples = []
    for row, out in zip(rows, outs):
        verdicts = []
        for o in out.outputs:
            stats["samples"] += 1
            parsed = parse_student(o.text)
            if parsed is None:
                continue
            stats["parsed"] += 1
            ok = verify(parsed[1], row["choices"], row["answer_letter"]).correct
            verdicts.append(ok)
            stats["correct"] += ok
            by_kind[row["kind"]][0] += ok
            by_kind[row["kind"]][1] += 1
            by_form[row["answer_form"]][0] += ok
            by_form[row["answer_form"]][1] += 1
        stats["mixed_mcqs"] += (True in verdicts and False in verdicts)
        if len(examples) < 6:
            examples.append({"question": row["question"], "choices": row["choices"], "answer": row["answer"],
                             "output": out.outputs[0].text})
    # how many image tokens the first scene became in vLLM's prompt (64 for a 224 px scene)
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    stats["image_tokens"] = list(outs[0].prompt_token_ids).count(pad) if outs else 0
    stats["parse_rate"] = round(stats["parsed"] / max(1, stats["samples"]), 3)
    stats["accuracy"] = round(stats["correct"] / max(1, stats["parsed"]), 3)
    stats["accuracy_by_kind"] = {k: round(a / max(1, n), 3) for k, (a, n) in sorted(by_kind.items())}
    stats["accuracy_by_answer_form"] = {k: round(a / max(1, n), 3) for k, (a, n) in sorted(by_form.items())}
    stats["examples"] = examples
    stats.update(check_think_prompt(llm, scenes_seen, seed))
    return stats


def check_think_prompt(llm, scenes: list, seed: int = 0) -> dict[str, Any]:
    """Notebook 07's base/think row in miniature: the evaluation's think prompt (forced `<think>`),
    greedy, on the scenes' ground-truth MCQs, scored by the strict rule; accuracy per kind."""
    from vllm import SamplingParams  # heavy: only when a check runs

    tok = llm.get_tokenizer()
    rows, prompts = [], []
    for scene in scenes:
        image = render(scene)
        for row, msgs, _ in corpus.think_examples(scene, seed):
            text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            rows.append(row)
            prompts.append({"prompt": text + "<think>", "multi_modal_data": {"image": image}})
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=160), use_tqdm=False)
    by_kind = defaultdict(lambda: [0, 0])
    for row, o in zip(rows, outs):
        p = parse_response("<think>" + o.outputs[0].text)
        ok = p.ok and verify(p.answer, row["choices"], row["answer_letter"]).correct
        for k in (row["kind"], "all"):
            by_kind[k][0] += ok
            by_kind[k][1] += 1
    return {"think_prompt_accuracy": round(by_kind["all"][0] / max(1, by_kind["all"][1]), 3),
            "think_prompt_accuracy_by_kind": {k: round(a / n, 3) for k, (a, n) in sorted(by_kind.items()) if k != "all"}}


def check_lm(model_dir: str | Path, n_scenes: int = 20, samples: int = 2, temperature: float = 0.7,
             seed: int = 0, llm=None, split: str = "heldout") -> dict[str, Any]:
    """Writer and reformat checks on the first `n_scenes` scenes of `split` ("train": the scenes a
    run's stage 0 draws, which the LM's warm-up also saw; "heldout": unseen ones).

    `writer_agreement_by_kind`: of the valid writer MCQs whose question follows one of the tiny
    world's templates (`questions.grade_mcq`), the share whose answer is right about the scene.
    """
    from vllm import SamplingParams  # heavy: only when a check runs


    llm = llm or _llm(model_dir, seed)
    tok = llm.get_tokenizer()
    it = iter_split_scenes(split, seed)
    scenes = [next(it) for _ in range(n_scenes)]
    rng = random.Random(f"tiny-world-check-lm:{seed}")
    writer = [tok.apply_chat_template(mcq.writer_messages(describe(s)), add_generation_prompt=True, tokenize=False)
              for s in scenes]
    reformat = [corpus.reformat_example(s, rng) for s in scenes]
    reformat_prompts = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m, _ in reformat]
    params = SamplingParams(n=samples, temperature=temperature, top_p=0.95, max_tokens=600)
    w_out = llm.generate(writer, params, use_tqdm=False)
    r_out = llm.generate(reformat_prompts, SamplingParams(n=1, temperature=0.0, max_tokens=600), use_tqdm=False)
    n_resp = n_items = n_valid = with_valid = 0
    reasons: dict[str, int] = defaultdict(int)
    agree = defaultdict(lambda: [0, 0])  # kind -> [agreeing, graded]
    for scene, out in zip(scenes, w_out):
        for o in out.outputs:
            n_resp += 1
            items = mcq.parse_tagged_list(o.text)
            valid = [it for it in items if not mcq.validity(it)]
            for it in items:
                reasons[mcq.validity(it) or "valid"] += 1
            for it in valid:
                answer = it.choices[mcq.match_answer_to_options(it.answer, it.choices)[0]]
                verdict = grade_mcq(scene, it.question, answer)
                kind = template_kind(it.question) or "other"
                agree[kind][1] += verdict is not None
                agree[kind][0] += bool(verdict)
                agree["all"][1] += verdict is not None
                agree["all"][0] += bool(verdict)
                agree["valid_items"][1] += 1  # how many valid items, templated or not
            n_items += len(items)
            n_valid += len(valid)
            with_valid += bool(valid)
    reasoner = check_reasoner(llm, scenes, seed)
    exact = sum(o.outputs[0].text.strip() == target.strip() for o, (_, target) in zip(r_out, reformat))
    r_items = r_valid = r_same = 0
    for o, (_, target) in zip(r_out, reformat):
        got = mcq.parse_tagged_list(o.outputs[0].text)
        want = {it.question for it in mcq.parse_tagged_list(target)}
        r_items += len(got)
        r_valid += sum(not mcq.validity(it) for it in got)
        r_same += sum(it.question in want for it in got)
    return {
        "writer_responses": n_resp,
        "writer_responses_with_a_valid_mcq": with_valid,
        "writer_items_per_response": round(n_items / max(1, n_resp), 2),
        "writer_valid_share": round(n_valid / max(1, n_items), 3),
        "writer_item_verdicts": dict(reasons),
        "writer_split": split,
        "writer_valid_by_kind": {k: n for k, (_, n) in sorted(agree.items()) if k not in ("all", "valid_items")}
        | {"other": agree["valid_items"][1] - agree["all"][1]},
        "writer_agreement": round(agree["all"][0] / max(1, agree["all"][1]), 3),
        "writer_agreement_by_kind": {k: f"{a}/{n}" for k, (a, n) in sorted(agree.items())
                                     if k not in ("all", "valid_items", "other")},
        "reformat_exact": f"{exact}/{len(reformat)}",
        "reformat_valid_share": round(r_valid / max(1, r_items), 3),
        "reformat_questions_kept": round(r_same / max(1, r_items), 3),
        **reasoner,
        "writer_example": w_out[0].outputs[0].text,
    }


def check_reasoner(llm, scenes: list, seed: int = 0, cases_per_scene: int = 6) -> dict[str, Any]:
    """Stage 3 as the warm-up poses it, on `scenes`: the description, question and options, the turn
    pre-filled with a right or a wrong simple thought and a cue; sampled as the tiny profile samples
    (T 0.6, top_p 0.95). X->O: right answers after a wrong thought; O->X: wrong after a right one."""
    from vllm import SamplingParams  # heavy: only when a check runs

    from lpt_utils.tiny_world.models import taught_cues

    tok = llm.get_tokenizer()
    rng = random.Random(f"tiny-world-check-reasoner:{seed}")
    cues = taught_cues()
    cases = [corpus.long_cot_case(s, rng, scenes, *cues) for s in scenes for _ in range(cases_per_scene)]
    prompts = [tok.apply_chat_template(c["messages"], add_generation_prompt=True, tokenize=False) + c["prefix"]
               for c in cases]
    outs = llm.generate(prompts, SamplingParams(n=1, temperature=0.6, top_p=0.95, max_tokens=160), use_tqdm=False)
    tally = defaultdict(lambda: [0, 0])  # (transition start, kind) -> [right after, parsed]
    for c, o in zip(cases, outs):
        p = parse_response("<think>" + o.outputs[0].text)  # the prefix opened the thought
        if not p.ok:
            continue
        ok = verify(p.answer, c["row"]["choices"], c["row"]["answer_letter"]).correct
        start = "O" if c["simple_right"] else "X"
        for key in (start, f"{start}:{c['kind']}"):
            tally[key][0] += ok
            tally[key][1] += 1
    x_right, x_n = tally["X"]
    o_right, o_n = tally["O"]
    return {"reasoner_cases": len(cases), "reasoner_parsed": x_n + o_n,
            # None where no continuation of that kind parsed (a rate of nothing is not 0 or 1)
            "reasoner_x_to_o": round(x_right / x_n, 3) if x_n else None,
            "reasoner_o_to_x": round(1 - o_right / o_n, 3) if o_n else None,
            "reasoner_x_to_o_by_kind": {k[2:]: f"{a}/{n}" for k, (a, n) in sorted(tally.items()) if k.startswith("X:")}}


def check_in_subprocess(name: str, model_dir: str | Path, n_scenes: int = 60, timeout: float = 900,
                        **kwargs: Any) -> dict[str, Any]:
    """`check_vlm` / `check_lm` in a fresh Python process (one vLLM engine per process); `kwargs`
    (JSON-able) go to the check."""
    import subprocess

    fn = "check_vlm" if name == "vlm" else "check_lm"
    code = (f"import json; from lpt_utils.tiny_world.check import {fn}; "
            f"print('@@' + json.dumps({fn}({str(model_dir)!r}, n_scenes={int(n_scenes)}, "
            f"**json.loads({json.dumps(kwargs)!r}))))")
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in VLLM_ENV.items()}}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0 or "@@" not in proc.stdout:
        raise RuntimeError(f"{fn} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.split("@@", 1)[1])
