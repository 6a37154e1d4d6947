"""The sharegpt export and the importers (`lpt_utils.pipeline.sharegpt`): the export obeys what LLaMA-Factory's
sharegpt loader requires (checked by a validator written here from its documented rules, since
LLaMA-Factory is not a dependency), its image paths survive copying the run folder, the stock variant
trains no token of a wrong thought, and the authors' released files keep every id on the way in and
out."""

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from lpt_utils.pipeline import sharegpt
from lpt_utils.pipeline.training_data import Trace, build_dpo, build_sft

RELEASE = Path(__file__).parent / "data" / "release"
AUTHORS_IMAGES = "/home/andrew/LongPerceptualThoughts/data_gen/caption_datasets/docci/images/"


# ----------------------------------------------------------------------------- LLaMA-Factory's rules


def llamafactory_problems(dataset_dir: Path, media_dir: Path | None = None) -> dict[str, list[str]]:
    """What LLaMA-Factory's sharegpt loader would reject or mis-read, per `dataset_info.json` entry
    (from its data/README.md and data/converter.py): an optional leading system message, then user and
    assistant turns alternating from a user turn; a non-ranking record ends with an assistant turn (an
    even number of turns), a ranking record with a user turn (odd), its `chosen` and `rejected` each one
    assistant message; as many `<image>` tokens in the text as `images`; every image a file at
    `media_dir/<path>` (media_dir defaults to dataset_dir)."""
    media_dir = Path(media_dir or dataset_dir)
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    out = {}
    for name, entry in info.items():
        out[name] = _entry_problems(dataset_dir, media_dir, entry)
    return out


def _entry_problems(dataset_dir: Path, media_dir: Path, entry: dict) -> list[str]:
    problems = []
    if entry.get("formatting") != "sharegpt":
        problems.append("formatting is not sharegpt")
    tags, cols, ranking = entry.get("tags", {}), entry.get("columns", {}), bool(entry.get("ranking"))
    role, content = tags.get("role_tag", "from"), tags.get("content_tag", "value")
    user, assistant, system = tags.get("user_tag", "human"), tags.get("assistant_tag", "gpt"), tags.get("system_tag", "system")
    path = dataset_dir / entry["file_name"]
    if not path.is_file():
        return [f"{entry['file_name']} does not exist"]
    for i, rec in enumerate(json.loads(path.read_text())):
        where = f"{entry['file_name']}[{i}]"
        msgs = rec.get(cols.get("messages", "conversations"))
        if not isinstance(msgs, list) or not msgs:
            problems.append(f"{where}: no messages")
            continue
        turns = msgs[1:] if msgs[0].get(role) == system else msgs
        for k, m in enumerate(turns):
            if m.get(role) != (user if k % 2 == 0 else assistant):
                problems.append(f"{where}: turn {k} is {m.get(role)!r}, roles must alternate from {user!r}")
        if ranking != (len(turns) % 2 == 1):
            problems.append(f"{where}: {len(turns)} turns: a {'ranking' if ranking else 'non-ranking'} record "
                            f"must end with {'a user' if ranking else 'an assistant'} turn")
        texts = [m.get(content, "") for m in msgs]
        if ranking:
            for side in ("chosen", "rejected"):
                reply = rec.get(cols.get(side, side))
                if not isinstance(reply, dict) or reply.get(role) != assistant or not isinstance(reply.get(content), str):
                    problems.append(f"{where}: {side} is not one {assistant!r} message")
                elif sharegpt.IMAGE_TOKEN in reply[content]:
                    problems.append(f"{where}: {side} holds an image token")
        images = rec.get(cols.get("images", "images")) or []
        if sum(t.count(sharegpt.IMAGE_TOKEN) for t in texts) != len(images):
            problems.append(f"{where}: {sum(t.count(sharegpt.IMAGE_TOKEN) for t in texts)} image tokens, {len(images)} images")
        for img in images:
            if not os.path.isfile(os.path.join(media_dir, img)):
                problems.append(f"{where}: image {img} not found under media_dir")
    return problems


def test_the_validator_catches_what_llamafactory_rejects(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"jpg")
    good = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "<image>Q"},
                         {"role": "assistant", "content": "A"}], "images": ["a.jpg"]}
    bad = [
        {**good, "messages": good["messages"][:2]},  # ends with the user turn
        {**good, "messages": [good["messages"][0], good["messages"][2], good["messages"][1]]},  # assistant first
        {**good, "images": ["a.jpg", "a.jpg"]},  # two images, one token
        {**good, "images": ["missing.jpg"]},
    ]
    rank_bad = {"messages": good["messages"], "images": ["a.jpg"],  # ranking prompt must end with the user
                "chosen": {"role": "assistant", "content": "x"}, "rejected": {"role": "user", "content": "y"}}
    (tmp_path / "good.json").write_text(json.dumps([good]))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "rank.json").write_text(json.dumps([rank_bad]))
    info = {n: sharegpt.dataset_info_entry(f"{n}.json", ranking=n == "rank") for n in ("good", "bad", "rank")}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    got = llamafactory_problems(tmp_path)
    assert got["good"] == []
    assert {p.split(":")[0] for p in got["bad"]} == {f"bad.json[{i}]" for i in range(4)}  # each bad record caught
    assert any("image tokens" in p for p in got["bad"]) and any("not found" in p for p in got["bad"])
    assert any("must end with a user turn" in p for p in got["rank"]) and any("rejected" in p for p in got["rank"])


# ----------------------------------------------------------------------------- our sets, exported


def _world(images: Path) -> tuple[list, dict]:
    """Two MCQs on two images (files on disk), with O, X, O→O, O→X, X→O and X→X traces."""
    mcqs = {}
    for i in range(2):
        (images / f"img{i}.png").write_bytes(b"png")
        mcqs[f"m{i}"] = {"mcq_id": f"m{i}", "image_id": f"img{i}", "image_path": str((images / f"img{i}.png").resolve()),
                         "question": f"Question {i}?", "choices": ["red", "blue", "green", "yellow"], "answer": "blue",
                         "answer_letter": "B", "question_type": "recognition", "choice_form": "paren",
                         "answer_form": "paren_letter"}

    def t(kind, tid, mcq, simple=None, thought=None, answer="(B)", prefix="", added=0):
        return Trace(kind, tid, simple or tid, mcq, thought or f"Thought of {tid}.", answer, prefix, 10, added)

    traces = [
        t("O", "m0-s0", "m0"), t("X", "m0-s1", "m0", thought="It is red.", answer="(A)"),
        t("O→O", "m0-s0-l0", "m0", "m0-s0", "Thought of m0-s0. Wait, yes: blue.", prefix="Thought of m0-s0.", added=3),
        t("O→X", "m0-s0-l1", "m0", "m0-s0", "Thought of m0-s0. Hmm, red?", "(A)", "Thought of m0-s0.", 2),
        t("X→O", "m0-s1-l0", "m0", "m0-s1", "It is red. Wait, the light misleads: blue.", prefix="It is red.", added=5),
        t("X→X", "m0-s1-l1", "m0", "m0-s1", "It is red. Wait, still red.", "(A)", "It is red.", 4),
        t("O", "m1-s0", "m1"), t("X", "m1-s1", "m1", thought="Green it is.", answer="(C)"),
        t("X→O", "m1-s1-l0", "m1", "m1-s1", "Green it is. Hmm, the shade is blue after all.", prefix="Green it is.", added=6),
    ]
    return traces, mcqs


def _sets(images: Path, layout: str = "lines") -> dict[str, tuple[str, list]]:
    from lpt_utils.pipeline.training_data import TurnFormat

    traces, mcqs = _world(images)
    fmt = TurnFormat(layout=layout)
    sft = build_sft(traces, mcqs, simple_divisor=1, long_divisor=1, xo_per_pooled=1, seed=0, with_type=True, fmt=fmt)
    dpo, _ = build_dpo(traces, mcqs, seed=0, with_type=True, fmt=fmt)
    return {"sft_simple": ("sft", sft.simple), "sft_long": ("sft", sft.long), "dpo_O": ("dpo", dpo["O"]),
            "dpo_XO": ("dpo", dpo["X→O"])}


def test_export_obeys_llamafactory_and_registers_the_stock_variant(tmp_path):
    (tmp_path / "imgs").mkdir()
    sets = _sets(tmp_path / "imgs")
    sharegpt.export(tmp_path / "out", sets)
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert set(info) == {"sft_simple", "sft_long", "sft_long_stock", "dpo_O", "dpo_XO"}  # no X→O in sft_simple
    assert info["dpo_XO"]["ranking"] is True and "ranking" not in info["sft_long_stock"]
    assert info["sft_long"]["columns"]["assistant_prefix"] == "assistant_prefix"
    assert "assistant_prefix" not in info["sft_long_stock"]["columns"]
    assert llamafactory_problems(tmp_path / "out") == {name: [] for name in info}
    for name in info:  # every image path is written relative to the export folder
        recs = json.loads((tmp_path / "out" / info[name]["file_name"]).read_text())
        assert all(not os.path.isabs(p) and p.startswith("..") for r in recs for p in r["images"])


@pytest.mark.parametrize("layout", ["lines", "inline"])
def test_stock_variant_trains_no_token_of_the_wrong_thought(tmp_path, layout):
    (tmp_path / "imgs").mkdir()
    rows = _sets(tmp_path / "imgs", layout)["sft_long"][1]
    sharegpt.export(tmp_path / "out", {"sft_long": ("sft", rows)})
    full = json.loads((tmp_path / "out" / "sft_long.json").read_text())
    stock = json.loads((tmp_path / "out" / "sft_long_stock.json").read_text())
    assert len(stock) == len(full) == len(rows)
    xo = 0
    for row, f, s in zip(rows, full, stock):
        assert "assistant_prefix" not in s and s["images"] == f["images"]
        if not row["assistant_prefix"]:
            assert s == f  # rows without a prefix are the same record
            continue
        xo += 1
        wrong = row["assistant_prefix"].removeprefix("<think>").strip()
        trained = s["messages"][-1]["content"]  # the only turn a stock trainer puts loss on
        assert wrong not in trained and trained.startswith("<think>")
        assert trained == row["assistant"][:len("<think>") + 1] + row["assistant"][len(row["assistant_prefix"]):].lstrip()
        assert trained.endswith("</answer>") and row["assistant"].endswith(trained[len("<think>") + 1:])
        assert s["messages"][1]["content"].endswith(wrong) and s["messages"][1]["content"].startswith(f["messages"][1]["content"])
        assert s["metadata"]["assistant_prefix_moved"] is True and s["metadata"]["id"] == f["metadata"]["id"]
    assert xo == 2


def test_a_prefix_that_does_not_open_the_turn_is_refused():
    row = {"id": "x", "assistant": "<think> b. Wait, c </think>", "assistant_prefix": "<think> a.", "user": "Q",
           "system": "S", "image_path": "/i.png"}
    with pytest.raises(ValueError, match="does not begin"):
        sharegpt.stock_record(row)
    with pytest.raises(ValueError, match="whole turn"):
        sharegpt.stock_record({**row, "assistant_prefix": row["assistant"]})


def test_a_stray_image_token_is_refused(tmp_path):
    (tmp_path / "imgs").mkdir()
    rows = _sets(tmp_path / "imgs")["sft_long"][1]
    bad = [{**rows[0], "user": rows[0]["user"] + " see <image>"}]
    with pytest.raises(ValueError, match="image"):
        sharegpt.export(tmp_path / "out", {"s": ("sft", bad)})


def test_the_export_still_finds_every_image_after_the_run_folder_is_copied(tmp_path):
    from lpt_utils import config
    from lpt_utils.pipeline.training_data import write_training_data

    run = tmp_path / "outputs" / "r1"
    (run / "00_scenes").mkdir(parents=True)
    sets = {k: v for k, (_, v) in _sets(run / "00_scenes").items()}
    settings = config.load_profile("paper")["training_data"]
    write_training_data(run / "04_training_data", settings, sets, [], {}, "r1")
    moved = tmp_path / "elsewhere" / "deeper" / "r1-copy"
    shutil.copytree(run, moved)
    shutil.rmtree(run)  # nothing may point back at the original
    export = moved / "04_training_data" / "sharegpt"
    problems = llamafactory_problems(export)
    assert set(problems) == {"sft_simple", "sft_long", "sft_long_stock", "dpo_O", "dpo_XO"}
    assert problems == {name: [] for name in problems}
    rows = sharegpt.read_release(export / "sft_long.json", "sft")
    assert rows and all(Path(r["image_path"]).is_file() and str(moved.resolve()) in r["image_path"] for r in rows)


def test_our_export_reads_back_as_the_same_rows(tmp_path):
    (tmp_path / "imgs").mkdir()
    sets = _sets(tmp_path / "imgs")
    sharegpt.export(tmp_path / "out", sets)
    for name, (kind, rows) in sets.items():
        assert sharegpt.read_release(tmp_path / "out" / f"{name}.json", kind) == rows
    meta = json.loads((tmp_path / "out" / "sft_long.json").read_text())[0]["metadata"]
    assert meta["mcq_unique_id"] == meta["mcq_id"] and "simple_cot_unique_id" in meta  # released names, and ours


# ----------------------------------------------------------------------------- the authors' released files


def _docci(tmp_path: Path, *ids: str) -> Path:
    (tmp_path / "docci" / "images").mkdir(parents=True)
    for i in ids:
        (tmp_path / "docci" / "images" / f"{i}.jpg").write_bytes(b"jpg")
    return tmp_path / "docci"


def test_release_import_keeps_ids_and_rebases_the_authors_paths(tmp_path):
    docci = _docci(tmp_path, "train_00123", "train_00456")  # train_00789 is not there
    raw = json.loads((RELEASE / "sft_extended_cot.json").read_text())
    rows, report = sharegpt.import_release(RELEASE / "sft_extended_cot.json", "sft", docci_dir=docci, missing="skip")
    kept = [r for r in raw if not r["images"][0].endswith("train_00789.jpg")]
    assert len(rows) == len(kept) == 4
    assert report["skipped"] == {"image not found": 1} and report["images"] == {"rebased to docci_dir": 4, "missing": 1}
    assert report["examples"]["image not found"] == [AUTHORS_IMAGES + "train_00789.jpg"]
    for row, rec in zip(rows, kept):
        meta = rec["metadata"]
        assert row["mcq_id"] == meta["mcq_unique_id"] and row["image_id"] == meta["image_id"]
        assert row["simple_cot_id"] == meta["simple_cot_unique_id"] and row["long_cot_id"] == meta["extended_cot_unique_id"]
        assert row["id"] == meta["extended_cot_unique_id"] and row["extra_metadata"] == "{}"
        assert row["image_path"] == str((docci / "images" / f"{meta['image_id']}.jpg").resolve())
        assert row["assistant_prefix"] == rec["assistant_prefix"] and row["assistant"].startswith(row["assistant_prefix"])
        assert "<image>" + row["user"] == rec["messages"][1]["content"] and row["system"] == rec["messages"][0]["content"]
    # grouped by MCQ, the import is as many questions as the release names, not one
    assert Counter(r["mcq_id"] for r in rows) == Counter(r["metadata"]["mcq_unique_id"] for r in kept)
    assert len({r["mcq_id"] for r in rows}) == 2
    with pytest.raises(ValueError, match="1 of 5 records' images not found"):
        sharegpt.import_release(RELEASE / "sft_extended_cot.json", "sft", docci_dir=docci)
    kept_all = sharegpt.read_release(RELEASE / "sft_extended_cot.json", "sft", docci_dir=docci, missing="keep")
    assert len(kept_all) == 5 and kept_all[-1]["image_path"] == AUTHORS_IMAGES + "train_00789.jpg"


def test_extra_metadata_is_kept_in_one_json_column(tmp_path):
    docci = _docci(tmp_path, "train_00123", "train_00456")
    rows = sharegpt.read_release(RELEASE / "sft_simple_cot.json", "sft", docci_dir=docci)
    raw = json.loads((RELEASE / "sft_simple_cot.json").read_text())
    assert [json.loads(r["extra_metadata"]) for r in rows] == [{"description": r["metadata"]["description"]} for r in raw]
    # no CoT id in these records: a content hash, stable and unique
    assert all(r["id"].startswith("sft-") and r["simple_cot_id"] == "" for r in rows) and len({r["id"] for r in rows}) == 2
    assert sharegpt.read_release(RELEASE / "sft_simple_cot.json", "sft", docci_dir=docci) == rows


@pytest.mark.parametrize("name,kind", [("sft_extended_cot.json", "sft"), ("sft_simple_cot.json", "sft"),
                                       ("dpo_extended_cot.json", "dpo")])
def test_release_import_export_import_is_lossless(tmp_path, name, kind):
    docci = _docci(tmp_path, "train_00123", "train_00456", "train_00789")
    first = sharegpt.read_release(RELEASE / name, kind, docci_dir=docci)
    sharegpt.export(tmp_path / "out", {"again": (kind, first)})
    again = sharegpt.read_release(tmp_path / "out" / "again.json", kind)
    assert again == first
    # the released metadata comes back under its own key names, values unchanged
    raw = json.loads((RELEASE / name).read_text())
    exported = json.loads((tmp_path / "out" / "again.json").read_text())
    for r, e in zip(raw, exported):
        assert {k: e["metadata"][k] for k in r["metadata"]} == r["metadata"]
        assert (e.get("assistant_prefix") or "") == (r.get("assistant_prefix") or "")
        if kind == "dpo":
            assert (e["chosen"], e["rejected"]) == (r["chosen"], r["rejected"])
        else:
            assert e["messages"] == r["messages"]
    assert llamafactory_problems(tmp_path / "out") == {n: [] for n in json.loads((tmp_path / "out" / "dataset_info.json").read_text())}


def test_dpo_release_ids(tmp_path):
    docci = _docci(tmp_path, "train_00123", "train_00456")
    rows = sharegpt.read_release(RELEASE / "dpo_extended_cot.json", "dpo", docci_dir=docci)
    raw = json.loads((RELEASE / "dpo_extended_cot.json").read_text())
    assert [r["mcq_id"] for r in rows] == [r["metadata"]["mcq_unique_id"] for r in raw]
    assert len({r["id"] for r in rows}) == 3 and all(r["id"].startswith("dpo-") for r in rows)
    assert rows[0]["chosen"].startswith("<think> The mug on the left looks red")


def test_rebasing_falls_back_to_the_released_file_name(tmp_path):
    docci = _docci(tmp_path, "train_00123")
    rec = json.loads((RELEASE / "sft_extended_cot.json").read_text())[0]
    rec["metadata"]["image_id"] = "docci-123"  # an id that is not the file's name
    rows, report = sharegpt.import_records([rec], "sft", docci_dir=docci)
    assert rows[0]["image_path"].endswith("images/train_00123.jpg") and report["images"] == {"rebased to docci_dir": 1}


def test_records_without_mcq_ids_get_one_per_question():
    recs = json.loads((RELEASE / "sft_extended_cot.json").read_text())
    for r in recs:
        del r["metadata"]["mcq_unique_id"]
    rows, report = sharegpt.import_records(recs, "sft", missing="keep")
    assert report["derived_ids"]["mcq_id"] == 5 and report["images"] == {"missing": 5}
    assert len({r["mcq_id"] for r in rows}) == 3  # the two traces of each question share one
    assert rows[0]["mcq_id"] == sharegpt.derived_mcq_id("train_00123", rows[0]["user"])


def test_malformed_records_raise_naming_the_record():
    rec = json.loads((RELEASE / "sft_extended_cot.json").read_text())[1]
    with pytest.raises(ValueError, match="record 0.*2 images"):
        sharegpt.import_records([{**rec, "images": rec["images"] * 2}], "sft", missing="keep")
    with pytest.raises(ValueError, match="disagree"):
        sharegpt.import_records([{**rec, "metadata": {**rec["metadata"], "mcq_id": "other"}}], "sft", missing="keep")
    with pytest.raises(ValueError, match="assistant reply"):
        sharegpt.import_records([{**rec, "messages": rec["messages"][:2]}], "sft", missing="keep")
    with pytest.raises(ValueError, match="missing must be"):
        sharegpt.import_records([rec], "sft", missing="drop")


# ----------------------------------------------------------------------------- the published 30K


def _published(tmp_path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    pd.DataFrame(rows).to_parquet(tmp_path / "30k.parquet")
    return tmp_path / "30k.parquet"


def test_import_published_joins_docci_and_counts_skips(tmp_path):
    docci = _docci(tmp_path, "train_00001")
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "<image>What colour?"},
            {"role": "assistant", "content": "<think>x</think><answer>(B)</answer>"}]
    path = _published(tmp_path, [
        {"example_id": "train_00001", "messages": msgs, "cot_type": "X→O"},
        {"example_id": "train_00002", "messages": msgs, "cot_type": "O"},  # image missing
        {"example_id": "train_00001", "messages": msgs[:2], "cot_type": "O"},  # no reply
    ])
    rows, report = sharegpt.import_published(path, docci)
    assert len(rows) == 1 and rows[0]["user"] == "What colour?" and rows[0]["source"] == "X→O"
    assert rows[0]["image_path"].endswith("images/train_00001.jpg") and rows[0]["system"] == "S"
    assert report["skipped"] == {"image not in the DOCCI folder": 1, "malformed messages (no assistant reply)": 1}
    assert report["read"] == 3 and report["skip_examples"]["image not in the DOCCI folder"] == "train_00002"
    json.dumps(report)  # it goes into the manifest


def test_import_published_derives_stable_mcq_ids_and_says_so(tmp_path):
    docci = _docci(tmp_path, "train_00001", "train_00002")

    def msgs(q, a):
        return [{"role": "user", "content": f"<image>{q}"}, {"role": "assistant", "content": a}]

    recs = [{"example_id": "train_00001", "messages": msgs("What colour?", "<think>a</think>"), "cot_type": "O", "k": 1},
            {"example_id": "train_00001", "messages": msgs("What colour?", "<think>b</think>"), "cot_type": "X→O", "k": 2},
            {"example_id": "train_00001", "messages": msgs("How many?", "<think>c</think>"), "cot_type": "O", "k": 3},
            {"example_id": "train_00002", "messages": msgs("What colour?", "<think>a</think>"), "cot_type": "O", "k": 4},
            {"example_id": "train_00002", "messages": msgs("What colour?", "<think>a</think>"), "cot_type": "O", "k": 5}]
    rows, report = sharegpt.import_published(_published(tmp_path, recs), docci)
    mcq = [r["mcq_id"] for r in rows]
    assert mcq[0] == mcq[1] and len(set(mcq)) == 3 and report["mcqs"] == 3  # two traces of one question share it
    assert len({r["id"] for r in rows}) == 5 and rows[4]["id"] == rows[3]["id"] + "#2"  # an exact repeat
    assert "example_id" in report["id_rules"]["mcq_id"] and "user turn" in report["id_rules"]["mcq_id"]
    assert "example_id" in sharegpt.import_published.__doc__ and "mcq_id" in sharegpt.import_published.__doc__
    assert [json.loads(r["extra_metadata"]) for r in rows] == [{"k": k} for k in range(1, 6)]
    # stable: the ids do not depend on the row order
    again, _ = sharegpt.import_published(_published(tmp_path, recs[::-1][1:] + recs[-1:]), docci)
    assert {r["id"]: r["mcq_id"] for r in again} == {r["id"]: r["mcq_id"] for r in rows}
