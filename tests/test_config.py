"""Profiles: inheritance, overrides, run folders."""

import pytest
import yaml

from lpt_utils import artifacts, config, stages


def test_every_profile_loads_and_tiny_inherits_paper():
    for name in config.available_profiles():
        s = config.load_profile(name)
        assert "inherits" not in s and {"paths", "data", "mcq"} <= set(s), name
    paper, tiny = config.load_profile("paper"), config.load_profile("tiny")
    assert paper["mcq"]["writer"]["engine"]["model"] == "gpt-4o-2024-08-06"
    assert paper["mcq"]["writer"]["sampling"]["temperature"] == 0.7
    assert paper["mcq"]["reformatter"]["sampling"]["temperature"] == 0.0
    assert paper["data"]["num_images"] == 500 and paper["data"]["subset_seed"] == 42
    # tiny states only what differs: inherited values stay
    assert tiny["mcq"]["writer"]["engine"]["backend"] == "vllm"
    assert tiny["mcq"]["writer"]["sampling"]["temperature"] == 0.7
    assert tiny["mcq"]["choice_forms"] == paper["mcq"]["choice_forms"]
    assert tiny["mcq"]["answer_forms"] == ["option_text"] and "option_text" in paper["mcq"]["answer_forms"]
    # stage 2: appendix 3 samples, released code 10, same sampling otherwise
    rel = config.load_profile("released_code")
    assert paper["simple_cot"]["sampling"]["n"] == 3 and rel["simple_cot"]["sampling"]["n"] == 10
    assert rel["simple_cot"]["sampling"]["top_p"] == 0.8 == paper["simple_cot"]["sampling"]["top_p"]
    assert paper["student"]["engine"]["max_pixels"] == 512 * 512


def test_profiles_build_valid_engine_configs():
    from lpt_utils.engines import EngineConfig

    for name in config.available_profiles():
        s = config.load_profile(name)
        for role in ("writer", "reformatter"):
            EngineConfig.from_dict(s["mcq"][role]["engine"])
        EngineConfig.from_dict(s["student"]["engine"])


def test_no_profile_holds_a_secret():
    for p in config.PROFILE_DIR.glob("*.yaml"):
        text = p.read_text().lower()
        assert "sk-" not in text and "api_key:" not in text, p


def test_overrides_set_existing_keys_only():
    s = config.apply_overrides(config.load_profile("tiny"), {"mcq.writer.sampling.temperature": 0.3,
                                                             "data.num_images": "all"})
    assert s["mcq"]["writer"]["sampling"]["temperature"] == 0.3 and s["data"]["num_images"] == "all"
    with pytest.raises(KeyError, match="did you mean"):
        config.apply_overrides(s, {"mcq.writer.sampling.temprature": 0.3})


def test_inheritance_merges_and_detects_loops(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"inherits": "tiny", "data": {"num_images": 3}}))
    s = config.load_profile(str(tmp_path / "a.yaml"))
    assert s["data"]["num_images"] == 3 and s["data"]["source"] == "synthetic"
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"inherits": str(tmp_path / "c.yaml")}))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"inherits": str(tmp_path / "b.yaml")}))
    with pytest.raises(ValueError, match="loops"):
        config.load_profile(str(tmp_path / "b.yaml"))
    with pytest.raises(FileNotFoundError, match="known"):
        config.load_profile("no_such_profile")


def test_resolve_run_saves_settings_and_names_stage_dirs(tmp_path):
    r = config.resolve_run("tiny", "t1", {"paths.outputs": str(tmp_path / "o"),
                                          "paths.figures": str(tmp_path / "f")})
    saved = yaml.safe_load((tmp_path / "o" / "t1" / "settings.yaml").read_text())
    assert saved["profile"] == "tiny" and saved["settings"] == r.settings
    assert saved["settings_hash"] == artifacts.settings_hash(r.settings)
    assert r.stage_dir("mcq") == tmp_path / "o" / "t1" / "01_mcq"
    assert r.stage_dir("07_eval").name == "07_eval"
    assert r.figures_dir == tmp_path / "f" / "t1"
    assert r.figures_for(None) == r.figures_dir  # a whole stage draws the run's figures
    assert r.figures_for(r.part(1, 3)) == tmp_path / "f" / "t1" / "parts" / "1-of-3"  # a shard its share's
    assert r.figures_for(r.part(1, 3)).is_dir()
    with pytest.raises(ValueError):
        config.resolve_run("tiny", "../escape")
    # a stage's hash moves with what shapes it (tests/test_stages.py has the rest)
    r2 = config.resolve_run("tiny", "t2", {"paths.outputs": str(tmp_path / "o"), "eval.limit": 5})
    assert r2.stage("mcq").hash == r.stage("mcq").hash
    r3 = config.resolve_run("tiny", "t3", {"paths.outputs": str(tmp_path / "o"), "mcq.randomise_seed": 1})
    assert r3.stage("mcq").hash != r.stage("mcq").hash


def test_open_run_finds_a_moved_run_where_its_settings_are(tmp_path):
    r = config.resolve_run("tiny", "t1", {"paths.outputs": str(tmp_path / "o"), "paths.figures": str(tmp_path / "f")})
    (r.stage_dir("mcq")).mkdir()
    assert config.open_run("t1", tmp_path / "o").settings == r.settings  # in place: as it ran
    (tmp_path / "o").rename(tmp_path / "copied")  # e.g. a run folder brought over from a GPU machine
    moved = config.open_run("t1", tmp_path / "copied")
    assert moved.stage_dir("mcq") == (tmp_path / "copied" / "t1" / "01_mcq").resolve() and moved.stage_dir("mcq").is_dir()
    assert moved.figures_dir == tmp_path / "f" / "t1"
    assert all(moved.stage(s.key).hash == r.stage(s.key).hash for s in stages.SPECS)  # paths shape nothing
    with pytest.raises(FileNotFoundError, match="no run 't2'"):
        config.open_run("t2", tmp_path / "copied")


# ----------------------------------------------------------------------------- the schema


def _mine(tmp_path, text):
    p = tmp_path / "mine.yaml"
    p.write_text(text)
    return str(p)


def test_a_misspelled_key_in_your_own_profile_names_the_file_and_the_key_meant(tmp_path):
    mine = _mine(tmp_path, "inherits: tiny\nsimple_cot:\n  sampling: {temprature: 0.2}\n")
    with pytest.raises(config.ProfileError, match=r"profile .*mine\.yaml: unknown setting "
                                                  r"simple_cot\.sampling\.temprature \(did you mean "
                                                  r"simple_cot\.sampling\.temperature\?\)"):
        config.load_profile(mine)


@pytest.mark.parametrize("text, message", [
    ("- data\n- mcq\n", r"mine\.yaml: a profile is a mapping of sections .* not a list"),
    ("inherits: tiny\ndata: {num_images: lots}\n", r"mine\.yaml: data\.num_images: .*got 'lots'"),
    ("inherits: tiny\ndata: {source: scans}\n", r"data\.source 'scans' is neither a built-in source \(docci, "
                                                r"table, hf\) nor one of plugins\.caption_sources \(synthetic\)"),
    ("inherits: tiny\ndata: {num_images: 40\n", r"(?s)mine\.yaml: not valid YAML: .*mine\.yaml\", line 2"),
    ("inherits: tiny\nlong_cot: {ban_rule: fuzzy}\n", r"long_cot\.ban_rule: .*'released', 'whole_word' or "
                                                      r"'whole_word_forms'"),
    ("inherits: tiny\nsft: {lpt: {learning_rate: [0.1]}}\n", r"unknown setting sft\.lpt\.learning_rate \(did you "
                                                             r"mean sft\.lpt\.learning_rates\?\)"),
])
def test_a_bad_profile_is_an_error_that_names_the_file_and_the_key(tmp_path, text, message):
    with pytest.raises(config.ProfileError, match=message):
        config.load_profile(_mine(tmp_path, text))


def test_yaml_loose_numbers_are_read_as_numbers(tmp_path):
    # PyYAML reads 1e-5 (no dot) as text; the schema makes it the number it is
    s = config.load_profile(_mine(tmp_path, "inherits: tiny\nsft: {lpt: {learning_rates: [1e-5]}}\n"))
    assert s["sft"]["lpt"]["learning_rates"] == [1e-05]


def test_an_override_of_the_wrong_type_is_named_as_the_override(tmp_path):
    with pytest.raises(config.ProfileError, match=r"override simple_cot\.sampling\.n: "):
        config.resolve_run("tiny", "t", {"paths.outputs": str(tmp_path), "simple_cot.sampling.n": "three"})


def test_figures_of_some_stages_only_and_a_clear_error_for_an_unknown_one(tmp_path):
    """What a merge of shards draws: the figures of the merged stages alone (a stage not written yet
    is reported skipped, never drawn from another run's files); a key no stage has is an error."""
    from lpt_utils.viz import figures

    r = config.resolve_run("tiny", "t1", {"paths.outputs": str(tmp_path / "o"), "paths.figures": str(tmp_path / "f")})
    assert figures.render(r, only=["simple_cot", "long_cot"]) == {"skipped": ["02_simple_cot", "03_long_cot"]}
    assert len(figures.render(r)["skipped"]) == 7
    with pytest.raises(ValueError, match="simple_cots"):
        figures.render(r, only=["simple_cots"])
    assert not list(r.figures_dir.iterdir())
