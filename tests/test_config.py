import pytest

from multicsr_core.config import ConfigError, PipelineConfig, list_presets, load_config, parse_override


def test_paper_defaults():
    cfg = PipelineConfig()
    assert cfg.generation.omega == 0.3
    assert (cfg.curation.alpha, cfg.curation.beta, cfg.curation.gamma) == (3.0, 3.0, 1.0)
    t = cfg.training
    assert (t.sigma, t.tau, t.batch_size, t.learning_rate, t.epochs, t.max_seq_length) == (0.9, 0.05, 256, 5e-5, 3.0, 32)
    assert (t.pooling, t.mlp_only_train, t.eval_steps, t.seed) == ("cls", True, 125, 42)


def test_presets_exist_and_load():
    assert {"paper-flan-t5-xl-bert", "paper-flan-t5-xl-roberta", "paper-chatgpt-roberta", "demo-offline",
            "demo-offline-self-scoring", "demo-snli"} <= set(list_presets())
    for name in list_presets():
        cfg = load_config(name)
        assert len(cfg.config_hash()) == 64
    assert load_config("paper-flan-t5-xl-roberta").training.base_model == "roberta-base"
    assert load_config("paper-chatgpt-roberta").scoring.scorer == "openai"


def test_unknown_key_named():
    with pytest.raises(ConfigError, match=r"training\.sigmaa: unknown key"):
        load_config("demo-offline", [parse_override("training.sigmaa=0.5")])
    with pytest.raises(ConfigError, match=r"bogus: unknown key"):
        load_config(None, [{"bogus": 1}])


def test_out_of_range_named():
    with pytest.raises(ConfigError, match=r"curation\.alpha"):
        load_config(None, [parse_override("curation.alpha=7")])
    with pytest.raises(ConfigError, match=r"training\.tau"):
        load_config(None, [parse_override("training.tau=0")])


def test_override_changes_hash_and_only_that_section():
    base = load_config("demo-offline")
    changed = load_config("demo-offline", [parse_override("training.sigma=0.8")])
    assert changed.training.sigma == 0.8
    assert base.config_hash() != changed.config_hash()
    assert base.section_hash("scoring", "curation") == changed.section_hash("scoring", "curation")


def test_override_syntax_errors():
    with pytest.raises(ConfigError):
        parse_override("training.sigma")


def test_bad_preset_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  sigma: [0.9\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no-such-preset")
