"""The README against the code, continued: every flag and command it shows parses, the code map names every module,
the path of a run follows the recipe, and every name and path it gives exists."""

from __future__ import annotations

import ast
import inspect
import re
import shlex
from pathlib import Path

import pytest
from readme_text import code_blocks, first_span, manual, section, spans, table_under

from conftest import ROOT

# (f) Flags.

def parser_flags() -> set[str]:
    from grpo_tool.cli import build_parser

    return {flag for action in build_parser()._actions for flag in action.option_strings}


def commands() -> list[str]:
    """What follows `train_grpo.py` in every command line of the README's code blocks."""
    found = []
    for block in code_blocks(manual()):
        for line in block.replace("\\\n", " ").splitlines():
            if "train_grpo.py" in line and not line.lstrip().startswith(("from ", "import ", "#")):
                found.append(line.split("train_grpo.py", 1)[1])
    return found


def test_every_flag_in_a_code_block_is_a_flag_the_parser_knows():
    known = parser_flags()
    lines = commands()
    assert len(lines) > 20
    for line in lines:
        words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
        unknown = [word.split("=")[0] for word in words if word.startswith("--") and word.split("=")[0] not in known]
        assert not unknown, f"README command `train_grpo.py{line}` uses flags the parser does not know: {unknown}"


def test_every_command_in_a_code_block_parses(capsys):
    from grpo_tool.cli import build_parser

    for line in commands():
        words = shlex.split(re.sub(r"\[[^\]]*\]", " ", line), comments=True)  # [optional placeholders] left out
        if "--help" in words:
            continue
        try:
            build_parser().parse_args(words)
        except SystemExit as stop:
            pytest.fail(f"README command `train_grpo.py{line}` does not parse ({stop.code}): {capsys.readouterr().err}")


# Placeholders and other programs' flags written inline: not ours to check.
NOT_OUR_FLAGS = {"--flag", "--field-name", "--budget", "--accuracy-weight"}  # the last: the manual says it is refused


def test_every_flag_written_inline_is_a_flag_the_parser_knows():
    from accelerate.commands.launch import launch_command_parser

    known = parser_flags()
    launcher = {flag for action in launch_command_parser()._actions for flag in action.option_strings}
    written = {word.split("=")[0] for span in spans(manual()) if span.startswith("--")
               for word in span.split() if word.startswith("--")}
    assert len(written) > 30
    assert written - known - launcher - NOT_OUR_FLAGS == set()
    assert {"--machine_rank", "--rdzv_conf"} <= written & launcher  # accelerate launch's, as the README gives them


# (g) The code map, the path of a run, and every path the README names.

def mapped_modules() -> list[str]:
    return [first_span(row["module"]) for row in table_under("The code in one page", "job")]


def test_code_map_names_modules_that_exist():
    for path in mapped_modules():
        assert (ROOT / path).is_file(), f"the README's code map names {path}, which does not exist"


def test_code_map_names_every_module_root_first():
    modules = mapped_modules()
    public = sorted(path.name for path in ROOT.glob("*.py"))
    assert sorted(modules[:len(public)]) == public, "the root's modules come first in the code map"
    internal = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "grpo_tool").rglob("*.py")
                      if path.name != "__init__.py")
    assert sorted(modules[len(public):]) == internal, "every module of grpo_tool/ has its row in the code map"


PROJECT_MODULES = {"train_grpo", "config", "grpo_trainer", "data_loader", "rewards", "generation_logger", "grpo_tool"}
FILE_ENDINGS = {"py", "json", "jsonl", "yaml", "yml", "html", "log", "md", "txt", "gguf", "parquet", "gz", "sh"}


def module_names(path: Path) -> dict[str, ast.AST]:
    """Top-level names of a module's source: functions, classes, assignments and imports."""
    names: dict[str, ast.AST] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names[target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = node
    return names


def resolve(dotted: str) -> str | None:
    """Why `dotted` (module.name, module.Class.method) names nothing in the code, or None when it does."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if path.is_file():
            break
    else:
        return f"no module for {dotted}"
    rest = parts[cut:]
    if not rest:
        return None
    names = module_names(path)
    if rest[0] not in names:
        if (path.parent / rest[0]).is_dir() or (path.parent / f"{rest[0]}.py").is_file():
            return None
        return f"{path.relative_to(ROOT)} defines no {rest[0]}"
    node = names[rest[0]]
    if len(rest) > 1 and isinstance(node, ast.ClassDef):
        members = {child.name for child in node.body if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))}
        members |= {target.id for child in node.body if isinstance(child, ast.Assign)
                    for target in child.targets if isinstance(target, ast.Name)}
        if rest[1] not in members:
            return f"{path.relative_to(ROOT)}: class {rest[0]} has no {rest[1]}"
    return None


def test_every_dotted_name_the_readme_gives_is_in_the_code():
    checked = []
    for span in spans(manual()):
        name = re.sub(r"\[[^\]]*\]|\([^)]*\)", "", span)
        if not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+", name) or name.rsplit(".", 1)[1] in FILE_ENDINGS:
            continue
        if name.startswith("GRPOTrainer."):
            name = "grpo_trainer." + name
        if name.split(".")[0] in PROJECT_MODULES:
            checked.append(name)
            assert resolve(name) is None, f"the README names `{span}`: {resolve(name)}"
    assert len(checked) > 20
    assert resolve("grpo_trainer.GRPOTrainer.no_such_step") and resolve("grpo_tool.no_such_module.thing")


def test_path_of_a_run_follows_the_train_recipe():
    """The steps the path of a run names for GRPOTrainer are the steps the train recipe and train() call, in order."""
    import grpo_trainer
    import train_grpo

    text = section("The path of a run")
    named = list(dict.fromkeys(span.split(".", 1)[1] for span in spans(text)
                               if re.fullmatch(r"GRPOTrainer\.\w+", span)))

    def steps_of(function, receiver: str) -> list[str]:
        called = re.findall(rf"\b{receiver}\.(\w+)\(", inspect.getsource(function))
        return [name for name in dict.fromkeys(called) if hasattr(grpo_trainer.GRPOTrainer, name)]

    # The recipe's steps, with GRPOTrainer.train's own steps after it (those the recipe has not taken already).
    outer = steps_of(train_grpo.train, "trainer")
    inner = [name for name in steps_of(grpo_trainer.GRPOTrainer.train, "self") if name not in outer]
    steps = [step for name in outer for step in ([name, *inner] if name == "train" else [name])]
    assert "fit" in steps and "save_model" in steps
    assert named == steps, f"the README's path of a run names {named}; a training run takes {steps}"


def test_tasks_table_is_the_recipes():
    import train_grpo

    rows = table_under("Other tasks", "flag")
    assert {first_span(row["recipe"]) for row in rows} == {*train_grpo.RECIPES, "report", "list_recipes"}
    assert callable(train_grpo.report) and callable(train_grpo.list_recipes)


def test_output_dir_table_is_what_outputs_names():
    from grpo_tool import outputs

    rows = table_under("What a run leaves in the output dir", "entry")
    entries = {first_span(row["entry"]).rstrip("/") for row in rows}
    names = {value for name, value in vars(outputs).items() if name.endswith(("_FILE", "_DIR"))
             and name not in ("STAGING_DIR", "MERGED_DIR", "TRAINER_STATE_FILE", "EVAL_METRICS_FILE",
                                  "GROUPS_STATE_FILE", "STEP_RECORDS_FILE", "COMPARISON_FILE")}  # told in their rows
    assert entries == names | {outputs.CHECKPOINT_PREFIX + "N"}


# Written by a script that has not run yet (bench/gpu.py needs a GPU).
NOT_YET_WRITTEN = {"bench/results/gpu.json"}


def test_every_repository_path_the_readme_names_exists():
    text = manual()
    paths = set(re.findall(r"(?<![\w/.~])((?:config|bench|tests|data|grpo_tool|docs)/[\w./*-]*[\w*/])", text))
    assert len(paths) > 20
    for path in sorted(paths - NOT_YET_WRITTEN):
        assert list(ROOT.glob(path.rstrip("/"))), f"the README names {path}, which is not in the repository"


# Figures the prose gives, each beside the constant or default it comes from.

def figures_in_prose() -> list[tuple[str, object]]:
    import data_loader
    from grpo_tool import backend, launch
    from grpo_tool.settings import GRPOConfig

    return [
        (r"A tenth of a source without an evaluation split", data_loader.EVAL_FRACTION == 0.1),
        (r"A tenth of a source without an evaluation split \(at most (\d+) rows\)", data_loader.MAX_HELD_OUT),
        (r"the others stop quietly with the same status 2, (\w+) seconds later", launch.QUIET_LINGER_SECONDS),
        (r"a frozen copy of the starting weights, up to (\d+)B parameters", backend.BASE_COPY_MAX_PARAMETERS / 1e9),
        (r"any known model of (\d+)B parameters or more", backend.CPU_MODEL_LIMIT_BILLION),
        (r"generation logs \(on by default, (\d+) prompts\)",
         GRPOConfig.enable_generation_logging and GRPOConfig.max_generation_samples),
        (r"no preset applied \(LoRA on, learning rate ([\d.e-]+)\)", GRPOConfig.use_lora and GRPOConfig.learning_rate),
        (r"where everything goes \(default `([^`]+)`\)", GRPOConfig.output_dir),
    ]


NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "ten": 10}


def test_other_figures_are_the_constants_they_come_from():
    text = re.sub(r"\s+", " ", manual())
    for pattern, expected in figures_in_prose():
        found = re.search(pattern, text)
        assert found, f"the README no longer says /{pattern}/: update this test with the README"
        if not found.groups():
            assert expected is True, pattern
            continue
        stated = NUMBER_WORDS.get(found.group(1), found.group(1))
        if isinstance(expected, str):
            assert stated == expected, f"README: {found.group(0)!r}; the code: {expected}"
        else:
            assert float(stated) == float(expected), f"README: {found.group(0)!r}; the code: {expected}"
