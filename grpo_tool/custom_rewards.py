"""Reward functions the user names: `path/to/file.py:function` (a file of theirs) or `package.module:function` (an
importable module, as `trl grpo --reward_funcs` takes them, e.g. `trl.rewards:accuracy_reward`).

A name that ends in `.py`, holds a path separator or names an existing file is a file; otherwise it must be a dotted
module name. Each function is checked to take TRL's keyword arguments before any model loads.

    function = load_custom_reward("trl.rewards:accuracy_reward")    # or "my_rewards.py:correctness_reward"
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import os
import re
from collections.abc import Callable
from pathlib import Path

from errors import UserError

MODULE_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
SPEC_FORMS = "path/to/file.py:function_name or package.module:function_name"


def is_file_source(source: str) -> bool:
    return source.endswith(".py") or "/" in source or os.sep in source or Path(source).is_file()


def reward_function_problem(spec: str, flag: str = "--reward-fn") -> str | None:
    """What is wrong with a reward function's name that can be seen without importing anything, or None."""
    source, _, function_name = spec.rpartition(":")
    if not source or not function_name:
        return f"{flag} {spec!r}: give it as {SPEC_FORMS}"
    if is_file_source(source):
        return None if Path(source).is_file() else f"{flag} {spec!r}: no such file {source}"
    if not MODULE_NAME.fullmatch(source):
        return f"{flag} {spec!r}: {source!r} is neither a file nor a module name; give it as {SPEC_FORMS}"
    top = source.split(".")[0]
    if importlib.util.find_spec(top) is None:
        return (f"{flag} {spec!r}: no module named {top!r} is installed (and no file {source} exists); install it, "
                "or give the file as path/to/file.py:function_name")
    return None


def run_import(spec: str, flag: str, what: str, load: Callable[[], object]):
    """`load()`, with what it prints kept off the console and every failure turned into one error line."""
    printed = io.StringIO()
    try:
        # What the module prints while importing (argparse's usage, say) would break the one-line error.
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            return load()
    except SystemExit as stop:
        said = " ".join(printed.getvalue().split())[-200:]
        raise UserError(f"{flag} {spec!r}: importing {what} ended the program (exit status {stop.code}); a "
                        "reward module must not parse arguments or exit at import: put that under "
                        f"if __name__ == '__main__'" + (f" (it printed: {said})" if said else "")) from None
    except Exception as error:  # noqa: BLE001 - any failure in the user's module is reported as theirs
        where = f" at line {error.lineno}" if isinstance(error, SyntaxError) else ""
        raise UserError(f"{flag} {spec!r}: importing {what} failed{where}: {type(error).__name__}: "
                        f"{error}") from None


def import_file(path: Path):
    module_spec = importlib.util.spec_from_file_location(f"custom_reward_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_custom_reward(spec: str, flag: str = "--reward-fn") -> Callable:
    """The function a spec names, checked to take TRL's keyword arguments."""
    problem = reward_function_problem(spec, flag)
    if problem:
        raise UserError(problem)
    source, _, function_name = spec.rpartition(":")
    if is_file_source(source):
        module = run_import(spec, flag, source, lambda: import_file(Path(source)))
    else:
        module = run_import(spec, flag, f"module {source}", lambda: importlib.import_module(source))
    function = getattr(module, function_name, None)
    if not callable(function):
        found = sorted(name for name, value in vars(module).items() if callable(value) and not name.startswith("_")
                       and getattr(value, "__module__", None) == module.__name__)
        raise UserError(f"{flag} {spec!r}: {source} has no function {function_name!r} "
                        f"(functions there: {', '.join(found) or 'none'})")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some built-in callables hide theirs; TRL will call it all the same
        return function
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        raise UserError(f"{flag} {spec!r}: {function_name}{signature} cannot take the keyword arguments TRL passes "
                        "(prompts, completion_ids, trainer_state and the dataset's columns): define it as "
                        f"def {function_name}(completions, **kwargs)")
    return function


def reward_name(function: Callable, spec: str) -> str:
    """The name a function logs under: its own, or the one in its spec when it has none (a functools.partial)."""
    return getattr(function, "__name__", None) or spec.rpartition(":")[2]
