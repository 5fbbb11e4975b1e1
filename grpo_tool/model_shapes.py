"""A model's shape (layers, widths, vocabulary) without its weights: what `--plan` and the start-up memory check
count with. Read from a local config.json, a GGUF file's header, the Hugging Face cache, or a built-in table of the
presets and common small models, in that order; nothing touches the network or loads a weight.

    shape = find_shape("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert shape.parameters == 134515008    # shape.source: 'built-in table (...)', or where else it was read
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from grpo_tool.errors import UserError
from grpo_tool.json_files import read_json_file
from grpo_tool.model_registry import TINY_MODEL, find_gguf, resolve_model_name

# The linear layers of a Llama-style block, by the module names LoRA targets: what the plan counts.
LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool  # the output layer shares the embedding matrix
    qkv_bias: bool = False
    experts: int = 1  # mixture-of-experts: experts per layer, and how many each token uses
    active_experts: int = 1
    source: str = ""

    @property
    def attention_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one transformer block, by the module names LoRA targets (LINEAR_LAYERS,
        in that order)."""
        return dict(zip(LINEAR_LAYERS, [(self.hidden, self.attention_width), (self.hidden, self.kv_width),
                                        (self.hidden, self.kv_width), (self.attention_width, self.hidden),
                                        (self.hidden, self.intermediate), (self.hidden, self.intermediate),
                                        (self.intermediate, self.hidden)]))

    @property
    def layer_linear_parameters(self) -> int:
        """Weights of one block's linear layers (all experts counted): what 4-bit quantisation shrinks."""
        total = 0
        for name, (fan_in, fan_out) in self.linear_shapes().items():
            total += fan_in * fan_out * (self.experts if name.endswith(("gate_proj", "up_proj", "down_proj")) else 1)
        return total

    @property
    def embedding_parameters(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def parameters(self) -> int:
        bias = (self.attention_width + 2 * self.kv_width) if self.qkv_bias else 0
        per_layer = self.layer_linear_parameters + bias + 2 * self.hidden
        return self.layers * per_layer + self.embedding_parameters + self.hidden


# Shapes of the presets' checkpoints and of common small models, from their published config.json files, so a run
# can be planned on a machine that has never downloaded them. Keyed by the name's family (see family_key).
KNOWN_SHAPES: dict[str, dict] = {
    "llama-3.1-8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256, tied=False),
    "llama-3.1-70b": dict(hidden=8192, layers=80, heads=64, kv_heads=8, intermediate=28672, vocab=128256, tied=False),
    "llama-3.2-1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, vocab=128256, tied=True),
    "llama-3.2-3b": dict(hidden=3072, layers=28, heads=24, kv_heads=8, intermediate=8192, vocab=128256, tied=True),
    "gemma-2-2b": dict(hidden=2304, layers=26, heads=8, kv_heads=4, head_dim=256, intermediate=9216, vocab=256000,
                       tied=True),
    "gemma-2-9b": dict(hidden=3584, layers=42, heads=16, kv_heads=8, head_dim=256, intermediate=14336, vocab=256000,
                       tied=True),
    "qwen2.5-0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936, tied=True,
                         qkv_bias=True),
    "qwen2.5-1.5b": dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936, tied=True,
                         qkv_bias=True),
    "qwen2.5-3b": dict(hidden=2048, layers=36, heads=16, kv_heads=2, intermediate=11008, vocab=151936, tied=True,
                       qkv_bias=True),
    "qwen2.5-7b": dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064, tied=False,
                       qkv_bias=True),
    "qwen2.5-14b": dict(hidden=5120, layers=48, heads=40, kv_heads=8, intermediate=13824, vocab=152064, tied=False,
                        qkv_bias=True),
    "qwen3-0.6b": dict(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=3072, vocab=151936,
                       tied=True),
    "qwen3-1.7b": dict(hidden=2048, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=6144, vocab=151936,
                       tied=True),
    "qwen3-4b": dict(hidden=2560, layers=36, heads=32, kv_heads=8, head_dim=128, intermediate=9728, vocab=151936,
                     tied=True),
    "qwen3-8b": dict(hidden=4096, layers=36, heads=32, kv_heads=8, head_dim=128, intermediate=12288, vocab=151936,
                     tied=False),
    "mistral-7b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=32768, tied=False),
    "smollm2-135m": dict(hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, vocab=49152, tied=True),
    "smollm2-360m": dict(hidden=960, layers=32, heads=15, kv_heads=5, intermediate=2560, vocab=49152, tied=True),
    "smollm2-1.7b": dict(hidden=2048, layers=24, heads=32, kv_heads=32, intermediate=8192, vocab=49152, tied=True),
}


def family_key(model_name: str) -> str:
    """'unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit' -> 'llama-3.1-8b': the repository name without its owner,
    vendor prefix, and the suffixes that name a variant of the same shape (instruct, quantised, versions)."""
    name = model_name.rsplit("/", 1)[-1].lower()
    name = re.sub(r"\.gguf$|\.(q\d|f16|f32|bf16).*$", "", name)
    name = re.sub(r"^meta-", "", name)
    return re.sub(r"-(instruct|it|chat|base|unsloth|bnb-4bit|4bit|awq|gptq|v0\.\d|\d{4})(?=-|$)", "", name)


SIZE_LIMIT = 10**7  # no width, depth or vocabulary of a real model comes near this


def size(config: dict, key: str, source: str, default=None) -> int:
    """A positive whole number from a config; anything else is the config's mistake, named."""
    value = config.get(key)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or not 1 <= value <= SIZE_LIMIT:
        shown = "missing" if value is None else repr(value)
        raise UserError(f"{source}: {key} is {shown}, not a positive whole number; plan with a preset or a model "
                        "whose config.json has hidden_size, num_hidden_layers, num_attention_heads, "
                        "intermediate_size and vocab_size")
    return int(value)


def shape_from_config(config: dict, source: str) -> ModelShape:
    """A transformers config.json (its text_config for multimodal models)."""
    if isinstance(config, dict) and isinstance(config.get("text_config"), dict):
        config = config["text_config"]
    if not isinstance(config, dict):
        raise UserError(f"{source}: a model config is a JSON object, not {type(config).__name__}")
    hidden, heads = size(config, "hidden_size", source), size(config, "num_attention_heads", source)
    experts = size(config, "num_local_experts", source, config.get("num_experts") or 1)
    moe = experts > 1 and config.get("moe_intermediate_size") is not None
    return ModelShape(
        hidden=hidden, layers=size(config, "num_hidden_layers", source), heads=heads,
        kv_heads=size(config, "num_key_value_heads", source, config.get("num_key_value_heads") or heads),
        head_dim=size(config, "head_dim", source, config.get("head_dim") or max(1, hidden // heads)),
        intermediate=size(config, "moe_intermediate_size" if moe else "intermediate_size", source),
        vocab=size(config, "vocab_size", source), tied=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=bool(config.get("attention_bias") or config.get("model_type") == "qwen2"),
        experts=experts, active_experts=size(config, "num_experts_per_tok", source, 1) if experts > 1 else 1,
        source=source)


def shape_from_gguf(path: Path) -> ModelShape:
    """The header of a GGUF file (llama.cpp's metadata keys); the tensors are not read."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        fields = {key: field.contents() for key, field in reader.fields.items()
                  if not key.startswith("tokenizer.ggml.") or key == "tokenizer.ggml.tokens"}
        tensors = {tensor.name for tensor in reader.tensors}
    except Exception as error:  # noqa: BLE001 - the gguf reader fails in many ways on a damaged file
        raise UserError(f"model {path}: not a readable GGUF file ({type(error).__name__}: {error})") from None
    arch = fields.get("general.architecture", "llama")
    metadata = {"hidden_size": fields.get(f"{arch}.embedding_length"),
                "num_hidden_layers": fields.get(f"{arch}.block_count"),
                "num_attention_heads": fields.get(f"{arch}.attention.head_count"),
                "num_key_value_heads": fields.get(f"{arch}.attention.head_count_kv"),
                "head_dim": fields.get(f"{arch}.attention.key_length"),
                "intermediate_size": fields.get(f"{arch}.feed_forward_length"),
                "vocab_size": len(fields.get("tokenizer.ggml.tokens") or []) or None,
                "tie_word_embeddings": "output.weight" not in tensors, "attention_bias": "blk.0.attn_q.bias" in tensors}
    return shape_from_config(metadata, f"GGUF header of {path}")


def hub_cache_config(model_id: str) -> Path | None:
    """config.json of a hub model in the local Hugging Face cache, if it was ever downloaded."""
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    snapshots = Path(cache) / ("models--" + model_id.replace("/", "--")) / "snapshots"
    found = sorted(snapshots.glob("*/config.json"), key=lambda path: path.stat().st_mtime) if snapshots.is_dir() else []
    return found[-1] if found else None


def tiny_shape() -> ModelShape:
    from grpo_tool.tiny_model import VOCAB_SIZE, tiny_model_dir

    built = tiny_model_dir() / "config.json"
    if built.is_file():
        return shape_from_config(read_json_file(built, "model config"), "the tiny model's config.json")
    return ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=VOCAB_SIZE,
                      tied=True, source="the tiny model's recipe (tiny_model.py)")


def known_shape(model_name: str) -> ModelShape | None:
    """The shape the built-in table gives the name's family (the presets' and common models'), or None."""
    family = family_key(model_name)
    if family not in KNOWN_SHAPES:
        return None
    known = dict(KNOWN_SHAPES[family])
    known.setdefault("head_dim", known["hidden"] // known["heads"])
    return ModelShape(**known, source=f"built-in table ({family})")


def find_shape(model_name: str) -> ModelShape:
    """The shape of a preset, hub id, local directory or GGUF file, without weights or network."""
    if model_name == TINY_MODEL:
        return tiny_shape()
    name = resolve_model_name(model_name)
    path = Path(name)
    if path.exists():
        gguf = find_gguf(path)
        if gguf:
            return shape_from_gguf(gguf)
        config = path / "config.json"
        if (path / "adapter_config.json").is_file() and not config.is_file():
            base = (read_json_file(path / "adapter_config.json", "adapter config") or {}).get("base_model_name_or_path")
            if base:
                return find_shape(base)
        if config.is_file():
            return shape_from_config(read_json_file(config, "model config"), f"{config}")
    cached = hub_cache_config(name)
    if cached:
        return shape_from_config(read_json_file(cached, "model config"), f"the Hugging Face cache ({cached})")
    if (shape := known_shape(name)) is not None:
        return shape
    raise UserError(f"no shape known for {model_name!r}: it is not a preset or a model in the built-in table "
                    f"({', '.join(sorted(KNOWN_SHAPES))}), and no config.json for it is on this machine. Give a local "
                    "model directory (only its config.json is read), or download the config once: "
                    f"huggingface-cli download {name} config.json")
