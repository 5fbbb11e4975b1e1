"""Every module's docstring example runs as written, in the module's own namespace, in a fresh folder.

The command-line examples of grpo_tool/trl_options.py and grpo_tool/reward_check.py are not Python and are left out.
The command line's example runs first: it leaves the ./grpo_outputs run that the examples of the report, the output
dir's names, the checkpoints and the run record read.
"""

import ast
import importlib

import pytest

from conftest import ROOT

MODULES = ["train_grpo", "grpo_tool.report", "grpo_tool.outputs", "grpo_tool.checkpoints", "grpo_tool.run_record",
           "grpo_tool.alarms", "config", "data_loader", "generation_logger", "grpo_trainer", "grpo_tool.json_files",
           "grpo_tool.messages", "grpo_tool.prompt_budget",
           "rewards", "grpo_tool.tiny_model", "grpo_tool.backend", "grpo_tool.callbacks", "grpo_tool.console",
           "grpo_tool.run_dir", "grpo_tool.example_models", "grpo_tool.model_registry", "grpo_tool.data_files",
           "grpo_tool.flags", "grpo_tool.models", "grpo_tool.reward_guard", "grpo_tool.sampling", "grpo_tool.trl_setup",
           "grpo_tool.plan.memory", "grpo_tool.plan.timing", "grpo_tool.plan.fitting", "grpo_tool.plan.device",
           "grpo_tool.plan.prompts", "grpo_tool.plan.table",
           "grpo_tool.model_shapes", "grpo_tool.base_view", "grpo_tool.held_out", "grpo_tool.answers",
           "grpo_tool.schemas", "grpo_tool.custom_rewards", "grpo_tool.places", "grpo_tool.settings",
           "grpo_tool.launch",
           "grpo_tool.datasets", "grpo_tool.components", "grpo_tool.scoring", "grpo_tool.reward_config",
           "grpo_tool.cli", "grpo_tool.trainer_hooks", "grpo_tool.metrics", "grpo_tool.group_choice",
           "grpo_tool.shared_prompts", "grpo_tool.plan.sharding", "grpo_tool.accelerate_launch", "grpo_tool.tools",
           "grpo_tool.code_tests", "grpo_tool.sandbox", "grpo_tool.trl_surface", "grpo_tool.recipes"]


def example(module) -> str:
    """The docstring's indented block, dedented."""
    lines = [line[4:] for line in (module.__doc__ or "").splitlines() if line.startswith("    ")]
    return "\n".join(lines)


def test_every_module_with_an_example_is_listed():
    files = [*ROOT.glob("*.py"), *ROOT.glob("grpo_tool/**/*.py")]
    with_examples = {".".join(path.relative_to(ROOT).with_suffix("").parts) for path in files
                     if any(line.startswith("    ") for line in (ast.get_docstring(ast.parse(path.read_text()))
                                                                or "").splitlines())}
    assert with_examples - set(MODULES) == {"grpo_tool.trl_options", "grpo_tool.reward_check"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("examples")


@pytest.mark.parametrize("name", MODULES)
def test_the_example_runs(name, folder, monkeypatch):
    monkeypatch.chdir(folder)
    module = importlib.import_module(name)
    code = example(module)
    assert code.strip(), f"{name} has no example"
    namespace = dict(vars(module))
    exec(compile(code, f"<{name} docstring>", "exec"), namespace)  # running the example is the test
