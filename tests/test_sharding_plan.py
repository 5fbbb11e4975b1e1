"""--plan under several devices (grpo_tool/plan/sharding.py): what DDP, ZeRO-2, ZeRO-3 and FSDP divide and gather,
the engine read from flags, from accelerate configs and from accelerate launch's environment (grpo_tool/launch.py),
and the number of devices that would fit a model one device cannot hold."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from config import build_config
from conftest import ROOT, run_main
from grpo_tool.backend import choose_backend
from grpo_tool.errors import UserError
from grpo_tool.launch import Sharding, from_environment
from grpo_tool.model_shapes import find_shape
from grpo_tool.plan.device import GB, Device
from grpo_tool.plan.fitting import make_plan
from grpo_tool.plan.memory import count_parts
from grpo_tool.plan.sharding import divides, from_flags, read_accelerate_config
from grpo_tool.settings import GRPOConfig

H100 = Device.gpu(80, "NVIDIA H100 80GB HBM3")
STATE = ("weights", "gradients", "optimizer state")


def parts(config, sharding, device=H100):
    shape = find_shape(config.model_name)
    return {(part.name, part.phase): part.bytes for part in
            count_parts(config, shape, device, "transformers", 200, True, sharding)}


def state_bytes(config, sharding) -> float:
    counted = parts(config, sharding)
    return sum(counted[(name, "always")] for name in STATE)


def test_full_fine_tuning_divides_as_the_zero_paper_counts_mixed_precision_adam():
    # ZeRO (Rajbhandari et al., 2020): 16-bit weights and gradients plus K=12 bytes of fp32 optimizer state per
    # parameter; ZeRO-2 divides the 2+12 bytes of gradients and state, ZeRO-3 all 16.
    config = GRPOConfig(model_name="qwen2.5-7b", use_lora=False, load_in_4bit=False)
    parameters = find_shape(config.model_name).parameters
    for devices in (8, 16):
        assert state_bytes(config, Sharding("zero3", devices)) == pytest.approx(16 * parameters / devices)
        assert state_bytes(config, Sharding("zero2", devices)) == pytest.approx(2 * parameters + 14 * parameters
                                                                                 / devices)
    # FSDP2 keeps the tool's fp32 weights (autocast computes in bf16) and divides them with the rest.
    one = parts(config, Sharding())
    fsdp = parts(config, Sharding("fsdp", 8))
    for name in STATE:
        assert fsdp[(name, "always")] == pytest.approx(one[(name, "always")] / 8)
    # DDP divides nothing and keeps a second copy of the gradients in its all-reduce buckets.
    ddp = parts(config, Sharding("none", 8))
    assert all(ddp[(name, "always")] == one[(name, "always")] for name in STATE)
    assert ddp[("gradient buckets", "always")] == one[("gradients", "always")]


def test_zero3_gathers_every_weight_for_sampling_unless_trl_is_told_not_to():
    config = GRPOConfig(model_name="llama-3.1-70b", load_in_4bit=False)
    whole = find_shape(config.model_name).parameters * 2
    gathered = parts(config, Sharding("zero3", 8))
    for phase in ("generation", "evaluation"):
        assert gathered[("gathered weights", phase)] == pytest.approx(whole * 7 / 8)
    assert gathered[("gathered layers", "training")] == pytest.approx(2 * whole / 80)  # two of the 80 layers
    layer_by_layer = parts(replace(config, trl_options={"ds3_gather_for_generation": False}), Sharding("zero3", 8))
    assert ("gathered weights", "generation") not in layer_by_layer
    assert layer_by_layer[("gathered layers", "generation")] == pytest.approx(2 * whole / 80)
    assert parts(config, Sharding("fsdp", 8))[("gathered layers", "generation")] == pytest.approx(2 * whole / 80)


def test_the_70b_preset_on_one_gpu_is_told_how_many_gpus_each_engine_needs():
    config = build_config(mode="production", overrides={"model_name": "llama-3.1-70b", "load_in_4bit": False})
    alone = make_plan(config, H100, prompt=(1792, "budget"))
    assert not alone.fits
    ideas = {idea.split(" on ")[0].split(":")[0]: idea for idea in alone.would_fit}
    assert "on no number of devices" in ideas["DeepSpeed ZeRO-2"]  # the 16-bit weights stay whole
    assert "ds3_gather_for_generation=false" in ideas["DeepSpeed ZeRO-3"]  # gathering all 141 GB never fits
    fsdp = int(ideas["FSDP"].split(" on ")[1].split()[0])
    assert make_plan(config, H100, prompt=(1792, "budget"), sharding=Sharding("fsdp", fsdp)).fits
    assert not make_plan(config, H100, prompt=(1792, "budget"), sharding=Sharding("fsdp", fsdp - 1)).fits
    on_eight = make_plan(config, H100, prompt=(1792, "budget"), sharding=Sharding("zero3", 8))
    assert on_eight.backend == "transformers" and not on_eight.fits and on_eight.peak > 130 * GB


def test_offloading_moves_parts_off_the_device(tmp_path):
    config = GRPOConfig(model_name="qwen2.5-7b", use_lora=False, load_in_4bit=False)
    path = tmp_path / "offload.yaml"
    path.write_text("distributed_type: DEEPSPEED\nnum_processes: 4\ndeepspeed_config:\n  zero_stage: 3\n"
                    "  offload_optimizer_device: cpu\n  offload_param_device: cpu\n")
    sharding = read_accelerate_config(str(path))
    assert (sharding.engine, sharding.processes, sharding.offload_optimizer, sharding.offload_weights) == \
        ("zero3", 4, True, True)
    counted = parts(config, sharding)
    assert counted[("optimizer state", "always")] == 0 and counted[("weights", "always")] == 0
    assert counted[("gradients", "always")] > 0


def test_the_shipped_accelerate_configs_are_read_as_their_engines():
    found = {name: read_accelerate_config(str(ROOT / "config" / "accelerate" / name)) for name in
             ("ddp.yaml", "cpu_2proc.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp.yaml")}
    assert {name: (sharding.engine, sharding.processes) for name, sharding in found.items()} == {
        "ddp.yaml": ("none", 8), "cpu_2proc.yaml": ("none", 2), "deepspeed_zero2.yaml": ("zero2", 8),
        "deepspeed_zero3.yaml": ("zero3", 8), "fsdp.yaml": ("fsdp", 8)}
    assert found["fsdp.yaml"].reshard_after_forward and not found["deepspeed_zero3.yaml"].offload_weights
    # A flag given beats the file, as everywhere in this tool.
    both = from_flags("zero2", 16, str(ROOT / "config/accelerate/fsdp.yaml"))
    assert (both.engine, both.processes) == ("zero2", 16) and "over" in both.source


def test_a_deepspeed_json_named_by_the_accelerate_config_gives_the_stage(tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    (tmp_path / "accelerate.yaml").write_text(f"distributed_type: DEEPSPEED\nnum_processes: 2\ndeepspeed_config:\n"
                                              f"  deepspeed_config_file: {tmp_path / 'ds.json'}\n")
    sharding = read_accelerate_config(str(tmp_path / "accelerate.yaml"))
    assert sharding.engine == "zero1" and divides(sharding, "optimizer state") and not divides(sharding, "gradients")


@pytest.mark.parametrize("content, fragment", [
    ("distributed_type: DEEPSPEED\nnum_processes: 2\nzero_stag: 3\n", "unknown keys (['zero_stag'])"),
    ("distributed_type: XLA\nnum_processes: 2\n", "the plan knows DDP"),
    ("- a list\n", "not an accelerate config"),
    ("distributed_type: [\n", "not readable YAML"),
    ("distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 4\n", "zero_stage 4"),
])
def test_a_broken_accelerate_config_is_one_line(tmp_path, content, fragment):
    path = tmp_path / "accelerate.yaml"
    path.write_text(content)
    with pytest.raises(UserError) as raised:
        read_accelerate_config(str(path))
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_accelerate_launch_s_environment_names_the_engine(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert (from_environment().engine, from_environment().processes) == ("zero3", 16)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    fsdp = from_environment()
    assert fsdp.engine == "fsdp" and not fsdp.reshard_after_forward
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    assert from_environment().engine == "none"


def test_under_a_sharding_engine_the_backend_is_transformers_and_weights_are_16_bit():
    assert choose_backend(GRPOConfig(load_in_4bit=False), True, True, "zero3")[0] == "transformers"
    assert choose_backend(GRPOConfig(), True, True, "zero2")[0] == "transformers"  # 4-bit replicas: allowed
    with pytest.raises(UserError, match="add --no-load-in-4bit"):
        choose_backend(GRPOConfig(), True, True, "fsdp")
    with pytest.raises(UserError, match="--backend unsloth under DeepSpeed"):
        choose_backend(GRPOConfig(backend="unsloth", load_in_4bit=False), True, True, "zero3")
    assert choose_backend(GRPOConfig(), False, False, "fsdp")[0] == "transformers"  # the CPU: no 4-bit weights


def test_processes_on_one_cpu_share_its_memory(tmp_path):
    alone = run_main("--plan", "--quick-test", "--output-dir", str(tmp_path / "one"))
    shared = run_main("--plan", "--quick-test", "--num-processes", "2", "--output-dir", str(tmp_path / "two"))
    assert alone.returncode == shared.returncode == 0, alone.stderr + shared.stderr
    one, two = (json.loads((tmp_path / name / "plan.json").read_text())["memory"] for name in ("one", "two"))
    assert two == pytest.approx(one / 2, rel=0.1)  # each process's share of what this machine has free
    assert "a 1/2 share for each process" in shared.stdout


def test_plan_flags_write_the_sharding_into_plan_json(tmp_path):
    result = run_main("--plan", "--model", "llama-3.1-70b", "--no-load-in-4bit", "--gpu-memory", "80",
                      "--accelerate-config", str(ROOT / "config/accelerate/deepspeed_zero3.yaml"), "--num-processes",
                      "16", "--trl-option", "ds3_gather_for_generation=false", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "16 device(s), DeepSpeed ZeRO-3 (--num-processes 16 over " in result.stdout
    record = json.loads((tmp_path / "plan.json").read_text())
    assert record["sharding"]["engine"] == "zero3" and record["sharding"]["processes"] == 16 and record["fits"]
    weights = next(part for part in record["parts"] if part["name"] == "weights")
    assert weights["gib"] == pytest.approx(find_shape("llama-3.1-70b").parameters * 2 / 16 / GB, rel=1e-3)


def test_the_start_up_check_plans_the_engine_the_run_was_launched_under(monkeypatch):
    from transformers import LlamaConfig

    from grpo_tool.backend import Machine
    from grpo_tool.plan.fitting import run_check

    model_config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                               num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
    machine = Machine("transformers", "test", False, "float32", False)
    config = build_config(mode="quick_test")
    alone = run_check(config, machine, model_config, 80)
    for name, value in {"WORLD_SIZE": "4", "ACCELERATE_USE_DEEPSPEED": "true",
                        "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}.items():
        monkeypatch.setenv(name, value)
    sharded = run_check(config, machine, model_config, 80)
    assert (sharded.sharding.engine, sharded.sharding.processes) == ("zero3", 4)
    weights = [next(part.bytes for part in plan.parts if part.name == "weights") for plan in (alone, sharded)]
    assert weights[1] == pytest.approx(weights[0] / 4)
