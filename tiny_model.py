"""The `tiny` model: a small random-weight Llama with a tokenizer trained on the bundled text, built offline.

It lets `--quick-test` and the tests run a real GRPO loop on a CPU with no download. The build is deterministic (same
text, same seed, same files) and is cached; the cached directory is an ordinary checkpoint that
`AutoModelForCausalLM.from_pretrained` loads like any hub model.

    path = ensure_tiny_model()    # builds on first use, then returns the cached directory
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
# Bump when the recipe below changes, so old caches are not reused.
TINY_MODEL_VERSION = 1
VOCAB_SIZE = 512
SPECIAL_TOKENS = ["<|pad|>", "<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_model_dir() -> Path:
    """Where the tiny model is cached: $GRPO_TINY_MODEL_DIR, else a versioned folder in the user's cache."""
    if os.environ.get("GRPO_TINY_MODEL_DIR"):
        return Path(os.environ["GRPO_TINY_MODEL_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "grpo-tool" / f"tiny-llama-v{TINY_MODEL_VERSION}"


def training_text() -> list[str]:
    """Every prompt and answer of the bundled sample data, in file order."""
    texts = []
    for path in sorted(DATA_DIR.glob("sample_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts.extend(str(row[key]) for key in ("prompt", "chosen", "rejected") if row.get(key))
    return texts


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(training_text(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin|>", eos_token="<|end|>",
                                   pad_token="<|pad|>", chat_template=CHAT_TEMPLATE)


def build_model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_model(directory: Path) -> None:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def ensure_tiny_model() -> Path:
    """The cached tiny model's directory, built first if missing. Safe when several processes race to build it."""
    target = tiny_model_dir()
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build_tiny_model(staging)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished first; its copy is identical.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
