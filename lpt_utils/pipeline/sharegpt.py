"""The released data format: LLaMA-Factory "sharegpt" JSON files plus their `dataset_info.json`
entries, written from stage 4's rows and read back into them; and the import of the published 30K
dataset (andrewliao11/LongPerceptualThoughts-30k: `example_id`, `messages`, `cot_type`, no images),
joined with a local DOCCI folder by image id.

SFT record: `messages` (system, user starting with `<image>`, assistant), `images`, `assistant_prefix`
(X→O rows only), `metadata`. DPO record: `messages` (system, user), `images`, `chosen`, `rejected`
(each one assistant message), `metadata`.

Ids travel both ways. The authors' files carry `metadata` with `image_id`, `mcq_unique_id`,
`simple_cot_unique_id` and `extended_cot_unique_id` (SFT) or `image_id` and `mcq_unique_id` (DPO);
they become the row's `mcq_id`, `simple_cot_id` and `long_cot_id`, and any other metadata field is
kept as one JSON string (`extra_metadata`). Export writes them back under the released key names
(plus ours), so import → export → import gives the same rows.

Image paths are written relative to the export folder (LLaMA-Factory joins them to its `media_dir`,
which defaults to `dataset_dir`), so a moved or copied export still finds its images as long as they
keep their place relative to it. Reading resolves relative paths against the JSON file's folder and
can rebase the authors' absolute paths onto a local DOCCI folder.

Stock LLaMA-Factory ignores `assistant_prefix`, so each set with X→O rows is also written as
`<name>_stock.json`: the wrong simple thought leaves the trained assistant turn (see `stock_record`).

The rows follow stage 4's records (`lpt_utils.records.SFTRow`, `DPORow`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpt_utils.records import DPO_COLUMNS, SFT_COLUMNS

Rows = list[dict[str, Any]]


IMAGE_TOKEN = "<image>"
STOCK_SUFFIX = "_stock"
# How a stock row carries the wrong simple thought: as context at the end of the user turn, which
# trainers leave out of the loss by default (LLaMA-Factory unless `train_on_prompt`).
STOCK_CONTEXT = "\n\nA first attempt at this question, to be re-checked before answering:\n{thought}"

# Our metadata keys (row columns of the same name), and the released key -> our column for the ids.
_OURS = {"sft": ("image_id", "mcq_id", "id", "source", "num_tokens"),
         "dpo": ("image_id", "mcq_id", "id", "pair_type", "family")}
_RELEASED_IDS = {"sft": {"mcq_unique_id": "mcq_id", "simple_cot_unique_id": "simple_cot_id",
                         "extended_cot_unique_id": "long_cot_id"},
                 "dpo": {"mcq_unique_id": "mcq_id"}}
_KNOWN_META = {kind: set(_OURS[kind]) | set(_RELEASED_IDS[kind]) | set(_RELEASED_IDS[kind].values())
               for kind in _OURS}
_MISSING = ("error", "skip", "keep")


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _kind(kind: str) -> str:
    if kind not in _OURS:
        raise ValueError(f"kind must be 'sft' or 'dpo', not {kind!r}")
    return kind


def stable_hash(*parts: Any) -> str:
    """16 hex digits of sha256 over the parts: an id that depends on content, never on row order."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def derived_mcq_id(image_id: str, user: str) -> str:
    """The MCQ id of a row whose source names none: a hash of the image id and the user turn (the
    question with its options), so every trace of one question gets the same id."""
    return "mcq-" + stable_hash(image_id, user.replace(IMAGE_TOKEN, "").strip())


# ----------------------------------------------------------------------------- export


def _extra(row: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    """The row's `extra_metadata` as a dict ({} when empty or missing); it may not shadow a key the
    export writes itself, or re-import would read it as that key."""
    raw = row.get("extra_metadata")
    if raw is None or (isinstance(raw, float) and math.isnan(raw)) or raw == "":
        return {}
    try:
        extra = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: extra_metadata is not JSON ({e})") from None
    if not isinstance(extra, dict):
        raise ValueError(f"{where}: extra_metadata must be a JSON object, got {type(extra).__name__}")
    clash = sorted(set(extra) & _KNOWN_META[kind])
    if clash:
        raise ValueError(f"{where}: extra_metadata repeats the key(s) {clash}, which the export writes itself")
    return extra


def metadata(row: dict[str, Any], kind: str) -> dict[str, Any]:
    """A record's `metadata`: our keys, the ids under the released key names, then the extra fields."""
    where = f"row {row.get('id', '?')}"
    meta: dict[str, Any] = {k: row.get(k, "") for k in _OURS[_kind(kind)]}
    meta = {k: (int(v or 0) if k == "num_tokens" else str(v)) for k, v in meta.items()}
    for released, col in _RELEASED_IDS[kind].items():
        if row.get(col):
            meta[released] = str(row[col])
    return {**meta, **_extra(row, kind, where)}


def _check_text(text: str, where: str, allowed_images: int = 0) -> str:
    """LLaMA-Factory matches each `<image>` in the messages with one image: a stray one breaks the row."""
    if text.count(IMAGE_TOKEN) != allowed_images:
        raise ValueError(f"{where}: the text holds {text.count(IMAGE_TOKEN)} '{IMAGE_TOKEN}' token(s), "
                         f"expected {allowed_images} (one image per record, at the start of the user turn)")
    return text


def _prompt(row: dict[str, Any], user_suffix: str = "") -> list[dict[str, str]]:
    where = f"row {row.get('id', '?')}"
    user = _check_text(IMAGE_TOKEN + row["user"] + user_suffix, where, allowed_images=1)
    system = [_msg("system", _check_text(row["system"], where))] if row.get("system") else []
    return system + [_msg("user", user)]


def _image(row: dict[str, Any], image: str | None) -> list[str]:
    if not row.get("image_path"):
        raise ValueError(f"row {row.get('id', '?')}: no image_path")
    return [image if image is not None else str(row["image_path"])]


def sft_record(row: dict[str, Any], image: str | None = None) -> dict[str, Any]:
    """One SFT row as a record (`image`: the path to write, default the row's own)."""
    where = f"row {row.get('id', '?')}"
    rec = {"messages": _prompt(row) + [_msg("assistant", _check_text(row["assistant"], where))],
           "images": _image(row, image)}
    if row.get("assistant_prefix"):
        rec["assistant_prefix"] = row["assistant_prefix"]
    rec["metadata"] = metadata(row, "sft")
    return rec


def dpo_record(row: dict[str, Any], image: str | None = None) -> dict[str, Any]:
    """One DPO row as a ranking record: the prompt ends with the user turn; chosen and rejected are
    single assistant messages."""
    where = f"row {row.get('id', '?')}"
    return {"messages": _prompt(row), "images": _image(row, image),
            "chosen": _msg("assistant", _check_text(row["chosen"], where)),
            "rejected": _msg("assistant", _check_text(row["rejected"], where)), "metadata": metadata(row, "dpo")}


def split_prefix(row: dict[str, Any]) -> tuple[str, str, str]:
    """(opening tag, wrong thought, rest) of a row with an `assistant_prefix`: the prefix is the opening
    think tag (with its whitespace) and the wrong simple thought; the rest (cue, added thought, closing
    tag, answer) is what the row is meant to train. Raises when the turn does not begin with its prefix
    or the prefix is the whole turn."""
    prefix, turn = row["assistant_prefix"], row["assistant"]
    if not turn.startswith(prefix):
        raise ValueError(f"row {row.get('id', '?')}: the assistant turn does not begin with its assistant_prefix")
    rest = turn[len(prefix):].lstrip()
    if not rest:
        raise ValueError(f"row {row.get('id', '?')}: the assistant_prefix is the whole turn; nothing would train")
    tag = re.match(r"\s*<[^<>\s]+>\s*", prefix)
    opening = tag.group(0).lstrip() if tag else ""
    return opening, prefix[tag.end() if tag else 0:].strip(), rest


def stock_record(row: dict[str, Any], image: str | None = None) -> dict[str, Any]:
    """The record a stock trainer trains as intended (LLaMA-Factory without the authors' patch, which
    ignores `assistant_prefix`; TRL with the last message as the completion). Rows without a prefix are
    the plain record. For a row with one (X→O), the wrong simple thought leaves the assistant turn: it
    is appended to the user turn as context (`STOCK_CONTEXT`), and the assistant turn is the opening
    think tag followed by the cue, the added thought and the answer. So no trained token comes from the
    wrong thought, every assistant turn still opens with the think tag, and the default settings do it
    (a prior assistant turn would be trained unless LLaMA-Factory's `mask_history` is set). The cost:
    the model sees the wrong thought as user text, not as its own words."""
    if not row.get("assistant_prefix"):
        return sft_record(row, image)
    opening, thought, rest = split_prefix(row)
    where = f"row {row.get('id', '?')}"
    return {"messages": _prompt(row, STOCK_CONTEXT.format(thought=thought))
            + [_msg("assistant", _check_text(opening + rest, where))],
            "images": _image(row, image), "metadata": {**metadata(row, "sft"), "assistant_prefix_moved": True}}


def dataset_info_entry(file_name: str, ranking: bool, prefix: bool = True) -> dict[str, Any]:
    """The `dataset_info.json` entry of one file (`prefix`: map the `assistant_prefix` column, which
    only the authors' patched LLaMA-Factory reads)."""
    columns = {"messages": "messages", "images": "images"}
    if ranking:
        columns.update({"chosen": "chosen", "rejected": "rejected"})
    elif prefix:
        columns["assistant_prefix"] = "assistant_prefix"
    entry = {"file_name": file_name, "formatting": "sharegpt", "columns": columns,
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                      "assistant_tag": "assistant", "system_tag": "system"}}
    if ranking:
        entry["ranking"] = True
    return entry


def relative_image(path: str, out_dir: Path) -> str:
    """The image path as the export writes it: relative to the export folder, both sides with links
    resolved (the OS resolves `..` physically when LLaMA-Factory opens `media_dir/<path>`)."""
    return os.path.relpath(os.path.realpath(path), os.path.realpath(out_dir))


def _write_json(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(records, ensure_ascii=False, indent=1))
    os.replace(tmp, path)


def export(out_dir: str | Path, sets: dict[str, tuple[str, list[dict[str, Any]]]]) -> Path:
    """Write each set ({name: ("sft" | "dpo", rows)}) as `<name>.json`, image paths relative to
    `out_dir`, and one `dataset_info.json` registering every file. An SFT set with X→O rows (an
    `assistant_prefix`) is also written as `<name>_stock.json` (`stock_record`), registered without the
    prefix column. Returns the `dataset_info.json` path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {}
    for name, (kind, rows) in sets.items():
        images = [relative_image(r["image_path"], out) if r.get("image_path") else None for r in rows]
        make = {"sft": sft_record, "dpo": dpo_record}[_kind(kind)]
        _write_json(out / f"{name}.json", [make(r, img) for r, img in zip(rows, images)])
        info[name] = dataset_info_entry(f"{name}.json", ranking=kind == "dpo")
        stock = f"{name}{STOCK_SUFFIX}"
        if kind == "sft" and any(r.get("assistant_prefix") for r in rows):
            _write_json(out / f"{stock}.json", [stock_record(r, img) for r, img in zip(rows, images)])
            info[stock] = dataset_info_entry(f"{stock}.json", ranking=False, prefix=False)
        else:
            (out / f"{stock}.json").unlink(missing_ok=True)  # a stale variant from an earlier export
    path = out / "dataset_info.json"
    path.write_text(json.dumps(info, indent=2, ensure_ascii=False))
    return path


# ----------------------------------------------------------------------------- import


@dataclass
class ImportReport:
    """What an import did, for the manifest: rows read and kept, where their images were found, and
    every row skipped or id derived, counted (with a few examples)."""

    source: str
    read: int = 0
    images: Counter = field(default_factory=Counter)  # found | rebased to docci_dir | missing
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    derived: Counter = field(default_factory=Counter)  # ids made up because the source had none
    how: dict[str, str] = field(default_factory=dict)  # how derived ids are made

    def note(self, what: str, example: str) -> None:
        got = self.examples.setdefault(what, [])
        if len(got) < 5:
            got.append(example)

    def as_dict(self, imported: int) -> dict[str, Any]:
        return {"source": self.source, "read": self.read, "imported": imported, "images": dict(self.images),
                "skipped": dict(self.skipped), "examples": self.examples, "derived_ids": dict(self.derived),
                "id_rules": self.how}


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


def locate_image(path: str, image_id: str, *, base_dir: str | Path | None,
                 docci_dir: str | Path | None) -> tuple[str, str]:
    """(path, how) for a record's image. A relative path is joined to `base_dir` (the JSON file's
    folder, as LLaMA-Factory's `media_dir` does). When that file does not exist and `docci_dir` is
    given, the image is looked up there by id (`<docci_dir>/images/<image_id>.jpg`), then by the file
    name of the given path: this rebases the authors' absolute paths (/home/andrew/.../docci/images/
    train_00123.jpg). `how` is "found", "rebased to docci_dir" or "missing"."""
    p = path
    if not os.path.isabs(p):
        p = os.path.normpath(os.path.join(os.path.realpath(base_dir or "."), p))
    if os.path.isfile(p):
        return p, "found"
    if docci_dir is not None:
        images = Path(docci_dir).resolve() / "images"
        by_id = [images / f"{image_id}.jpg"] if image_id else []
        for cand in by_id + [images / Path(path).name]:
            if cand.is_file():
                return str(cand), "rebased to docci_dir"
    return p, "missing"


def _ids(meta: dict[str, Any], kind: str, where: str) -> dict[str, str]:
    """Our id columns from the metadata: our key or the released one (they must agree when both are there)."""
    out = {}
    for released, col in _RELEASED_IDS[kind].items():
        ours, theirs = meta.get(col), meta.get(released)
        if ours not in (None, "") and theirs not in (None, "") and str(ours) != str(theirs):
            raise ValueError(f"{where}: metadata {col}={ours!r} and {released}={theirs!r} disagree")
        out[col] = str(ours if ours not in (None, "") else theirs if theirs is not None else "")
    return out


def _extra_json(meta: dict[str, Any], kind: str) -> str:
    return json.dumps({k: v for k, v in meta.items() if k not in _KNOWN_META[kind]}, ensure_ascii=False,
                      sort_keys=True)


class _Ids:
    """Row ids unique within one import: a repeated id gets `#2`, `#3`, ... (counted)."""

    def __init__(self, report: ImportReport):
        self.seen: Counter = Counter()
        self.report = report

    def __call__(self, rid: str) -> str:
        self.seen[rid] += 1
        if self.seen[rid] == 1:
            return rid
        self.report.derived["repeated id made unique"] += 1
        return f"{rid}#{self.seen[rid]}"


def _check_record(rec: dict[str, Any], kind: str, where: str) -> tuple[dict[str, Any], str]:
    """(metadata, image path) of a well-formed record; a malformed one raises, naming it."""
    meta = rec.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: metadata must be an object")
    if not isinstance(rec.get("messages"), list):
        raise ValueError(f"{where}: no messages list")
    if kind == "dpo" and not (isinstance(rec.get("chosen"), dict) and isinstance(rec.get("rejected"), dict)):
        raise ValueError(f"{where}: a ranking record needs chosen and rejected messages")
    images = rec.get("images") or []
    images = [images] if isinstance(images, str) else images
    if len(images) != 1:
        raise ValueError(f"{where}: {len(images)} images; a row holds exactly one")
    return meta, str(images[0])


def _sft_fields(rec: dict[str, Any], meta: dict[str, Any], ids: dict[str, str], rest: list,
                where: str) -> dict[str, Any]:
    if len(rest) != 1 or rest[0]["role"] != "assistant":
        raise ValueError(f"{where}: expected one assistant reply after the user turn, got roles "
                         f"{[m['role'] for m in rest]}")
    return {"assistant": _content(rest[0]), "assistant_prefix": rec.get("assistant_prefix") or "",
            "source": str(meta.get("source", "")), "num_tokens": int(meta.get("num_tokens") or 0),
            "simple_cot_id": ids["simple_cot_id"], "long_cot_id": ids["long_cot_id"]}


def _dpo_fields(rec: dict[str, Any], meta: dict[str, Any], rest: list, where: str) -> dict[str, Any]:
    if rest:
        raise ValueError(f"{where}: a ranking record's messages end with the user turn")
    return {"chosen": _content(rec["chosen"]), "rejected": _content(rec["rejected"]),
            "pair_type": str(meta.get("pair_type", "")), "family": str(meta.get("family", ""))}


def _row_id(meta: dict[str, Any], row: dict[str, Any], kind: str, report: ImportReport) -> str:
    """Our `id`, else the trace's released id (SFT), else a hash of the MCQ id and the texts (counted)."""
    rid = meta.get("id") or (row["long_cot_id"] or row["simple_cot_id"] if kind == "sft" else "")
    if rid:
        return str(rid)
    report.derived["id"] += 1
    texts = (row["user"], row["assistant"]) if kind == "sft" else (row["chosen"], row["rejected"])
    return f"{kind}-" + stable_hash(row["mcq_id"], *texts)


def _record_row(rec: dict[str, Any], kind: str, where: str, report: ImportReport) -> dict[str, Any]:
    """One record -> one row (image not located yet). Malformed records raise, naming the record."""
    meta, image = _check_record(rec, kind, where)
    system, user, rest = _split_messages(rec["messages"], where)
    ids = _ids(meta, kind, where)
    image_id = str(meta.get("image_id") or Path(image).stem)
    if not ids["mcq_id"]:
        ids["mcq_id"] = derived_mcq_id(image_id, user)
        report.derived["mcq_id"] += 1
    row = {"mcq_id": ids["mcq_id"], "image_id": image_id, "image_path": image, "system": system, "user": user,
           "extra_metadata": _extra_json(meta, kind)}
    row.update(_sft_fields(rec, meta, ids, rest, where) if kind == "sft" else _dpo_fields(rec, meta, rest, where))
    row["id"] = _row_id(meta, row, kind, report)
    return row


_ID_RULES = {"mcq_id": "metadata mcq_id or mcq_unique_id; else 'mcq-' + sha256(image id, user turn)[:16]",
             "id": "metadata id, else extended_cot_unique_id, else simple_cot_unique_id (SFT); else "
                   "'sft-'/'dpo-' + sha256(mcq id, texts)[:16]; a repeat gets '#2', '#3', ..."}


def import_records(records: list[dict[str, Any]], kind: str, image_root: str | Path | None = None, *,
                   docci_dir: str | Path | None = None, missing: str = "error",
                   source: str = "records") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """sharegpt records (ours, the authors', any release in that format) -> (stage-4 rows, report).

    Ids and every metadata field are kept (module docstring). Images: relative paths are resolved
    against `image_root` (default: the working directory; `import_release` passes the JSON's folder),
    absolute ones that do not exist are rebased onto `docci_dir` (`locate_image`). An image still not
    found: `missing="error"` raises, naming how many and which; `"skip"` drops the row and counts it;
    `"keep"` keeps the row with the unresolved path and counts it. A malformed record (no image or
    several, no reply, ids that disagree) raises, naming it."""
    if missing not in _MISSING:
        raise ValueError(f"missing must be one of {_MISSING}, not {missing!r}")
    report = ImportReport(source=source, how=dict(_ID_RULES))
    unique, rows = _Ids(report), []
    for i, rec in enumerate(records):
        report.read += 1
        meta = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
        where = f"{source}: record {i} ({meta.get('id') or meta.get('extended_cot_unique_id') or 'no id'})"
        row = _record_row(rec, _kind(kind), where, report)
        row["image_path"], how = locate_image(row["image_path"], row["image_id"], base_dir=image_root,
                                              docci_dir=docci_dir)
        report.images[how] += 1
        if how == "missing":
            report.note("image not found", row["image_path"])
            if missing == "skip":
                report.skipped["image not found"] += 1
                continue
        row["id"] = unique(row["id"])
        rows.append(row)
    n_missing = report.images["missing"]
    if n_missing and missing == "error":
        raise ValueError(f"{source}: {n_missing} of {report.read} records' images not found "
                         f"(e.g. {report.examples['image not found'][:3]}); pass docci_dir=<your DOCCI folder> "
                         "to rebase the authors' paths, or missing='skip' (drop and count) or 'keep'")
    cols = SFT_COLUMNS if kind == "sft" else DPO_COLUMNS
    return [{c: r[c] for c in cols} for r in rows], report.as_dict(len(rows))


def import_release(path: str | Path, kind: str, *, image_root: str | Path | None = None,
                   docci_dir: str | Path | None = None, missing: str = "error") -> tuple[Rows, dict[str, Any]]:
    """One released sharegpt JSON file -> (stage-4 rows, report). Relative image paths are resolved
    against `image_root`, by default the file's own folder (LLaMA-Factory's default `media_dir`);
    see `import_records` for ids, `docci_dir` and `missing`."""
    path = Path(path)
    return import_records(json.loads(path.read_text()), kind, image_root if image_root is not None else path.parent,
                          docci_dir=docci_dir, missing=missing, source=path.name)


def read_release(path: str | Path, kind: str, image_root: str | Path | None = None, *,
                 docci_dir: str | Path | None = None, missing: str = "error") -> list[dict[str, Any]]:
    """The rows of `import_release`, without the report. A missing image raises (`missing="error"`)
    or stays as it is (`"keep"`); to skip such rows and get their count, call `import_release`."""
    if missing == "skip":
        raise ValueError("read_release cannot report skipped rows: call import_release(..., missing='skip')")
    return import_release(path, kind, image_root=image_root, docci_dir=docci_dir, missing=missing)[0]


# ----------------------------------------------------------------------------- the published 30K


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


def _published_row(i: int, rec: dict[str, Any], docci_dir: str | Path,
                   image_ext: str) -> tuple[dict[str, Any] | None, str]:
    """(row, "") or (None, why it is skipped) for one row of the published table."""
    ex_id = str(rec.get("example_id") or "")
    if not ex_id:
        return None, "no example_id"
    img = Path(docci_dir).resolve() / "images" / f"{ex_id}{image_ext}"
    if not img.is_file():
        return None, "image not in the DOCCI folder"
    try:
        system, user, rest = _split_messages(list(rec["messages"]), f"row {i}")
        if len(rest) != 1 or rest[0]["role"] != "assistant":
            raise ValueError("no assistant reply" if not rest else "not one assistant reply")
    except (ValueError, KeyError, TypeError) as e:
        return None, f"malformed messages ({str(e).split(': ')[-1]})"
    extra = {k: v for k, v in rec.items() if k not in ("example_id", "messages", "cot_type")}
    return {"mcq_id": derived_mcq_id(ex_id, user), "image_id": ex_id, "image_path": str(img), "system": system,
            "user": user, "assistant": _content(rest[0]), "assistant_prefix": "",
            "source": str(rec.get("cot_type") or ""), "num_tokens": 0, "simple_cot_id": "", "long_cot_id": "",
            "extra_metadata": json.dumps(extra, ensure_ascii=False, sort_keys=True, default=str)}, ""


def import_published(path: str | Path, docci_dir: str | Path,
                     image_ext: str = ".jpg") -> tuple[Rows, dict[str, Any]]:
    """The published 30K (a parquet/JSON file or folder, or a saved HF dataset) -> (SFT rows, report),
    each row joined with `docci_dir/images/<example_id><image_ext>`.

    The published rows carry no MCQ or trace id, so both are derived from content and never from row
    order: `mcq_id` = 'mcq-' + sha256(example_id, user turn)[:16] (the user turn is the question with
    its options, so every trace of one MCQ shares an id, and the same question read from a sharegpt
    release gets the same id); `id` = 'pub-' + sha256(example_id, user turn, assistant turn)[:16],
    '#2', '#3', ... on exact repeats. Columns other than example_id / messages / cot_type are kept in
    `extra_metadata`. Rows whose image is missing or whose messages lack a user turn or a single reply
    are skipped and counted by reason (with examples)."""
    report = ImportReport(source=str(path), how={
        "mcq_id": "'mcq-' + sha256(example_id, user turn)[:16]: derived, the published rows have no MCQ id",
        "id": "'pub-' + sha256(example_id, user turn, assistant turn)[:16]; a repeat gets '#2', '#3', ..."})
    unique, rows = _Ids(report), []
    for i, rec in enumerate(_load_table(path)):
        report.read += 1
        row, why = _published_row(i, rec, docci_dir, image_ext)
        if row is not None or why != "no example_id":
            report.images["missing" if why == "image not in the DOCCI folder" else "found"] += 1
        if row is None:
            report.skipped[why] += 1
            report.note(why, str(rec.get("example_id") or f"row {i}"))
            continue
        row["id"] = unique("pub-" + stable_hash(row["image_id"], row["user"], row["assistant"]))
        report.derived["mcq_id"] += 1
        rows.append({c: row[c] for c in SFT_COLUMNS})
    out = report.as_dict(len(rows))
    out["skip_examples"] = {k: v[0] for k, v in report.examples.items()}
    out["by_cot_type"] = dict(Counter(r["source"] for r in rows))
    out["mcqs"] = len({r["mcq_id"] for r in rows})
    return rows, out
