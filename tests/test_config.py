"""Config loading: precedence, typing of YAML and flag values, unknown keys, range checks."""

import pytest

from meap.config import PretrainConfig, load_config
from meap.errors import UserError


def test_precedence_defaults_then_yaml_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seq_len: 128\nlr: 1.0e-3\ncompile: yes\n")
    config = load_config(PretrainConfig, recipe, {"seq_len": "64", "max_steps": "1e3"})
    assert (config.seq_len, config.lr, config.compile, config.max_steps) == (64, 1e-3, True, 1000)
    assert config.micro_batch_size == PretrainConfig().micro_batch_size


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"seed": "-1"}, "seed"),
        ({"adam_beta1": "1.5"}, "adam_beta1"),
        ({"lr": "nan"}, "lr"),
        ({"lr": "inf"}, "lr"),
        ({"weight_decay": "-0.1"}, "weight_decay"),
        ({"mask_mode": "spans"}, "mask_mode: expected one of exact, bernoulli, reference"),
        ({"micro_batch_size": "0"}, "micro_batch_size"),
        ({"seq_len": "2.5"}, "--seq-len"),
        ({"compile": "maybe"}, "--compile"),
    ],
)
def test_bad_values_are_refused_with_the_key(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(PretrainConfig, overrides=overrides)


def test_problems_are_reported_together():
    with pytest.raises(UserError, match=r"mask_ratio.*; adam_beta2"):
        load_config(PretrainConfig, overrides={"mask_ratio": "2", "adam_beta2": "1"})


def test_yaml_errors_name_the_file_and_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seq_len: [1, 2]\n")
    with pytest.raises(UserError, match=r"r\.yaml: `seq_len` expects int"):
        load_config(PretrainConfig, recipe)
    recipe.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match=r"r\.yaml: expected a mapping"):
        load_config(PretrainConfig, recipe)
    recipe.write_text("seq_len: [1, 2\n")
    with pytest.raises(UserError, match=r"r\.yaml:\d+: not valid YAML"):
        load_config(PretrainConfig, recipe)
    with pytest.raises(UserError, match="config file not found"):
        load_config(PretrainConfig, tmp_path / "absent.yaml")


def test_a_paired_experiment_lists_objectives_and_sets_each_runs_objective_itself(tmp_path):
    from meap.config import config_to_dict
    from meap.experiments.config import DemoConfig, SFTDemoConfig

    recipe = tmp_path / "demo.yaml"
    recipe.write_text("objectives: [meap, ntp]\n")
    config = load_config(DemoConfig, recipe)
    assert config.objectives == ["meap", "ntp"] and [arm[1] for arm in config.arms()] == ["meap", "ntp"]
    assert "objective" not in config_to_dict(config) and "objectives" in config_to_dict(config)
    branch = config.pretrain_config("ntp", "data", tmp_path / "ntp", seed=0)
    assert branch.objective == "ntp"
    # one name, one meaning: a training run's `objective` is no key of an experiment
    for kind in (DemoConfig, SFTDemoConfig):
        recipe.write_text("objective: ntp\n")
        with pytest.raises(UserError, match="unknown key `objective` \\(did you mean `objectives`\\?\\)"):
            load_config(kind, recipe)
        with pytest.raises(UserError, match="objectives: expected distinct names"):
            load_config(kind, overrides={"objectives": ["ntp", "ntp"]})


def test_an_experiment_saved_with_a_comma_listed_objective_continues(tmp_path):
    from meap.config import save_config
    from meap.experiments.config import DemoConfig
    from meap.experiments.runner import check_output

    config = load_config(DemoConfig, overrides={"objectives": ["ntp"], "output": str(tmp_path / "demo")})
    (tmp_path / "demo").mkdir()
    save_config(config, tmp_path / "demo" / "config.yaml")
    assert check_output(config, tmp_path / "demo", overwrite=False) == []
    # as an older meap saved it: the same experiment continues, another one is refused
    older = (tmp_path / "demo" / "config.yaml").read_text().replace("objectives:\n- ntp\n", "objective: ntp\n")
    assert "objectives" not in older
    (tmp_path / "demo" / "config.yaml").write_text(older)
    assert check_output(config, tmp_path / "demo", overwrite=False) == []
    both = load_config(DemoConfig, overrides={"objectives": ["ntp", "meap"], "output": str(tmp_path / "demo")})
    with pytest.raises(UserError, match=r"another configuration \(objectives\)"):
        check_output(both, tmp_path / "demo", overwrite=False)


OLD_DEMO_RECIPE = """seed: 5
data: demo
objectives: [ntp, meap]
model: tiny-2l
seq_len: 48
max_steps: 30
lr: 1.0e-3
min_lr: 1.0e-3
probe_every: 10
log_every: 10
"""
NESTED_DEMO_RECIPE = """seed: 5
objectives: [ntp, meap]
probe_every: 10
train:
  model: tiny-2l
  seq_len: 48
  max_steps: 30
  lr: 1.0e-3
  min_lr: 1.0e-3
  log_every: 10
"""


def test_an_experiment_holds_its_training_config_and_older_recipes_load_into_it(tmp_path):
    from meap.config import config_to_dict
    from meap.experiments.config import DemoConfig

    old, nested = tmp_path / "old.yaml", tmp_path / "nested.yaml"
    old.write_text(OLD_DEMO_RECIPE)
    nested.write_text(NESTED_DEMO_RECIPE)
    config = load_config(DemoConfig, nested)
    assert config_to_dict(load_config(DemoConfig, old)) == config_to_dict(config)
    # one name, one meaning: the experiment's seed draws the corpus; each run's own seed is the experiment's to set
    assert config.seed == 5 and config.train.seq_len == 48 and config.train.max_steps == 30
    branch = config.pretrain_config("meap", "corpus", tmp_path / "b", seed=2, model="start")
    assert (branch.seed, branch.model, branch.data, branch.lr, branch.seq_len) == (2, "start", "corpus", 1e-3, 48)
    # the flags of the section are its keys, dotted; the section's defaults are the experiment's own
    flagged = load_config(DemoConfig, nested, {"train.max_steps": "7", "seeds": [1, 2]})
    assert flagged.train.max_steps == 7 and flagged.train.seq_len == 48 and DemoConfig().train.model == "tiny-2l"
    nested.write_text("train:\n  objective: ntp\n")
    with pytest.raises(UserError, match=r"unknown key `train.objective`"):
        load_config(DemoConfig, nested)


def test_an_experiment_saved_before_the_training_section_continues(tmp_path):
    """A config.yaml as an older meap saved it: every training key at the top level, those each run sets too."""
    import yaml

    from meap.config import config_to_dict, save_config
    from meap.experiments.config import DemoConfig
    from meap.experiments.runner import check_output

    output = tmp_path / "demo"
    config = load_config(DemoConfig, overrides={"output": str(output), "train.max_steps": "30"})
    output.mkdir()
    values = config_to_dict(config)
    flat = {**values["train"], **{k: v for k, v in values.items() if k != "train"}, "data": "demo"}
    (output / "config.yaml").write_text(yaml.safe_dump(flat, sort_keys=False))
    assert check_output(config, output, overwrite=False) == []
    longer = load_config(DemoConfig, overrides={"output": str(output), "train.max_steps": "31"})
    with pytest.raises(UserError, match=r"another configuration \(train.max_steps\)"):
        check_output(longer, output, overwrite=False)
    save_config(config, output / "config.yaml")
    assert "train:" in (output / "config.yaml").read_text() and check_output(config, output, overwrite=False) == []


def test_a_training_config_gives_inherited_keys_defaults_of_its_own_in_their_place():
    import dataclasses

    from meap.config import SFTConfig, TrainingConfig

    base = {f.name: f for f in dataclasses.fields(TrainingConfig)}
    sft = {f.name: f for f in dataclasses.fields(SFTConfig)}
    assert (SFTConfig().lr, SFTConfig().save_every, TrainingConfig().lr, PretrainConfig().lr) == (5e-5, 50, 2e-3, 2e-3)
    assert list(sft)[: len(base)] == list(base)  # same keys, same order (the help lists them alike)
    assert sft["lr"].metadata == base["lr"].metadata
    assert TrainingConfig.__dataclass_fields__["lr"].default == 2e-3  # the parent keeps its own
