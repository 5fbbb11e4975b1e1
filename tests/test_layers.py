"""The layers, read from the source: the root holds the user's modules only, nothing in grpo_tool/ imports them, and
no import cycles. Imports inside functions count as much as those at the top (they are edges all the same)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

ROOT_MODULES = {"train_grpo", "config", "grpo_trainer", "data_loader", "rewards", "generation_logger"}


def project_modules() -> dict[str, Path]:
    files = [*ROOT.glob("*.py"), *(ROOT / "grpo_tool").rglob("*.py")]
    modules = {}
    for path in files:
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `module` imports, resolving `from package import name` to the submodule when it is one."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in known and name != module}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports(name, path, set(modules)) for name, path in modules.items()}


def test_the_root_holds_the_users_modules_only():
    assert {path.stem for path in ROOT.glob("*.py")} == ROOT_MODULES


def test_nothing_in_grpo_tool_imports_the_root(graph):
    upward = sorted((module, target) for module, targets in graph.items() if module.startswith("grpo_tool")
                    for target in targets if target in ROOT_MODULES)
    assert upward == []


def test_no_import_cycles(graph):
    def reaches(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for target in graph[stack.pop()]:
                if target not in seen:
                    seen.add(target)
                    stack.append(target)
        return seen

    cycles = sorted(module for module in graph if module in reaches(module))
    assert cycles == []


def test_the_check_sees_an_upward_import_and_a_cycle(tmp_path):
    """The rules above would pass on a graph the parser got wrong: on made-up modules it must find both faults."""
    (tmp_path / "a.py").write_text("from grpo_tool.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from config import y\n    import grpo_tool.a\n")
    known = {"grpo_tool.a", "grpo_tool.b", "config"}
    assert imports("grpo_tool.a", tmp_path / "a.py", known) == {"grpo_tool.b"}
    assert imports("grpo_tool.b", tmp_path / "b.py", known) == {"config", "grpo_tool.a"}


def test_ruff_finds_nothing():
    """The lint settings of pyproject.toml hold for the whole tree (a `noqa` only with its reason beside it)."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--quiet", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
    marker = "# " + "noqa"  # spelled in two parts, so that this line is not one
    reasonless = [f"{path.relative_to(ROOT)}:{number}" for path in ROOT.rglob("*.py") if "fixtures" not in path.parts
                  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                  if marker in line and not re.search(marker + r": [A-Z0-9, ]+ - \S", line)]
    assert reasonless == []
