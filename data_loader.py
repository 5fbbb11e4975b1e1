"""Training data for GRPO: every source becomes a `prompt` column plus `chosen` / `rejected` reference answers.

A prompt is plain text or a list of chat messages; `chosen` / `rejected` are the preferred and dispreferred answers as
text, or None where the source has none (the accuracy reward uses them). This module knows sources and schemas,
nothing of models: fitting prompts to a tokenizer happens in the trainer.

Sources: the four hub datasets of the original (through `datasets.load_dataset`, streaming optional), the bundled
sample data (`sample`), and local `.jsonl` / `.json` / `.parquet` files in any of the schemas below, detected from
their columns:

- custom: `{"prompt", "chosen"?, "rejected"?}`, the original's format; also prompt-only rows, chat-message prompts,
  and TL;DR preference rows (trl-lib/tldr-preference has exactly these columns).
- ultrafeedback_binarized: `prompt` text, `chosen` / `rejected` as [user turn, assistant turn] message lists.
- hh_rlhf: `chosen` / `rejected` as whole "\\n\\nHuman: ... \\n\\nAssistant: ..." dialogues, no prompt column.
- openbmb: `instruction` and rated `completions` (openbmb/UltraFeedback).

Rows that repeat an earlier prompt are dropped (many preference pairs share a prompt; GRPO samples its own
completions, so one row per prompt is what it needs). A local file's unusable row is an error naming its line; a hub
dataset's unusable rows are dropped and counted.

    data_loader, dataset = create_grpo_dataloader(dataset_name="sample", max_samples=100)
    train, evaluation = dataset["train"], dataset["eval"]
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from os.path import commonprefix
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from errors import UserError
from grpo_tool.data_files import FILE_BUILDERS, file_rows, read_file_table, row_label
from messages import answer_text, is_message_list, message_text

if TYPE_CHECKING:
    from config import GRPOConfig

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_FILES = {"train": DATA_DIR / "sample_train.jsonl", "eval": DATA_DIR / "sample_eval.jsonl"}
EVAL_FRACTION = 0.1  # share of a source without an evaluation split that is held out for it
MAX_HELD_OUT = 500  # ... but never more rows than this
# An air-gapped cluster keeps copies of hub dataset repositories here, as {mirror}/{owner}/{name}/.
MIRROR_VARIABLE = "GRPO_DATASET_MIRROR"
OUTPUT_COLUMNS = ("prompt", "chosen", "rejected", "problem")
HH_HUMAN, HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
EXCLUDED_OPENBMB_SOURCES = {"truthful_qa"}  # its completions were rated against answers outside the data


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    train_split: str
    eval_split: str | None  # None: hold out part of the training split
    schema: str


# The dataset registry: each preset's hub id, splits and schema, in one place.
HUB_SOURCES = {
    "ultrafeedback": HubSource("HuggingFaceH4/ultrafeedback_binarized", "train_prefs", "test_prefs",
                               "ultrafeedback_binarized"),
    "ultrafeedback_large": HubSource("openbmb/UltraFeedback", "train", None, "openbmb"),
    "hh_rlhf": HubSource("Anthropic/hh-rlhf", "train", "test", "hh_rlhf"),
    "openai_summarize": HubSource("trl-lib/tldr-preference", "train", "validation", "custom"),
}
SAMPLE_DATASET = "sample"  # the bundled data/sample_*.jsonl
DATASET_NAMES = (*HUB_SOURCES, SAMPLE_DATASET)
FORMATS_ACCEPTED = ('{"prompt", "chosen", "rejected"} (chosen/rejected optional; prompt text or chat messages), '
                    "UltraFeedback-binarized rows (chosen/rejected message lists), hh-rlhf rows (chosen/rejected "
                    "dialogues), openbmb/UltraFeedback rows (instruction, completions)")


# schemas

def detect_schema(columns: list[str], row: dict) -> str | None:
    """Which schema a table with these columns (and this first row) is in; None when none fits."""
    names = set(columns)
    if {"instruction", "completions"} <= names:
        return "openbmb"
    if "prompt" in names:
        return "ultrafeedback_binarized" if isinstance(row.get("chosen"), list) else "custom"
    if {"chosen", "rejected"} <= names and HH_ASSISTANT in str(row.get("chosen") or ""):
        return "hh_rlhf"
    return None


def prompt_problem(prompt: Any) -> str | None:
    """Why a prompt cannot be trained on, or None."""
    if isinstance(prompt, str):
        return None if prompt.strip() else "'prompt' is empty"
    if isinstance(prompt, list):
        if not is_message_list(prompt):
            return "'prompt' is a list but not of chat messages like {\"role\": \"user\", \"content\": \"...\"}"
        if not any(m["role"] == "user" for m in prompt):
            return "'prompt' has no user message"
        return None
    return f"'prompt' must be text or a list of chat messages, got {type(prompt).__name__}"


def present_fields(batch: dict, index: int) -> str:
    return ", ".join(name for name, values in batch.items() if values[index] is not None) or "nothing"


def convert_custom(batch: dict) -> dict:
    rows = len(next(iter(batch.values())))
    output = {name: [] for name in OUTPUT_COLUMNS}
    prompts = batch.get("prompt", [None] * rows)
    for index in range(rows):
        prompt = prompts[index]
        problem = (f"no 'prompt' field (found: {present_fields(batch, index)})" if prompt is None
                   else prompt_problem(prompt))
        output["prompt"].append(None if problem else prompt)
        output["problem"].append(problem)
        for name in ("chosen", "rejected"):
            output[name].append(answer_text(batch[name][index]) if name in batch else None)
    return output


def parse_hh_dialogue(text: str) -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{"role": "user", ...}, {"role": "assistant", ...}]."""
    parts = HH_TURN.split(text)
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts) - 1, 2)]


def first_turn(text: str) -> str:
    """The assistant answer at the start of `text`, up to the next human turn."""
    end = text.find(HH_HUMAN)
    return (text if end < 0 else text[:end]).strip()


def extract_hh_prompt(chosen: str, rejected: str) -> tuple[list[dict] | None, str | None, str | None, str | None]:
    """(prompt messages, chosen answer, rejected answer, problem) of one hh-rlhf pair.

    The prompt is the dialogue both sides share, cut back to the last assistant turn they both start; the answers
    are each side's first assistant turn after it. Where the two differ in an earlier turn, the prompt stops before
    that turn, so it is still a real shared context.
    """
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        return None, None, None, "'chosen' and 'rejected' must both be dialogue strings"
    cut = commonprefix([chosen, rejected]).rfind(HH_ASSISTANT)
    if cut < 0:
        return None, None, None, "no shared '\\n\\nHuman: ... \\n\\nAssistant:' dialogue in 'chosen' and 'rejected'"
    messages = parse_hh_dialogue(chosen[:cut])
    if not messages or messages[-1]["role"] != "user" or not messages[-1]["content"]:
        return None, None, None, "the dialogue does not end with a human turn before the answers"
    start = cut + len(HH_ASSISTANT)
    return messages, first_turn(chosen[start:]) or None, first_turn(rejected[start:]) or None, None


def convert_hh_rlhf(batch: dict) -> dict:
    output = {name: [] for name in OUTPUT_COLUMNS}
    for chosen, rejected in zip(batch["chosen"], batch["rejected"]):
        prompt, chosen_answer, rejected_answer, problem = extract_hh_prompt(chosen, rejected)
        for name, value in zip(OUTPUT_COLUMNS, (prompt, chosen_answer, rejected_answer, problem)):
            output[name].append(value)
    return output


def mean_rating(completion: dict) -> float | None:
    """The mean of a completion's aspect ratings; ratings are strings and "N/A" ones are left out."""
    ratings = []
    for aspect in (completion.get("annotations") or {}).values():
        for entry in aspect if isinstance(aspect, list) else [aspect]:
            try:
                ratings.append(float(entry["Rating"]))
            except (TypeError, KeyError, ValueError):
                continue
    return sum(ratings) / len(ratings) if ratings else None


def convert_openbmb(batch: dict) -> dict:
    """Prompt = instruction; chosen / rejected = the best / worst rated completion (rejected None when one is rated)."""
    output = {name: [] for name in OUTPUT_COLUMNS}
    sources = batch.get("source") or [None] * len(batch["instruction"])
    for instruction, completions, source in zip(batch["instruction"], batch["completions"], sources):
        rated = sorted(((rating, c.get("response")) for c in completions or []
                        if (rating := mean_rating(c)) is not None and c.get("response")), key=lambda pair: pair[0])
        problem = prompt_problem(instruction) if instruction is not None else "no 'instruction' field"
        keep = problem is None and source not in EXCLUDED_OPENBMB_SOURCES
        output["prompt"].append(instruction if keep else None)
        output["chosen"].append(rated[-1][1] if keep and rated else None)
        output["rejected"].append(rated[0][1] if keep and len(rated) > 1 else None)
        output["problem"].append(problem)
    return output


CONVERTERS = {
    "custom": convert_custom,
    # The same rule: answer_text takes the last assistant turn of the chosen and rejected conversations.
    "ultrafeedback_binarized": convert_custom,
    "hh_rlhf": convert_hh_rlhf,
    "openbmb": convert_openbmb,
}


def convert(dataset, schema: str):
    """Rows in the common shape (prompt, chosen, rejected, problem); prompt None marks a row to leave out."""
    return dataset.map(CONVERTERS[schema], batched=True, batch_size=1000, remove_columns=dataset.column_names)


def column_values(dataset, name: str) -> list:
    """One column as a Python list, read through Arrow (datasets' row-by-row Column is ~100x slower)."""
    return dataset.with_format("arrow")[name].to_pylist()


def prompt_key(prompt: Any):
    """A hashable stand-in for a prompt, equal for equal prompts."""
    if isinstance(prompt, str):
        return prompt
    return tuple((message.get("role"), message_text(message)) for message in prompt)


def convert_local_file(path: Path):
    """A local file converted to the common shape; an unusable row is an error naming its line."""
    import datasets

    if path.suffix == ".jsonl" and path.is_file():
        with path.open("rb") as handle:
            if handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"[":
                raise UserError(f"{path}: a JSON array, not JSON Lines: rename it to .json, or write one object a line")

    table = read_file_table(path)
    if len(table) == 0:
        raise UserError(f"{path}: no rows; each line must be one JSON object with a 'prompt'")
    if isinstance(table.features.get("prompt"), datasets.Json):
        # datasets keeps a column whose rows differ in type (text in some, message lists in others) as raw JSON.
        raise UserError(f"{path}: some prompts are text and some are message lists; use one form per file")
    try:
        schema = detect_schema(table.column_names, table[0])
        if schema is None:
            raise UserError(f"{path}: unrecognised columns ({', '.join(table.column_names)}); accepted formats: "
                            f"{FORMATS_ACCEPTED}")
        rows = convert(table, schema)
    except UnicodeDecodeError:
        file_rows(path)  # names the line that is not UTF-8
        raise
    problems = column_values(rows, "problem")
    first_bad = next((index for index, problem in enumerate(problems) if problem), None)
    if first_bad is not None:
        raise UserError(f"{path} {row_label(path, first_bad)}: {problems[first_bad]}")
    return finish(rows, str(path))


def finish(rows, source: str):
    """Drop left-out rows and repeated prompts from an in-memory table, saying how many went."""
    keep, seen, left_out, repeated = [], set(), 0, 0
    for index, prompt in enumerate(column_values(rows, "prompt")):
        if prompt is None:
            left_out += 1
            continue
        key = prompt_key(prompt)
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        keep.append(index)
    if left_out or repeated:
        logger.info("%s: left out %d unusable rows and %d repeated prompts", source, left_out, repeated)
    if len(keep) < len(rows):
        rows = rows.select(keep)
    return rows.select_columns(["prompt", "chosen", "rejected"])


def hub_location(repo_id: str) -> str:
    mirror = os.environ.get(MIRROR_VARIABLE)
    if mirror and (Path(mirror) / repo_id).is_dir():
        return str(Path(mirror) / repo_id)
    return repo_id


def load_hub_split(source: HubSource, split: str, streaming: bool):
    import datasets

    location = hub_location(source.repo_id)
    try:
        return datasets.load_dataset(location, split=split, streaming=streaming)
    except (ConnectionError, OSError, datasets.exceptions.DatasetsError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"dataset {source.repo_id} ({split}) could not be loaded: {first_line}. Without network "
                        f"access, download it where there is (huggingface-cli download --repo-type dataset "
                        f"{source.repo_id} --local-dir DIR/{source.repo_id}) and set {MIRROR_VARIABLE}=DIR, or "
                        "convert it to JSONL and pass --custom-data FILE") from None


def hub_split(source: HubSource, split: str):
    table = load_hub_split(source, split, streaming=False)
    if len(table) and detect_schema(table.column_names, table[0]) != source.schema:
        raise UserError(f"dataset {source.repo_id}: expected {source.schema} rows, found columns "
                        f"{', '.join(table.column_names)}")
    return finish(convert(table, source.schema), f"{source.repo_id} ({split})")


def hold_out(dataset, seed: int):
    """Split one source into train and eval rows; both must end up non-empty."""
    if len(dataset) < 2:
        raise UserError(f"only {len(dataset)} usable row(s): GRPO needs at least 2 (one is held out for evaluation)")
    eval_rows = min(MAX_HELD_OUT, max(1, round(len(dataset) * EVAL_FRACTION)))
    split = dataset.train_test_split(test_size=eval_rows, seed=seed, shuffle=True)
    return split["train"], split["test"]


def as_dataset_dict(dataset, config: GRPOConfig):
    """What users pass to train(): a DatasetDict with train/eval, a single Dataset, or the (data_loader, dataset)
    pair, as a DatasetDict of train and eval; None loads the configured data."""
    import datasets

    if dataset is None:
        return load_grpo_dataset(config)
    if isinstance(dataset, tuple) and len(dataset) == 2:
        dataset = dataset[1]
    if isinstance(dataset, datasets.DatasetDict):
        train = dataset.get("train")
        evaluation = dataset.get("eval", dataset.get("test", dataset.get("validation")))
        if train is None:
            raise UserError(f"the dataset has splits {', '.join(dataset)}; a 'train' split is needed")
        if evaluation is None:
            train, evaluation = hold_out(train, config.seed)
        return datasets.DatasetDict({"train": train, "eval": evaluation})
    if isinstance(dataset, datasets.Dataset):
        train, evaluation = hold_out(dataset, config.seed)
        return datasets.DatasetDict({"train": train, "eval": evaluation})
    raise UserError(f"train() takes a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")


def resolve_hub_source(name: str) -> HubSource | None:
    if name in HUB_SOURCES:
        return HUB_SOURCES[name]
    return next((source for source in HUB_SOURCES.values() if source.repo_id == name), None)


def load_source(name: str, seed: int) -> tuple[Any, Any]:
    """(train, eval) of a dataset name, a hub id or a local file, in memory."""
    if name == SAMPLE_DATASET:
        return convert_local_file(SAMPLE_FILES["train"]), convert_local_file(SAMPLE_FILES["eval"])
    source = resolve_hub_source(name)
    if source is not None:
        train = hub_split(source, source.train_split)
        if source.eval_split is None:
            return hold_out(train, seed)
        return train, hub_split(source, source.eval_split)
    path = Path(name)
    if path.suffix in FILE_BUILDERS or path.exists():
        return hold_out(convert_local_file(path), seed)
    raise UserError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_NAMES)}, a supported hub id "
                    f"({', '.join(s.repo_id for s in HUB_SOURCES.values())}), or a .jsonl/.json/.parquet file")


# streaming

def readable(rows, name: str):
    """The rows of a stream; a row the reader cannot parse (found while training runs) is an error naming it."""
    iterator = iter(rows)
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001 - pyarrow and datasets each raise their own kind
            detail = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            raise UserError(f"{name}: a row could not be read while streaming ({detail}); each line must be one JSON "
                            "object") from None
        yield row


def unique_usable_rows(rows, name: str = "the stream"):
    """Generator over converted rows, skipping unusable ones and repeated prompts. A fresh pass starts a fresh
    memory of prompts, so a second epoch over the stream sees every row again."""
    seen = set()
    for row in readable(rows, name):
        if row["prompt"] is None:
            continue
        key = prompt_key(row["prompt"])
        if key in seen:
            continue
        seen.add(key)
        yield {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}


def open_stream(name: str, split: str | None = None):
    """(streamed table, schema, hub source or None) of a hub dataset or a local file, nothing downloaded ahead."""
    import datasets

    source = resolve_hub_source(name)
    if source is not None:
        table = load_hub_split(source, split or source.train_split, streaming=True)
    else:
        path = Path(name)
        if path.suffix not in FILE_BUILDERS or not path.is_file():
            raise UserError(f"streaming reads a hub dataset or a .jsonl/.json/.parquet file; {name!r} is neither")
        table = datasets.load_dataset(FILE_BUILDERS[path.suffix], data_files=str(path), split="train",
                                      streaming=True)
    first = next(readable(table, name), None)
    if first is None:
        raise UserError(f"{name}: no rows")
    schema = detect_schema(list(first), first)
    if schema is None or (source is not None and schema != source.schema):
        raise UserError(f"{name}: unrecognised columns ({', '.join(first)}); accepted formats: {FORMATS_ACCEPTED}")
    return table, schema, source


def stream_rows(table, schema: str, name: str):
    import datasets

    converted = table.map(CONVERTERS[schema], batched=True, batch_size=1000,
                          remove_columns=list(table.column_names or next(readable(table, name))))
    return datasets.IterableDataset.from_generator(unique_usable_rows, gen_kwargs={"rows": converted, "name": name})


def load_streaming(name: str, config: GRPOConfig):
    """(train as an IterableDataset read while training runs, eval in memory)."""
    import datasets

    table, schema, source = open_stream(name)
    train = stream_rows(table, schema, name)
    if source is None or source.eval_split is None:
        # No evaluation split: the stream's first rows are held out for it.
        evaluation = list(train.take(config.max_eval_samples))
        train = train.skip(len(evaluation))
    else:
        eval_table, eval_schema, _ = open_stream(name, source.eval_split)
        evaluation = list(stream_rows(eval_table, eval_schema, name).take(config.max_eval_samples))
    if not evaluation:
        raise UserError(f"{name}: no usable evaluation rows")
    if config.max_samples is not None:
        train = train.take(config.max_samples)
    return train, datasets.Dataset.from_list(evaluation)


def load_grpo_dataset(config: GRPOConfig):
    """The run's data: a DatasetDict with `train` and `eval`, capped by max_samples / max_eval_samples.

    With config.streaming, `train` is an IterableDataset read while training runs."""
    import datasets

    name = config.custom_data or config.dataset_name
    if config.streaming:
        train, evaluation = load_streaming(name, config)
        logger.info("data: streaming training prompts, %d evaluation prompts (%s)", len(evaluation), name)
        return datasets.DatasetDict({"train": train, "eval": evaluation})
    train, evaluation = load_source(name, config.seed)
    if config.max_samples is not None and len(train) > config.max_samples:
        train = train.select(range(config.max_samples))
    if len(evaluation) > config.max_eval_samples:
        evaluation = evaluation.select(range(config.max_eval_samples))
    logger.info("data: %d training prompts, %d evaluation prompts (%s)", len(train), len(evaluation), name)
    return datasets.DatasetDict({"train": train, "eval": evaluation})


def create_grpo_dataloader(model_name: str | None = None, dataset_name: str = SAMPLE_DATASET,
                           max_samples: int | None = None, batch_size: int = 8, seed: int = 42):
    """(data_loader, dataset): a torch DataLoader over the training prompts, and the DatasetDict behind it.

    `dataset_name` is a preset key, a supported hub id, or a local file. `model_name` is accepted for the original's
    call signature; prompts are fitted to the model's tokenizer later, by the trainer that loads it.
    """
    from torch.utils.data import DataLoader

    from config import GRPOConfig  # config reads this module's registry, so it is imported here, not at the top

    dataset = load_grpo_dataset(GRPOConfig(dataset_name=dataset_name, max_samples=max_samples, seed=seed))
    data_loader = DataLoader(dataset["train"], batch_size=batch_size, shuffle=False, collate_fn=list)
    return data_loader, dataset
