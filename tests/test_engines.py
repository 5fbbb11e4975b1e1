"""The sharded engines on two CPU processes over gloo, through `accelerate launch` and the tool unchanged: DeepSpeed
ZeRO-3 (deepspeed, from requirements-dev.txt, picks its CPU accelerator and talks over gloo) and FSDP2 (torch's
fully_shard) with tests/fsdp_on_cpu.py standing in for accelerate's GPU-only switch. Each trains, evaluates,
checkpoints in the engine's own layout, saves a whole final model whose weights moved, and resumes; FSDP with prompts
shared. ZeRO-2 runs on two machines in tests/test_nodes.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from conftest import ROOT
from generation_logger import logged_steps

pytestmark = pytest.mark.slow

ENGINES = {
    "zero3": ({"distributed_type": "DEEPSPEED", "deepspeed_config": {
        "zero_stage": 3, "offload_optimizer_device": "none", "offload_param_device": "none", "zero3_init_flag": True,
        "zero3_save_16bit_model": True}}, "global_step2"),
    "fsdp": ({"distributed_type": "FSDP", "fsdp_config": {
        "fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_offload_params": False, "fsdp_reshard_after_forward": True, "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "fsdp_activation_checkpointing": False}}, "pytorch_model_fsdp_0"),
}
PORTS = {"zero3": 29552, "fsdp": 29553}


def launch(tmp_path, engine: str, *more: str) -> subprocess.CompletedProcess:
    settings, _ = ENGINES[engine]
    config = tmp_path / "accelerate.yaml"  # JSON is YAML; accelerate reads it by its suffix as YAML
    config.write_text(json.dumps({"compute_environment": "LOCAL_MACHINE", "num_machines": 1, "machine_rank": 0,
                                  "num_processes": 2, "mixed_precision": "no", "rdzv_backend": "static",
                                  "same_network": True, "main_training_function": "main", **settings}))
    entry = ROOT / ("tests/fsdp_on_cpu.py" if engine == "fsdp" else "train_grpo.py")
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                           "--main_process_port", str(PORTS[engine]), str(entry), "--quick-test", "--output-dir",
                           str(tmp_path / "out"), "--eval-steps", "2", "--save-steps", "2", "--logging-steps", "1",
                           *more], capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.parametrize("engine", ["zero3", "fsdp"])  # ZeRO-2: on two machines in tests/test_nodes.py
def test_the_engine_trains_checkpoints_in_its_layout_and_resumes(tmp_path, engine):
    from grpo_tool.tiny_model import ensure_tiny_model

    first = launch(tmp_path, engine, "--max-steps", "2", *([] if engine == "zero3" else ["--share-prompts"]))
    assert first.returncode == 0, first.stderr[-4000:]
    out = tmp_path / "out"
    assert first.stdout.count("done: 2 steps") == 1
    _, layout = ENGINES[engine]
    assert (out / "checkpoint-2" / layout).is_dir()  # the engine's own sharded state: it was really on
    record = json.loads((out / "run_record.json").read_text())
    assert record["launch"]["engine"] == engine and record["backend"] == "transformers"
    log = (out / "grpo_training.log").read_text(encoding="utf-8")
    # Prompts shared (asked for: the tiny model is under the default's size) where the engine allows, and the start-up
    # check, which compares shared with plain log-probabilities under the engine, agreed.
    sharing = "shared prompts: off under DeepSpeed ZeRO-3" if engine == "zero3" else "shared prompts: on in generation"
    assert sharing in log
    assert ("each process holding its share of every weight since the load" in log) == (engine == "zero3")
    trained = load_file(out / "final_model" / "model.safetensors")  # whole, gathered from the shards
    start = load_file(ensure_tiny_model() / "model.safetensors")
    assert set(start) <= set(trained)  # DeepSpeed's state dict also names the tied output layer (the same tensor)
    moved = [(trained[name].float() - start[name].float()).abs().max().item() for name in start]
    # Two steps at the tiny model's 3e-3 learning rate move a weight by at most about 0.005: every process started
    # from the same weights (a shard loaded as zeros, or left unsynchronised, would be off by the weights themselves).
    assert 0 < max(moved) < 0.02
    if engine == "fsdp":  # sharded checkpoints resume, but hold no model to evaluate: said in one line
        from conftest import run_main

        evaluated = run_main("--eval-only", "--quick-test", "--output-dir", str(out), "--resume-from-checkpoint",
                             str(out / "checkpoint-2"))
        assert evaluated.returncode == 2 and "saved sharded" in evaluated.stderr.strip().splitlines()[-1]
    resumed = launch(tmp_path, engine, "--max-steps", "3", "--resume-from-checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert resumed.stdout.count("done: 3 steps") == 1
    assert logged_steps(out / "generation_logs") == [2, 3]


def test_the_shipped_deepspeed_config_on_a_cpu_is_one_line_before_any_model_loads(tmp_path):
    # It says bf16 (for GPUs); here the run trains in float32, and DeepSpeed would refuse the mismatch at build time.
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                             str(ROOT / "config/accelerate/deepspeed_zero2.yaml"), "--num_processes", "2",
                             "--main_process_port", "29554", str(ROOT / "train_grpo.py"), "--quick-test",
                             "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=600,
                            cwd=ROOT)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "set mixed_precision: no in the accelerate config" in errors[0], result.stderr[-3000:]
    assert "mixed_precision: bf16" in errors[0]
    assert f'File "{ROOT}' not in result.stderr  # no traceback of ours (the launcher reports the failure its own way)
    assert not (tmp_path / "out").exists()
