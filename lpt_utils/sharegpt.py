"""The released data format: LLaMA-Factory "sharegpt" JSON files plus their `dataset_info.json`
entries, written from stage 4's rows and read back into them; and the import of the published 30K
dataset (andrewliao11/LongPerceptualThoughts-30k: `example_id`, `messages`, `cot_type`, no images),
joined with a local DOCCI folder by image id.

SFT record: `messages` (system, user starting with `<image>`, assistant), `images`, `assistant_prefix`
(X→O rows only), `metadata`. DPO record: `messages` (system, user), `images`, `chosen`, `rejected`
(each one assistant message), `metadata`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from lpt_utils.training_data import DPO_COLUMNS, SFT_COLUMNS

IMAGE_TOKEN = "<image>"
_META_SFT = ("image_id", "mcq_id", "id", "source", "num_tokens")
_META_DPO = ("image_id", "mcq_id", "id", "pair_type", "family")


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def sft_record(row: dict[str, Any]) -> dict[str, Any]:
    rec = {"messages": [_msg("system", row["system"]), _msg("user", IMAGE_TOKEN + row["user"]),
                        _msg("assistant", row["assistant"])],
           "images": [row["image_path"]]}
    if row.get("assistant_prefix"):
        rec["assistant_prefix"] = row["assistant_prefix"]
    rec["metadata"] = {k: row[k] for k in _META_SFT}
    return rec


def dpo_record(row: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [_msg("system", row["system"]), _msg("user", IMAGE_TOKEN + row["user"])],
            "images": [row["image_path"]], "chosen": _msg("assistant", row["chosen"]),
            "rejected": _msg("assistant", row["rejected"]), "metadata": {k: row[k] for k in _META_DPO}}


def dataset_info_entry(file_name: str, ranking: bool) -> dict[str, Any]:
    columns = {"messages": "messages", "images": "images"}
    columns.update({"chosen": "chosen", "rejected": "rejected"} if ranking else {"assistant_prefix": "assistant_prefix"})
    entry = {"file_name": file_name, "formatting": "sharegpt", "columns": columns,
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                      "assistant_tag": "assistant", "system_tag": "system"}}
    if ranking:
        entry["ranking"] = True
    return entry


def export(out_dir: str | Path, sets: dict[str, tuple[str, list[dict[str, Any]]]]) -> Path:
    """Write each set ({name: ("sft" | "dpo", rows)}) as `<name>.json` and one `dataset_info.json`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {}
    for name, (kind, rows) in sets.items():
        make = sft_record if kind == "sft" else dpo_record
        (out / f"{name}.json").write_text(json.dumps([make(r) for r in rows], ensure_ascii=False, indent=1))
        info[name] = dataset_info_entry(f"{name}.json", ranking=kind == "dpo")
    path = out / "dataset_info.json"
    path.write_text(json.dumps(info, indent=2, ensure_ascii=False))
    return path


def _content(m: dict[str, Any]) -> str:
    c = m["content"]
    return c if isinstance(c, str) else "".join(p.get("text", "") for p in c)


def _split_messages(messages: list[dict[str, Any]], where: str) -> tuple[str, str, list[dict[str, Any]]]:
    roles = [m["role"] for m in messages]
    if "user" not in roles:
        raise ValueError(f"{where}: no user message")
    system = _content(messages[0]) if roles[0] == "system" else ""
    user = _content(messages[roles.index("user")])
    if user.startswith(IMAGE_TOKEN):
        user = user[len(IMAGE_TOKEN):]
    return system, user.replace(IMAGE_TOKEN, ""), messages[roles.index("user") + 1:]


def import_records(records: list[dict[str, Any]], kind: str, image_root: str | Path | None = None) -> list[dict[str, Any]]:
    """sharegpt records (ours or any release in that format) -> stage-4 rows. Relative image paths
    are resolved against `image_root`. A record without an image or a reply raises, naming it."""
    rows = []
    for i, rec in enumerate(records):
        meta = rec.get("metadata") or {}
        where = f"record {i} ({meta.get('id', 'no id')})"
        if not rec.get("images"):
            raise ValueError(f"{where}: no image")
        img = Path(rec["images"][0])
        if image_root is not None and not img.is_absolute():
            img = Path(image_root) / img
        system, user, rest = _split_messages(rec["messages"], where)
        base = {"id": str(meta.get("id", i)), "mcq_id": str(meta.get("mcq_id", "")),
                "image_id": str(meta.get("image_id", img.stem)), "image_path": str(img), "system": system,
                "user": user}
        if kind == "sft":
            if not rest or rest[-1]["role"] != "assistant":
                raise ValueError(f"{where}: no assistant reply")
            rows.append({**base, "assistant": _content(rest[-1]), "assistant_prefix": rec.get("assistant_prefix") or "",
                         "source": str(meta.get("source", "")), "num_tokens": int(meta.get("num_tokens", 0))})
        else:
            rows.append({**base, "chosen": _content(rec["chosen"]), "rejected": _content(rec["rejected"]),
                         "pair_type": str(meta.get("pair_type", "")), "family": str(meta.get("family", ""))})
    cols = SFT_COLUMNS if kind == "sft" else DPO_COLUMNS
    return [{c: r[c] for c in cols} for r in rows]


def read_release(path: str | Path, kind: str, image_root: str | Path | None = None) -> list[dict[str, Any]]:
    """Read one released sharegpt JSON file into stage-4 rows."""
    return import_records(json.loads(Path(path).read_text()), kind, image_root)


def _load_table(path: str | Path) -> list[dict[str, Any]]:
    import datasets

    p = Path(path)
    if p.is_dir() and (p / "dataset_info.json").exists() and (p / "state.json").exists():
        ds = datasets.load_from_disk(str(p))
    else:
        files = [str(f) for f in (sorted(p.rglob("*.parquet")) if p.is_dir() else [p])]
        fmt = "json" if files and files[0].endswith((".json", ".jsonl")) else "parquet"
        ds = datasets.load_dataset(fmt, data_files=files, split="train")
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"]
    return ds.to_list()


def import_published(path: str | Path, docci_dir: str | Path, image_ext: str = ".jpg") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The published 30K (a parquet/JSON file or folder, or a saved HF dataset) -> SFT rows, each
    joined with `docci_dir/images/<example_id><image_ext>`. Rows whose image is missing or whose
    messages lack a user turn or a reply are skipped and counted by reason (with examples)."""
    rows, skipped, examples = [], Counter(), {}
    for i, rec in enumerate(_load_table(path)):
        ex_id = str(rec.get("example_id", ""))
        img = Path(docci_dir) / "images" / f"{ex_id}{image_ext}"
        reason = None
        if not ex_id:
            reason = "no example_id"
        elif not img.exists():
            reason = "image not in the DOCCI folder"
        else:
            try:
                system, user, rest = _split_messages(list(rec["messages"]), f"row {i}")
                if not rest or rest[-1]["role"] != "assistant":
                    raise ValueError("no assistant reply")
            except (ValueError, KeyError, TypeError) as e:
                reason = f"malformed messages ({str(e).split(': ')[-1]})"
        if reason:
            skipped[reason] += 1
            examples.setdefault(reason, ex_id or f"row {i}")
            continue
        rows.append({"id": f"{ex_id}-{i}", "mcq_id": "", "image_id": ex_id, "image_path": str(img),
                     "system": system, "user": user, "assistant": _content(rest[-1]), "assistant_prefix": "",
                     "source": str(rec.get("cot_type", "")), "num_tokens": 0})
    report = {"read": len(rows) + sum(skipped.values()), "imported": len(rows), "skipped": dict(skipped),
              "skip_examples": examples, "by_cot_type": dict(Counter(r["source"] for r in rows))}
    return rows, report
