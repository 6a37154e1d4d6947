"""Stage 3 building blocks: the reasoning model continues the student's simple CoT into a long one.

The assistant turn is pre-filled with the model's think tag, an opening that restates the question
and options (and that the user asked to reason without referring to the revealed description), the
simple thought with its own casing (only the first letter may change: the released code lower-cased
the whole thought), a separator (newline or space) and a cognitive cue; the model continues from the
cue. Cue and separator are drawn from a seed and the example's id, so resuming or sharding draws the
same ones.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from lpt_utils.artifacts import Funnel
from lpt_utils.engines import RequestStore, run_requests
from lpt_utils.engines.base import GenerationRequest, SamplingSettings
from lpt_utils.pipeline.mcq import choice_lines
from lpt_utils.pipeline.verify import parse_response, verdicts
from lpt_utils.prompts import render
from lpt_utils.records import LongCoT, as_dict

TRANSITIONS = ("O→O", "O→X", "X→O", "X→X")


def example_rng(seed: int, example_id: str) -> random.Random:
    """A random stream for one example, independent of row order."""
    return random.Random(int.from_bytes(hashlib.sha256(f"{seed}:{example_id}".encode()).digest()[:8], "big"))


def draw_cue_and_separator(seed: int, example_id: str, cues: Sequence[str],
                           separators: Sequence[str]) -> tuple[str, str]:
    """One cue and one separator for an example, from (seed, its id): the profile's `long_cot.cues`
    and `long_cot.separators` are the only lists."""
    rng = example_rng(seed, example_id)
    return rng.choice(list(cues)), rng.choice(list(separators))


def splice_thought(thought: str) -> str:
    """The simple thought as it enters the prefix: stripped, first letter upper-cased, nothing else
    changed, ending with a period (added only when it ends without sentence punctuation)."""
    t = thought.strip()
    if not t:
        return t
    t = t[0].upper() + t[1:]
    return t if t[-1] in ".!?" else t + "."


def user_message(description: str, question: str, choice_lines: list[str]) -> str:
    return render("long_cot_user", description=description.strip(), question=question.strip(),
                  choice_lines=choice_lines)


def assistant_prefix(question: str, choice_lines: list[str], thought: str, cue: str, separator: str,
                     think_tag: str = "<think>") -> str:
    """Think tag (or "" when the chat template opens it), opening, simple thought, separator, cue."""
    opening = render("long_cot_opening", think_tag=think_tag, question=question.strip(),
                     choice_lines=choice_lines).lstrip("\n")
    return f"{opening}\n{splice_thought(thought)}{separator}{cue}"


BAN_RULES = {
    "released": "the released filter: a case-sensitive substring test (misses \"Description\", drops "
                "\"texture\" and \"context\" for \"text\")",
    "whole_word": "whole words, case-insensitive (\"state\" is not \"statement\"; misses \"mentioning\")",
    "whole_word_forms": "whole words, case-insensitive, plus the forms the profile lists per banned word "
                        "(mention: mentioning; text: textual)",
}


def banned_hits(text: str, banned: Sequence[str], rule: str = "whole_word",
                forms: dict[str, Sequence[str]] | None = None) -> list[str]:
    """The banned words or phrases (or their listed forms) that `text` holds under `rule`
    (`BAN_RULES`). `forms`: extra forms per banned word, used by `whole_word_forms`."""
    if rule not in BAN_RULES:
        raise ValueError(f"unknown banned-word rule {rule!r}; known: {', '.join(BAN_RULES)}")
    words = [w for w in banned if w.strip()]
    if rule == "released":
        return [w for w in words if w in text]
    if rule == "whole_word_forms":
        unknown = sorted(set(forms or {}) - set(words))
        if unknown:
            raise ValueError(f"long_cot.banned_forms lists forms of {unknown}, which are not banned words")
        words = words + [f for w in words for f in (forms or {}).get(w, ()) if f not in words]
    hits = []
    for w in words:
        pattern = r"(?<![A-Za-z0-9'])" + re.escape(w.strip()) + r"(?![A-Za-z0-9])"
        if re.search(pattern, text, flags=re.I):
            hits.append(w)
    return hits


def ban_rule_comparison(added_thoughts: Sequence[str], banned: Sequence[str],
                        forms: dict[str, Sequence[str]] | None = None, examples: int = 3):
    """What each banned-word rule would drop among `added_thoughts` (the parsed continuations of a
    run): how many, how many only that rule drops, and the words that made the difference."""
    import pandas as pd

    hits = {r: [banned_hits(t, banned, r, forms) for t in added_thoughts] for r in BAN_RULES}
    out = []
    for r in BAN_RULES:
        dropped = [bool(h) for h in hits[r]]
        only = [i for i, d in enumerate(dropped) if d and not any(bool(hits[o][i]) for o in BAN_RULES if o != r)]
        spared = [i for i, d in enumerate(dropped) if not d and any(bool(hits[o][i]) for o in BAN_RULES if o != r)]
        words = Counter(w for h in hits[r] for w in h)
        out.append({"rule": r, "dropped": sum(dropped), "of": len(added_thoughts),
                    "share": round(sum(dropped) / len(added_thoughts), 3) if added_thoughts else None,
                    "only this rule drops": len(only), "kept here, dropped by another": len(spared),
                    "top words": ", ".join(f"{w} {c}" for w, c in words.most_common(5)),
                    "example it alone drops": _snippet(added_thoughts, only, hits[r], examples)})
    return pd.DataFrame(out).set_index("rule")


def _snippet(texts: Sequence[str], idx: list[int], hits: list[list[str]], k: int) -> str:
    if not idx:
        return ""
    i = idx[0]
    w = hits[i][0]
    pos = texts[i].find(w) if w in texts[i] else texts[i].lower().find(w.lower())
    lo = max(0, pos - 30)
    return f"…{texts[i][lo:pos + len(w) + 30]}… ({w})"


def transition(simple_correct: bool, long_correct: bool) -> str:
    """"O→O", "O→X", "X→O" or "X→X": the simple CoT's label, then the long CoT's."""
    return f"{'O' if simple_correct else 'X'}→{'O' if long_correct else 'X'}"


def long_thought(simple_thought: str, separator: str, cue: str, added_thought: str) -> str:
    """The long thought the student is trained on: the simple thought (as spliced into the prefix),
    the separator, the cue, then what the reasoning model added."""
    added = added_thought.strip()
    return f"{splice_thought(simple_thought)}{separator}{cue}{' ' if added else ''}{added}"


def render_prompt(tokenizer, user: str) -> str:
    """The reasoning model's prompt as its chat template renders it, up to the assistant turn.

    A raw prompt (not chat messages) so the pre-filled turn is exactly generation prompt + prefix
    whatever the template does with a final assistant message (R1 templates drop text before a
    `</think>` there, and open `<think>` only in the generation prompt)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                         tokenize=False)


@dataclass
class Example:
    """One simple CoT to expand: its MCQ, its thought, and the cue and separator drawn for it."""

    mcq: dict[str, Any]
    simple: dict[str, Any]  # the stage-2 row (response_id, thought, answer, is_correct, ...)
    cue: str
    separator: str
    prompt: str = ""
    prefix: str = ""


def examples(mcqs: dict[str, dict[str, Any]], simple_rows: list[dict[str, Any]], *, seed: int,
             cues: Sequence[str], separators: Sequence[str]) -> list[Example]:
    """One example per kept simple CoT, cue and separator drawn from (seed, response id)."""
    out = []
    for r in simple_rows:
        cue, sep = draw_cue_and_separator(seed, r["response_id"], cues, separators)
        out.append(Example(mcq=mcqs[r["mcq_id"]], simple=r, cue=cue, separator=sep))
    return out


def build_prompts(exs: list[Example], tokenizer, think_tag: str = "<think>") -> list[Example]:
    """Fill each example's raw prompt and pre-filled prefix. The think tag is written only when the
    chat template does not already end the generation prompt with it."""
    for ex in exs:
        lines = choice_lines(ex.mcq)
        ex.prompt = render_prompt(tokenizer, user_message(ex.mcq["description"], ex.mcq["question"], lines))
        tag = "" if ex.prompt.rstrip().endswith(think_tag) else think_tag
        ex.prefix = assistant_prefix(ex.mcq["question"], lines, ex.simple["thought"], ex.cue, ex.separator, tag)
    return exs


def requests(exs: list[Example], sampling: dict[str, Any], banned_words: Sequence[str] = (),
             ban_in_sampling: bool = False) -> list:
    """One request per example (n samples each); banned words also block sampling when asked."""
    s = dict(sampling)
    if ban_in_sampling:
        s["bad_words"] = list(banned_words)
    settings = SamplingSettings.from_dict(s)
    return [GenerationRequest(prompt=ex.prompt, assistant_prefix=ex.prefix, sampling=settings,
                              meta={"response_id": ex.simple["response_id"], "cue": ex.cue})
            for ex in exs]


def _continuation(prefix: str, text: str, think_tag: str) -> tuple[str, str]:
    """(whole think+answer text for parsing, added thought) from the prefix and the continuation."""
    whole = prefix + text
    if think_tag not in prefix:
        whole = think_tag + whole
    added = text.split("</think>", 1)[0] if "</think>" in text else ""
    return whole, added.strip()


def _shape(p, added: str) -> str:
    """The parsed response's shape; a continuation that closes the thought at once adds nothing."""
    return "empty_added_thought" if p.ok and not added else p.shape


def score(exs: list[Example], results, *, banned_words: Sequence[str] = (), think_tag: str = "<think>",
          rule: str = "strict", ban_rule: str = "whole_word",
          ban_forms: dict[str, Sequence[str]] | None = None) -> tuple[list[LongCoT], Funnel]:
    """Parse, verify (both rules; `rule` labels the transition), filter banned words in the added
    thought (`ban_rule`), label transitions, de-duplicate per MCQ (on the whole long thought and
    answer)."""
    rows: list[LongCoT] = []
    seen: dict[str, set[str]] = {}
    for ex, res in zip(exs, results, strict=True):
        m, sc = ex.mcq, ex.simple
        for k, (text, ntok, fin) in enumerate(zip(res.texts, res.num_tokens, res.finish_reasons)):
            whole, added = _continuation(ex.prefix, text, think_tag)
            p = parse_response(whole)
            ok = p.ok and bool(added)
            v = verdicts(p.answer, list(m["choices"]), m["answer_letter"], later_answers=p.later_answers) \
                if ok else None
            correct = bool(v and v[rule].correct)
            hits = banned_hits(added, banned_words, ban_rule, ban_forms) if ok else []
            lt = long_thought(sc["thought"], ex.separator, ex.cue, added) if ok else ""
            key = " ".join(f"{lt} {p.answer}".split())
            mcq_seen = seen.setdefault(m["mcq_id"], set())
            drop = ("unparsable" if not ok else "banned word" if hits else
                    "duplicate" if key in mcq_seen else "")
            if not drop:
                mcq_seen.add(key)
            rows.append(LongCoT(
                mcq_id=m["mcq_id"], simple_id=sc["response_id"], long_id=f"{sc['response_id']}-l{k}",
                image_id=m["image_id"], image_path=m["image_path"], question_type=m["question_type"],
                cue=ex.cue, separator=ex.separator, simple_thought=sc["thought"], simple_answer=sc["answer"],
                simple_correct=bool(sc["is_correct"]), simple_num_tokens=int(sc["num_tokens"]),
                prefix=ex.prefix, raw_text=text, added_thought=added, long_thought=lt,
                summary=p.between if ok else "", answer=p.answer if ok else "", answer_letter=m["answer_letter"],
                named_letter=(v["strict"].letter or "") if v else "", match=v["strict"].how if v else "",
                match_released=v["released"].how if v else "",
                correct_strict=bool(v and v["strict"].correct), correct_released=bool(v and v["released"].correct),
                rule=rule, is_correct=correct, response_shape=_shape(p, added),
                transition=transition(bool(sc["is_correct"]), correct) if ok else "",
                num_tokens=int(ntok), finish_reason=fin, banned_hits=hits, kept=not drop, drop_reason=drop))
    funnel = Funnel()
    n = len(rows)
    parsed = sum(r.drop_reason != "unparsable" for r in rows)
    funnel.add("continuations that close the thought and answer", n, parsed,
               Counter(f"unparsable: {r.response_shape} ({r.finish_reason})" for r in rows if r.drop_reason == "unparsable"))
    clean = parsed - sum(r.drop_reason == "banned word" for r in rows)
    funnel.add("added thought free of banned words", parsed, clean, {"banned word": parsed - clean})
    kept = sum(r.kept for r in rows)
    funnel.add("distinct long CoTs per MCQ", clean, kept, {"duplicate": clean - kept})
    return rows, funnel


def transition_table(rows: list[dict[str, Any]] | Any, by: str | None = "cue"):
    """Counts and rates of the four transitions among kept rows, overall and per `by` (e.g. cue).

    Rates are P(after | before): O→X is the share of right simple CoTs the expansion broke, X→O the
    share of wrong ones it recovered."""
    import pandas as pd

    df = pd.DataFrame(rows)
    df = df[df.kept] if len(df) else df
    groups = [("all", df)] + ([(g, d) for g, d in df.groupby(by)] if by and len(df) else [])
    out = []
    for name, d in groups:
        c = Counter(d.transition)
        n_o, n_x = c["O→O"] + c["O→X"], c["X→O"] + c["X→X"]
        row = {by or "group": name, "n": len(d)}
        for t in TRANSITIONS:
            row[t] = c[t]
        row["rate O→X"] = round(c["O→X"] / n_o, 3) if n_o else None
        row["rate X→O"] = round(c["X→O"] / n_x, 3) if n_x else None
        out.append(row)
    return pd.DataFrame(out).set_index(by or "group")


def summary(rows: list[LongCoT]) -> dict[str, Any]:
    kept = [r for r in rows if r.kept]
    return {
        "continuations": len(rows), "kept": len(kept),
        "transitions": {t: sum(r.transition == t for r in kept) for t in TRANSITIONS},
        "dropped": dict(Counter(r.drop_reason for r in rows if not r.kept)),
        "banned_word_hits": dict(Counter(w for r in rows for w in r.banned_hits)),
        "accuracy_after": round(sum(r.is_correct for r in kept) / len(kept), 4) if kept else None,
        "cues": dict(Counter(r.cue for r in kept)),
        "shapes": dict(Counter(r.response_shape for r in rows)),
        "unparsable_by_finish": dict(Counter(r.finish_reason for r in rows if r.drop_reason == "unparsable")),
        "accuracy_by_rule": {rule: round(sum(getattr(r, f"correct_{rule}") for r in kept) / len(kept), 4)
                             if kept else None for rule in ("strict", "released")},
    }


def to_rows(rows: list[LongCoT]) -> list[dict[str, Any]]:
    return [as_dict(r) for r in rows]


def collateral_words(text: str, banned: Sequence[str]) -> list[str]:
    """Longer words that merely contain a banned word ("statement" for "state", "textures" for
    "text"): what a sub-word sampling ban may block although the filter would keep them."""
    singles = {b.lower() for b in banned if b.strip() and " " not in b.strip()}
    words = {w.lower() for w in re.findall(r"[A-Za-z']+", text)}
    return sorted(w for w in words if w not in singles and any(b in w for b in singles))


def ban_effect(with_ban: list[LongCoT], without_ban: list[LongCoT], banned: Sequence[str]) -> "Any":
    """The same prompts sampled with and without the sampling ban, side by side: how often the
    added thought hits a banned word (whole word), how often it holds a longer word that merely
    contains one, how many continuations survive the filter, and their length."""
    import pandas as pd

    def arm(rows: list[LongCoT]) -> dict[str, Any]:
        parsed = [r for r in rows if r.drop_reason != "unparsable"]
        n = max(len(parsed), 1)
        return {
            "continuations": len(rows),
            "parse": round(len(parsed) / max(len(rows), 1), 3),
            "banned word in added thought": round(sum(bool(r.banned_hits) for r in parsed) / n, 3),
            "longer word containing one": round(sum(bool(collateral_words(r.added_thought, banned))
                                                    for r in parsed) / n, 3),
            "kept after filter": round(sum(r.kept for r in rows) / max(len(rows), 1), 3),
            "mean generated tokens": round(sum(r.num_tokens for r in rows) / max(len(rows), 1), 1),
        }

    return pd.DataFrame({"ban in sampling": arm(with_ban), "filter only": arm(without_ban)})


def token_lengths(tokenizer, texts) -> list[int]:
    """Token counts of `texts` with one tokenizer (the student's: what it will be trained on)."""
    return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def measure_sampling_ban(engine, exs: list[Example], rows: list[LongCoT], long_cot_settings: dict[str, Any],
                         stage, part: str | None = None, think_tag: str = "<think>"):
    """Run the first `measure_ban_on` examples again in the arm the main run did not take (with the
    sampling ban when it ran without, and the reverse), score both alike and compare them with
    `ban_effect`. None when `measure_ban_on` is 0. Calls are stored in the stage's (`stages.Stage`)
    store of that arm, or of that arm's part."""
    s = long_cot_settings
    n = min(int(s["measure_ban_on"]), len(exs))
    if not n:
        return None
    other = not s["ban_in_sampling"]
    name = "reasoner_ban" if other else "reasoner_no_ban"
    more = run_requests(engine, requests(exs[:n], s["sampling"], s["banned_words"], other),
                        RequestStore(stage.requests(name, part)), desc="with ban" if other else "without ban")
    more_rows, _ = score(exs[:n], more, banned_words=s["banned_words"], think_tag=think_tag, rule=s["rule"],
                         ban_rule=s["ban_rule"], ban_forms=s["banned_forms"])
    main_rows = rows[:n * int(s["sampling"]["n"])]
    with_ban, without = (more_rows, main_rows) if other else (main_rows, more_rows)
    return ban_effect(with_ban, without, s["banned_words"])
