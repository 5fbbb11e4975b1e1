"""Training data for GRPO: every source becomes a `prompt` column plus its other columns, which reach the rewards.

A prompt is plain text or a list of chat messages. Every other column of the source (an `answer`, a `solution`,
test cases, metadata) is kept and reaches every reward function as a keyword argument, one value per completion, as
TRL passes dataset columns; preference sources have `chosen` / `rejected` as text (the accuracy reward uses them).
The schemas, detected from the columns, are in grpo_tool/schemas.py. This module knows sources and splits, nothing
of models: fitting prompts to a tokenizer happens in the trainer.

Sources: the hub datasets of the presets (through `datasets.load_dataset`, streaming optional), the bundled sample
data (`sample`), and local data in any schema: a `.jsonl` / `.json` file (or either gzip-compressed), a `.parquet`
file, a folder of such shards, or a folder written by datasets' `save_to_disk` (grpo_tool/data_files.py reads them).

Rows that repeat an earlier prompt are dropped (many preference pairs share a prompt; GRPO samples its own
completions, so one row per prompt is what it needs). A local unusable row is an error naming its file (the shard,
in a folder) and line; a hub dataset's unusable rows are dropped and counted. A column no reward could receive under
its name (`completions`, `trainer_state`, ...) is an error, found before any model loads.

    data_loader, dataset = create_grpo_dataloader(dataset_name="sample", max_samples=100)
    train, evaluation = dataset["train"], dataset["eval"]
    assert len(train) == 100 and train.column_names == ["prompt", "chosen", "rejected"]    # preference pairs
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from grpo_tool.data_files import (
    ACCEPTED,
    FILE_BUILDERS,
    check_json_text,
    data_suffix,
    read_table,
    row_place,
    stream_table,
)
from grpo_tool.datasets import DATASET_NAMES, HUB_SOURCES, SAMPLE_DATASET, SAMPLE_FILES, HubSource
from grpo_tool.errors import UserError
from grpo_tool.messages import message_text
from grpo_tool.schemas import ROW_PROBLEM, SCHEMAS, Schema, detect_schema, passed_on, reward_column_problem, schema_for
from grpo_tool.settings import GRPOConfig

logger = logging.getLogger(__name__)

EVAL_FRACTION = 0.1  # share of a source without an evaluation split that is held out for it
MAX_HELD_OUT = 500  # ... but never more rows than this
# An air-gapped cluster keeps copies of hub dataset repositories here, as {mirror}/{owner}/{name}/.
MIRROR_VARIABLE = "GRPO_DATASET_MIRROR"


# schemas

def convert(dataset, schema: Schema, source: str):
    """Rows in the common shape, ROW_PROBLEM saying which to leave out; the columns passed on are checked first."""
    if problem := reward_column_problem(passed_on(dataset.column_names, schema), source):
        raise UserError(problem)
    return dataset.map(schema.convert, batched=True, batch_size=1000,
                       remove_columns=[name for name in dataset.column_names if name in schema.replaces])


def column_values(dataset, name: str) -> list:
    """One column as a Python list, read through Arrow (datasets' row-by-row Column is ~100x slower)."""
    return dataset.with_format("arrow")[name].to_pylist()


def prompt_key(prompt: Any):
    """A hashable stand-in for a prompt, equal for equal prompts."""
    if isinstance(prompt, str):
        return prompt
    return tuple((message.get("role"), message_text(message)) for message in prompt)


def convert_local_file(path: Path, prompt_column: str | None = None):
    """A local file or data folder converted to the common shape; an unusable row is an error naming its line."""
    import datasets

    table = read_table(path)
    if len(table) == 0:
        raise UserError(f"{path}: no rows; each line must be one JSON object with a 'prompt'")
    if isinstance(table.features.get("prompt"), datasets.Json):
        # datasets keeps a column whose rows differ in type (text in some, message lists in others) as raw JSON.
        raise UserError(f"{path}: some prompts are text and some are message lists; use one form per file")
    try:
        rows = convert(table, schema_for(table.column_names, table[0], prompt_column, str(path)), str(path))
    except UnicodeDecodeError:
        check_json_text(path)  # names the line that is not UTF-8
        raise
    problems = column_values(rows, ROW_PROBLEM)
    first_bad = next((index for index, problem in enumerate(problems) if problem), None)
    if first_bad is not None:
        raise UserError(f"{row_place(path, first_bad)}: {problems[first_bad]}")
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
    return rows.remove_columns(ROW_PROBLEM)


def hub_location(repo_id: str) -> str:
    mirror = os.environ.get(MIRROR_VARIABLE)
    if mirror and (Path(mirror) / repo_id).is_dir():
        return str(Path(mirror) / repo_id)
    return repo_id


def mirror_files(location: str, source: HubSource, split: str) -> tuple[str, list[str]]:
    """(the file format's builder, the files) of one split in a mirror, found as the hub's loader finds them: the
    configurations its README declares, else the configuration's own folder ({config}/{split}-*.parquet, the hub's
    layout), else the files of the whole folder."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(location, source.config_name)
    except ValueError:  # no configuration of that name: a README without the configs block, or no README
        if not source.config_name or not (Path(location) / source.config_name).is_dir():
            raise UserError(f"dataset mirror {location} declares no configuration {source.config_name!r} in its "
                            f"README.md and has no {source.config_name}/ folder: lay it out as the hub repository "
                            f"{source.repo_id} is ({source.config_name}/{split}-*.parquet)") from None
        builder = datasets.load_dataset_builder(location, data_dir=source.config_name)
    found = {str(name): list(files) for name, files in (builder.config.data_files or {}).items()}
    if not found.get(split):
        raise UserError(f"dataset mirror {location} has no {split!r} split (it has {', '.join(found) or 'none'}): "
                        f"lay it out as the hub repository {source.repo_id} is")
    return builder.name, found[split]


def load_hub_split(source: HubSource, split: str, streaming: bool):
    """One split of a hub dataset, or of its mirror. A mirror is loaded from its files by name, so that datasets'
    cache is keyed on those files (their paths and modification times): another mirror, or the same one with its
    files changed, is read anew rather than served from what an earlier one left in the cache (loaded as a folder,
    a mirror's cache is keyed on the repository's name alone)."""
    import datasets

    location = hub_location(source.repo_id)
    try:
        if location != source.repo_id:
            builder, files = mirror_files(location, source, split)
            return datasets.load_dataset(builder, data_files={split: files}, split=split, streaming=streaming)
        return datasets.load_dataset(location, source.config_name, split=split, streaming=streaming)
    except ValueError as error:  # an unknown configuration or split of the hub's own repository
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"dataset {source.repo_id} ({split}) could not be loaded: {first_line}") from None
    except (ConnectionError, OSError, datasets.exceptions.DatasetsError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"dataset {source.repo_id} ({split}) could not be loaded: {first_line}. Without network "
                        f"access, download it where there is (huggingface-cli download --repo-type dataset "
                        f"{source.repo_id} --local-dir DIR/{source.repo_id}) and set {MIRROR_VARIABLE}=DIR, or "
                        "convert it to JSONL and pass --custom-data FILE") from None


def hub_schema(source: HubSource, columns: list[str], row: dict, prompt_column: str | None) -> Schema:
    """The preset's schema, checked against what was downloaded (a --prompt-column replaces it)."""
    if prompt_column:
        return schema_for(columns, row, prompt_column, source.repo_id)
    if detect_schema(columns, row) != source.schema:
        raise UserError(f"dataset {source.repo_id}: expected {source.schema} rows, found columns {', '.join(columns)}")
    return SCHEMAS[source.schema]


def hub_split(source: HubSource, split: str, prompt_column: str | None):
    table = load_hub_split(source, split, streaming=False)
    name = f"{source.repo_id} ({split})"
    schema = hub_schema(source, table.column_names, table[0], prompt_column) if len(table) else SCHEMAS[source.schema]
    return finish(convert(table, schema, name), name)


def hold_out(dataset, seed: int):
    """Split one source into train and eval rows; both must end up non-empty."""
    if len(dataset) < 2:
        raise UserError(f"only {len(dataset)} usable row(s): GRPO needs at least 2 (one is held out for evaluation)")
    eval_rows = min(MAX_HELD_OUT, max(1, round(len(dataset) * EVAL_FRACTION)))
    split = dataset.train_test_split(test_size=eval_rows, seed=seed, shuffle=True)
    return split["train"], split["test"]


def as_dataset_dict(dataset, config: GRPOConfig):
    """What users pass to train(): a DatasetDict with train/eval, a single Dataset, or the (data_loader, dataset)
    pair, as a DatasetDict of train and eval; None loads the configured data. config.eval_data's rows, when it names
    a file, are the eval split."""
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
        train = in_common_shape(train, config, "the dataset's train split")
        if config.eval_data:  # the evaluation file named in the config replaces the dataset's own
            evaluation = eval_file_rows(config)
        elif evaluation is None:
            train, evaluation = hold_out(train, config.seed)
        elif isinstance(evaluation, datasets.Dataset) and len(evaluation) == 0:
            pass  # an empty eval split asks for no evaluation (GRPOTrainer.train then builds TRL's without one)
        else:
            evaluation = in_common_shape(evaluation, config, "the dataset's eval split")
    elif isinstance(dataset, datasets.Dataset) and config.eval_data:
        train, evaluation = in_common_shape(dataset, config, "the dataset"), eval_file_rows(config)
    elif isinstance(dataset, datasets.Dataset):
        train, evaluation = hold_out(in_common_shape(dataset, config, "the dataset"), config.seed)
    else:
        raise UserError(f"train() takes a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")
    for split, rows in (("train", train), ("eval", evaluation)):
        columns = [name for name in rows.column_names or () if name != "prompt"]
        if problem := reward_column_problem(columns, f"the dataset's {split} split"):
            raise UserError(problem)
    return datasets.DatasetDict({"train": train, "eval": evaluation})


def in_common_shape(rows, config: GRPOConfig, source: str):
    """A Dataset given to the Python API, read as a file of the same columns would be: any layout the tool detects
    (or config.prompt_column), its bad rows named, its empty and repeated prompts dropped. A stream is taken as it
    is: it was built from the configured data, already in the common shape."""
    import datasets

    if not isinstance(rows, datasets.Dataset):
        return rows
    if len(rows) == 0:
        raise UserError(f"{source}: no rows")
    if "prompt" in rows.column_names and config.prompt_column is None:
        return rows
    rows = convert(rows, schema_for(rows.column_names, rows[0], config.prompt_column, source), source)
    problems = column_values(rows, ROW_PROBLEM)
    first_bad = next((index for index, problem in enumerate(problems) if problem), None)
    if first_bad is not None:
        raise UserError(f"{source} row {first_bad + 1}: {problems[first_bad]}")
    return finish(rows, source)


def resolve_hub_source(name: str) -> HubSource | None:
    if name in HUB_SOURCES:
        return HUB_SOURCES[name]
    return next((source for source in HUB_SOURCES.values() if source.repo_id == name), None)


def load_source(name: str, seed: int, prompt_column: str | None = None, hold: bool = True) -> tuple[Any, Any]:
    """(train, eval) of a dataset name, a hub id or a local file, in memory. hold=False (an evaluation file of its
    own is given): every row trains, and eval is None."""
    if name == SAMPLE_DATASET:
        return (convert_local_file(SAMPLE_FILES["train"], prompt_column),
                convert_local_file(SAMPLE_FILES["eval"], prompt_column) if hold else None)
    source = resolve_hub_source(name)
    if source is not None:
        train = hub_split(source, source.train_split, prompt_column)
        if not hold:
            return train, None
        if source.eval_split is None:
            return hold_out(train, seed)
        return train, hub_split(source, source.eval_split, prompt_column)
    path = Path(name).expanduser()
    if data_suffix(path) in FILE_BUILDERS or path.exists():
        rows = convert_local_file(path, prompt_column)
        return hold_out(rows, seed) if hold else (rows, None)
    raise UserError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_NAMES)}, a supported hub id "
                    f"({', '.join(s.repo_id for s in HUB_SOURCES.values())}), or {ACCEPTED}")


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
        yield {name: value for name, value in row.items() if name != ROW_PROBLEM}


def open_stream(name: str, prompt_column: str | None, split: str | None = None):
    """(streamed table, its schema, its columns) of a hub dataset or local data, nothing downloaded ahead."""
    source = resolve_hub_source(name)
    if source is not None:
        table = load_hub_split(source, split or source.train_split, streaming=True)
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise UserError(f"streaming reads a hub dataset or local data ({ACCEPTED}); {name!r} is neither")
        table = stream_table(path)
    first = next(readable(table, name), None)
    if first is None:
        raise UserError(f"{name}: no rows")
    columns = list(table.column_names or first)
    if source is not None:
        schema = hub_schema(source, columns, first, prompt_column)
    else:
        schema = schema_for(columns, first, prompt_column, name)
    if problem := reward_column_problem(passed_on(columns, schema), name):
        raise UserError(problem)
    return table, schema, columns


def stream_rows(table, schema: Schema, columns: list[str], name: str):
    import datasets

    converted = table.map(schema.convert, batched=True, batch_size=1000,
                          remove_columns=[column for column in columns if column in schema.replaces])
    return datasets.IterableDataset.from_generator(unique_usable_rows, gen_kwargs={"rows": converted, "name": name})


def load_streaming(name: str, config: GRPOConfig):
    """(train as an IterableDataset read while training runs, eval in memory)."""
    import datasets

    source = resolve_hub_source(name)
    train = stream_rows(*open_stream(name, config.prompt_column), name)
    if config.eval_data:
        evaluation = eval_file_rows(config).to_list()
    elif source is None or source.eval_split is None:
        # No evaluation split: the stream's first rows are held out for it.
        evaluation = list(train.take(config.max_eval_samples))
        train = train.skip(len(evaluation))
    else:
        evaluation = list(stream_rows(*open_stream(name, config.prompt_column, source.eval_split), name)
                          .take(config.max_eval_samples))
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
    train, evaluation = load_source(name, config.seed, config.prompt_column, hold=not config.eval_data)
    if config.eval_data:
        evaluation = eval_file_rows(config)
    if config.max_samples is not None and len(train) > config.max_samples:
        train = train.select(range(config.max_samples))
    if len(evaluation) > config.max_eval_samples:
        evaluation = evaluation.select(range(config.max_eval_samples))
    logger.info("data: %d training prompts, %d evaluation prompts (%s)", len(train), len(evaluation),
                f"{name}; evaluation: {config.eval_data}" if config.eval_data else name)
    return datasets.DatasetDict({"train": train, "eval": evaluation})


def eval_file_rows(config: GRPOConfig):
    """--eval-data: the file's rows, in any layout custom_data takes, the first max_eval_samples of them."""
    rows = convert_local_file(Path(config.eval_data), config.prompt_column)
    return rows.select(range(config.max_eval_samples)) if len(rows) > config.max_eval_samples else rows


def create_grpo_dataloader(model_name: str | None = None, dataset_name: str = SAMPLE_DATASET,
                           max_samples: int | None = None, batch_size: int = 8, seed: int = 42):
    """(data_loader, dataset): a torch DataLoader over the training prompts, and the DatasetDict behind it.

    `dataset_name` is a preset key, a supported hub id, or a local file. `model_name` is accepted for the original's
    call signature; prompts are fitted to the model's tokenizer later, by the trainer that loads it.
    """
    from torch.utils.data import DataLoader


    dataset = load_grpo_dataset(GRPOConfig(dataset_name=dataset_name, max_samples=max_samples, seed=seed))
    data_loader = DataLoader(dataset["train"], batch_size=batch_size, shuffle=False, collate_fn=list)
    return data_loader, dataset
