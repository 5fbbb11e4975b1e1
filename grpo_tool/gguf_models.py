"""A GGUF file (llama.cpp, Ollama and Unsloth export them) as a model this tool trains: de-quantised once into an
ordinary transformers directory in the user cache, with its special tokens set from the GGUF metadata. Heavy:
imported only after backend.prepare (see grpo_tool/__init__.py).

transformers reads GGUF through the `gguf` package but leaves two things to fix: the converted tokenizer can name the
wrong end-of-sequence token (SmolLM2's says <|im_start|>, its metadata 2 = <|im_end|>) and has no pad token, and the
de-quantised model refuses save_pretrained while it still carries its GGUF quantization config.

Use: `converted_gguf(Path("SmolLM2-135M-Instruct.Q4_1.gguf"))` returns the directory to load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpo_tool.errors import UserError
from grpo_tool.tiny_model import cache_root

logger = logging.getLogger(__name__)

GGUF_CACHE = "gguf"  # under the tool's cache dir
CONVERSION_VERSION = 2  # part of the cache key: a change to the conversion converts again
# End-of-turn markers of common chat templates: the token a chat model ends its answer with.
TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def gguf_metadata(path: Path) -> dict:
    """The tokenizer ids of a GGUF file's metadata (bos, eos, eot, padding), where present."""
    reader = GGUFReader(str(path))
    found = {}
    for name in ("bos", "eos", "eot", "padding"):
        field = reader.fields.get(f"tokenizer.ggml.{name}_token_id")
        if field is not None:
            found[name] = int(field.contents())
    return found


def end_of_turn(tokenizer, metadata: dict) -> str | None:
    """The token a reply ends with: the GGUF's end-of-turn id, else the chat template's turn marker, else its eos."""
    if "eot" in metadata:
        return tokenizer.convert_ids_to_tokens(metadata["eot"])
    template = tokenizer.chat_template or ""
    vocabulary = tokenizer.get_vocab()
    marker = next((token for token in TURN_ENDS if token in template and token in vocabulary), None)
    if marker is not None:
        return marker
    return tokenizer.convert_ids_to_tokens(metadata["eos"]) if "eos" in metadata else None


def set_special_tokens(tokenizer, model, metadata: dict) -> None:
    eos = end_of_turn(tokenizer, metadata)
    if eos is not None:
        tokenizer.eos_token = eos
    if "padding" in metadata:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(metadata["padding"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # A byte-level BPE tokenizer decodes exactly as it is; the GGUF conversion turns a WordPiece clean-up on, which
    # transformers then warns about at every load.
    tokenizer.clean_up_tokenization_spaces = False
    for config in (model.config, model.generation_config):
        config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if "bos" in metadata:
        model.config.bos_token_id = model.generation_config.bos_token_id = metadata["bos"]


def cache_dir(path: Path) -> Path:
    """One converted copy per GGUF file (its path, size and modification time)."""
    stat = path.stat()
    key = f"{CONVERSION_VERSION}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root() / GGUF_CACHE / f"{path.stem}-{digest}"


def converted_gguf(path: Path) -> Path:
    """A transformers directory (config, safetensors weights, tokenizer) holding the de-quantised GGUF model."""
    target = cache_dir(path)
    if (target / "config.json").is_file():
        return target
    logger.info("converting %s to a transformers model in %s (once; later runs reuse it)", path, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError, struct.error) as error:
        raise UserError(f"model {path}: this GGUF file cannot be read by transformers ({str(error).splitlines()[0]}); "
                        "its architecture may not be supported for GGUF (Llama, Qwen2, Gemma, Mistral are)") from None
    set_special_tokens(tokenizer, model, gguf_metadata(path))
    # De-quantised weights are ordinary weights: without this, save_pretrained refuses the GGUF-quantised model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # whole or not at all: a cut-off conversion is never taken for a model
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
