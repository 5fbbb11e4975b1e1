"""The alarm zoo: short tiny-model runs, each broken in one known way or healthy, and the alarms each must raise.

Used by tests/test_alarm_zoo.py (each case at two logging cadences) and bench/alarms.py (the table of catches, misses,
false alarms and the step of the first alarm). A case is the flags of one `train_grpo.py` run beside the common ones.

The zoo's model is the tool's tiny model with one change: its generation config stops at any of 32 tokens besides
<|end|>, so its answers end (about 16 tokens on average) the way an instruct model's do; the random tiny model
itself almost never ends one, which would make every run a cut-off one.

    model = zoo_model(tmp / "zoo-model")
    data = zoo_data(tmp / "prompts.jsonl")
    flags = case_flags("constant_reward", model, data, tmp / "out", logging_steps=10)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

REWARDS = Path(__file__).resolve().parent / "zoo_rewards.py"
STEPS = 40
STOP_EVERY = 16  # token ids that are a multiple of this end an answer too


@dataclass(frozen=True)
class Case:
    what: str
    rewards: tuple[str, ...] = ("vowels",)  # functions of bench/zoo_rewards.py
    flags: tuple[str, ...] = ()  # after the common ones (case_flags), so they override them
    expected: frozenset[str] = frozenset()  # empty: a healthy run, which raises nothing


CASES: dict[str, Case] = {
    "healthy": Case("a reward the model learns"),
    "healthy_slow": Case("a sparse reward learned slowly, most groups flat at first", ("many_vowels",)),
    "healthy_kl": Case("a reward the model learns, with a KL penalty", flags=("--beta", "0.04")),
    "constant_reward": Case("the same score for every completion", ("constant",),
                            expected=frozenset({"no_learning_signal"})),
    "rare_reward": Case("a reward almost always 0", ("lottery",), expected=frozenset({"no_learning_signal"})),
    "cut_off": Case("answers cut off at 4 tokens", flags=("--max-completion-length", "4"),
                    expected=frozenset({"length_cap"})),
    "dominant_component": Case("one component a hundred times the other", ("vowels", "characters"),
                               expected=frozenset({"dominant_component"})),
    "never_scoring": Case("a component that never scores", ("vowels", "never"),
                          expected=frozenset({"unscored_batches"})),
    "lr_too_high": Case("a learning rate far too high", flags=("--learning-rate", "1e-1"),
                        expected=frozenset({"training_collapse"})),
    "gamed_reward": Case("a reward for saying little, gamed by ending at once", ("brevity",),
                         expected=frozenset({"reward_hacking"})),
    "near_greedy": Case("sampling at temperature 0.05", flags=("--temperature", "0.05"),
                        expected=frozenset({"near_greedy_sampling"})),
    "cold_sampling": Case("sampling at temperature 0.1: groups turn identical", flags=("--temperature", "0.1"),
                          expected=frozenset({"near_greedy_sampling"})),
    "held_out_fall": Case("a held-out score that falls as the reward rises",
                          flags=("--eval-reward-fn", f"{REWARDS}:mostly_consonants"),
                          expected=frozenset({"train_up_eval_down"})),
    "kl_blow_up": Case("the policy running away from the reference", flags=("--learning-rate", "1e-2", "--beta", "0.1"),
                       expected=frozenset({"kl_runaway"})),
}


def zoo_model(folder: Path) -> Path:
    """The tiny model (built if need be) copied to `folder`, with answers that end."""
    from grpo_tool.tiny_model import ensure_tiny_model

    if not (folder / "generation_config.json").is_file():
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(ensure_tiny_model(), staging)
        config = json.loads((staging / "generation_config.json").read_text())
        vocabulary = json.loads((staging / "config.json").read_text())["vocab_size"]
        config["eos_token_id"] = [config["eos_token_id"], *range(STOP_EVERY, vocabulary, STOP_EVERY)]
        (staging / "generation_config.json").write_text(json.dumps(config, indent=2))
        staging.rename(folder)
    return folder


def zoo_data(path: Path) -> Path:
    """64 short prompts, one per line."""
    topics = ["rivers", "bread", "stars", "trains", "music", "winter", "bees", "maps"]
    asks = ["Describe", "Write a line about", "Say something about", "Tell me about", "Name a fact about",
            "Give a word for", "Talk about", "Explain"]
    rows = [{"prompt": f"{ask} {topic}."} for ask in asks for topic in topics]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def case_flags(name: str, model: Path, data: Path, output_dir: Path, logging_steps: int) -> list[str]:
    """The whole command line of a case's run (after train_grpo.py)."""
    case = CASES[name]
    return ["--model-name", str(model), "--custom-data", str(data), "--output-dir", str(output_dir),
            "--max-steps", str(STEPS), "--logging-steps", str(logging_steps), "--eval-steps", "10",
            "--save-steps", str(STEPS), "--group-size", "4", "--per-device-train-batch-size", "8",
            "--per-device-eval-batch-size", "8", "--max-eval-samples", "8", "--max-completion-length", "24",
            "--max-samples", "64", "--no-lora", "--learning-rate", "3e-3", "--disable-generation-logging",
            "--no-wandb", "--seed", "3", *(flag for function in case.rewards for flag in
                                           ("--reward-fn", f"{REWARDS}:{function}")), *case.flags]


def judged(output_dir: Path) -> dict:
    """What a case's run raised: {alarm id: first step} from its alarms.json."""
    alarms = json.loads((output_dir / "alarms.json").read_text())
    return {alarm["id"]: alarm["step"] for alarm in alarms}


def verdict(name: str, raised: dict) -> dict:
    """Caught (every expected alarm raised), missed and false alarms (raised, not expected) of one run."""
    expected = CASES[name].expected
    return {"caught": expected <= set(raised), "missed": sorted(expected - set(raised)),
            "false": sorted(set(raised) - expected),
            "first_alarm_step": min((raised[kind] for kind in expected & set(raised)), default=None)}
