"""Caption sources: DOCCI layout, tables, HF datasets; bad records are counted, never fatal."""

import json
from pathlib import Path

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


DATA = Path(__file__).parent / "data" / "captions"


def test_a_docci_file_with_bad_lines_is_read_and_every_bad_line_counted_with_its_place():
    # tests/data/captions/docci_descriptions.jsonlines: a Latin-1 line, a JSON list, a null, a line cut
    # off mid-record, between two good ones
    recs, rep = captions.load_docci(DATA, split="train")
    assert [r.image_id for r in recs] == ["a", "b"]
    assert rep.skipped == {"undecodable_line": 1, "not_an_object": 2, "malformed_line": 1}
    assert rep.examples["undecodable_line"] == ["docci_descriptions.jsonlines:2"]
    assert rep.examples["not_an_object"] == ["docci_descriptions.jsonlines:3", "docci_descriptions.jsonlines:4"]
    assert rep.examples["malformed_line"] == ["docci_descriptions.jsonlines:7"]
    with pytest.raises(ValueError, match="no record of split 'validation'.*splits there: train"):
        captions.load_docci(DATA, split="validation")


def test_a_csv_with_an_undecodable_row_keeps_the_others():
    recs, rep = captions.load_table(DATA / "captions_cp1252.csv", "file", "caption", "id")
    assert [r.image_id for r in recs] == ["r1", "r3"]
    assert rep.skipped == {"undecodable_line": 1} and rep.examples["undecodable_line"] == ["captions_cp1252.csv:3"]


def test_a_table_without_the_named_columns_is_an_error_naming_the_columns_it_has():
    with pytest.raises(KeyError, match=r"no image column 'file', description column 'caption'.*"
                                       r"columns seen: alt_text, path"):
        captions.load_table(DATA / "captions_other_header.csv", "file", "caption")


def test_a_source_with_no_usable_record_is_an_error(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"file": "gone.png", "text": "Hi."}) + "\n")
    with pytest.raises(ValueError, match="no usable record.*missing_image"):
        captions.load_table(tmp_path / "t.jsonl", "file", "text")


def test_asking_for_more_images_than_there_are_warns_with_both_numbers():
    recs = [captions.CaptionRecord(str(i), "", "d") for i in range(5)]
    with pytest.warns(UserWarning, match="asks for 500 images; the source has 5"):
        assert len(captions.take_subset(recs, 500, 42)) == 5
    with pytest.raises(ValueError, match="num_images"):
        captions.take_subset(recs, "five")
