"""The dataset registry: each preset's hub id, configuration, splits and schema, the settings a preset brings, and
the bundled sample data. data_loader.py loads what is named here; config.py applies the presets' settings.

    assert dataset_preset_name("openai/gsm8k") == "gsm8k" and SAMPLE_FILES["train"].is_file()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SAMPLE_FILES = {"train": DATA_DIR / "sample_train.jsonl", "eval": DATA_DIR / "sample_eval.jsonl"}


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    train_split: str
    eval_split: str | None  # None: hold out part of the training split
    schema: str
    config_name: str | None = None  # the dataset's configuration, for repositories that hold several


# The dataset registry: each preset's hub id, configuration, splits and schema, in one place.
HUB_SOURCES = {
    "ultrafeedback": HubSource("HuggingFaceH4/ultrafeedback_binarized", "train_prefs", "test_prefs",
                               "ultrafeedback_binarized"),
    "ultrafeedback_large": HubSource("openbmb/UltraFeedback", "train", None, "openbmb"),
    "hh_rlhf": HubSource("Anthropic/hh-rlhf", "train", "test", "hh_rlhf"),
    "openai_summarize": HubSource("trl-lib/tldr-preference", "train", "validation", "custom"),
    "gsm8k": HubSource("openai/gsm8k", "train", "test", "question_answer", config_name="main"),
}
SAMPLE_DATASET = "sample"  # the bundled data/sample_*.jsonl
DATASET_NAMES = (*HUB_SOURCES, SAMPLE_DATASET)
# What dataset_name takes: a preset, or the hub id of one (TRL's dataset_name is a hub id).
DATASET_CHOICES = (*DATASET_NAMES, *(source.repo_id for source in HUB_SOURCES.values()))


def dataset_preset_name(name):
    """The preset a dataset name stands for: itself, or the preset whose hub id it is."""
    return next((preset for preset, source in HUB_SOURCES.items() if source.repo_id == name), name)


# The settings a dataset preset brings, below the mode, the config file and the flags.
DATASET_PRESETS: dict[str, dict[str, Any]] = {
    "openai_summarize": {"max_completion_length": 128},
    # Answers a program checks: the reward is whether the final answer is right. Rewards of your own replace it.
    "gsm8k": {"reward_config_name": "verifiable"},
}
