"""Tools and environments for multi-turn GRPO: what the model may call while it answers, named on the command line
(`--tools`, `--environment`) or given from Python, checked before any model loads, and guarded so that a tool that
fails or hangs is a failed call the model reads, never a crash. TRL's trainer runs the conversation (its tool loop,
its parsing, its mask that keeps tool results out of the loss); this module hands it what it needs.

- A tool is a plain function with a type hint on each argument and a docstring whose Args: section describes each
  (the JSON schema the model is shown is built from them). `calculator` is built in.
- An environment is a class: `reset(**row)` starts an episode for a dataset row (text it returns is appended to the
  prompt), its other public methods are the episode's tools, and `get_reward()`, when it has one, scores the episode
  as a reward component named after the class. Several, by name, are chosen per row by the data's `environment`
  column.
- A tool call runs for at most `tool_timeout` seconds; an exception (or the timeout) is the call's result, which the
  model sees as `{'error': ...}` and TRL counts as a failure. A tool or environment that calls sys.exit, or an episode
  that cannot start, ends the run with one line.

    assert calculator("12 * 34") == "408" and calculator("1/4") == "0.25"
    assert calculator("2/3") == "2/3 (0.666666666667)"
    box = resolve(GRPOConfig(tools=["calculator"]))
    assert [tool.__name__ for tool in box.tools] == ["calculator"] and box.tools[0]("7*6") == "42"
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import inspect
import math
import operator
import re
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from grpo_tool.components import Component
from grpo_tool.custom_rewards import load_named, reward_name, spec_problem
from grpo_tool.errors import UserError, near_miss
from grpo_tool.messages import tool_call_response_template
from grpo_tool.settings import GRPOConfig

ENVIRONMENT_COLUMN = "environment"  # the data's column that picks a named environment per row (TRL's)
TEMPLATE_DIR = Path(__file__).parent / "chat_templates"
TOOL_FORMS = "calculator, path/to/file.py:function_name or package.module:function_name"
ENVIRONMENT_FORMS = "path/to/file.py:ClassName or package.module:ClassName (NAME=... for several)"
TOOL_RULE = ("a tool is a plain function with a type hint on each argument and a docstring whose Args: section "
             "describes each one")


# The built-in tool.

CALCULATOR_LIMIT = 10_000  # digits a result may have; larger powers are refused rather than computed
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
SPELLINGS = {"×": "*", "÷": "/", "−": "-", "^": "**", "·": "*"}


def calculator(expression: str) -> str:
    """Work out an arithmetic expression exactly.

    Args:
        expression: The arithmetic to work out, with numbers, + - * / // % ** (or ^) and parentheses,
            e.g. "12 * (34 + 5)".
    """
    text = expression.strip().rstrip("=").strip()
    for written, meant in SPELLINGS.items():
        text = text.replace(written, meant)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,234 is one number
    if not text:
        raise ValueError("empty expression: give one such as 12 * 34")
    if len(text) > 500:
        raise ValueError("expression over 500 characters: break it into smaller calls")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"cannot read {expression!r} as arithmetic: use numbers, + - * / // % ** and "
                         "parentheses") from None
    value, exact = evaluate(tree.body)
    return exact_text(value) if exact else f"{float(value):.12g} (rounded)"


def evaluate(node) -> tuple[Fraction, bool]:
    """The value of an arithmetic syntax tree (numbers, the four operations, //, % and powers), and whether it is
    exact (a fractional power is not)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return (Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value)), True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value, exact = evaluate(node.operand)
        return (-value if isinstance(node.op, ast.USub) else value), exact
    if isinstance(node, ast.BinOp) and (isinstance(node.op, ast.Pow) or type(node.op) in OPERATORS):
        (left, left_exact), (right, right_exact) = evaluate(node.left), evaluate(node.right)
        exact = left_exact and right_exact
        if isinstance(node.op, ast.Pow):
            return power(left, right), exact and right.denominator == 1
        if right == 0 and not isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            raise ValueError("division by zero")
        return Fraction(OPERATORS[type(node.op)](left, right)), exact
    shown = ast.unparse(node) if isinstance(node, ast.AST) else str(node)
    raise ValueError(f"{shown!r} is not arithmetic: use numbers, + - * / // % ** and parentheses")


def power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        if base < 0:
            raise ValueError("a fractional power of a negative number is not a real number")
        return Fraction(float(base) ** float(exponent))
    if base == 0 and exponent < 0:
        raise ValueError("division by zero")
    magnitude = abs(base.numerator) if abs(base) >= 1 else abs(base.denominator)
    if magnitude > 1 and abs(exponent.numerator) * math.log10(magnitude) > CALCULATOR_LIMIT:
        raise ValueError(f"the result would have over {CALCULATOR_LIMIT:,} digits")
    return base ** int(exponent)


def exact_text(value: Fraction) -> str:
    """An integer as itself, a terminating fraction as its exact decimal, any other as n/d with its value."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        places = 0
        while (value * 10**places).denominator != 1:
            places += 1
        return format_decimal(value, places)
    return f"{value.numerator}/{value.denominator} ({float(value):.12g})"


def format_decimal(value: Fraction, places: int) -> str:
    scaled = abs(value) * 10**places
    digits = str(scaled.numerator // scaled.denominator).rjust(places + 1, "0")
    return ("-" if value < 0 else "") + digits[:-places] + "." + digits[-places:]


BUILT_IN = {"calculator": calculator}


# Guards: what a call may do to the run.

class ToolStop(BaseException):
    """A tool or environment ended the program (sys.exit), or an episode could not start or be scored: the run stops
    with this message as its one line (GRPOTrainer.fit and the sampler turn it into a UserError). A BaseException so
    that TRL's tool loop, which makes every Exception the call's result, lets it through."""


class ToolTimeout(BaseException):
    """Raised inside a tool by the timer; a BaseException so that the tool's own `except Exception` cannot keep it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt what runs inside after `seconds` (SIGALRM; the main thread only, where TRL calls tools: elsewhere
    the call runs unbounded). Nests: inside another limit (a tool calling a tool), the nearer deadline applies, and
    the outer one is set again on the way out, less the time spent."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(number, frame):
        raise ToolTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer) if outer > 0 else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 0.001))


def exit_line(what: str, stop: SystemExit) -> str:
    return (f"{what} called sys.exit({'' if stop.code is None else repr(stop.code)}): a tool must not end the "
            "program; raise an exception instead, which the model reads as the call's error")


def guarded_tool(function, timeout: float, label: str):
    """`function` as TRL may call it: stopped after `timeout` seconds (a TimeoutError, which the model reads as the
    call's error), and sys.exit made the run's one-line ending. Its name, signature and docstring stay (the schema the
    model is shown is built from them). An async tool stays async (TRL runs those on its event loop) and is bounded by
    asyncio's wait_for."""
    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def call_async(*args, **kwargs):
            async def run():
                try:
                    return await function(*args, **kwargs)
                except SystemExit as stop:
                    # Raised out of a task, it would stop TRL's event loop and leave training waiting for ever:
                    # an async tool's exit is its call's failure instead.
                    raise RuntimeError(exit_line(f"tool {label}", stop)) from None

            try:
                return await asyncio.wait_for(run(), timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"{label} ran past {timeout:g} s (tool_timeout) and was stopped") from None

        return call_async

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            with time_limit(timeout):
                return function(*args, **kwargs)
        except ToolTimeout:
            raise TimeoutError(f"{label} ran past {timeout:g} s (tool_timeout) and was stopped") from None
        except SystemExit as stop:
            raise ToolStop(exit_line(f"tool {label}", stop)) from None

    return call


def guarded_step(function, label: str, what: str):
    """An environment's reset or get_reward: any failure stops the run with one line naming it (an episode that
    cannot start, or be scored, cannot be trained on). What reset returns reaches the prompt as text (None: nothing;
    a list: content parts, as TRL takes them)."""
    name = f"{label}.{function.__name__}"

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            result = function(*args, **kwargs)
        except SystemExit as stop:
            raise ToolStop(f"environment {name} called sys.exit({'' if stop.code is None else repr(stop.code)}): it "
                           "must not end the program; raise an exception to stop the run with its message") from None
        except Exception as error:  # noqa: BLE001 - the user's environment; reported as theirs
            frames = traceback.extract_tb(error.__traceback__)
            at = f" (calling {name} with {', '.join(kwargs) or 'no arguments'})" if frames[-1].filename == __file__ \
                else where(error)
            raise ToolStop(f"environment {name} raised {type(error).__name__}: {error} {what}{at}") from None
        if function.__name__ == "reset" and result is not None and not isinstance(result, (str, list)):
            return str(result)
        return result

    return call


def where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def public_methods(cls) -> dict:
    """The class's public methods (its tools, reset, get_reward) by name, inherited ones included: what TRL finds on
    an instance as bound methods (a staticmethod is not one)."""
    return {name: member for name, member in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")
            and not isinstance(inspect.getattr_static(cls, name), staticmethod)}


class Hidden:
    """An attribute that works as a method from the instance's own code (self.get_reward()) but is not a bound
    method, so TRL's search for get_reward (inspect.ismethod) passes it by."""

    def __init__(self, function):
        self.function = function

    def __get__(self, instance, owner):
        return self if instance is None else functools.partial(self.function, instance)


def guarded_environment(cls, timeout: float, label: str):
    """A subclass of `cls`, under its name, whose tools are guarded calls and whose reset is a guarded step. Its
    get_reward is hidden from TRL (which would add it as a reward of weight 1 beside ours; the instance's own code
    still calls it as before): the run scores it as a component of its own (environment_reward), weighted like any
    other."""
    members = {}
    for name, member in public_methods(cls).items():
        if name == "reset":
            members[name] = guarded_step(member, label, "while starting an episode (reset(**row))")
        elif name == "get_reward":
            members[name] = Hidden(member)
        else:
            members[name] = guarded_tool(member, timeout, f"{label}.{name}")
    guarded = type(cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                                          "__doc__": cls.__doc__, **members})
    guarded.grpo_original = cls
    return guarded


def environment_reward(guarded, label: str) -> Component:
    """The component that scores the episodes of one environment class: get_reward() of each of the batch's
    environments of that class, None (no score) for the others'. Named after the class, as TRL names it."""
    get_reward = guarded.grpo_original.get_reward
    if inspect.iscoroutinefunction(get_reward):
        def get_reward(environment, scorer=get_reward):  # TRL awaits an async get_reward; so does this
            return asyncio.run(scorer(environment))
    score = guarded_step(get_reward, label, "while scoring an episode (get_reward())")

    def reward(completions, environments=None, **kwargs):
        if environments is None:  # outside an episode (the reward check's chosen and rejected answers)
            return [None] * len(completions)
        return [score(environment) if type(environment) is guarded else None for environment in environments]

    reward.__name__ = guarded.__name__
    return Component(guarded.__name__, reward, 1.0)


# Resolving names.

def split_specs(values) -> list:
    """Tools as given: comma-separated names split, functions kept."""
    specs = []
    for value in values:
        if isinstance(value, str):
            specs += [part.strip() for part in value.split(",") if part.strip()]
        else:
            specs.append(value)
    return specs


def environment_entries(value) -> list[tuple[str | None, object]]:
    """(name or None, spec or class) for each environment: NAME=SPEC strings, a {name: class} mapping from Python."""
    if isinstance(value, dict):
        return list(value.items())
    entries = []
    for item in value:
        if isinstance(item, str) and "=" in item.split(":")[0]:
            name, _, spec = item.partition("=")
            entries.append((name.strip(), spec.strip()))
        else:
            entries.append((None, item))
    return entries


def spec_problems(config: GRPOConfig) -> list[str]:
    """What is wrong with the tool and environment names, seen without importing anything."""
    problems = []
    if config.tools and not split_specs(config.tools):
        problems.append(f"--tools {','.join(map(str, config.tools))!r} names no tool: give one or more, such as "
                        "calculator, or leave --tools out")
    for spec in split_specs(config.tools):
        if isinstance(spec, str) and spec not in BUILT_IN:
            if ":" not in spec:
                problems.append(f"--tools {spec!r}: no built-in tool of that name (built in: "
                                f"{', '.join(BUILT_IN)}){near_miss(spec, BUILT_IN)}; or give {TOOL_FORMS}")
            elif problem := spec_problem(spec, "--tools", TOOL_FORMS):
                problems.append(problem)
    entries = environment_entries(config.environments)
    names = [name for name, _ in entries]
    if len(entries) > 1 and None in names:
        problems.append(f"--environment: {len(entries)} environments, so each needs a name the data's "
                        f"{ENVIRONMENT_COLUMN} column can choose: give them as NAME=FILE.py:ClassName")
    if duplicates := sorted({name for name in names if name and names.count(name) > 1}):
        problems.append(f"--environment: the name {duplicates[0]!r} is given twice; each environment needs its own")
    for name, spec in entries:
        if name is not None and not re.fullmatch(r"[\w.-]+", name):
            problems.append(f"--environment {name}={spec}: a name is letters, digits, _ . or -")
        if isinstance(spec, str) and (problem := spec_problem(spec, "--environment", ENVIRONMENT_FORMS)):
            problems.append(problem)
    if config.chat_template is not None and template_path(config.chat_template) is None:
        bundled = ", ".join(sorted(path.stem for path in TEMPLATE_DIR.glob("*.jinja")))
        problems.append(f"chat_template={config.chat_template!r}: no such file, and no bundled template of that "
                        f"name (bundled: {bundled})")
    elif config.chat_template is not None and (problem := template_problem(template_path(config.chat_template))):
        problems.append(f"chat_template={config.chat_template!r}: {problem}")
    return problems


def template_problem(path: Path) -> str | None:
    """Why a chat template file cannot be a template (not text, not Jinja), or None."""
    import jinja2

    try:
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return "the file is not UTF-8 text"
    except jinja2.TemplateSyntaxError as error:
        if "generation" in str(error):  # transformers' own {% generation %} tag, unknown to plain Jinja
            return None
        return f"not a Jinja template: {error.message} at line {error.lineno}"
    return None


def template_path(value: str) -> Path | None:
    """A chat template setting as a file: the file itself, or a bundled template by name."""
    if Path(value).is_file():
        return Path(value)
    bundled = TEMPLATE_DIR / f"{value.removesuffix('.jinja')}.jinja"
    return bundled if "/" not in value and bundled.is_file() else None


def schema_problem(function, shown: str) -> str | None:
    """Why TRL could not show `function` to the model as a tool, or None."""
    from transformers.utils import get_json_schema

    if inspect.isclass(function):
        return f"{shown} is a class; a class whose methods are tools is an environment: give it to --environment"
    if not (inspect.isfunction(function) or inspect.ismethod(function)):
        kind = ("a functools.partial" if isinstance(function, functools.partial)
                else f"of type {type(function).__name__}")
        return f"{shown} is {kind}, not a plain function; {TOOL_RULE}"
    try:
        get_json_schema(function)
    except Exception as error:  # noqa: BLE001 - transformers' DocstringParsingException, TypeHintParsingException, ...
        return f"{shown} cannot be shown to the model as a tool: {error}; {TOOL_RULE}"
    loose = [p.name for p in inspect.signature(function).parameters.values() if p.kind is p.VAR_POSITIONAL]
    if loose:
        return (f"{shown} takes *{loose[0]}, which a tool call cannot fill (a call names each argument): give it "
                "named arguments")
    return None


@dataclass
class Toolbox:
    """The run's tools and environments, guarded, as TRL's trainer takes them."""

    tools: list = field(default_factory=list)  # standalone tools, guarded
    environments: dict = field(default_factory=dict)  # {name or None: guarded class}
    rewards: list[Component] = field(default_factory=list)  # one per environment class with a get_reward
    specs: dict = field(default_factory=dict)  # what the record says: tools and environments as named

    @property
    def active(self) -> bool:
        return bool(self.tools or self.environments)

    def trainer_arguments(self) -> dict:
        """TRL's GRPOTrainer arguments: tools, and environment_factory (a class, or {name: class} for several)."""
        arguments = {}
        if self.tools:
            arguments["tools"] = list(self.tools)
        if self.environments:
            arguments["environment_factory"] = (self.environments[None] if None in self.environments
                                                else dict(self.environments))
        return arguments

    def all_tools(self) -> list:
        """Every tool a prompt may be shown: the standalone ones and each environment's methods."""
        return list(self.tools) + [getattr(cls, name) for cls in self.environments.values() for name in tool_names(cls)]

    def tools_for(self, name: str | None) -> tuple[list, object | None]:
        """The tools a row of environment `name` (None: the only one, or none) may call, and a fresh episode's
        environment (or None): the standalone tools plus the environment's methods, bound to it."""
        if not self.environments:
            return list(self.tools), None
        environment = self.environments[name]()
        methods = [getattr(environment, method) for method in public_methods(type(environment))
                   if method not in ("reset", "get_reward") and callable(getattr(environment, method))]
        return list(self.tools) + methods, environment

    def describe(self) -> str:
        parts = [f"tools: {', '.join(tool.__name__ for tool in self.tools)}"] * bool(self.tools)
        parts += [f"environment{'s' if len(self.environments) > 1 else ''}: " + ", ".join(
            (f"{name}=" if name else "") + f"{cls.__name__} (tools: {', '.join(tool_names(cls)) or 'none'})"
            for name, cls in self.environments.items())] * bool(self.environments)
        return "; ".join(parts)


def tool_names(cls) -> list[str]:
    return [name for name in public_methods(cls) if name not in ("reset", "get_reward")]


def resolve(config: GRPOConfig) -> Toolbox:
    """The run's tools and environments, imported once and checked: each tool (and each environment's method) can be
    shown to the model, names do not clash, and each environment has reset. Raises UserError otherwise."""
    if problems := spec_problems(config):
        raise UserError("; ".join(problems))
    box = Toolbox()
    for spec in split_specs(config.tools):
        function = load_tool(spec)
        if function.__name__ in {tool.__name__ for tool in box.tools}:
            raise UserError(f"--tools {spec if isinstance(spec, str) else function.__name__!r}: another tool is "
                            f"already named {function.__name__!r}; the model calls tools by name, so each needs its "
                            "own")
        box.tools.append(guarded_tool(function, config.tool_timeout, function.__name__))
        box.specs.setdefault("tools", []).append(spec if isinstance(spec, str) else tool_spec(function))
    guarded_classes: dict = {}  # one guarded class per class, so that one class under two names is scored as one
    # (keyed by module and qualified name; the last part of the key is what a reward is named after)
    for name, spec in environment_entries(config.environments):
        cls = load_environment(spec)
        clash = set(tool_names(cls)) & {tool.__name__ for tool in box.tools}
        if clash:
            raise UserError(f"--environment {cls.__name__}: its method {sorted(clash)[0]!r} has the name of a tool "
                            "given with --tools; the model calls tools by name, so rename one")
        identity = (cls.__module__, cls.__qualname__)  # a file named twice is imported twice: the same class
        if identity not in guarded_classes:
            if cls.__name__ in {known for _, known in guarded_classes}:
                raise UserError(f"--environment: two different classes are named {cls.__name__}, and an "
                                "environment's reward is logged under its class name; rename one")
            guarded_classes[identity] = guarded_environment(cls, config.tool_timeout, cls.__name__)
            if "get_reward" in public_methods(cls):
                box.rewards.append(environment_reward(guarded_classes[identity], cls.__name__))
        box.environments[name] = guarded_classes[identity]
        box.specs.setdefault("environments", []).append(
            (f"{name}=" if name else "") + (spec if isinstance(spec, str) else tool_spec(cls)))
    if len(box.environments) == 1:  # one environment, named or not: every row's, with no column to choose it
        box.environments = {None: next(iter(box.environments.values()))}
    return box


def tool_spec(value) -> str:
    return f"{value.__module__}:{reward_name(value)}"


def named(spec: str, flag: str, kind: str, wanted) -> object:
    """What FILE.py:NAME or package.module:NAME names, or one line listing the module's own {kind}s (`wanted`)."""
    module, value = load_named(spec, flag)
    if value is None:
        source, _, name = spec.rpartition(":")
        offered = sorted(key for key, item in vars(module).items() if wanted(item) and not key.startswith("_")
                         and getattr(item, "__module__", None) == module.__name__)
        plural = "classes" if kind == "class" else f"{kind}s"
        raise UserError(f"{flag} {spec!r}: {source} has no {kind} {name!r} ({plural} there: "
                        f"{', '.join(offered) or 'none'}){near_miss(name, offered)}")
    return value


def load_tool(spec):
    """A tool by name (built in, FILE.py:NAME, package.module:NAME) or given itself, checked as TRL will show it."""
    if isinstance(spec, str) and spec in BUILT_IN:
        return BUILT_IN[spec]
    function = named(spec, "--tools", "function", inspect.isfunction) if isinstance(spec, str) else spec
    shown = repr(spec) if isinstance(spec, str) else repr(getattr(spec, "__name__", spec))
    if problem := schema_problem(function, f"--tools {shown}: {getattr(function, '__name__', 'it')}"):
        raise UserError(problem)
    return function


def load_environment(spec):
    """An environment class by name or given itself: a class with reset, whose public methods can be shown as
    tools."""
    cls = named(spec, "--environment", "class", inspect.isclass) if isinstance(spec, str) else spec
    shown = f"--environment {spec!r}" if isinstance(spec, str) else f"--environment {getattr(spec, '__name__', spec)!r}"
    if not inspect.isclass(cls):
        raise UserError(f"{shown}: {getattr(cls, '__name__', cls)!r} is not a class; an environment is a class with "
                        "reset(**row) and its tools as methods (a single function is a tool: give it to --tools)")
    methods = public_methods(cls)
    if "reset" not in methods:
        raise UserError(f"{shown}: class {cls.__name__} has no reset method; an episode starts with reset(**row), "
                        "which receives the dataset row and may return text to append to the prompt")
    for name in tool_names(cls):
        if problem := schema_problem(getattr(cls, name), f"{shown}: method {cls.__name__}.{name}"):
            raise UserError(problem + " (methods whose names start with _ are not tools)")
    try:
        inspect.signature(cls).bind()
    except TypeError:
        raise UserError(f"{shown}: class {cls.__name__} cannot be built without arguments, as the trainer builds "
                        "each episode's environment; give its __init__ defaults for every argument") from None
    return cls


def column_problem(box: Toolbox, rows, split: str) -> str | None:
    """Several environments need the data's environment column naming one of them on every row."""
    if len(box.environments) < 2 or not hasattr(rows, "column_names"):
        return None
    if ENVIRONMENT_COLUMN not in (rows.column_names or []):
        return (f"{len(box.environments)} environments ({', '.join(box.environments)}), but the {split} data has no "
                f"{ENVIRONMENT_COLUMN} column to choose one per row: add it, naming one of them on each row")
    if hasattr(rows, "__len__"):
        unknown = sorted({str(value) for value in rows[ENVIRONMENT_COLUMN]} - set(box.environments))
        if unknown:
            return (f"the {split} data's {ENVIRONMENT_COLUMN} column names {unknown[0]!r}, which is none of the "
                    f"environments given ({', '.join(box.environments)}){near_miss(unknown[0], box.environments)}")
    return None


# Chat templates that carry tool calls.

def prepare_tokenizer(tokenizer, config: GRPOConfig, model_name: str) -> None:
    """The chat template this run uses (chat_template replaces the model's own), and, with tools, one TRL can train
    tool calls with: it must render them, keep a conversation's tokens a prefix of its continuation's, and come with
    a way to read calls out of generated text. A template TRL knows brings its own; a `<tool_call>` one gets
    tool_call_response_template. Anything else is one line saying what to give."""
    if config.chat_template is not None:
        tokenizer.chat_template = template_path(config.chat_template).read_text(encoding="utf-8")
        tokenizer.response_template = None
    if not (config.tools or config.environments):
        return
    from trl.chat_template_utils import add_response_schema, is_chat_template_prefix_preserving, supports_tool_calling

    given = f"the chat template given ({config.chat_template})" if config.chat_template else \
        f"the chat template of {model_name}"
    advice = ("pass --chat-template FILE.jinja with one that does (chatml_tools, bundled, suits ChatML models such as "
              "SmolLM2 and Qwen)")
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserError(f"tools need a chat model, and {model_name} has no chat template: {advice}")
    if not supports_tool_calling(tokenizer):
        raise UserError(f"{given} cannot render tool calls and their results: {advice}")
    if getattr(tokenizer, "response_template", None) is None:
        try:
            add_response_schema(tokenizer)  # TRL's own, for the families it knows
        except ValueError:
            layout = tokenizer.apply_chat_template(
                [{"role": "user", "content": "u"}, {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}], tokenize=False)
            start = generation_prompt(tokenizer)
            if "<tool_call>" not in layout or not start or not tokenizer.eos_token:
                raise UserError(f"{given} renders tool calls in a layout this tool cannot read back out of generated "
                                "text (it reads <tool_call>{json}</tool_call>, as Qwen's and Hermes' templates write "
                                f"them): {advice}") from None
            tokenizer.response_template = tool_call_response_template(start, tokenizer.eos_token)
    if not is_chat_template_prefix_preserving(tokenizer):
        from trl.chat_template_utils import get_training_chat_template

        try:
            get_training_chat_template(tokenizer)
        except ValueError:
            raise UserError(f"{given} renders a turn differently once later turns follow it, so the tokens of a "
                            f"conversation would change as it grows: {advice}") from None
    elif not reads_back(tokenizer):
        raise UserError(f"{given} writes a tool call in a form its parser does not read back (a call the model makes "
                        f"would be taken as plain text and never run): {advice}")


def reads_back(tokenizer) -> bool:
    """Whether a tool call the template writes comes back out of the tokens as the same call, as TRL will parse
    what the model generates."""
    from trl.chat_template_utils import parse_response

    asked = [{"role": "user", "content": "u"}]
    called = {"name": "lookup", "arguments": {"key": "value"}}
    try:
        prompt = tokenizer.apply_chat_template(asked, add_generation_prompt=True, tokenize=True, return_dict=False)
        whole = tokenizer.apply_chat_template(asked + [{"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": called}]}], tokenize=True, return_dict=False)
        message = parse_response(tokenizer, whole[len(prompt):], prefix=prompt)
    except Exception:  # noqa: BLE001 - a template or parser that fails on the sample fails the check
        return False
    calls = message.get("tool_calls") or []
    return whole[:len(prompt)] == prompt and [call.get("function") for call in calls] == [called]


def description_tokens(tokenizer, functions: list) -> int:
    """The tokens the tools' descriptions add to every prompt (the chat template puts their schemas before it)."""
    if not functions:
        return 0
    messages = [{"role": "user", "content": "x"}]
    shown, bare = (len(tokenizer.apply_chat_template(messages, tools=listed, add_generation_prompt=True,
                                                     tokenize=True, return_dict=True)["input_ids"])
                   for listed in (functions, None))
    return max(0, shown - bare)


def crowded(described: int, config: GRPOConfig) -> str:
    """The refusal when the tools' descriptions leave no room for a prompt (a run and a plan say the same)."""
    return (f"the tools' descriptions take {described} tokens, which leaves no room for a prompt in max_seq_length="
            f"{config.max_seq_length} - max_completion_length={config.max_completion_length}: raise max_seq_length")


def generation_prompt(tokenizer) -> str:
    """What the template adds to open an assistant turn (`<|im_start|>assistant\\n`)."""
    messages = [{"role": "user", "content": "u"}]
    bare = tokenizer.apply_chat_template(messages, tokenize=False)
    opened = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return opened[len(bare):] if opened.startswith(bare) else ""
