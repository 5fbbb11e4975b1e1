"""Reading a local data file (.jsonl, .json, .parquet) into a table, with the line to blame when a row is bad.

datasets reads the file first; only when it cannot (or to name a bad row's line) is the file read line by line here.

    from data_loader import SAMPLE_FILES
    table = read_file_table(SAMPLE_FILES["train"])
"""

from __future__ import annotations

import json
from pathlib import Path

from errors import UserError

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def file_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for each row of a JSON Lines or JSON file, read without datasets, for exact error lines.

    Taken only when datasets could not read the file, or to name the line of a bad row."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    if path.suffix == ".json" and raw.lstrip()[:1] == b"[":
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


def row_label(path: Path, index: int) -> str:
    """How to point a user at the index-th row of a file: its line in a JSON Lines file, else its position."""
    if path.suffix in (".jsonl", ".json"):
        rows = file_rows(path)
        if index < len(rows):
            return f"line {rows[index][0]}" if path.suffix == ".jsonl" else f"row {rows[index][0]}"
    return f"row {index + 1}"


def read_file_table(path: Path):
    """A local file as a datasets.Dataset of its raw columns."""
    import datasets

    builder = FILE_BUILDERS.get(path.suffix)
    if builder is None:
        raise UserError(f"{path}: unsupported file type {path.suffix or '(none)'}; use .jsonl, .json or .parquet")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    verbosity = datasets.logging.get_verbosity()
    # datasets logs its own parse errors before raising; ours (below) names the line, so theirs stays quiet.
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as error:  # noqa: BLE001 - datasets wraps every parse problem; our own pass names the line
        if builder == "parquet":
            raise UserError(f"{path}: not a readable parquet file ({error})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    # Slow path: the line to blame, or the rows rebuilt (datasets rejects some valid files, such as ones with
    # whitespace-only lines).
    records = file_rows(path)
    if not records:
        raise UserError(f"{path}: no rows; each line must be one JSON object with a 'prompt'")
    for number, row in records:
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number}: expected a JSON object like "
                            '{"prompt": ..., "chosen": ..., "rejected": ...}, got ' + type(row).__name__)
    prompt_types = {type(row.get("prompt")) for _, row in records} - {type(None)}
    if len(prompt_types) > 1:
        raise UserError(f"{path}: some prompts are text and some are message lists; use one form per file")
    try:
        return datasets.Dataset.from_list([row for _, row in records])
    except Exception as error:  # noqa: BLE001 - pyarrow's message is the useful part
        raise UserError(f"{path}: rows disagree in structure ({str(error).splitlines()[0]}); give every row the "
                        "same fields with the same types") from None
