"""Caption sources: DOCCI layout, tables, HF datasets; bad records are counted, never fatal."""

import json

import pytest
from PIL import Image

from lpt_utils.pipeline import captions


def _img(path, colour="red"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)


@pytest.fixture
def docci(tmp_path):
    _img(tmp_path / "images" / "a.jpg")
    _img(tmp_path / "images" / "b.jpg")
    (tmp_path / "images" / "bad.jpg").write_bytes(b"not an image")
    rows = [
        {"example_id": "a", "split": "train", "image_file": "a.jpg", "description": "A red square."},
        {"example_id": "b", "split": "test", "image_file": "b.jpg", "description": "Another."},
        {"example_id": "c", "split": "train", "image_file": "missing.jpg", "description": "Gone."},
        {"example_id": "d", "split": "train", "image_file": "bad.jpg", "description": "Corrupt."},
        {"example_id": "e", "split": "train", "image_file": "a.jpg", "description": "   "},
        {"example_id": "a", "split": "train", "image_file": "a.jpg", "description": "Dup id."},
    ]
    text = "\n".join(json.dumps(r) for r in rows) + "\n{broken json\n"
    (tmp_path / "docci_descriptions.jsonlines").write_text(text)
    return tmp_path


def test_docci_counts_every_bad_record(docci):
    recs, rep = captions.load_docci(docci, split="train")
    assert [r.image_id for r in recs] == ["a"]
    assert rep.skipped == {"missing_image": 1, "unreadable_image": 1, "empty_description": 1,
                           "duplicate_id": 1, "malformed_line": 1}
    assert rep.kept == 1 and rep.total == 6
    assert "skipped" in str(rep)
    recs, _ = captions.load_docci(docci, split=None)
    assert {r.image_id for r in recs} == {"a", "b"}


def test_table_sources_csv_and_jsonl(tmp_path):
    _img(tmp_path / "imgs" / "x.png")
    (tmp_path / "t.csv").write_text("pic,caption,key\nimgs/x.png,A thing.,k1\nimgs/y.png,Nothing.,k2\n")
    recs, rep = captions.load_table(tmp_path / "t.csv", "pic", "caption", "key")
    assert [r.image_id for r in recs] == ["k1"] and rep.skipped == {"missing_image": 1}
    (tmp_path / "t.jsonl").write_text(json.dumps({"file": "x.png", "text": "Hi."}) + "\n")
    recs, _ = captions.load_table(tmp_path / "t.jsonl", "file", "text", image_root=tmp_path / "imgs")
    assert recs[0].image_id == "0" and recs[0].description == "Hi."
    with pytest.raises(KeyError, match="caption"):
        captions.load_table(tmp_path / "t.jsonl", "file", "caption")


def test_hf_dataset_with_image_feature(tmp_path):
    import datasets

    _img(tmp_path / "ok.png", "blue")
    ds = datasets.Dataset.from_dict({
        "img": [str(tmp_path / "ok.png"), str(tmp_path / "ok.png")],
        "desc": ["Blue square.", ""], "uid": ["u1", "u2"],
    }).cast_column("img", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    recs, rep = captions.load_hf(tmp_path / "ds", "img", "desc", "uid", tmp_path / "cache", split=None)
    assert [r.image_id for r in recs] == ["u1"] and rep.skipped == {"empty_description": 1}
    with Image.open(recs[0].image_path) as im:
        assert im.size == (16, 16)


def test_subset_is_seeded_and_independent_of_file_order():
    recs = [captions.CaptionRecord(str(i), "", "d") for i in range(50)]
    a = captions.take_subset(recs, 10, 42)
    b = captions.take_subset(list(reversed(recs)), 10, 42)
    assert [r.image_id for r in a] == [r.image_id for r in b]
    assert len(captions.take_subset(recs, "all", 42)) == 50
    assert [r.image_id for r in captions.take_subset(recs, 20, 42)][:10] == [r.image_id for r in a]
    with pytest.raises(ValueError):
        captions.take_subset(recs, 0)
