"""The `tiny` model: a small random-weight Llama with a tokenizer trained on the bundled text, built offline.

It lets `--quick-test` and the tests run a real GRPO loop on a CPU with no download. The build is deterministic (same
text, same seed, same files) and is cached; the cached directory is an ordinary checkpoint that
`AutoModelForCausalLM.from_pretrained` loads like any hub model.

    path = ensure_tiny_model()    # builds on first use, then returns the cached directory
    assert ensure_tiny_model() == path and (path / "model.safetensors").is_file()
    reward = ensure_tiny_reward_model()    # a sequence-classification model, for reward-model tests
    assert (reward / "tokenizer.json").read_bytes() == (path / "tokenizer.json").read_bytes()    # the same tokenizer
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from grpo_tool.datasets import SAMPLE_FILES

# Bump when the recipe below changes, so old caches are not reused.
TINY_MODEL_VERSION = 2  # 2: a chat template that carries tool calls, and the response template that reads them
VOCAB_SIZE = 512
SPECIAL_TOKENS = ["<|pad|>", "<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
# Each turn is <|role|>content<|end|>. With tools, a first system turn names them (briefly: the tiny model's context
# is 512 tokens), an assistant's call is a JSON object between <tool_call> tags after its text, and a result is a
# <|tool|> turn; a conversation without tools renders as it did before tools existed.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<|system|>Tools:{% for tool in tools %} {{ tool['function']['name'] }}("
    "{{ tool['function']['parameters']['properties'] | join(', ') }}){% endfor %}<|end|>{% endif %}"
    "{% for message in messages %}<|{{ message['role'] }}|>"
    "{% if message['content'] is not none %}{{ message['content'] }}{% endif %}"
    "{% for call in message.get('tool_calls') or [] %}"
    "{% set function = call['function'] if call['function'] is defined else call %}"
    "<tool_call>{\"name\": \"{{ function['name'] }}\", \"arguments\": "
    "{{ function['arguments'] if function['arguments'] is string else function['arguments'] | tojson }}}</tool_call>"
    "{% endfor %}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def cache_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "grpo-tool"


def tiny_model_dir() -> Path:
    """Where the tiny model is cached: $GRPO_TINY_MODEL_DIR, else a versioned folder in the user's cache."""
    if os.environ.get("GRPO_TINY_MODEL_DIR"):
        return Path(os.environ["GRPO_TINY_MODEL_DIR"])
    return cache_root() / f"tiny-llama-v{TINY_MODEL_VERSION}"


def tiny_reward_model_dir() -> Path:
    """The tiny reward model sits beside the tiny model, sharing its tokenizer."""
    return tiny_model_dir().with_name(tiny_model_dir().name + "-reward")


def training_text() -> list[str]:
    """Every prompt and answer of the bundled sample data, in file order."""
    texts = []
    for path in sorted(SAMPLE_FILES.values()):
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
    built = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin|>", eos_token="<|end|>",
                                    pad_token="<|pad|>", chat_template=CHAT_TEMPLATE)
    from grpo_tool.messages import tool_call_response_template

    built.response_template = tool_call_response_template("<|assistant|>", "<|end|>")  # saved with the tokenizer
    return built


def llama_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def seeded(build, seed: int):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_tiny_model(directory: Path) -> None:
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer()
    model = seeded(lambda: LlamaForCausalLM(llama_config(tokenizer)), seed=0)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_weights(model, directory)
    tokenizer.save_pretrained(directory)


def save_weights(model, directory: Path) -> None:
    """The model's config, generation config and weights, as save_pretrained lays them out. Written directly because
    transformers' save_pretrained writes nothing outside torch.distributed's rank 0, and under a launcher whichever
    process comes first builds the tiny model. The output embedding is tied to the input one, so it is left out, as
    save_pretrained leaves it out."""
    from safetensors.torch import save_file

    model.config.architectures, model.config.dtype = [type(model).__name__], model.dtype  # as save_pretrained does
    model.config.save_pretrained(directory)
    if getattr(model, "generation_config", None) is not None:  # a causal LM's; the reward model has none
        model.generation_config.save_pretrained(directory)
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items() if name != "lm_head.weight"}
    save_file(weights, str(Path(directory) / "model.safetensors"), metadata={"format": "pt"})


def build_tiny_reward_model(directory: Path) -> None:
    """A random sequence-classification head on the tiny architecture: scores, not judgements, for offline tests."""
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
    config = llama_config(tokenizer)
    config.num_labels = 1
    model = seeded(lambda: LlamaForSequenceClassification(config), seed=1)
    save_weights(model, directory)
    tokenizer.save_pretrained(directory)


def ensure_tiny_model() -> Path:
    """The cached tiny model's directory, built first if missing."""
    return ensure_built(tiny_model_dir(), build_tiny_model)


def ensure_tiny_reward_model() -> Path:
    """The cached tiny reward model's directory, built first if missing."""
    return ensure_built(tiny_reward_model_dir(), build_tiny_reward_model)


def ensure_built(target: Path, build) -> Path:
    """`target`, built by `build(directory)` first if missing. Several processes starting at once (a launcher's)
    build it once: the others wait on a lock beside it, then find it built."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():
            return target
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            build(staging)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
