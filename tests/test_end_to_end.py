"""Real GRPO runs of the tiny model: the CLI's quick test, the Python API of the original, and a run that learns."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import FIXTURES, run_main
from generation_logger import logged_steps

ORIGINAL_KEYS = {"eval_step", "sample_index", "prompt", "generated", "full_response"}


def test_quick_test_trains_evaluates_and_says_where_things_went(quick_run):
    output_dir, result = quick_run
    assert "done: 60 steps" in result.stdout
    for item in ("final_model", "generation_logs", "grpo_training.log", "grpo_config.json"):
        assert str(output_dir / item) in result.stdout
    assert (output_dir / "checkpoint-60" / "trainer_state.json").is_file()
    log = (output_dir / "grpo_training.log").read_text(encoding="utf-8")
    assert "step 60:" in log and "reward=" in log
    # One metric name per component whichever reward mode ran (this one is single; the report's run is multi).
    assert all(f"rewards/{name}/mean=" in log for name in ("accuracy", "length", "quality"))
    record = json.loads((output_dir / "run_record.json").read_text(encoding="utf-8"))
    assert record["components"] == {"accuracy": 0.4, "length": 0.2, "quality": 0.4}
    assert record["prompts"] == {"train": 200, "eval": 8} and record["backend"] == "transformers"
    assert record["machine"] == {"weights_dtype": "float32", "autocast": None, "merged_dtype": "float32",
                                 "notices": []}


def test_quick_test_writes_a_generation_log_per_evaluation(quick_run):
    output_dir, _ = quick_run
    steps = logged_steps(output_dir / "generation_logs")
    assert steps == [20, 40, 60]
    logs = [json.loads((output_dir / "generation_logs" / f"generation_log_step_{s}.json").read_text("utf-8"))
            for s in steps]
    for number, entries in enumerate(logs, start=1):
        assert len(entries) == 5
        assert all(ORIGINAL_KEYS <= set(entry) and entry["eval_step"] == number for entry in entries)
        for entry in entries:  # the preview is the start of the response, on one line
            assert " ".join(entry["full_response"].split()).startswith(entry["generated"].removesuffix("..."))
        assert all({"accuracy", "length", "quality", "total"} == set(entry["rewards"]) for entry in entries)
    # The same prompts at every evaluation, so one prompt's answer can be followed.
    assert [e["prompt"] for e in logs[0]] == [e["prompt"] for e in logs[-1]]


def test_quick_test_saves_a_model_that_loads_generates_and_changed(quick_run, tiny_model_cache):
    output_dir, _ = quick_run
    final = output_dir / "final_model"
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    encoded = tokenizer("What is the capital of France?", return_tensors="pt")
    generated = model.generate(**encoded, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > encoded["input_ids"].shape[1]
    before, after = load_file(tiny_model_cache / "model.safetensors"), load_file(final / "model.safetensors")
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert len(changed) > len(before) // 2
    assert "GRPO" in (final / "README.md").read_text(encoding="utf-8")


def test_saved_config_reloads_to_the_same_settings(quick_run, tmp_path):
    output_dir, _ = quick_run
    from train_grpo import build_parser, config_from_args

    saved = json.loads((output_dir / "grpo_config.json").read_text(encoding="utf-8"))
    reloaded = config_from_args(build_parser().parse_args(["--config", str(output_dir / "grpo_config.json")]))
    assert json.loads(json.dumps(dataclasses.asdict(reloaded))) == saved


def files_of(directory):
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def test_eval_only_evaluates_the_saved_model(quick_run):
    output_dir, _ = quick_run
    before = files_of(output_dir)
    result = run_main("--quick-test", "--eval-only", "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"evaluated {output_dir / 'final_model'} at step 60" in result.stdout
    metrics = json.loads((output_dir / "evaluation" / "eval_metrics.json").read_text(encoding="utf-8"))
    assert "eval_reward" in metrics and metrics["global_step"] == 60
    # It writes only its own files; the training run's config, record, logs and report are left as they were.
    after = files_of(output_dir)
    assert {name: after[name] for name in before} == before
    assert sorted(set(after) - set(before)) == ["evaluation/eval_metrics.json",
                                                "evaluation/generation_log_step_60.json"]


def test_eval_only_says_which_model_it_evaluates_when_the_run_has_no_final_model(quick_run, tmp_path):
    import shutil

    output_dir, _ = quick_run
    stopped = tmp_path / "stopped"  # a run that stopped before its end: checkpoints, no final model
    shutil.copytree(output_dir, stopped, ignore=shutil.ignore_patterns("final_model"))
    result = run_main("--quick-test", "--eval-only", "--output-dir", str(stopped))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has no final_model/ (the run stopped before its end), so its newest checkpoint, checkpoint-60" in (
        result.stderr)
    assert f"evaluated {stopped / 'checkpoint-60'} at step 60" in result.stdout
    result = run_main("--quick-test", "--eval-only", "--max-eval-samples", "2", "--output-dir", str(tmp_path / "new"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "holds no trained model (no final_model/ or checkpoint-N/), so tiny is evaluated as it is" in result.stderr


def test_python_api_of_the_original(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from config import create_default_config, save_config_to_file
    from data_loader import create_grpo_dataloader
    from grpo_trainer import GRPOConfig, GRPOTrainer

    config = create_default_config("llama-3.1-8b", "ultrafeedback")
    config.learning_rate = 1e-6
    save_config_to_file(config, "my_config.json")
    assert json.loads(Path("my_config.json").read_text())["learning_rate"] == 1e-6

    config = GRPOConfig(model_name="tiny", max_samples=8, output_dir="./my_grpo_outputs", max_steps=4,
                        group_size=4, per_device_train_batch_size=8, per_device_eval_batch_size=8,
                        gradient_accumulation_steps=1, max_completion_length=16, eval_steps=2, save_steps=4,
                        max_eval_samples=4, learning_rate=3e-3)
    data_loader, dataset = create_grpo_dataloader(model_name=config.model_name,
                                                  dataset_name=str(FIXTURES / "custom.jsonl"),
                                                  max_samples=config.max_samples)
    trainer = GRPOTrainer(config)
    trainer.load_model()
    trainer.train(dataset)
    saved = trainer.save_model()
    assert trainer.trainer.state.global_step == 4
    assert (tmp_path / "my_grpo_outputs" / "grpo_training.log").is_file()
    assert logged_steps(tmp_path / "my_grpo_outputs" / "generation_logs") == [2, 4]
    # A config built directly has no preset applied, so LoRA is on and the adapter is what gets saved.
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(saved)
    tokenizer = AutoTokenizer.from_pretrained(saved)
    encoded = tokenizer("Is 7 a prime number?", return_tensors="pt")
    assert model.generate(**encoded, max_new_tokens=4, do_sample=False).shape[1] > encoded["input_ids"].shape[1]


def shortness(completions, **kwargs):
    return [-len(str(completion)) / 100 for completion in completions]


def answer_words(completions, **kwargs):
    return [float(len(str(completion).split())) for completion in completions]


class Exclaims:
    def __call__(self, completions, **kwargs):
        return [float("!" in str(completion)) for completion in completions]


def test_python_api_takes_reward_functions_themselves_and_a_notebooks_by_name(tmp_path, monkeypatch):
    """As TRL's reward_funcs takes them: function objects, a callable object, and `__main__:name` for a function a
    notebook's cells defined (the notebook is __main__)."""
    import sys

    from grpo_trainer import GRPOConfig, GRPOTrainer

    def notebook_reward(completions, **kwargs):
        return [float(len(str(completion)) % 2) for completion in completions]

    monkeypatch.setattr(sys.modules["__main__"], "notebook_reward", notebook_reward, raising=False)
    config = GRPOConfig(model_name="tiny", custom_data=str(FIXTURES / "custom.jsonl"), max_steps=2, group_size=4,
                        per_device_train_batch_size=8, per_device_eval_batch_size=8, max_completion_length=8,
                        eval_steps=2, save_steps=2, max_eval_samples=2, output_dir=str(tmp_path / "out"),
                        reward_functions=[shortness, Exclaims(), "__main__:notebook_reward"],
                        eval_reward_functions=[answer_words])
    trainer = GRPOTrainer(config)
    trainer.train()
    assert trainer.record["components"] == {"shortness": 1.0, "Exclaims": 1.0, "notebook_reward": 1.0}
    history = trainer.trainer.state.log_history
    evaluation = next(entry for entry in history if "eval_reward" in entry)
    assert all(f"eval_rewards/{name}/mean" in evaluation
               for name in ("shortness", "Exclaims", "notebook_reward", "answer_words"))
    # The record names each as module:name; JSON holds no function.
    written = json.loads((tmp_path / "out" / "run_record.json").read_text(encoding="utf-8"))["config"]
    assert written["reward_functions"] == [f"{__name__}:shortness", f"{__name__}:Exclaims",
                                           "__main__:notebook_reward"]
    assert written["eval_reward_functions"] == [f"{__name__}:answer_words"]


def test_api_refuses_the_original_8b_checkpoint_on_a_cpu(tmp_path):
    from grpo_tool.errors import UserError
    from grpo_trainer import GRPOConfig, GRPOTrainer

    trainer = GRPOTrainer(GRPOConfig(model_name="unsloth/llama-3.1-8b-bnb-4bit", output_dir=str(tmp_path / "o")))
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        trainer.load_model()
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_grpo_learns_a_rewarded_keyword(tmp_path):
    """The tiny model rarely says "the"; rewarded for it, GRPO must make it say it most of the time."""
    reward_config = tmp_path / "reward.json"
    reward_config.write_text(json.dumps({
        "accuracy_weight": 0, "length_weight": 0, "quality_weight": 1,
        "quality": {"quality_keywords": ["the"], "negative_keywords": [], "penalty_scale": 0}}))
    run_config = tmp_path / "run.json"
    run_config.write_text(json.dumps({"max_steps": 60, "logging_steps": 5, "eval_steps": 1000, "save_steps": 1000,
                                      "enable_generation_logging": False}))
    result = run_main("--quick-test", "--config", str(run_config), "--reward-config", str(reward_config),
                     "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((tmp_path / "out" / "checkpoint-1000" / "trainer_state.json").read_text()
                       if (tmp_path / "out" / "checkpoint-1000").exists()
                       else (tmp_path / "out" / "final_model" / "trainer_state.json").read_text())
    rewards = [entry["reward"] for entry in state["log_history"] if "reward" in entry]
    first, last = sum(rewards[:2]) / 2, sum(rewards[-2:]) / 2
    assert first < 0.4 and last > first + 0.3, rewards


def test_streamed_hub_dataset_trains(hub_mirror, tmp_path, monkeypatch):
    """A hub dataset (hh-rlhf's schema, through a local mirror) streamed into TRL while it trains."""
    monkeypatch.setenv("GRPO_DATASET_MIRROR", str(hub_mirror))
    run_config = tmp_path / "run.json"
    run_config.write_text(json.dumps({"streaming": True, "max_steps": 4, "eval_steps": 2, "save_steps": 4}))
    result = run_main("--quick-test", "--dataset", "hh_rlhf", "--config", str(run_config), "--output-dir",
                     str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done: 4 steps" in result.stdout
    log = json.loads((tmp_path / "out" / "generation_logs" / "generation_log_step_4.json").read_text("utf-8"))
    assert log[0]["prompt"].startswith("user: ")  # hh-rlhf prompts are conversations


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_end(tmp_path):
    """Ctrl-C saves a checkpoint; --resume-from-checkpoint latest then reaches the same final step and writes the same
    generation logs as a run that was never stopped."""
    import signal
    import time

    from children import Child

    run_config = tmp_path / "run.json"
    run_config.write_text(json.dumps({"max_steps": 30, "eval_steps": 10, "save_steps": 10, "logging_steps": 5}))
    common = ["--quick-test", "--config", str(run_config)]
    straight = run_main(*common, "--output-dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]

    stopped_dir = tmp_path / "stopped"
    process = Child(*common, "--output-dir", str(stopped_dir))
    deadline = time.monotonic() + 300
    while not (stopped_dir / "generation_logs" / "generation_log_step_10.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert "--resume-from-checkpoint" in stderr.strip().splitlines()[-1]
    stopped_at = max(int(p.name.split("-")[1]) for p in stopped_dir.glob("checkpoint-*"))
    assert 10 <= stopped_at < 30

    resumed = run_main(*common, "--output-dir", str(stopped_dir), "--resume-from-checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "done: 30 steps" in resumed.stdout
    assert logged_steps(stopped_dir / "generation_logs") == logged_steps(tmp_path / "straight" / "generation_logs") \
        == [10, 20, 30]
    last = json.loads((stopped_dir / "generation_logs" / "generation_log_step_30.json").read_text("utf-8"))
    assert last[0]["eval_step"] == 3


def test_lora_run_saves_a_merged_model_that_matches_the_adapter(tmp_path):
    from peft import AutoPeftModelForCausalLM

    run_config = tmp_path / "run.json"
    run_config.write_text(json.dumps({"max_steps": 4, "eval_steps": 2, "save_steps": 4, "learning_rate": 0.05}))
    result = run_main("--quick-test", "--config", str(run_config), "--lora", "--lora-r", "4", "--save-merged",
                     "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    final = tmp_path / "out" / "final_model"
    adapter_model = AutoPeftModelForCausalLM.from_pretrained(final)
    merged_model = AutoModelForCausalLM.from_pretrained(final / "merged")
    tokenizer = AutoTokenizer.from_pretrained(final / "merged")
    encoded = tokenizer("What is the capital of France?", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(adapter_model(**encoded).logits, merged_model(**encoded).logits, atol=1e-4)
    card = (final / "README.md").read_text(encoding="utf-8")
    assert "LoRA adapter" in card and "optimizer steps: 4" in card
