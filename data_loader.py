"""Training data for GRPO: every source becomes a `prompt` column plus `chosen` / `rejected` references.

A prompt is plain text or a list of chat messages; `chosen` / `rejected` are the preferred and dispreferred answers
when the source has them (the accuracy reward uses them). Sources: the bundled sample data (`sample`) and JSONL files
in the original's custom format, `{"prompt": ..., "chosen": ..., "rejected": ...}` (the references are optional).
This module knows schemas and files, nothing of models.

    data_loader, dataset = create_grpo_dataloader(dataset_name="data/sample_train.jsonl", max_samples=100)
    dataset["train"], dataset["eval"]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from config import DATASET_NAMES, HUB_DATASETS, SAMPLE_DATASET, GRPOConfig
from errors import UserError

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_FILES = {"train": DATA_DIR / "sample_train.jsonl", "eval": DATA_DIR / "sample_eval.jsonl"}
REFERENCE_COLUMNS = ("chosen", "rejected")
EVAL_FRACTION = 0.1  # share of a single-file source held out for evaluation
MAX_HELD_OUT = 500  # ... but never more rows than this


def jsonl_records(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for every non-blank line; a line that is not a JSON object is an error naming it."""
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{path} line {number}: not UTF-8 text; save the file as UTF-8") from None
        except json.JSONDecodeError as error:
            raise UserError(f"{path} line {number}: not valid JSON ({error.msg} at column {error.colno}); "
                            "each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number}: expected a JSON object like "
                            '{"prompt": ..., "chosen": ..., "rejected": ...}, got ' + type(row).__name__)
        records.append((number, row))
    return records


def row_problem(row: dict) -> str | None:
    """Why a row cannot train, or None."""
    if "prompt" not in row:
        return (f"no 'prompt' field (found: {', '.join(row) or 'nothing'}); each row needs "
                '{"prompt": ..., "chosen": ..., "rejected": ...}, where chosen and rejected are optional')
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return None if prompt.strip() else "'prompt' is empty"
    if isinstance(prompt, list):
        if not prompt or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m
                                 for m in prompt):
            return "'prompt' is a list but not of chat messages like {\"role\": \"user\", \"content\": \"...\"}"
        return None
    return f"'prompt' must be text or a list of chat messages, got {type(prompt).__name__}"


def prompts_look_valid(dataset) -> bool:
    """Whether the fast path's result can be used as is: a prompt column of non-empty text or message lists."""
    import datasets

    feature = dataset.features.get("prompt")
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return all(prompt and prompt.strip() for prompt in dataset["prompt"])
    if isinstance(feature, (datasets.List, datasets.LargeList)) and isinstance(feature.feature, dict):
        return {"role", "content"} <= set(feature.feature) and all(dataset["prompt"])
    return False


def read_jsonl(path: str | Path):
    """A JSONL file as a `datasets.Dataset` with `prompt` and whichever reference columns it has."""
    import datasets

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        dataset = datasets.load_dataset("json", data_files=str(path), split="train")
        trusted = prompts_look_valid(dataset)
    except Exception:  # noqa: BLE001 - datasets wraps every parse problem; our own pass below names the line
        trusted = False
    if not trusted:
        # Slow path, taken only when something is off: find the line to blame, or rebuild the rows
        # (datasets rejects some valid files, such as ones with whitespace-only lines).
        records = jsonl_records(path)
        if not records:
            raise UserError(f"{path}: no rows; each line must be one JSON object with a 'prompt'")
        prompt_types = set()
        for number, row in records:
            problem = row_problem(row)
            if problem:
                raise UserError(f"{path} line {number}: {problem}")
            prompt_types.add(type(row["prompt"]))
        if len(prompt_types) > 1:
            raise UserError(f"{path}: some prompts are text and some are message lists; use one form per file")
        dataset = datasets.Dataset.from_list([row for _, row in records])
    keep = ["prompt", *(name for name in REFERENCE_COLUMNS if name in dataset.column_names)]
    return dataset.select_columns(keep)


def hold_out(dataset, seed: int):
    """Split one source into train and eval rows; both must end up non-empty."""
    if len(dataset) < 2:
        raise UserError(f"only {len(dataset)} usable row(s): GRPO needs at least 2 (one is held out for evaluation)")
    eval_rows = min(MAX_HELD_OUT, max(1, round(len(dataset) * EVAL_FRACTION)))
    split = dataset.train_test_split(test_size=eval_rows, seed=seed, shuffle=True)
    return split["train"], split["test"]


def load_source(name: str, seed: int) -> tuple[Any, Any]:
    """(train, eval) of a dataset name or a file path."""
    if name == SAMPLE_DATASET:
        return read_jsonl(SAMPLE_FILES["train"]), read_jsonl(SAMPLE_FILES["eval"])
    if name in HUB_DATASETS or name in HUB_DATASETS.values():
        raise UserError(f"dataset {name!r} needs the Hugging Face Hub loader, which this version does not have yet: "
                        "convert it to JSONL ({\"prompt\", \"chosen\", \"rejected\"} per line) and pass "
                        "--custom-data FILE, or use --dataset sample")
    path = Path(name)
    if path.suffix in (".jsonl", ".json") or path.exists():
        return hold_out(read_jsonl(path), seed)
    raise UserError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_NAMES)}, or a .jsonl file")


def load_grpo_dataset(config: GRPOConfig):
    """The run's data as a DatasetDict with `train` and `eval` splits, capped by max_samples / max_eval_samples."""
    import datasets

    train, evaluation = load_source(config.custom_data or config.dataset_name, config.seed)
    if config.max_samples is not None and len(train) > config.max_samples:
        train = train.select(range(config.max_samples))
    if len(evaluation) > config.max_eval_samples:
        evaluation = evaluation.select(range(config.max_eval_samples))
    logger.info("data: %d training prompts, %d evaluation prompts (%s)", len(train), len(evaluation),
                config.custom_data or config.dataset_name)
    return datasets.DatasetDict({"train": train, "eval": evaluation})


def create_grpo_dataloader(model_name: str | None = None, dataset_name: str = SAMPLE_DATASET,
                           max_samples: int | None = None, batch_size: int = 8, seed: int = 42):
    """(data_loader, dataset): a torch DataLoader over the training prompts, and the DatasetDict behind it.

    `dataset_name` is a preset key or a local JSONL file. `model_name` is accepted for the original's call
    signature; prompts are fitted to the model's token budget later, when the trainer has its tokenizer.
    """
    from torch.utils.data import DataLoader

    config = GRPOConfig(dataset_name=dataset_name, max_samples=max_samples, seed=seed)
    if model_name:
        config.model_name = model_name
    dataset = load_grpo_dataset(config)
    data_loader = DataLoader(dataset["train"], batch_size=batch_size, shuffle=False, collate_fn=list)
    return data_loader, dataset
