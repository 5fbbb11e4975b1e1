"""Reward functions the user names: `path/to/file.py:function` (a file of theirs) or `package.module:function` (an
importable module, as `trl grpo --reward_funcs` takes them, e.g. `trl.rewards:accuracy_reward`).

A name that ends in `.py`, holds a path separator or names an existing file is a file; `__main__` is the running
program or notebook (`__main__:my_reward` in a notebook is the function its cells defined); otherwise it must be a
dotted module name. The name after the colon may be a function, a `functools.partial` of one, or an object with a
`__call__(self, completions, **kwargs)` method; it is the component's name, and so its metric name. From Python, the
function (or object) itself may be given instead of its name, as TRL's `reward_funcs` takes it; its `__name__` (a
partial's function's, an object's class's) is then the metric name, and the run's record writes it as
`module:name`. Each is checked to take TRL's keyword arguments before any model loads.

    from trl.rewards import accuracy_reward
    assert load_custom_reward("trl.rewards:accuracy_reward") is accuracy_reward    # or "my_rewards.py:correctness"
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import io
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from grpo_tool.errors import UserError

MODULE_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
SPEC_FORMS = "path/to/file.py:function_name or package.module:function_name"
MAIN = "__main__"


def is_file_source(source: str) -> bool:
    return source.endswith(".py") or "/" in source or os.sep in source or Path(source).is_file()


def reward_function_problem(spec, flag: str = "--reward-fn") -> str | None:
    """What is wrong with a reward function, or its name, that can be seen without importing anything, or None."""
    if not isinstance(spec, str):
        return object_problem(spec, flag)
    return spec_problem(spec, flag)


def spec_problem(spec: str, flag: str, forms: str = SPEC_FORMS) -> str | None:
    """What is wrong with a FILE.py:NAME or package.module:NAME that can be seen without importing it, or None."""
    source, _, function_name = spec.rpartition(":")
    if not source or not function_name:
        return f"{flag} {spec!r}: give it as {forms}"
    if source == MAIN:
        return main_module_problem(spec, function_name, flag)
    if is_file_source(source):
        return None if Path(source).is_file() else f"{flag} {spec!r}: no such file {source}"
    if not MODULE_NAME.fullmatch(source):
        return f"{flag} {spec!r}: {source!r} is neither a file nor a module name; give it as {forms}"
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
        kind = {"--tools": "a module of tools", "--environment": "a module of environments"}.get(flag,
                                                                                                 "a reward module")
        raise UserError(f"{flag} {spec!r}: importing {what} ended the program (exit status {stop.code}); {kind} "
                        "must not parse arguments or exit at import: put that under "
                        f"if __name__ == '__main__'" + (f" (it printed: {said})" if said else "")) from None
    except Exception as error:  # noqa: BLE001 - any failure in the user's module is reported as theirs
        where = f" at line {error.lineno}" if isinstance(error, SyntaxError) else ""
        raise UserError(f"{flag} {spec!r}: importing {what} failed{where}: {type(error).__name__}: "
                        f"{error}") from None


def import_file(path: Path):
    """The module of a reward file, imported as `python file.py` would run it: with its folder first on sys.path, so
    `from helpers import score` finds the helpers.py beside it. Registered in sys.modules, as an import would be, so
    that what needs a module by name (dataclasses, pickle) works in it."""
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        module_spec = importlib.util.spec_from_file_location(f"custom_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_spec.name]  # as a failed import leaves no module behind
            raise
        return module
    finally:
        # The folder stays on sys.path for the rest of the run, since a reward may import its helpers only when it is
        # first called; but last, so that a file there named like one of this tool's modules (report.py, config.py)
        # or an installed package cannot stand in for it at a later import.
        sys.path.remove(folder)
        if folder not in sys.path:
            sys.path.append(folder)


def main_module_problem(spec: str, name: str, flag: str) -> str | None:
    """`__main__:name` names a function of the running program or notebook: one it has, or a line saying which."""
    main = sys.modules.get(MAIN)
    value = getattr(main, name, None)
    if callable(value) and not inspect.isclass(value) or flag == "--environment" and inspect.isclass(value):
        return None
    kind = "class" if flag == "--environment" else "function"
    program = getattr(main, "__file__", None)
    if program:  # a program run from a file: on the command line, this tool's own
        return (f"{flag} {spec!r}: __main__ is the program now running ({Path(program).name}), which has no {kind} "
                f"{name!r}; name the file that defines it: path/to/file.py:{name}")
    field = {"--environment": "environments", "--tools": "tools", "--eval-reward-fn": "eval_reward_functions"}.get(
        flag, "reward_functions")
    return (f"{flag} {spec!r}: this notebook (or interactive session) has no {kind} {name!r} yet: run the cell "
            f"that defines it first, or pass the {kind} itself ({field}=[{name}])")


def object_problem(value, flag: str) -> str | None:
    """What is wrong with a reward function given as a Python object, or None."""
    if not callable(value) or inspect.isclass(value):
        kind = "a class (give an object of it)" if inspect.isclass(value) else f"of type {type(value).__name__}"
        return (f"{flag} {value!r} is {kind}: give a function (or an object with __call__(self, completions, "
                f"**kwargs)), or its name as {SPEC_FORMS}")
    if reward_name(value) == "<lambda>":
        return (f"{flag} {value!r}: a lambda has no name to log its scores under (rewards/<name>/mean); define it "
                "with def")
    return keywords_problem(value, reward_name(value), repr(reward_name(value)), flag)


def keywords_problem(function, name: str, given: str, flag: str) -> str | None:
    """A reward that cannot take TRL's keyword arguments, said with the fix; None when it can."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some built-in callables hide theirs; TRL will call it all the same
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return (f"{flag} {given}: {name}{signature} cannot take the keyword arguments TRL passes (prompts, "
            "completion_ids, trainer_state and the dataset's columns): " + how_to_take_keywords(function, name))


def load_custom_reward(spec, flag: str = "--reward-fn") -> Callable:
    """The function (or partial, or callable object) a spec names, or is, checked to take TRL's keyword arguments."""
    problem = reward_function_problem(spec, flag)
    if problem:
        raise UserError(problem)
    if not isinstance(spec, str):
        return spec
    module, function = load_named(spec, flag)
    source, _, function_name = spec.rpartition(":")
    if not callable(function) or inspect.isclass(function):
        raise UserError(f"{flag} {spec!r}: " + not_a_reward(module, source, function_name, function))
    problem = keywords_problem(function, function_name, repr(spec), flag)
    if problem:
        raise UserError(problem)
    return function


def load_named(spec: str, flag: str):
    """(module, what it holds under the name after the colon, or None) for a checked FILE.py:NAME or
    package.module:NAME, the module imported as its program would run it (import_file)."""
    source, _, name = spec.rpartition(":")
    if source == MAIN:
        module = sys.modules[MAIN]
    elif is_file_source(source):
        module = run_import(spec, flag, source, lambda: import_file(Path(source)))
    else:
        module = run_import(spec, flag, f"module {source}", lambda: importlib.import_module(source))
    return module, getattr(module, name, None)


def not_a_reward(module, source: str, name: str, value) -> str:
    """Why what a spec names cannot be called as a reward function, and what to name instead."""
    if inspect.isclass(value):
        # Calling the class would build an object, not return scores: the object is what scores.
        return (f"{name} is a class; name an object of it instead: add e.g. scorer = {name}(...) to {source} and give "
                f"{source}:scorer (the class needs a def __call__(self, completions, **kwargs))")
    offered = ", ".join(reward_candidates(module)) or "none"
    if value is None:
        return f"{source} has no function {name!r} (functions there: {offered})"
    return (f"{source} has no function {name!r} ({name} is of type {type(value).__name__}, which cannot be called); "
            "name a function, or an object with a __call__(self, completions, **kwargs) method (functions there: "
            f"{offered})")


def reward_candidates(module) -> list[str]:
    """What a spec could name in a module: its own functions, partials, and callable objects of its own classes
    (a package's include those of its submodules it offers, as trl.rewards does); not classes, nor what it imported.
    Names come from dir(), which a lazily loading module (TRL's) answers before it has loaded them."""
    def own(name: str) -> bool:
        try:
            value = getattr(module, name)
        except Exception:  # noqa: BLE001 - a lazy module's attribute whose import fails is no candidate
            return False
        if isinstance(value, functools.partial):
            return True
        if inspect.isclass(value) or inspect.ismodule(value) or not callable(value):
            return False
        home = getattr(value, "__module__", None) or ""
        return home == module.__name__ or home.startswith(module.__name__ + ".")

    return sorted(name for name in dir(module) if not name.startswith("_") and own(name))


def how_to_take_keywords(function, name: str) -> str:
    """The fix for a reward that lacks **kwargs, said where the signature is written."""
    if isinstance(function, functools.partial):
        inner = getattr(function.func, "__name__", "the function")
        return f"add **kwargs to {inner}, the function the partial calls: def {inner}(completions, ..., **kwargs)"
    if not inspect.isroutine(function):
        return f"define its method as def __call__(self, completions, **kwargs) in class {type(function).__name__}"
    return f"define it as def {name}(completions, **kwargs)"


def reward_name(spec) -> str:
    """The name a reward logs under: the one its spec gives after the colon. A partial or a callable object has no
    __name__, a lambda's is '<lambda>' and a factory's functions share one; the spec's is what the user wrote. A
    function given itself logs under its __name__, a partial under its function's, an object under its class's."""
    if isinstance(spec, str):
        return spec.rpartition(":")[2]
    if isinstance(spec, functools.partial):
        return reward_name(spec.func)
    return getattr(spec, "__name__", None) or type(spec).__name__


def reward_spec(spec) -> str:
    """A reward as a record names it: a spec as given; a function given itself as module:name."""
    if isinstance(spec, str):
        return spec
    function = spec.func if isinstance(spec, functools.partial) else spec
    module = getattr(function, "__module__", None) or type(function).__module__
    return f"{module}:{reward_name(spec)}"
