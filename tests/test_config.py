"""Config layering, file checks, presets and the checks that run before anything heavy loads."""

import json
from pathlib import Path

import pytest

import config as config_module
from config import build_config, create_default_config, load_config_file, resolve_model_name, save_config_to_file
from grpo_tool.errors import UserError
from grpo_tool.settings import GRPOConfig, resolved_eval_samples
from train_grpo import build_parser, config_from_args

ROOT = Path(__file__).resolve().parent.parent


def from_flags(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def write(tmp_path, data, name="c.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_layers_apply_in_order(tmp_path):
    # default < model preset: the tiny preset raises the learning rate.
    assert from_flags("--model", "tiny").learning_rate == 3e-3
    assert GRPOConfig().learning_rate == 5e-6
    # preset < mode: quick-test sets a group of 4 where the tiny preset keeps the default.
    assert from_flags("--model", "tiny").group_size == GRPOConfig.group_size
    assert from_flags("--model", "tiny", "--quick-test").group_size == 4
    # mode < config file.
    path = write(tmp_path, {"group_size": 2, "learning_rate": 1e-3, "max_steps": 7})
    loaded = from_flags("--quick-test", "--config", path)
    assert (loaded.group_size, loaded.learning_rate, loaded.max_steps) == (2, 1e-3, 7)
    # config file < flags.
    assert from_flags("--quick-test", "--config", path, "--learning-rate", "2e-4").learning_rate == 2e-4


def test_flags_count_only_when_given(tmp_path):
    path = write(tmp_path, {"per_device_train_batch_size": 4, "max_generation_samples": 2,
                            "enable_generation_logging": False})
    loaded = from_flags("--quick-test", "--config", path)
    assert loaded.per_device_train_batch_size == 4
    assert loaded.max_generation_samples == 2
    assert loaded.enable_generation_logging is False
    assert from_flags("--quick-test", "--config", path, "--enable-generation-logging").enable_generation_logging


def test_quick_test_defaults_to_offline_model_and_data(tmp_path):
    quick = from_flags("--quick-test")
    assert (quick.model_name, quick.dataset_name) == ("tiny", "sample")
    custom = from_flags("--quick-test", "--custom-data", str(ROOT / "tests/fixtures/custom.jsonl"))
    assert custom.custom_data.endswith("custom.jsonl")
    qwen = "Qwen/Qwen2.5-0.5B-Instruct"
    assert from_flags("--quick-test", "--model", qwen).model_name == qwen


def test_production_mode():
    production = from_flags("--production")
    assert production.wandb_project == "grpo-training" and production.max_samples is None
    assert from_flags("--production", "--no-wandb").wandb_project is None


def test_every_flag_reaches_its_field(tmp_path):
    custom = str(ROOT / "tests/fixtures/custom.jsonl")
    loaded = from_flags("--model", "tiny", "--custom-data", custom, "--max-samples", "5", "--epochs", "2",
                        "--learning-rate", "1e-4", "--batch-size", "16", "--output-dir", str(tmp_path / "o"),
                        "--reward-function", "multi", "--wandb-project", "p", "--disable-generation-logging",
                        "--generation-log-dir", str(tmp_path / "g"), "--max-generation-samples", "3")
    assert (loaded.max_samples, loaded.num_train_epochs, loaded.learning_rate) == (5, 2.0, 1e-4)
    assert loaded.per_device_train_batch_size == 16 and loaded.output_dir == str(tmp_path / "o")
    assert loaded.reward_function_type == "multi" and loaded.wandb_project == "p"
    assert loaded.enable_generation_logging is False and loaded.generation_log_dir == str(tmp_path / "g")
    assert loaded.max_generation_samples == 3 and loaded.custom_data == custom
    assert from_flags("--model", "tiny", "--reward-config", "balanced").reward_config_name == "balanced"
    path = str(ROOT / "config/reward_config.json")
    assert from_flags("--model", "tiny", "--reward-config", path).reward_config_path == path


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path):
    path = write(tmp_path, {"learning_rat": 1e-5, "group_size": 4})
    with pytest.raises(UserError) as error:
        load_config_file(path)
    assert "unknown key 'learning_rat'" in str(error.value) and "learning_rate" in str(error.value)


@pytest.mark.parametrize("data, fragment", [
    ({"group_size": "4"}, "group_size='4' must be int"),
    ({"learning_rate": True}, "learning_rate=True must be float"),
    ({"max_samples": 2.5}, "max_samples=2.5 must be int or null"),
])
def test_wrong_types_name_field_and_value(tmp_path, data, fragment):
    with pytest.raises(UserError) as error:
        load_config_file(write(tmp_path, data))
    assert fragment in str(error.value)


@pytest.mark.parametrize("overrides, fragment", [
    ({"gamma": 0.9}, "gamma=0.9: every episode is a single completion"),
    ({"group_size": 1}, "group_size=1"),
    ({"learning_rate": 0.0}, "learning_rate=0.0"),
    ({"loss_type": "ppo"}, "loss_type='ppo'"),
    ({"max_completion_length": 4096}, "max_completion_length=4096 leaves no room"),
    ({"reward_function_type": "double"}, "reward_function_type='double'"),
    ({"model_name": "llama-9"}, "unknown model 'llama-9'"),
    ({"zero_variance_groups": "skip"}, "zero_variance_groups='skip': use one of auto, keep, drop, resample"),
    ({"zero_variance_groups": "drop", "resample_rounds": 4}, "resample_rounds=4 applies only with"),
    ({"resample_rounds": -1}, "resample_rounds=-1 must be between 0 and 16"),
    ({"share_prompts": True, "backend": "unsloth"}, "share_prompts=true with backend=unsloth"),
    ({"share_prompts": "yes"}, "share_prompts"),
    ({"curriculum_hopeless_rest": -2}, "curriculum_hopeless_rest=-2 must be >= 0"),
    ({"zero_variance_groups": "resample", "streaming": True, "max_steps": 5},
     "turn streaming off, or set zero_variance_groups=drop"),
    ({"curriculum_solved_rest": 5, "streaming": True, "max_steps": 5},
     "curriculum_solved_rest=5 draws prompts from anywhere"),
])
def test_out_of_range_values_are_rejected(overrides, fragment):
    with pytest.raises(UserError) as error:
        build_config(overrides=overrides)
    assert fragment in str(error.value)


def test_all_problems_are_reported_together():
    with pytest.raises(UserError) as error:
        build_config(overrides={"gamma": 0.5, "temperature": 0.0})
    assert "gamma" in str(error.value) and "temperature" in str(error.value)


def test_batch_divisibility_suggests_values():
    with pytest.raises(UserError) as error:
        build_config(overrides={"per_device_train_batch_size": 6, "gradient_accumulation_steps": 1, "group_size": 4})
    assert "use per_device_train_batch_size=4 (or 8, 12)" in str(error.value)
    # 2 completions x 4 accumulation steps = 8, which a group of 4 divides (the original's example).
    build_config(overrides={"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4, "group_size": 4})


def test_batch_divisibility_counts_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    build_config(overrides={"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "group_size": 4})
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(UserError):
        build_config(overrides={"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "group_size": 4})


def test_eval_samples_fits_the_eval_batch():
    assert resolved_eval_samples(GRPOConfig(per_device_eval_batch_size=2, group_size=4)) == 2
    assert resolved_eval_samples(GRPOConfig(per_device_eval_batch_size=8, group_size=4)) == 4
    with pytest.raises(UserError) as error:
        build_config(overrides={"per_device_eval_batch_size": 6, "eval_samples": 4})
    assert "per_device_eval_batch_size=6" in str(error.value)


def test_systematic_means_multi():
    assert GRPOConfig(reward_function_type="systematic").reward_function_type == "multi"


def test_original_spelling_resolves_to_a_real_checkpoint():
    assert resolve_model_name("unsloth/llama-3.1-8b-bnb-4bit") == "unsloth/Meta-Llama-3.1-8B-bnb-4bit"
    assert resolve_model_name("llama-3.1-8b") == "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit"
    assert resolve_model_name("org/some-model") == "org/some-model"


def test_default_config_round_trips_through_a_file(tmp_path):
    created = create_default_config("llama-3.1-8b", "ultrafeedback")
    created.learning_rate = 1e-6
    created.num_train_epochs = 5
    created.max_samples = 5000
    path = tmp_path / "my_config.json"
    save_config_to_file(created, path)
    assert from_flags("--config", str(path)) == created
    assert not list(tmp_path.glob(".*.tmp"))


def test_every_shipped_config_loads():
    shipped = sorted((ROOT / "config").glob("*.json"))
    assert shipped
    for path in shipped:
        if path.name == "reward_config.json":
            continue  # a reward config, loaded in test_rewards
        loaded = build_config(config_file=str(path))
        assert isinstance(loaded, GRPOConfig)
    example = build_config(config_file=str(ROOT / "config/example_config.json"))
    assert example.reward_function_type == "multi" and example.beta == 0.1 and example.group_size == 4


def test_presets_are_complete():
    from grpo_tool.model_registry import MODEL_PRESETS

    for name, preset in MODEL_PRESETS.items():
        assert set(preset) <= set(config_module.FIELD_NAMES), name
    for mode in config_module.MODE_PRESETS.values():
        assert set(mode) <= set(config_module.FIELD_NAMES)


def test_trl_names_of_our_settings_work_in_a_config_file_and_as_flags(tmp_path):
    (tmp_path / "trl.yaml").write_text("model_name_or_path: tiny\nnum_generations: 4\nuse_peft: true\n"
                                       "learning_rate: 1e-6\ntrl_options:\n  epsilon: 2e-1\n")
    notes = []
    config = build_config(config_file=str(tmp_path / "trl.yaml"), overrides={"dataset_name": "sample"}, notes=notes)
    assert (config.model_name, config.group_size, config.use_lora) == ("tiny", 4, True)
    # PyYAML reads 1e-6 as text; TRL's parser reads it as the number, and so does this one.
    assert config.learning_rate == 1e-6 and config.trl_options == {"epsilon": 0.2}
    assert "num_generations in " + str(tmp_path / "trl.yaml") + " is TRL's name for group_size" in notes
    flags = from_flags("--model-name-or-path", "tiny", "--num-generations", "2", "--batch-size", "4")
    assert (flags.model_name, flags.group_size) == ("tiny", 2)
    assert "--num-generations" not in build_parser().format_help()  # TRL's spellings stay out of --help


@pytest.mark.parametrize("key, fragment", [("max_prompt_length", "use max_seq_length"),
                                           ("lr_scheduler_type", "give it under trl_options"),
                                           ("report_to", "use wandb_project / tensorboard"),
                                           ("eval_strategy", "use eval_steps")])
def test_trl_words_for_what_is_set_another_way_say_what_to_use_and_guess_nothing(tmp_path, key, fragment):
    with pytest.raises(UserError) as error:
        load_config_file(write(tmp_path, {key: 1}))
    assert fragment in str(error.value) and "did you mean" not in str(error.value)
    assert "valid keys" not in str(error.value)


def test_a_preset_datasets_hub_id_is_the_preset():
    config = build_config(overrides={"model_name": "tiny", "dataset_name": "openai/gsm8k"})
    assert config.dataset_name == "gsm8k" and config.reward_config_name == "verifiable"  # the preset's reward too


def test_the_global_batch_is_stated_once_with_what_divides_what():
    from config import describe_batch

    line = describe_batch(GRPOConfig(per_device_train_batch_size=8, gradient_accumulation_steps=4, group_size=8), 2, 4)
    assert line == ("global batch: 64 completions a step (8 per device x 4 accumulation steps x 2 processes) = 8 "
                    "prompts x a group of 8; each generation samples 64 completions (8 groups), once every 4 "
                    "micro-batches")
    one = describe_batch(GRPOConfig(per_device_train_batch_size=8, gradient_accumulation_steps=1, group_size=4), 1, 1)
    assert "(8 per device x 1 accumulation step x 1 process) = 2 prompts" in one and one.endswith("every micro-batch")


def test_a_preset_without_4_bit_weights_loads_its_16_bit_checkpoint():
    from grpo_tool.model_registry import MODEL_PRESETS, SIXTEEN_BIT_CHECKPOINTS, checkpoint_to_load

    for preset, settings in MODEL_PRESETS.items():
        assert checkpoint_to_load(preset, four_bit=True) == settings["model_name"]
        sixteen = checkpoint_to_load(settings["model_name"], four_bit=False)
        assert sixteen == SIXTEEN_BIT_CHECKPOINTS.get(preset, settings["model_name"])
        assert "bnb-4bit" not in sixteen.lower()
    assert checkpoint_to_load("Qwen/Qwen2.5-0.5B-Instruct", four_bit=False) == "Qwen/Qwen2.5-0.5B-Instruct"
