"""Reading and writing the tool's JSON files.

Writes are atomic: a reader (or a crash) sees either the old file or the complete new one, never half of it. Reads turn
every way a file can be unreadable into one UserError that names the file.

    write_json_atomic("settings.json", {"a": 1}); read_json_file("settings.json", "config file")
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from errors import UserError


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


def read_json_file(path: str | os.PathLike, what: str) -> Any:
    """The parsed contents of a JSON file; `what` names the file in the error ("config file", "reward config")."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{what} {path}: not readable JSON ({error})") from None
