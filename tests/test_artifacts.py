import pytest

from lpt_utils import artifacts


def test_write_and_load_stage(tmp_path):
    f = artifacts.Funnel()
    f.add("parsed", 10, 7, {"unparsable": 2, "empty": 1})
    out = artifacts.write_stage(tmp_path / "01_mcq", [{"a": 1, "l": [1, 2]}, {"a": 2, "l": []}],
                                stage="01_mcq", settings_hash="h", funnel=f, counts={"n": 2})
    m = artifacts.read_manifest(out)
    assert m["rows"] == 2 and m["funnel"][0]["dropped"] == {"unparsable": 2, "empty": 1}
    df = artifacts.load_stage(out)
    assert list(df.a) == [1, 2] and list(df.l[0]) == [1, 2]
    ds = artifacts.load_stage(out, as_pandas=False)
    assert ds.num_rows == 2 and ds[0]["l"] == [1, 2]


def test_funnel_refuses_unexplained_drops():
    with pytest.raises(ValueError, match="reason"):
        artifacts.Funnel().add("x", 10, 7, {"a": 1})


def test_missing_stage_says_which_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        artifacts.load_stage(tmp_path / "02_simple_cot")
