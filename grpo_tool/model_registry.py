"""The model registry: the presets and what they stand for, and what a model path must hold (a save_pretrained
directory, or a GGUF file), checked before anything loads. config.py layers the presets; grpo_tool/models.py loads
what these names resolve to; a preset's shape (and so its size) is grpo_tool/model_shapes.py's built-in table's.

    assert resolve_model_name("llama-3.1-8b") == "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit"
    assert checkpoint_to_load("llama-3.1-8b", four_bit=False) == "unsloth/Meta-Llama-3.1-8B-Instruct"
    assert model_name_problem("no/such/dir") == "model 'no/such/dir': no such file or directory"
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from grpo_tool.errors import near_miss
from grpo_tool.json_files import read_json_file

TINY_MODEL = "tiny"

# Preset name -> the settings it changes. The four of the original run through Unsloth's pre-quantised checkpoints.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": {"model_name": "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit"},
    "llama-3.1-70b": {"model_name": "unsloth/Meta-Llama-3.1-70B-Instruct-bnb-4bit", "group_size": 4,
                      "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4},
    "gemma-2-9b": {"model_name": "unsloth/gemma-2-9b-it-bnb-4bit"},
    "qwen2.5-7b": {"model_name": "unsloth/Qwen2.5-7B-Instruct-bnb-4bit"},
    # Built offline by tiny_model.py. A random ~100k-parameter model moves only with a large learning rate, and
    # full fine-tuning is cheaper than LoRA at this size.
    TINY_MODEL: {"model_name": TINY_MODEL, "max_seq_length": 256, "learning_rate": 3e-3, "use_lora": False,
                 "load_in_4bit": False, "max_completion_length": 32},
}
# Spellings that do not exist on the hub, mapped to the checkpoint they mean.
MODEL_ALIASES = {"unsloth/llama-3.1-8b-bnb-4bit": "unsloth/Meta-Llama-3.1-8B-bnb-4bit"}
# Each large preset's weights in 16 bits, for a run that does not load 4-bit weights (full fine-tuning,
# --no-load-in-4bit, which ZeRO-3 and FSDP need since they divide 16-bit weights): the same model, the same owner,
# not quantised. A pre-quantised checkpoint holds 4-bit weights whatever load_in_4bit says.
SIXTEEN_BIT_CHECKPOINTS = {
    "llama-3.1-8b": "unsloth/Meta-Llama-3.1-8B-Instruct",
    "llama-3.1-70b": "unsloth/Meta-Llama-3.1-70B-Instruct",
    "gemma-2-9b": "unsloth/gemma-2-9b-it",
    "qwen2.5-7b": "unsloth/Qwen2.5-7B-Instruct",
}
PRE_QUANTISED = "bnb-4bit"  # in the name of a checkpoint stored in bitsandbytes' 4 bits


def resolve_model_name(model_name: str) -> str:
    """A preset key or an alias becomes the checkpoint it stands for; anything else is returned as given."""
    if model_name in MODEL_PRESETS:
        return MODEL_PRESETS[model_name]["model_name"]
    return MODEL_ALIASES.get(model_name, model_name)


def checkpoint_to_load(model_name: str, four_bit: bool) -> str:
    """The checkpoint a run loads: what `resolve_model_name` gives, except that a run without 4-bit weights loads a
    preset (named by its key or its 4-bit checkpoint) from its 16-bit checkpoint."""
    resolved = resolve_model_name(model_name)
    return resolved if four_bit else SIXTEEN_BIT_CHECKPOINTS.get(preset_key(model_name), resolved)


def pre_quantised_problem(model_name: str, four_bit: bool) -> str | None:
    """A checkpoint stored in 4 bits for a run that trains 16-bit weights: the two cannot both hold."""
    loaded = checkpoint_to_load(model_name, four_bit)
    if four_bit or PRE_QUANTISED not in loaded.lower():
        return None
    plain = re.sub(rf"[-_]{re.escape(PRE_QUANTISED)}", "", loaded, flags=re.IGNORECASE)
    return (f"model {model_name} is stored in 4 bits (bitsandbytes), and this run loads 16-bit weights "
            f"(load_in_4bit=false or use_lora=false, as ZeRO-3, FSDP and full fine-tuning need): name a 16-bit "
            f"checkpoint of the model (such as {plain}), or train LoRA on the 4-bit weights")


def preset_key(model_name: str) -> str | None:
    """The preset a model name stands for, named by its key or by its checkpoint; None for other models."""
    resolved = resolve_model_name(model_name)
    return next((key for key, preset in MODEL_PRESETS.items()
                 if model_name == key or resolved == preset["model_name"]), None)


def model_preset(model_name: str) -> dict[str, Any]:
    """The preset of a preset key or of its checkpoint name; empty for other models."""
    key = preset_key(model_name)
    return {} if key is None else {field: value for field, value in MODEL_PRESETS[key].items() if field != "model_name"}


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def find_gguf(path: str | Path) -> Path | None:
    """The GGUF file a model path names: the file itself, or the only .gguf in a directory without config.json."""
    path = Path(path)
    if path.suffix.lower() == ".gguf" and path.is_file():
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        files = sorted(path.glob("*.gguf"))
        return files[0] if len(files) == 1 else None
    return None


def local_model_problem(path: Path, what: str) -> str | None:
    """What a local model directory lacks (config, weights, tokenizer), seen before anything loads."""
    if what == "model" and find_gguf(path):
        return None  # de-quantised into a transformers directory when the model loads
    if path.is_dir() and what == "model" and len(list(path.glob("*.gguf"))) > 1:
        names = ", ".join(p.name for p in sorted(path.glob("*.gguf")))
        return f"model {path}: several GGUF files ({names}); give the one to train as --model {path}/FILE.gguf"
    if not path.is_dir():
        return (f"{what} {path}: a file, not a model directory (a directory written by save_pretrained"
                + (", or a .gguf file)" if what == "model" else ")"))
    if (path / "adapter_config.json").is_file():
        return None  # a LoRA adapter: its base model is named inside and checked when it loads
    found = ", ".join(sorted(p.name for p in path.iterdir())[:6]) or "nothing"
    needs = ("a directory written by save_pretrained holds config.json, the weights (*.safetensors) and the "
             f"tokenizer files (tokenizer.json, tokenizer_config.json); {path} holds {found}")
    if not (path / "config.json").is_file():
        return f"{what} {path}: no config.json, so not a model directory: {needs}"
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        return f"{what} {path}: no weights: {needs}"
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return f"{what} {path}: no tokenizer: {needs} (save the tokenizer there too: tokenizer.save_pretrained)"
    return architecture_problem(read_json_file(path / "config.json", "model config") or {}, what, str(path))


# Heads that score or fill in text and cannot generate it: a policy of only these is not a language model to train.
CLASSIFIER_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering", "ForMaskedLM",
                    "ForMultipleChoice", "ForNextSentencePrediction", "ForPreTraining")


def architecture_problem(model_config: dict, what: str, name: str) -> str | None:
    """A model whose config.json says it is not the kind `what` needs: a policy must generate text (not a
    classifier), a reward model must be a sequence classifier with one output (the score)."""
    architectures = model_config.get("architectures") or []
    if not architectures:
        return None
    if what == "model" and all(arch.endswith(CLASSIFIER_HEADS) for arch in architectures):
        return (f"model {name} is a {architectures[0]}, a model that cannot generate text: GRPO trains a "
                "causal language model (...ForCausalLM); if it scores answers, give it as --reward-model")
    if what != "reward model":
        return None
    if not any(arch.endswith("ForSequenceClassification") for arch in architectures):
        return (f"reward model {name} is a {architectures[0]}, not a sequence-classification model: its score "
                "head would be random. Give a reward model (e.g. one trained with TRL's RewardTrainer)")
    labels = model_config.get("num_labels") or len(model_config.get("id2label") or {}) or 1
    if labels > 1:
        names = ", ".join(str(label) for label in (model_config.get("id2label") or {}).values())
        return (f"reward model {name} is a classifier of {labels} labels ({names}), and a reward model gives one "
                "score (num_labels 1, as TRL's RewardTrainer saves it): give such a model, or score with this one "
                "in a --reward-fn that returns the probability of the label you want")
    return None


def model_name_problem(model_name: str, what: str = "model") -> str | None:
    if model_name in MODEL_PRESETS or model_name in MODEL_ALIASES:
        return None
    if Path(model_name).exists():
        return local_model_problem(Path(model_name), what)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model_name) and not model_name.startswith("."):
        return None
    if os.sep in model_name or model_name.startswith("."):
        return f"{what} {model_name!r}: no such file or directory"
    return (f"unknown {what} {model_name!r}{near_miss(model_name, MODEL_PRESETS)}: use a preset "
            f"({', '.join(MODEL_PRESETS)}), a Hugging Face id such as 'Qwen/Qwen2.5-0.5B-Instruct', or a local model "
            "directory")
