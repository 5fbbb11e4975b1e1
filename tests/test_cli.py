"""The command line as a user meets it: --help without heavy imports, a flag for every config field, and every
mistake as one `error:` line."""

import contextlib
import re
import subprocess
import sys

import pytest

from conftest import FIXTURES, ROOT, run_cli, run_main


@pytest.mark.parametrize("flag, shown", [("--help", ("--quick-test", "--max-generation-samples")),
                                         ("--list-recipes", ("gsm8k_smollm2_cpu",))])
def test_answers_without_importing_torch_transformers_or_trl(flag, shown):
    code = (f"import sys, runpy; sys.argv = ['train_grpo.py', '{flag}']\n"
            "try:\n    runpy.run_path('train_grpo.py', run_name='__main__')\nexcept SystemExit as stop:\n"
            "    print('STATUS', stop.code)\n"
            "print('HEAVY', [m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert all(text in result.stdout for text in shown) and "STATUS 0" in result.stdout
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_only_the_heavy_modules_import_torch_transformers_trl_or_peft():
    """The import rule of grpo_tool/__init__.py: every other module loads without them."""
    code = ("import sys, pathlib, importlib\nfrom grpo_tool import HEAVY_MODULES\n"
            "names = [p.stem for p in pathlib.Path('.').glob('*.py')]"
            " + ['.'.join(p.with_suffix('').parts) for p in pathlib.Path('grpo_tool').rglob('*.py')"
            " if p.stem != '__init__']\n"
            "for name in sorted(set(names) - set(HEAVY_MODULES)):\n    importlib.import_module(name)\n"
            "print('HEAVY', [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr[-2000:]


def test_help_lists_every_flag_of_the_original():
    result = run_main("--help")
    flags = ["--model", "--dataset", "--custom-data", "--config", "--quick-test", "--production", "--max-samples",
             "--epochs", "--learning-rate", "--batch-size", "--output-dir", "--reward-function", "--reward-config",
             "--wandb-project", "--no-wandb", "--eval-only", "--resume-from-checkpoint",
             "--enable-generation-logging", "--disable-generation-logging", "--generation-log-dir",
             "--max-generation-samples"]
    assert result.returncode == 0
    assert [flag for flag in flags if flag not in result.stdout] == []


@pytest.mark.slow
def test_a_mistake_prints_exactly_one_line_in_a_real_process(tmp_path):
    """In-process runs share pytest's log capture; a process of its own shows what a user sees."""
    result = run_cli("--quick-test", "--batch-size", "0", "--output-dir", str(tmp_path / "out"))
    assert (result.returncode, result.stdout, result.stderr) == (2, "", "error: --batch-size 0 must be at least 1\n")
    assert not (tmp_path / "out").exists()
    # Found before any model loads: our start-up line, then the error; no library's own report of the same fault.
    result = run_cli("--quick-test", "--custom-data", str(FIXTURES / "malformed_line3.jsonl"), "--output-dir",
                     str(tmp_path / "out"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines[-1].startswith("error: ") and "line 3" in lines[-1]
    assert [line.split(":")[0] for line in lines[:-1]] == ["rewards"], lines


def write_config(tmp_path, text):
    path = tmp_path / "bad_config.json"
    path.write_text(text)
    return str(path)


MISTAKES = {
    "unknown model": (["--model", "llama-9"], "unknown model 'llama-9'"),
    "missing custom data": (["--quick-test", "--custom-data", "no/such/file.jsonl"], "no such file"),
    "malformed jsonl line": (["--quick-test", "--custom-data", str(FIXTURES / "malformed_line3.jsonl")],
                             "malformed_line3.jsonl line 3"),
    "row without prompt": (["--quick-test", "--custom-data", str(FIXTURES / "missing_prompt_line2.jsonl")],
                           "line 2: no 'prompt' field"),
    "batch not divisible by group": (["--quick-test", "--batch-size", "6"],
                                     "use --batch-size 4 (or 8, 12), or a --group-size that divides 6"),
    "quick-test with production": (["--quick-test", "--production"], "--production: not allowed with"),
    "gamma other than 1": (["--quick-test", "--config", '{"gamma": 0.99}'], "gamma=0.99"),
    "unknown config key": (["--quick-test", "--config", '{"learning_rat": 1}'], "unknown key 'learning_rat'"),
    "config not json": (["--quick-test", "--config", "{oops"], "not readable JSON"),
    "missing config": (["--config", "no/such.json"], "config file no/such.json: no such file"),
    "unknown reward preset": (["--quick-test", "--reward-config", "nonesuch"], "unknown reward preset"),
    "8B model on a CPU": (["--model", "llama-3.1-8b", "--dataset", "sample"], "needs a CUDA GPU"),
    "original 8B spelling on a CPU": (["--model", "unsloth/llama-3.1-8b-bnb-4bit", "--dataset", "sample"],
                                      "--model tiny"),
    "missing checkpoint": (["--quick-test", "--resume-from-checkpoint", "no/such/checkpoint-5"], "no such directory"),
    "bad flag value": (["--quick-test", "--max-samples", "many"], "'many' is not a whole number"),
    "not a number": (["--quick-test", "--learning-rate", "nan"], "'nan' is not a finite number"),
    "flag typo": (["--quick-test", "--learning-rat", "1e-4"], "did you mean '--learning-rate'"),
    "unknown TRL option": (["--quick-test", "--trl-option", "scale_reward=batch"], "did you mean 'scale_rewards'"),
    "TRL option we set ourselves": (["--quick-test", "--trl-option", "num_generations=4"], "--group-size"),
    "TRL option without a value": (["--quick-test", "--trl-option", "scale_rewards"], "give it as KEY=VALUE"),
    "YAML config that is not YAML": (["--quick-test", "--config", "@broken.yaml"], "not readable YAML"),
    "preset typo": (["--model", "llama3.1-8b"], "did you mean 'llama-3.1-8b'"),
    "dataset typo": (["--dataset", "ultrafeedbak"], "did you mean 'ultrafeedback'"),
    "choice typo": (["--quick-test", "--prompt-format", "chatml"], "did you mean 'chat'"),
    "flag named as typed": (["--quick-test", "--epochs", "-1"], "--epochs -1.0 must be above 0"),
    "integer out of range": (["--quick-test", "--seed", "99999999999"], "--seed 99999999999 is too large"),
    "negative seed": (["--quick-test", "--seed", "-1"], "must be >= 0"),
    "duplicate config key": (["--quick-test", "--config", "@dup.json"], "the key 'group_size' appears twice"),
    "duplicate YAML key": (["--quick-test", "--config", "@dup.yaml"], "the key 'group_size' appears twice"),
    "NaN in a config file": (["--quick-test", "--config", '{"learning_rate": NaN}'], "NaN is not a number JSON"),
    "Infinity in a config file": (["--quick-test", "--config", '{"max_steps": Infinity}'], "Infinity is not a number"),
    "config not UTF-8": (["--quick-test", "--config", "@latin1.json"], "not UTF-8 text"),
    "NaN reward weight": (["--quick-test", "--reward-config", "@nan_rewards.json"], "NaN is not a number JSON"),
    "reward file that exits at import": (["--quick-test", "--reward-fn", "@exits.py:r"], "ended the program"),
    "reward file that parses arguments": (["--quick-test", "--reward-fn", "@argparsing.py:r"],
                                          "must not parse arguments"),
    "reward file with a syntax error": (["--quick-test", "--reward-fn", "@syntax.py:r"],
                                        "failed at line 1: SyntaxError"),
    "JSON array in a .jsonl": (["--quick-test", "--custom-data", "@array.jsonl"], "a JSON array, not JSON Lines"),
    "prompt that is a number": (["--quick-test", "--custom-data", "@numbers.jsonl"], "got int"),
    "malformed chat message": (["--quick-test", "--custom-data", "@bad_messages.jsonl"], "not of chat messages"),
    "empty prompt": (["--quick-test", "--custom-data", "@empty_prompt.jsonl"], "'prompt' is empty"),
    "malformed line while streaming": (["--quick-test", "--custom-data", "@stream.jsonl", "--streaming", "--max-steps",
                                        "4"], "could not be read while streaming"),
    "model dir that is empty": (["--quick-test", "--model", "@empty_model"], "no config.json"),
    "model dir with a config only": (["--quick-test", "--model", "@config_only"], "no weights"),
    "model dir without a tokenizer": (["--quick-test", "--model", "@no_tokenizer"], "no tokenizer"),
    "LoRA target that does not exist": (["--quick-test", "--lora", "--lora-target-modules", "qq_proj"],
                                        "this model's linear layers are"),
    "reward model that is a causal LM": (["--quick-test", "--reward-model", "@causal_lm"],
                                         "not a sequence-classification model"),
    "not a checkpoint": (["--quick-test", "--resume-from-checkpoint", "@empty_model"], "is not a checkpoint"),
    "LoRA checkpoint resumed without LoRA": (["--quick-test", "--resume-from-checkpoint", "@lora_run/checkpoint-3"],
                                             "resume with --lora"),
    "finished run resumed": (["--quick-test", "--resume-from-checkpoint", "@done/checkpoint-60"],
                             "its run is finished"),
    "checkpoint of another optimizer": (["--quick-test", "--resume-from-checkpoint", "@eight_bit/checkpoint-3"],
                                        "trained with trl_options.optim=adamw_8bit"),
    "full fine-tuning on 4-bit weights": (["--quick-test", "--no-lora", "--load-in-4bit"],
                                          "4-bit weights cannot be trained"),
    "overwrite and resume together": (["--quick-test", "--overwrite-output-dir", "--resume-from-checkpoint", "latest"],
                                      "give one of them"),
    "fewer prompts than a step": (["--quick-test", "--max-samples", "1"], "one step needs 2"),
    "batch larger than the data": (["--quick-test", "--max-samples", "20", "--batch-size", "512"],
                                   "20 training prompt(s), but one step needs 128"),
    "every prompt too long": (["--quick-test", "--max-seq-length", "36"], "longer than 4 tokens"),
    "less than a step of epochs": (["--quick-test", "--epochs", "0.001"], "less than one step"),
    "report on a dir that is no run": (["--report"], "is no directory"),
    "unknown dataset": (["--dataset", "imagenet"], "invalid choice"),
    "generation log dir that is a file": (["--quick-test", "--generation-log-dir", "@array.jsonl"],
                                          "is a file, so no directory"),
    "generation log dir under a file": (["--quick-test", "--generation-log-dir", "@array.jsonl/logs"],
                                        "is a file, so no directory"),
    "held-out score file missing": (["--quick-test", "--eval-reward-fn", "no/such.py:f"],
                                    "--eval-reward-fn 'no/such.py:f': no such file"),
    "held-out score that exits at import": (["--quick-test", "--eval-reward-fn", "@exits.py:r"],
                                            "--eval-reward-fn"),
    "best-model metric typo": (["--quick-test", "--metric-for-best-model", "rewrd", "--save-steps", "20"],
                               "did you mean 'reward'"),
    "best-model metric between checkpoints": (["--quick-test", "--metric-for-best-model", "reward", "--save-steps",
                                               "15"],
                                              "--eval-steps 20 is not a multiple of --save-steps 15: set "
                                              "--save-steps 20"),
    "best-model metric never logged": (["--quick-test", "--metric-for-best-model", "eval_nonsense", "--save-steps",
                                        "20"], "a metric an evaluation logs"),
    "--gpu-memory with --report": (["--report", "--gpu-memory", "24"], "--gpu-memory is a --plan setting"),
    "plan for vLLM on a CPU": (["--plan", "--quick-test", "--use-vllm"], "--use-vllm needs a CUDA GPU"),
    "empty text value": (["--quick-test", "--metric-for-best-model", ""], "--metric-for-best-model '' is empty"),
    "empty output dir in a config": (["--quick-test", "--config", '{"generation_log_dir": " "}'],
                                     "generation_log_dir=' ' is empty"),
    "--gpu-memory without --plan": (["--quick-test", "--gpu-memory", "24"], "--gpu-memory is a --plan setting"),
    "no GPU memory to plan for": (["--plan", "--gpu-memory", "0"], "'0' is not above 0"),
    "--sharding without --plan": (["--quick-test", "--sharding", "zero3"], "--sharding is a --plan setting"),
    "--accelerate-config with --eval-only": (["--eval-only", "--quick-test", "--accelerate-config", "a.yaml"],
                                             "--accelerate-config is a --plan setting"),
    "no processes to plan for": (["--plan", "--quick-test", "--num-processes", "0"], "'0' is not 1 or more"),
    "an engine that does not exist": (["--plan", "--quick-test", "--sharding", "zero-3"], "did you mean 'zero3'"),
    "accelerate config not there": (["--plan", "--quick-test", "--accelerate-config", "no/such.yaml"],
                                    "--accelerate-config no/such.yaml: no such file"),
    "accelerate config with a typo": (["--plan", "--quick-test", "--accelerate-config", "@typo_accelerate.yaml"],
                                      "unknown keys (['zero_stag'])"),
    "4-bit weights sharded": (["--plan", "--model", "llama-3.1-8b", "--gpu-memory", "80", "--sharding", "zero3"],
                              "add --no-load-in-4bit"),
    "plan for a model of unknown shape": (["--plan", "--model", "someone/unheard-of-7b"], "no shape known"),
    "plan with another task": (["--plan", "--eval-only"], "not allowed with"),
    "plan for LoRA layers it does not know": (["--plan", "--quick-test", "--lora", "--lora-target-modules", "qkv"],
                                              "does not know qkv"),
    "hub model not cached offline": (["--quick-test", "--model", "nobody/not-a-model-xyz"], "cannot be loaded"),
    "hub dataset offline": (["--quick-test", "--dataset", "hh_rlhf"], "GRPO_DATASET_MIRROR"),
    "unrecognised data schema": (["--quick-test", "--custom-data", "@labels.jsonl"],
                                 "unrecognised columns (text, label)"),
    "column named like a TRL argument": (["--quick-test", "--custom-data", "@completions_column.jsonl"],
                                         "the column 'completions' has the name of an argument TRL passes"),
    "prompt column that is not there": (["--quick-test", "--custom-data", "@labels.jsonl", "--prompt-column", "query"],
                                        "--prompt-column query: no such column (columns: text, label)"),
    "answer checking without references": (["--quick-test", "--reward-config", "verifiable"],
                                           "the data has chosen, rejected: set answer_match.reference_column"),
    "reference column that is not there": (["--quick-test", "--custom-data", "@questions.jsonl", "--reward-config",
                                            "@reference_typo.json"], "in the column 'anser', but the data has answer"),
    "reward module not installed": (["--quick-test", "--reward-fn", "nosuchpackage.rewards:f"],
                                    "no module named 'nosuchpackage' is installed"),
    "format tags with brackets": (["--quick-test", "--reward-config", '{"format_weight": 1, "format": {"tags": '
                                                                      '["<think>"]}}'], "format.tags=['<think>']"),
    "negative answer tolerance": (["--quick-test", "--reward-config", '{"answer_match": {"tolerance": -1}}'],
                                  "answer_match.tolerance=-1 must be a number >= 0"),
    "streaming without max_steps": (["--dataset", "hh_rlhf", "--config", '{"streaming": true}'],
                                    "streaming=true needs --max-steps"),  # the file's key, the flag to add
    "prompt format typo": (["--quick-test", "--config", '{"prompt_format": "chatml"}'], "prompt_format='chatml'"),
    "reward file missing": (["--quick-test", "--reward-fn", "no/such/rewards.py:f"], "no such file"),
    "reward function missing": (["--quick-test", "--reward-fn", f"{FIXTURES / 'custom_rewards.py'}:nope"],
                                "has no function 'nope'"),
    "reward function of __main__ on the command line": (["--quick-test", "--reward-fn", "__main__:my_reward"],
                                                         "__main__ is the program now running"),
    "reward function without kwargs": (["--quick-test", "--reward-fn",
                                        f"{FIXTURES / 'custom_rewards.py'}:positional_only"], "**kwargs"),
    "eval-only with check-rewards": (["--quick-test", "--eval-only", "--check-rewards"], "not allowed with"),
    "zero epochs": (["--quick-test", "--epochs", "0"], "--epochs 0.0 must be above 0"),
    "learning rate above 1": (["--quick-test", "--learning-rate", "5"], "--learning-rate 5.0 must be between 0 and 1"),
    "zero batch size": (["--quick-test", "--batch-size", "0"], "--batch-size 0 must be at least 1"),
    "zero max samples": (["--quick-test", "--max-samples", "0"], "--max-samples 0 must be at least 1"),
    "negative generation samples": (["--quick-test", "--max-generation-samples", "-1"], "--max-generation-samples -1"),
    "lora dropout of 1.5": (["--quick-test", "--lora-dropout", "1.5"], "--lora-dropout 1.5"),
    "vllm memory share above 1": (["--quick-test", "--vllm-gpu-memory-utilization", "1.5"],
                                  "--vllm-gpu-memory-utilization 1.5"),
    "vllm on a cpu": (["--quick-test", "--use-vllm"], "--use-vllm needs a CUDA GPU"),
    "unsloth on a cpu": (["--quick-test", "--backend", "unsloth"], "--backend unsloth needs a CUDA GPU"),
    "config that is a list": (["--quick-test", "--config", "[1, 2]"], "expected a mapping of settings"),
    "config value of the wrong type": (["--quick-test", "--config", '{"group_size": "four"}'],
                                       "group_size='four' must be int"),
    "reward config with a typo": (["--quick-test", "--reward-config", "@typo_rewards.json"],
                                  "unknown key 'qualty_weight' = 0.5 (did you mean 'quality_weight'?)"),
    "a 4-bit checkpoint for 16-bit weights": (["--plan", "--gpu-memory", "24", "--model",
                                               "unsloth/mistral-7b-instruct-v0.3-bnb-4bit", "--no-load-in-4bit"],
                                              "is stored in 4 bits (bitsandbytes), and this run loads 16-bit weights"),
    "weight for a component that does not exist": (["--quick-test", "--reward-config", '{"brevity_weight": 0.5}'],
                                                   "unknown key 'brevity_weight' = 0.5: no reward component is named"),
    "custom weight for a built-in component": (["--quick-test", "--reward-config", '{"custom_weights": {"length": 1}}'],
                                               "length is weighed by length_weight"),
    "custom weight for a function not given": (["--plan", "--quick-test", "--reward-config",
                                                '{"custom_weights": {"brevity_reward": 1}}'],
                                               "custom_weights names brevity_reward=1, but no --reward-fn"),
    "reward weight in the run config": (["--quick-test", "--config", '{"quality_weight": 0.5}'],
                                        "quality_weight=0.5: quality_weight is a reward config key"),
    "reward weight as a flag": (["--quick-test", "--accuracy-weight", "0.5"],
                                "--accuracy-weight 0.5: accuracy_weight is a reward config key"),
    "reward config not json": (["--quick-test", "--reward-config", "@broken_rewards.json"], "not readable JSON"),
    "custom data is a directory": (["--quick-test", "--custom-data", "@empty_folder"],
                                   "empty_folder: an empty folder; use a .jsonl"),
    "custom data folder of csv files": (["--quick-test", "--custom-data", "@csv_folder"],
                                        "no data files in this folder (found .csv); use a .jsonl"),
    "custom data folder mixing json and parquet": (["--quick-test", "--custom-data", "@mixed_folder"],
                                                   "mixes JSON and Parquet shards (a.jsonl, b.parquet)"),
    "custom data is a csv": (["--quick-test", "--custom-data", "@data.csv"], "unsupported file type .csv"),
    "empty custom data": (["--quick-test", "--custom-data", "@empty.jsonl"], "no rows"),
    "chat prompt without a user turn": (["--quick-test", "--custom-data", "@system_only.jsonl"],
                                        "has no user message"),
    "latest with no checkpoints": (["--quick-test", "--resume-from-checkpoint", "latest"],
                                   "no complete checkpoint-N directory"),
    "incomplete checkpoint": (["--quick-test", "--resume-from-checkpoint", "@checkpoint-7"], "is incomplete"),
    "no group in the eval batch": (["--quick-test", "--config", '{"per_device_eval_batch_size": 6, '
                                                                '"eval_samples": 4}'],
                                   "per_device_eval_batch_size=6"),
    # places that cannot be written (read-only ones need a mount: tests/test_places.py)
    "generation log dir under a csv file": (["--quick-test", "--generation-log-dir", "@data.csv/logs"],
                                            "is a file, so no directory"),
    # TRL's vocabulary
    "TRL's max_prompt_length as a flag": (["--quick-test", "--max-prompt-length", "512"],
                                          "--max-prompt-length is TRL's setting; here use max_seq_length"),
    "TRL's max_prompt_length in a config": (["--quick-test", "--config", '{"max_prompt_length": 512}'],
                                            "max_prompt_length is TRL's setting; here use max_seq_length"),
    "TRL's own option as a flag": (["--quick-test", "--lr-scheduler-type", "cosine"],
                                   "--trl-option lr_scheduler_type=VALUE"),
    "TRL's own option in a config": (["--quick-test", "--config", '{"lr_scheduler_type": "cosine"}'],
                                     "give it under trl_options"),
    "TRL's report_to": (["--quick-test", "--config", '{"report_to": ["wandb"]}'], "use wandb_project / tensorboard"),
    "TRL's name beside ours": (["--quick-test", "--config", '{"num_generations": 4, "group_size": 8}'],
                               "num_generations (TRL's name) and group_size say the same"),
    "TRL's alias with a bad value": (["--quick-test", "--num-generations", "3"], "--group-size 3 does not divide"),
    "hub dataset without a preset": (["--quick-test", "--dataset", "someone/their-data"], "--custom-data PATH"),
    # TRL options checked before any model loads
    "TRL option that trains nothing": (["--quick-test", "--trl-option", "num_iterations=0"],
                                       "num_iterations=0 must be at least 1"),
    "TRL option of the wrong type": (["--quick-test", "--trl-option", "num_iterations=2.5"],
                                     "num_iterations=2.5 must be int"),
    "TRL option out of range": (["--quick-test", "--trl-option", "top_k=-5"], "top_k=-5 must be at least 0"),
    "TRL option TRL refuses": (["--quick-test", "--trl-option", "generation_batch_size=7"], "TRL refused them"),
    "TRL option outside its choices": (["--quick-test", "--trl-option", "scale_rewards=maybe"],
                                       "scale_rewards='maybe': use one of group, batch, none"),
    "TRL option of the wrong kind": (["--quick-test", "--trl-option", "mask_truncated_completions=yes"],
                                     "must be bool"),
    # resuming
    "resume with another learning rate": (["--quick-test", "--resume-from-checkpoint", "@ran/checkpoint-3",
                                           "--learning-rate", "0.01"],
                                          "trained with learning_rate=0.003, and this run gives learning_rate=0.01"),
    "resume with another group size": (["--quick-test", "--resume-from-checkpoint", "@ran/checkpoint-3",
                                        "--group-size", "2"], "trained with group_size=4"),
    "resume a checkpoint of another model": (["--quick-test", "--resume-from-checkpoint", "@other_model/checkpoint-3",
                                              "--no-lora"], "holds a model of another shape (hidden size 576"),
    "resume an adapter with another rank": (["--quick-test", "--lora", "--lora-r", "8", "--resume-from-checkpoint",
                                             "@ranked/checkpoint-3"], "adapter trained with lora_r=16"),
    "TRL's max_prompt_length as a TRL option": (["--quick-test", "--trl-option", "max_prompt_length=512"],
                                                "here use --max-seq-length"),
    # processes
    "stale RANK without a launcher": (["--quick-test", "--env", "RANK=1", "--env", "WORLD_SIZE=2"],
                                      "but no launcher started this process"),
    # reward functions as people write them
    "reward that is a class": (["--quick-test", "--reward-fn", "@scorer_class.py:Scorer"],
                               "Scorer is a class; name an object of it instead"),
    "reward object without kwargs": (["--quick-test", "--reward-fn", "@strict_object.py:strict"],
                                     "define its method as def __call__(self, completions, **kwargs) in class Strict"),
    "reward partial without kwargs": (["--quick-test", "--reward-fn", "@strict_partial.py:says_yes"],
                                      "add **kwargs to mentions, the function the partial calls"),
    "reward object that cannot be called": (["--quick-test", "--reward-fn", "@settings_object.py:settings"],
                                            "settings is of type Settings, which cannot be called"),
    "held-out score that is a class": (["--quick-test", "--eval-reward-fn", "@scorer_class.py:Scorer"],
                                       "--eval-reward-fn"),
    # models that are not what they seem
    "2-label classifier as the reward model": (["--quick-test", "--reward-model", "@two_labels"],
                                               "a classifier of 2 labels (NEGATIVE, POSITIVE)"),
    "classifier as the policy": (["--quick-test", "--model", "@two_labels"], "a model that cannot generate text"),
}

# Files the mistakes above point at ("@name"), written into each test's own folder.
MISTAKE_FILES = {
    "typo_accelerate.yaml": "distributed_type: DEEPSPEED\nnum_processes: 2\nzero_stag: 3\n",
    "questions.jsonl": "".join(f'{{"question": "q{i}", "answer": "#### {i}"}}\n' for i in range(20)),
    "labels.jsonl": '{"text": "q", "label": "a"}\n{"text": "r", "label": "b"}\n',
    "completions_column.jsonl": '{"prompt": "q", "completions": ["a"]}\n',
    "reference_typo.json": '{"answer_match_weight": 1, "answer_match": {"reference_column": "anser"}}',
    "typo_rewards.json": '{"qualty_weight": 0.5}',
    "broken_rewards.json": '{"accuracy_weight": ',
    "data.csv": "prompt,chosen\nhello,hi\n",
    "empty_folder/.keep": "",  # hidden files are no data: the folder counts as empty
    "csv_folder/a.csv": "prompt,chosen\nhello,hi\n",
    "csv_folder/b.csv": "prompt,chosen\nbye,ciao\n",
    "mixed_folder/a.jsonl": '{"prompt": "hello"}\n',
    "mixed_folder/b.parquet": "",
    "empty.jsonl": "",
    "system_only.jsonl": '{"prompt": [{"role": "system", "content": "Be brief."}]}\n'
                         '{"prompt": [{"role": "user", "content": "Hi"}]}\n',
    "checkpoint-7/trainer_state.json": '{"global_step": 7',
    "broken.yaml": "group_size: [4\n",
    "dup.json": '{"group_size": 4, "group_size": 8}',
    "dup.yaml": "group_size: 4\ngroup_size: 8\n",
    "nan_rewards.json": '{"accuracy_weight": NaN}',
    "exits.py": "import sys\nsys.exit(3)\n",
    "argparsing.py": "import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--x', required=True)\n"
                     "parser.parse_args()\n",
    "syntax.py": "def r(completions, **kwargs)\n    return [0.0]\n",
    "array.jsonl": '[{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}]\n',
    "numbers.jsonl": '{"prompt": 5}\n{"prompt": 6}\n',
    "bad_messages.jsonl": '{"prompt": [{"role": "user"}]}\n',
    "empty_prompt.jsonl": '{"prompt": "What?"}\n{"prompt": "  "}\n',
    "stream.jsonl": "".join(f'{{"prompt": "question {i}?"}}\n' for i in range(20)) + "{broken\n",
    "empty_model/.keep": "",
    "config_only/config.json": '{"model_type": "llama"}',
    "no_tokenizer/config.json": '{"model_type": "llama"}',
    "no_tokenizer/model.safetensors": "",
    "causal_lm/config.json": '{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}',
    "causal_lm/model.safetensors": "",
    "causal_lm/tokenizer.json": "{}",
    "lora_run/checkpoint-3/trainer_state.json": '{"global_step": 3, "max_steps": 60}',
    "lora_run/checkpoint-3/adapter_config.json": "{}",
    "done/checkpoint-60/trainer_state.json": '{"global_step": 60, "max_steps": 60}',
    "done/final_model/trainer_state.json": '{"global_step": 60}',
    "eight_bit/checkpoint-3/trainer_state.json": '{"global_step": 3, "max_steps": 60}',
    "scorer_class.py": "class Scorer:\n    def __call__(self, completions, **kwargs):\n"
                       "        return [0.0] * len(completions)\n",
    "strict_object.py": "class Strict:\n    def __call__(self, completions):\n"
                        "        return [0.0] * len(completions)\n\n\n"
                        "strict = Strict()\n",
    "strict_partial.py": "import functools\n\n\ndef mentions(completions, word):\n"
                         "    return [0.0] * len(completions)\n\n\n"
                         "says_yes = functools.partial(mentions, word='yes')\n",
    "settings_object.py": "class Settings:\n    pass\n\n\nsettings = Settings()\n",
    "ranked/checkpoint-3/trainer_state.json": '{"global_step": 3, "max_steps": 60}',
    "ranked/checkpoint-3/adapter_config.json": '{"r": 16, "lora_alpha": 16, "lora_dropout": 0.0}',
    "ran/checkpoint-3/trainer_state.json": '{"global_step": 3, "max_steps": 60}',
    "ran/run_record.json": '{"model": "tiny", "trl_arguments": {"learning_rate": 0.003, "num_generations": 4, '
                           '"optim": "adamw_torch_fused"}}',
    "other_model/checkpoint-3/trainer_state.json": '{"global_step": 3, "max_steps": 60}',
    "other_model/checkpoint-3/config.json": '{"model_type": "llama", "architectures": ["LlamaForCausalLM"], '
                                            '"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, '
                                            '"num_key_value_heads": 3, "intermediate_size": 1536, '
                                            '"vocab_size": 49152}',
    "two_labels/config.json": '{"model_type": "llama", "architectures": ["LlamaForSequenceClassification"], '
                              '"id2label": {"0": "NEGATIVE", "1": "POSITIVE"}}',
    "two_labels/model.safetensors": "",
    "two_labels/tokenizer.json": "{}",
    "eight_bit/run_record.json": '{"trl_arguments": {"optim": "adamw_8bit"}}',
}
BINARY_FILES = {"latin1.json": b'{"output_dir": "caf\xe9"}'}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_mistakes_end_in_one_error_line(tmp_path, monkeypatch, name):
    monkeypatch.setenv("GRPO_DATASET_MIRROR", str(tmp_path / "empty-mirror"))
    args, fragment = MISTAKES[name]
    while "--env" in args:  # an environment variable the mistake is made with, not a flag
        at = args.index("--env")
        monkeypatch.setenv(*args[at + 1].split("=", 1))
        args = args[:at] + args[at + 2:]
    args = [write_config(tmp_path, arg) if arg.startswith(("{", "[")) else arg for arg in args]
    for name, content in {**MISTAKE_FILES, **BINARY_FILES}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / name).write_text(content, encoding="utf-8")
    args = [str(tmp_path / arg[1:]) if arg.startswith("@") else arg for arg in args]
    output_dir = tmp_path / "out"
    result = run_main(*args, "--output-dir", str(output_dir), cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ") and fragment in lines[-1], result.stderr
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert not output_dir.exists()


@pytest.mark.parametrize("task", [[], ["--plan"], ["--check-rewards"], ["--eval-only"]])
def test_an_output_dir_that_is_a_file_is_one_error_line(tmp_path, task):
    (tmp_path / "taken").write_text("a file")
    result = run_main("--quick-test", *task, "--output-dir", str(tmp_path / "taken" / "run"))
    assert result.returncode == 2 and result.stderr.startswith("error: --output-dir ")
    assert "is a file, so no directory" in result.stderr and "Traceback" not in result.stderr


# Each refusal that advises a fix, with the fix applied as the message words it: the fixed command gets past it.
ADVICE = {
    "resample from a stream": (["--quick-test", "--streaming", "--zero-variance-groups", "resample"],
                               "set --zero-variance-groups drop"),
    "curriculum rest on a stream": (["--quick-test", "--streaming", "--curriculum-solved-rest", "5"],
                                    "set --curriculum-solved-rest 0"),
    "both on a stream": (["--quick-test", "--streaming", "--zero-variance-groups", "resample",
                          "--curriculum-hopeless-rest", "3"],
                         "set --zero-variance-groups drop and --curriculum-hopeless-rest 0"),
    "a batch the group does not divide": (["--quick-test", "--group-size", "3"], "use --batch-size 3"),
    "an eval batch the eval group does not divide": (["--quick-test", "--per-device-eval-batch-size", "3",
                                                      "--eval-samples", "2"], "use --per-device-eval-batch-size 2"),
    "a planned batch on two processes": (["--plan", "--quick-test", "--num-processes", "2", "--group-size", "32"],
                                         "use --batch-size 16"),
    "the best checkpoint between checkpoints": (["--quick-test", "--metric-for-best-model", "reward",
                                                 "--save-steps", "7"], "set --save-steps 20"),
    "4-bit weights fully fine-tuned": (["--quick-test", "--no-lora", "--load-in-4bit"], "give --lora"),
    "a choice misspelt": (["--quick-test", "--zero-variance-groups", "dorp"], "did you mean 'drop'?"),
    "a model preset misspelt": (["--quick-test", "--model", "tinyy"], "did you mean 'tiny'?"),
}


def advised_flags(advice: str) -> list[str]:
    """The flags a piece of advice names: `set --save-steps 20` gives --save-steps 20, `did you mean 'drop'?` the
    value (after the flag the refusal named), `give --lora` --lora."""
    flags = []
    for flag, value in re.findall(r"(--[\w-]+)(?: ([\w.]+))?", advice):
        flags += [flag] + ([value] if value and not value.startswith("-") and value != "and" else [])
    return flags


@pytest.mark.parametrize("name", list(ADVICE))
def test_advice_applied_gets_past_the_refusal(tmp_path, name):
    args, advice = ADVICE[name]
    refused = run_main(*args, "--output-dir", str(tmp_path / "out"))
    assert refused.returncode == 2 and advice in refused.stderr, refused.stderr
    if advice.startswith("did you mean"):  # a misspelt value, replaced by the one the message names
        suggested = re.search(r"did you mean '([^']+)'", advice)[1]
        fixed = [suggested if f"'{arg}'" in refused.stderr else arg for arg in args]
    else:
        fixed = [*args, *advised_flags(advice)]  # a flag given again beats its earlier value
    from train_grpo import build_parser, config_from_args, planned_launch

    parsed = build_parser().parse_args([*fixed, "--output-dir", str(tmp_path / "out")])
    with planned_launch(parsed) if "--plan" in fixed else contextlib.nullcontext():
        config_from_args(parsed)  # no UserError: the settings now pass every check


def test_a_plan_checks_the_batch_on_the_processes_it_plans_for(tmp_path):
    # 8 per device x 1 accumulation step x 2 planned processes = 16 completions: one group of 16.
    result = run_main("--plan", "--quick-test", "--num-processes", "2", "--group-size", "16",
                      "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    result = run_main("--plan", "--quick-test", "--group-size", "16", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "on 1 process(es) samples 8 completions" in result.stderr
