"""The generation log format, its atomic writes, and who writes it."""

import json
from types import SimpleNamespace

from generation_logger import GenerationLoggingCallback, log_entries, logged_steps, preview, prompt_text

ORIGINAL_KEYS = ["eval_step", "sample_index", "prompt", "generated", "full_response"]


def samples(text="The capital of France is Paris. It is located in the north-central part of the country."):
    return [{"prompt": "What is the capital of France?", "completion": text, "completion_tokens": 21,
             "truncated": False, "rewards": {"accuracy": 0.5, "total": 0.2}},
            {"prompt": [{"role": "user", "content": "Explain quantum computing."}], "completion": "Qubits."}]


def state(step, main=True):
    return SimpleNamespace(global_step=step, is_world_process_zero=main)


def test_preview_cuts_at_a_word_with_an_ellipsis():
    long_text = "The capital of France is Paris. It is located in the north-central part of the country."
    cut = preview(long_text, limit=50)
    assert cut.endswith("...") and len(cut) <= 53 and long_text.startswith(cut[:-3])
    assert preview("short answer") == "short answer"


def test_entries_have_the_original_keys_first():
    entries = log_entries(samples(), eval_step=2, global_step=40)
    assert list(entries[0])[:5] == ORIGINAL_KEYS
    assert entries[0]["eval_step"] == 2 and entries[0]["global_step"] == 40
    assert [e["sample_index"] for e in entries] == [0, 1]
    assert entries[0]["full_response"].endswith("country.") and entries[0]["rewards"]["accuracy"] == 0.5
    assert entries[1]["prompt"] == "user: Explain quantum computing." == prompt_text(samples()[1]["prompt"])
    assert "rewards" not in entries[1]


def test_callback_writes_one_file_per_evaluation_and_counts_evaluations(tmp_path):
    callback = GenerationLoggingCallback(lambda model, tokenizer: samples(), tmp_path / "logs")
    for step in (10, 20, 30):
        callback.on_evaluate(None, state(step), None, model=None, processing_class=None)
    assert logged_steps(tmp_path / "logs") == [10, 20, 30]
    third = json.loads((tmp_path / "logs" / "generation_log_step_30.json").read_text(encoding="utf-8"))
    assert {entry["eval_step"] for entry in third} == {3}
    assert not [p for p in (tmp_path / "logs").iterdir() if not p.name.endswith(".json")]


def test_only_the_main_process_writes_but_every_process_samples(tmp_path):
    calls = []
    callback = GenerationLoggingCallback(lambda m, t: calls.append(1) or samples(), tmp_path / "logs")
    callback.on_evaluate(None, state(10, main=False), None)
    assert calls == [1] and not (tmp_path / "logs").exists()


def test_a_resumed_run_continues_the_eval_step(tmp_path):
    callback = GenerationLoggingCallback(lambda m, t: samples(), tmp_path)
    callback.on_evaluate(None, state(10), None)
    resumed = GenerationLoggingCallback(lambda m, t: samples(), tmp_path)
    resumed.on_evaluate(None, state(20), None)
    assert json.loads((tmp_path / "generation_log_step_20.json").read_text())[0]["eval_step"] == 2
