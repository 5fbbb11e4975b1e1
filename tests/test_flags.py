"""Flags generated from the config's fields: every field settable, the original's spellings kept, only the flags a
user typed count, and a value the user gave beats every lower layer."""

import json

import pytest

from config import build_config
from grpo_tool.flags import config_overrides
from grpo_tool.settings import FIELD_TYPES, FIELDS
from train_grpo import build_parser, config_from_args


def example(name: str):
    """(argv, the value it must give the field) for one field, through its generated --field-name flag."""
    flag, kind, choices = "--" + name.replace("_", "-"), FIELD_TYPES[name], FIELDS[name].metadata["choices"]
    if choices:
        return [flag, choices[-1]], choices[-1]
    if kind is bool or kind == bool | None:
        return [flag], True
    if kind is list:
        return [flag, "a.py:f", flag, "b.py:g"], ["a.py:f", "b.py:g"]
    if kind is dict:
        return ([flag, "epsilon_high=0.28", flag, "scale_rewards=batch"],
                {"epsilon_high": 0.28, "scale_rewards": "batch"})
    if kind in (int, int | None):
        return [flag, "7"], 7
    if kind in (float, float | None):
        return [flag, "0.25"], 0.25
    return [flag, "some/value"], "some/value"


@pytest.mark.parametrize("name", list(FIELDS))
def test_every_field_has_a_flag_that_sets_exactly_it(name):
    argv, expected = example(name)
    assert config_overrides(build_parser().parse_args(argv)) == {name: expected}


def test_the_original_spellings_are_kept():
    parser = build_parser()
    spelled = {flag: action.dest for action in parser._actions for flag in action.option_strings}
    original = {"--model": "model_name", "--dataset": "dataset_name", "--epochs": "num_train_epochs",
                "--batch-size": "per_device_train_batch_size", "--learning-rate": "learning_rate",
                "--max-samples": "max_samples", "--output-dir": "output_dir", "--custom-data": "custom_data",
                "--reward-function": "reward_function_type", "--reward-config": "reward_config_path",
                "--wandb-project": "wandb_project", "--no-wandb": "wandb_project",
                "--resume-from-checkpoint": "resume_from_checkpoint",
                "--enable-generation-logging": "enable_generation_logging",
                "--disable-generation-logging": "enable_generation_logging",
                "--generation-log-dir": "generation_log_dir", "--max-generation-samples": "max_generation_samples"}
    assert {flag: spelled.get(flag) for flag in original} == original


def test_help_comes_from_the_fields_with_their_defaults():
    text = build_parser().format_help()
    assert "optimizer steps to run; -1: as many as --epochs needs (default: -1)" in " ".join(text.split())
    assert "{grpo,dapo,dr_grpo,bnpo,cispo,sapo}" in text  # choices from the field
    assert "MISSING" not in text  # fields with a default factory show theirs (none for empty ones)


def test_only_typed_flags_count_and_unset_words_unset():
    assert config_overrides(build_parser().parse_args([])) == {}
    assert config_overrides(build_parser().parse_args(["--max-samples", "none"])) == {"max_samples": None}
    assert config_overrides(build_parser().parse_args(["--disable-generation-logging"])) == {
        "enable_generation_logging": False}
    assert config_overrides(build_parser().parse_args(["--no-wandb"])) == {"wandb_project": None}


def test_a_flag_beats_the_mode_also_for_the_step_count():
    notes = []
    config = config_from_args(build_parser().parse_args(["--quick-test", "--epochs", "0.05"]), notes)
    assert (config.num_train_epochs, config.max_steps) == (0.05, -1)
    assert notes == ["num_train_epochs=0.05 from your flags replaces max_steps=60 from --quick-test"]
    # Both given: both kept (TRL's max_steps then wins, as TRL documents).
    both = config_from_args(build_parser().parse_args(["--quick-test", "--epochs", "2", "--max-steps", "5"]))
    assert (both.num_train_epochs, both.max_steps) == (2.0, 5)
    assert config_from_args(build_parser().parse_args(["--quick-test"])).max_steps == 60


def test_yaml_config_files_load_like_json(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("group_size: 2\nlearning_rate: 1.0e-3\ntrl_options:\n  scale_rewards: batch\n")
    config = build_config(mode="quick_test", config_file=str(path))
    assert (config.group_size, config.learning_rate, config.trl_options) == (2, 1e-3, {"scale_rewards": "batch"})
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps({"group_size": 2, "learning_rate": 1e-3,
                                     "trl_options": {"scale_rewards": "batch"}}))
    assert build_config(mode="quick_test", config_file=str(json_path)) == config
