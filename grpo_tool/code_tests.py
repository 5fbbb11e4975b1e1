"""The code_tests reward: a completion's program run against its row's tests, in the sandbox (grpo_tool/sandbox.py).

The program is the completion's last fenced Python block (```python, ```py, ```python3 or a fence with no language;
one left open at the end counts, as a cut-off completion leaves it), else the whole completion. Tests come in the
layouts datasets have:

- MBPP: `test_list`, assert statements, after `test_setup_code` (text) and `test_imports` (a list), when present;
- HumanEval: `test`, a `check(candidate)` function, and `entry_point`, the function checked; each statement of
  check's body that asserts is one test. A program that does not define entry_point is read as the rest of the
  prompt's function (HumanEval's own way): the prompt goes before it when the prompt is Python;
- standard input and output: `inputs` and `outputs` lists, or APPS's `input_output` ({"inputs": [...], "outputs":
  [...]}, as an object or JSON text); each input is one run, passed when the program exits with status 0 and prints
  the expected output, compared word by word (white space and line ends aside).

Assert-style programs run as a module named `solution` (an `if __name__ == "__main__":` block does not run), their
tests in the same process, one after another; a test that raises fails, and a program killed at its timeout keeps
the tests it had passed. The score is the share of tests passed (`code_tests.mode` "share") or 1 only when all pass
("all"); a program that does not run scores 0, and a row without tests None (left out of the mean, as answer_match's
rows without a reference).

    tests = row_tests({"test_list": ["assert add(1, 2) == 3"]})
    assert tests.kind == "asserts" and program_of("Here:\\n```python\\ndef add(a, b):\\n    return a + b\\n```") == \\
        "def add(a, b):\\n    return a + b\\n"
"""

from __future__ import annotations

import ast
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from grpo_tool.components import RewardFunction
from grpo_tool.errors import UserError
from grpo_tool.messages import completion_text, message_text
from grpo_tool.sandbox import Limits, Run, Sandbox, checked_sandbox

logger = logging.getLogger(__name__)

MODES = ("share", "all")
FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)
PYTHON_FENCES = ("", "python", "py", "python3")
# The columns that hold a row's tests, by layout (any one is enough).
LAYOUT_COLUMNS = {"MBPP": ("test_list",), "HumanEval": ("test", "entry_point"), "stdin/stdout": ("inputs", "outputs"),
                  "APPS": ("input_output",)}


def program_of(text: str) -> str:
    """The program a completion gives: its last fenced Python block, else the whole text."""
    blocks = [body for language, body in FENCE.findall(text) if language.lower() in PYTHON_FENCES]
    return blocks[-1] if blocks else text


@dataclass(frozen=True)
class Tests:
    kind: str  # "asserts" (MBPP, HumanEval) or "io"
    setup: str = ""
    checks: str | None = None  # HumanEval: the test module, in a namespace of its own with `candidate` bound
    entry_point: str | None = None
    steps: tuple[tuple[str, bool], ...] = ()  # (source, is a test)
    cases: tuple[tuple[str, str], ...] = ()  # (stdin, expected stdout)

    @property
    def count(self) -> int:
        return len(self.cases) if self.kind == "io" else sum(counts for _, counts in self.steps)


def as_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return "\n".join(str(item) for item in value)
    return "" if value is None else str(value)


def humaneval_tests(test: str, entry_point: str) -> Tests:
    """check's body, statement by statement: those that assert are the tests, the others run in order between."""
    try:
        module = ast.parse(test)
    except SyntaxError:
        return Tests("asserts", checks=test, entry_point=entry_point, steps=(("check(candidate)", True),))
    check = next((node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "check"), None)
    if check is None or not check.args.args:
        return Tests("asserts", checks=test, entry_point=entry_point, steps=(("check(candidate)", True),))
    rest = [node for node in module.body if node is not check]
    parameter = check.args.args[0].arg
    steps = [] if parameter == "candidate" else [(f"{parameter} = candidate", False)]
    for node in check.body:
        asserts = any(isinstance(inner, ast.Assert) for inner in ast.walk(node))
        steps.append((ast.unparse(node), asserts))
    return Tests("asserts", checks=ast.unparse(ast.Module(body=rest, type_ignores=[])), entry_point=entry_point,
                 steps=tuple(steps))


def io_cases(inputs, outputs) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(inputs, (list, tuple)) or not isinstance(outputs, (list, tuple)) or len(inputs) != len(outputs):
        return None
    return tuple((as_text(given), as_text(expected)) for given, expected in zip(inputs, outputs))


def row_tests(row: dict) -> Tests | None:
    """A row's tests in whichever layout it has them; None when it has none."""
    if isinstance(row.get("test_list"), (list, tuple)) and row["test_list"]:
        setup = "\n".join(part for part in (as_text(row.get("test_imports")), as_text(row.get("test_setup_code")))
                          if part.strip())
        return Tests("asserts", setup=setup, steps=tuple((str(test), True) for test in row["test_list"]))
    if isinstance(row.get("test"), str) and row["test"].strip() and isinstance(row.get("entry_point"), str):
        return humaneval_tests(row["test"], row["entry_point"].strip())
    if (cases := io_cases(row.get("inputs"), row.get("outputs"))) is not None:
        return Tests("io", cases=cases) if cases else None
    pairs = row.get("input_output")
    if isinstance(pairs, str) and pairs.strip():
        try:
            pairs = json.loads(pairs)
        except ValueError:
            return None
    if isinstance(pairs, dict) and "fn_name" not in pairs:  # APPS's call-based rows name a function: not taken
        if cases := io_cases(pairs.get("inputs"), pairs.get("outputs")):
            return Tests("io", cases=cases)
    return None


def prompt_text(prompt) -> str:
    """The prompt as text: its last user turn for a conversation."""
    if isinstance(prompt, list):
        users = [message for message in prompt if isinstance(message, dict) and message.get("role") == "user"]
        return message_text(users[-1]) if users else ""
    return prompt if isinstance(prompt, str) else ""


def defines(program: str, name: str) -> bool:
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(|^{re.escape(name)}\s*=", program,
                     re.MULTILINE) is not None


def humaneval_program(program: str, prompt: str, entry_point: str) -> str:
    """A program that does not define the checked function continues the prompt's, when the prompt is Python."""
    if defines(program, entry_point) or not defines(prompt, entry_point):
        return program
    try:
        ast.parse(prompt)
    except SyntaxError:
        return program
    return prompt.rstrip("\n") + "\n" + program


def same_output(printed: bytes, expected: str) -> bool:
    return printed.decode(errors="replace").split() == expected.split()


def score(passed: int, count: int, mode: str) -> float:
    if mode == "all":
        return 1.0 if passed == count else 0.0
    return passed / count


def passed_tests(run: Run, nonce: str) -> int:
    """Tests passed, as the launcher wrote them with the job's nonce (a program printing lookalikes writes to its
    own stdout, not to this channel, and does not know the nonce)."""
    passed = set()
    for line in run.results:
        parts = line.split()
        if len(parts) == 3 and parts[0] == nonce and parts[1] == "pass" and parts[2].isdigit():
            passed.add(int(parts[2]))
    return len(passed)


@dataclass
class Plan:
    """The programs a batch needs and how each completion's score is put back together from their runs."""
    jobs: list[tuple[dict, bytes | None]] = field(default_factory=list)
    scorers: list[Callable[[list[Run]], float | None]] = field(default_factory=list)


def plan_batch(completions, prompts, rows: list[dict], mode: str) -> Plan:
    plan = Plan()
    for completion, prompt, row in zip(completions, prompts, rows):
        tests = row_tests(row)
        if tests is None:
            plan.scorers.append(lambda runs: None)
            continue
        program = program_of(completion_text(completion))
        if not program.strip():
            plan.scorers.append(lambda runs: 0.0)
            continue
        first = len(plan.jobs)
        if tests.kind == "io":
            for given, _ in tests.cases:
                plan.jobs.append(({"mode": "main", "code": program}, given.encode()))
            outcomes = [expected for _, expected in tests.cases]

            def io_score(runs, first=first, outcomes=outcomes):
                passed = sum(run.status == 0 and same_output(run.stdout, expected)
                             for run, expected in zip(runs[first:first + len(outcomes)], outcomes))
                return score(passed, len(outcomes), mode)

            plan.scorers.append(io_score)
            continue
        if tests.entry_point is not None:
            program = humaneval_program(program, prompt_text(prompt), tests.entry_point)
        nonce = secrets.token_hex(16)
        plan.jobs.append(({"mode": "tests", "code": program, "setup": tests.setup, "checks": tests.checks,
                           "entry_point": tests.entry_point, "steps": [list(step) for step in tests.steps],
                           "nonce": nonce}, None))
        plan.scorers.append(lambda runs, first=first, nonce=nonce, count=tests.count:
                            score(passed_tests(runs[first], nonce), count, mode))
    return plan


# One sandbox per setting, checked once per process (start-up, --check-rewards and the reward share it).
_SANDBOXES: dict[tuple, tuple[Sandbox, str]] = {}
_SANDBOX_LOCK = threading.Lock()


def limits_of(settings: dict) -> Limits:
    return Limits(timeout=float(settings["timeout"]), memory_mb=int(settings["memory_mb"]))


def sandbox_for(settings: dict) -> tuple[Sandbox, str]:
    """The checked sandbox of these settings, and its line (see sandbox.checked_sandbox)."""
    key = (settings["sandbox"], limits_of(settings))
    with _SANDBOX_LOCK:
        if key not in _SANDBOXES:
            _SANDBOXES[key] = checked_sandbox(settings["sandbox"], limits_of(settings))
        return _SANDBOXES[key]


def make_code_tests_reward(settings: dict) -> RewardFunction:
    mode = settings["mode"]

    def code_tests_reward(completions, prompts=None, **kwargs) -> list[float | None]:
        count = len(completions)
        columns = {name: list(values) for name, values in kwargs.items()
                   if isinstance(values, (list, tuple)) and len(values) == count}
        rows = [{name: values[index] for name, values in columns.items()} for index in range(count)]
        plan = plan_batch(completions, list(prompts) if prompts is not None else [None] * count, rows, mode)
        runs = sandbox_for(settings)[0].run_all(plan.jobs) if plan.jobs else []
        return [scorer(runs) for scorer in plan.scorers]

    return code_tests_reward


def check_test_columns(columns: list[str], source: str) -> None:
    """Data for code_tests must hold tests in a layout it reads; said before any model loads."""
    names = set(columns)
    if any(set(wanted) <= names for wanted in LAYOUT_COLUMNS.values()):
        return
    layouts = "; ".join(f"{layout}: {' and '.join(wanted)}" for layout, wanted in LAYOUT_COLUMNS.items())
    raise UserError(f"code_tests runs each completion against its row's tests, but {source} has no test columns "
                    f"(it has {', '.join(columns) or 'only the prompt'}); the layouts it reads are {layouts}")


def rows_without_tests(rows) -> int:
    return sum(row_tests(row) is None for row in rows)
