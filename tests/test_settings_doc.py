"""docs/settings.md against the profiles and the stage registry: the page must not drift from them.

The page's settings tables are the markdown tables whose first header cell is `key`. Their first column
names a dotted setting, and each further column headed by a profile name (`paper`, `released_code`,
`tiny`, `api`) shows that profile's value as YAML in a code span. A blank cell means "as in `paper`", and
— means "this profile has no such key". The stage sections (`### `NN_stage``) list each stage's
`shaped_by` on their "Shaped by:" line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lpt_utils import config, stages

DOC = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
ABSENT = "—"
_MISSING = object()


def _tables(text: str) -> list[list[list[str]]]:
    """Every markdown table of the page, as rows of stripped cells (header first, separator dropped)."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            block.append(line.strip())
            continue
        if block:
            rows = [[c.strip() for c in row.strip("|").split("|")] for row in block]
            tables.append([rows[0]] + rows[2:])
            block = []
    return tables


def _settings_tables() -> list[list[list[str]]]:
    found = [t for t in _tables(DOC.read_text()) if t[0][0] == "key"]
    assert found, f"{DOC}: no table whose first header cell is 'key'"
    for t in found:
        for row in t[1:]:
            assert len(row) == len(t[0]), f"{DOC}: a row with {len(row)} cells under a {len(t[0])}-column header: {row}"
    return found


def _key(cell: str) -> str:
    m = re.fullmatch(r"`([A-Za-z0-9_.]+)`", cell)
    assert m, f"{DOC}: the first cell of a settings row is a dotted key in backticks, not {cell!r}"
    return m.group(1)


def _rows() -> list[str]:
    return [_key(row[0]) for t in _settings_tables() for row in t[1:]]


def _get(d: dict[str, Any], dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _paths(d: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted path of a profile, sections included."""
    out = []
    for k, v in d.items():
        out.append(prefix + k)
        if isinstance(v, dict):
            out += _paths(v, prefix + k + ".")
    return out


def _leaves(d: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths that hold a value (an empty mapping is a value)."""
    out = []
    for k, v in d.items():
        out += _leaves(v, prefix + k + ".") if isinstance(v, dict) and v else [prefix + k]
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal as settings: 10 and 10.0 are the same number, True and 1 are not the same value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def profiles() -> dict[str, dict[str, Any]]:
    return {name: config.load_profile(name) for name in config.available_profiles()}


def test_every_setting_of_the_paper_profile_has_a_row(profiles):
    rows = set(_rows())
    missing = [k for k in _leaves(profiles["paper"]) if k not in rows]
    assert not missing, f"settings of the paper profile with no row in {DOC.name}: {missing}"


def test_no_row_names_a_setting_that_no_profile_has(profiles):
    known = {p for s in profiles.values() for p in _paths(s)}
    unknown = [k for k in _rows() if k not in known]
    assert not unknown, f"rows of {DOC.name} that no profile has: {unknown}"


def test_a_key_has_one_row_per_table():
    for t in _settings_tables():
        keys = [_key(row[0]) for row in t[1:]]
        assert len(keys) == len(set(keys)), f"{DOC.name}: a key twice in one table: " \
                                            f"{sorted({k for k in keys if keys.count(k) > 1})}"


def test_every_value_shown_is_the_profiles(profiles):
    wrong = []
    for t in _settings_tables():
        header = [h.strip("`") for h in t[0]]
        for row in t[1:]:
            key = _key(row[0])
            for name, cell in zip(header[1:], row[1:]):
                if name not in profiles:
                    continue  # a column of text (source, what)
                value, paper = _get(profiles[name], key), _get(profiles["paper"], key)
                if cell == ABSENT:
                    ok = value is _MISSING
                elif cell == "":
                    ok = name != "paper" and value is not _MISSING and paper is not _MISSING and _same(value, paper)
                else:
                    m = re.fullmatch(r"`(.*)`", cell)
                    ok = bool(m) and value is not _MISSING and _same(yaml.safe_load(m.group(1)), value)
                if not ok:
                    shown = "(not in the profile)" if value is _MISSING else repr(value)
                    wrong.append(f"{key} [{name}]: the page shows {cell!r}, the profile has {shown}")
    assert not wrong, f"{DOC.name} disagrees with the profiles:\n" + "\n".join(wrong)


def test_the_api_table_lists_every_difference_of_the_api_profile(profiles):
    api_tables = [t for t in _settings_tables() if [h.strip("`") for h in t[0][1:2]] == ["api"]]
    assert len(api_tables) == 1, f"{DOC.name}: one table with the `api` column"
    listed = {_key(row[0]) for row in api_tables[0][1:]}
    api, paper = profiles["api"], profiles["paper"]
    differ = {k for k in _leaves(api) if _get(paper, k) is _MISSING or not _same(_get(api, k), _get(paper, k))}
    assert listed == differ, f"api table: missing {sorted(differ - listed)}, not different {sorted(listed - differ)}"


def test_each_stage_section_lists_the_settings_that_shape_it():
    text = DOC.read_text()
    sections = dict(re.findall(r"^### `(\d\d_[a-z_]+)`.*?\n\nShaped by: (.*?)\. Reads:", text, re.M | re.S))
    assert set(sections) == {s.folder for s in stages.SPECS}, \
        f"{DOC.name}: stage sections {sorted(sections)}, stages {sorted(s.folder for s in stages.SPECS)}"
    for s in stages.SPECS:
        listed = re.findall(r"`([^`]+)`", sections[s.folder])
        assert listed == list(s.shaped_by), f"{DOC.name}, {s.folder}: lists {listed}, shaped_by is {list(s.shaped_by)}"
