"""Reading and writing the tool's JSON files.

Writes are atomic: a reader (or a crash) sees either the old file or the complete new one, never half of it. Reads turn
every way a file can be unreadable into one UserError that names the file.

    write_json_atomic("settings.json", {"a": 1})
    assert read_json_file("settings.json", "config file") == {"a": 1}
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from grpo_tool.errors import UserError


def read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


CURRENT_UMASK = read_umask()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~CURRENT_UMASK)  # mkstemp makes files private; give them the usual mode
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        # Ctrl-C between mkstemp and replace must not leave the temporary file behind.
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def read_text_file(path: str | os.PathLike, what: str) -> str:
    """A settings file's text: UTF-8, with or without a byte-order mark; UTF-16 (what some Windows editors save) is
    read too. Anything else is an error that says to save it as UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UserError(f"{what} {path}: cannot be read ({error.strerror})") from None
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise UserError(f"{what} {path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are all different: a repeated key would silently keep only its last value."""
    data = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"the key {key!r} appears twice")
        data[key] = value
    return data


def reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows; give a finite number")


def read_json_file(path: str | os.PathLike, what: str) -> Any:
    """The parsed contents of a JSON file; `what` names the file in the error ("config file", "reward config").
    NaN, Infinity and repeated keys, which Python's json accepts, are errors here."""
    text = read_text_file(path, what)
    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_constant=reject_constant)
    except json.JSONDecodeError as error:
        raise UserError(f"{what} {path}: not readable JSON ({error})") from None
    except ValueError as error:
        raise UserError(f"{what} {path}: {error}") from None
