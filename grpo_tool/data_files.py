"""Local data as a table: a .jsonl / .json file (either may be gzip-compressed, .jsonl.gz / .json.gz), a .parquet
file, a folder of such files (the shards of one dataset), or a folder written by datasets' `save_to_disk`.

`locate` decides which files a path stands for; reading, streaming, the config check and the line to blame for a
bad row all go through it. datasets reads the data first; only when it cannot (or to name a bad row's line) is a
JSON file read line by line here.

    from grpo_tool.datasets import SAMPLE_FILES
    table = read_table(SAMPLE_FILES["train"])
    assert len(table) == 225 and table.column_names == ["prompt", "chosen", "rejected"]    # the file's rows and columns
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from grpo_tool.errors import UserError

FILE_BUILDERS = {".jsonl": "json", ".jsonl.gz": "json", ".json": "json", ".json.gz": "json", ".parquet": "parquet"}
ACCEPTED = ("a .jsonl, .jsonl.gz, .json, .json.gz or .parquet file, a folder of such files, or a folder written by "
            "datasets' save_to_disk")
SAVED_MARKERS = ("state.json", "dataset_dict.json")  # written at the top by Dataset / DatasetDict.save_to_disk


@dataclass(frozen=True)
class DataSource:
    builder: str | None  # the datasets builder of `files` ("json" or "parquet"); None: a save_to_disk folder
    files: tuple[Path, ...]  # in the order their rows are read


def data_suffix(path: Path) -> str:
    """The suffix that says how to read a file: '.jsonl.gz' for compressed JSON Lines, else its last suffix."""
    if path.suffix == ".gz":
        return "".join(path.suffixes[-2:])
    return path.suffix


def locate(path: Path) -> DataSource:
    """The files a data path stands for, found without reading them; a path that is no data is a one-line error."""
    if path.is_dir():
        return locate_folder(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; use {ACCEPTED}")
    builder = FILE_BUILDERS.get(data_suffix(path))
    if builder is None:
        raise UserError(f"{path}: unsupported file type {data_suffix(path) or '(none)'}; use {ACCEPTED}")
    return DataSource(builder, (path,))


def locate_folder(folder: Path) -> DataSource:
    if any((folder / marker).is_file() for marker in SAVED_MARKERS):
        return DataSource(None, (folder,))
    try:
        # Hidden files are an editor's or a file system's, never a shard (.DS_Store, Spark's .crc checksums).
        entries = sorted((entry for entry in folder.iterdir() if not entry.name.startswith(".")),
                         key=lambda entry: entry.name)
    except OSError as error:
        raise UserError(f"{folder}: cannot read the folder ({error.strerror})") from None
    shards = [entry for entry in entries if entry.is_file() and data_suffix(entry) in FILE_BUILDERS]
    if not shards:
        if not entries:
            raise UserError(f"{folder}: an empty folder; use {ACCEPTED}")
        found = sorted({f"{entry.name}/" if entry.is_dir() else data_suffix(entry) or entry.name
                        for entry in entries})
        raise UserError(f"{folder}: no data files in this folder (found {', '.join(found[:5])}); use {ACCEPTED}")
    first_of_each = {FILE_BUILDERS[data_suffix(shard)]: shard.name for shard in reversed(shards)}
    if len(first_of_each) > 1:
        raise UserError(f"{folder}: mixes JSON and Parquet shards ({first_of_each['json']}, "
                        f"{first_of_each['parquet']}); keep one kind of file in a data folder")
    return DataSource(FILE_BUILDERS[data_suffix(shards[0])], tuple(shards))


def data_path_problem(path: str | Path, setting: str = "custom data") -> str | None:
    """Why custom data (or the `setting` that names a data file) at `path` cannot be read, found without reading it
    (for the config check); None if it may."""
    try:
        locate(Path(path).expanduser())
    except UserError as error:
        return f"{setting} {error}"
    return None


def file_bytes(path: Path, limit: int = -1) -> bytes:
    """A file's bytes (the first `limit` of them), decompressed when it is gzip."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read(limit)
        with path.open("rb") as handle:
            return handle.read(limit)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:  # EOFError: a cut-off download
        raise UserError(f"{path}: not a readable gzip file ({error or type(error).__name__})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None


def file_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for each row of a JSON Lines or JSON file, read without datasets, for exact error lines.

    Taken only when datasets could not read the file, or to name the line of a bad row."""
    raw = file_bytes(path)
    if data_suffix(path) in (".json", ".json.gz") and raw.lstrip()[:1] == b"[":
        try:
            rows = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
        except json.JSONDecodeError as error:
            raise UserError(f"{path} line {error.lineno}: not valid JSON ({error.msg})") from None
        return [(index + 1, row) for index, row in enumerate(rows)]
    records = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{path} line {number}: not UTF-8 text; save the file as UTF-8") from None
        except json.JSONDecodeError as error:
            raise UserError(f"{path} line {number}: not valid JSON ({error.msg} at column {error.colno}); "
                            "each line must be one JSON object") from None
        records.append((number, row))
    return records


def check_json_text(path: Path) -> None:
    """Raise the error naming the first line of the JSON data at `path` that is not UTF-8 or not JSON, if any."""
    source = locate(path)
    if source.builder == "json":
        for file in source.files:
            file_rows(file)


def row_place(path: Path, index: int) -> str:
    """Where to point a user at the index-th row read from `path`: the file (the shard, in a folder) and its line in
    JSON Lines, else its position."""
    source = locate(path)
    if source.builder is None:
        return f"{path} row {index + 1}"
    for file in source.files:
        if source.builder == "parquet":
            import pyarrow.parquet

            count = pyarrow.parquet.read_metadata(file).num_rows
            if index < count:
                return f"{file} row {index + 1}"
        else:
            rows = file_rows(file)
            count = len(rows)
            if index < count:
                return f"{file} {'row' if data_suffix(file) in ('.json', '.json.gz') else 'line'} {rows[index][0]}"
        index -= count
    return f"{path} row {index + 1}"


def refuse_jsonl_array(file: Path) -> None:
    """A .jsonl file holding one JSON array is a common slip; say so instead of blaming its first line."""
    suffix = data_suffix(file)
    if suffix in (".jsonl", ".jsonl.gz") and file_bytes(file, 4096).lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"[":
        raise UserError(f"{file}: a JSON array, not JSON Lines: rename it to {suffix.replace('.jsonl', '.json')}, "
                        "or write one object a line")


def load_saved(folder: Path, in_memory: bool = False):
    import datasets

    try:
        return datasets.load_from_disk(str(folder), keep_in_memory=in_memory)
    except Exception as error:  # noqa: BLE001 - datasets and pyarrow each raise their own kind
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"{folder}: not a readable save_to_disk folder ({detail})") from None


def read_saved(folder: Path, in_memory: bool = True):
    """A save_to_disk folder as a Dataset: a DatasetDict's `train` split, or its only one."""
    import datasets

    saved = load_saved(folder)  # memory-mapped: opening it reads no rows
    if isinstance(saved, datasets.DatasetDict):
        if "train" not in saved and len(saved) != 1:
            raise UserError(f"{folder}: a saved DatasetDict with splits {', '.join(saved)} and none named 'train'; "
                            f"give the folder of the split to train on, such as {folder / next(iter(saved))}")
        split = "train" if "train" in saved else next(iter(saved))
        saved, folder = saved[split], folder / split  # DatasetDict.save_to_disk writes each split in its own folder
    # Read into memory to train on: a table mapped from the user's folder would make every later map() write its
    # cache files into that folder.
    return load_saved(folder, in_memory=True) if in_memory else saved


def read_table(path: Path):
    """Local data (a file or a folder, see `locate`) as one datasets.Dataset of its raw columns."""
    import datasets

    source = locate(path)
    if source.builder is None:
        return read_saved(path)
    for file in source.files:
        refuse_jsonl_array(file)
    verbosity = datasets.logging.get_verbosity()
    # datasets logs its own parse errors before raising; ours (below) names the line, so theirs stays quiet.
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        return datasets.load_dataset(source.builder, data_files=[str(file) for file in source.files], split="train")
    except Exception as error:  # noqa: BLE001 - datasets wraps every parse problem; our own pass names the line
        if source.builder == "parquet":
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UserError(f"{path}: not a readable parquet file ({detail})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    # Slow path: the line to blame, or the rows rebuilt (datasets rejects some valid files, such as ones with
    # whitespace-only lines).
    rows = []
    for file in source.files:
        for number, row in file_rows(file):
            if not isinstance(row, dict):
                raise UserError(f"{file} line {number}: expected a JSON object like "
                                '{"prompt": ..., "chosen": ..., "rejected": ...}, got ' + type(row).__name__)
            rows.append(row)
    if not rows:
        raise UserError(f"{path}: no rows; each line must be one JSON object with a 'prompt'")
    prompt_types = {type(row.get("prompt")) for row in rows} - {type(None)}
    if len(prompt_types) > 1:
        raise UserError(f"{path}: some prompts are text and some are message lists; use one form per file")
    try:
        return datasets.Dataset.from_list(rows)
    except Exception as error:  # noqa: BLE001 - pyarrow's message is the useful part
        raise UserError(f"{path}: rows disagree in structure ({str(error).splitlines()[0]}); give every row the "
                        "same fields with the same types") from None


def stream_table(path: Path):
    """Local data (a file or a folder, see `locate`) as a datasets.IterableDataset, read while training runs."""
    import datasets

    source = locate(path)
    if source.builder is None:
        return read_saved(path, in_memory=False).to_iterable_dataset()
    for file in source.files:
        refuse_jsonl_array(file)
    return datasets.load_dataset(source.builder, data_files=[str(file) for file in source.files], split="train",
                                 streaming=True)
