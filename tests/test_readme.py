"""The README's figures and tables against the code that owns them: each test fails when one drifts from the other.

The README is read with a small parser (headings, tables, code blocks, code spans), so the tests find a table by the
heading it sits under and its header, not by line numbers, and prose around it may change freely.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import shlex
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
FENCE = re.compile(r"^\s*```")


# The parser.

def readme() -> str:
    return README.read_text(encoding="utf-8")


def prose_lines(text: str) -> list[str | None]:
    """The lines of `text`, with those inside fenced code blocks (fences included) as None."""
    lines, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            lines.append(None)
        else:
            lines.append(None if inside else line)
    return lines


def section(title: str, text: str | None = None) -> str:
    """The text under the heading `title` (any level), up to the next heading of the same or a higher level."""
    text = readme() if text is None else text
    raw, prose = text.splitlines(), prose_lines(text)
    found = []
    for number, line in enumerate(prose):
        heading = re.match(r"^(#+)\s+(.*?)\s*$", line or "")
        if heading:
            found.append((number, len(heading.group(1)), heading.group(2)))
    for index, (number, level, name) in enumerate(found):
        if name == title:
            end = next((later for later, later_level, _ in found[index + 1:] if later_level <= level), len(raw))
            return "\n".join(raw[number + 1:end])
    raise AssertionError(f"README has no heading {title!r}; its headings: {[name for _, _, name in found]}")


def split_row(line: str) -> list[str]:
    """A table row's cells: split on | outside code spans and not escaped."""
    cells, cell, in_code = [], "", False
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    previous = ""
    for char in body:
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code and previous != "\\":
            cells.append(cell.strip())
            cell = ""
        else:
            cell += char
        previous = char
    cells.append(cell.strip())
    return cells


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in `text` (outside code blocks), as a list of rows keyed by the header's cells."""
    found, lines = [], [line.strip() if line is not None else None for line in prose_lines(text)]
    index = 0
    while index < len(lines) - 1:
        header, rule = lines[index], lines[index + 1]
        if header and rule and header.startswith("|") and re.fullmatch(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?", rule):
            names = split_row(header)
            rows = []
            index += 2
            while index < len(lines) and lines[index] and lines[index].startswith("|"):
                cells = split_row(lines[index])
                assert len(cells) == len(names), f"table row with {len(cells)} cells under {names}: {lines[index]}"
                rows.append(dict(zip(names, cells)))
                index += 1
            found.append(rows)
        else:
            index += 1
    return found


def table_under(title: str, first_column: str) -> list[dict[str, str]]:
    """The table under the heading `title` whose first header cell is `first_column`."""
    candidates = tables(section(title))
    for rows in candidates:
        if rows and next(iter(rows[0])) == first_column:
            return rows
    raise AssertionError(f"no table with first column {first_column!r} under README heading {title!r} (found "
                         f"{[next(iter(rows[0])) for rows in candidates if rows]})")


def spans(text: str) -> list[str]:
    """Inline code spans outside code blocks (a span may wrap onto the next line)."""
    prose = "\n".join(line if line is not None else "" for line in prose_lines(text))
    return [re.sub(r"\s*\n\s*", " ", span) for span in re.findall(r"`([^`]+)`", prose)]


def code_blocks(text: str) -> list[str]:
    """The bodies of fenced code blocks."""
    return re.findall(r"^\s*```[^\n]*\n(.*?)^\s*```", text, flags=re.S | re.M)


def settings_in(cell: str) -> dict:
    """`key=value` code spans in a cell, values read as JSON (null, true, 3e-3), else as text."""
    found = {}
    for span in spans(cell):
        if re.fullmatch(r"\w+=\S+", span):
            key, value = span.split("=", 1)
            try:
                found[key] = json.loads(value)
            except json.JSONDecodeError:
                found[key] = value
    return found


def first_span(cell: str) -> str:
    found = spans(cell)
    assert found, f"no code span in table cell {cell!r}"
    return found[0]


def test_parser_finds_a_table_under_a_heading():
    text = "# A\n\n| x | y |\n|---|---|\n| `1` | a \\| b |\n\n```\n# not a heading\n| no | table |\n```\n## B\n"
    assert tables(section("A", text)) == [[{"x": "`1`", "y": "a \\| b"}]]
    assert section("B", text) == ""
    with pytest.raises(AssertionError):
        section("C", text)


# The two commands a newcomer runs first.

def test_two_commands_stay_first():
    text = section("Two commands")
    assert "pip install -r requirements.txt && python train_grpo.py --quick-test" in code_blocks(text)[0]
    assert "pip install -r requirements-dev.txt && python -m pytest" in code_blocks(text)[1]


# (a) Metrics.

def test_metrics_table_is_metrics_meanings():
    from grpo_tool.metrics import MEANINGS

    rows = table_under("Metrics", "metric")
    assert [(first_span(row["metric"]), row["meaning"]) for row in rows] == list(MEANINGS.items())


# (b) Alarms.

def alarm_ids_in_code() -> list[str]:
    from grpo_tool.alarms import find_alarms

    return re.findall(r'"(\w+)":', inspect.getsource(find_alarms))


def threshold_constants() -> dict[str, float]:
    from grpo_tool import alarms

    return {name: value for name, value in vars(alarms).items()
            if name.isupper() and isinstance(value, (int, float)) and not isinstance(value, bool)}


def figures(text: str) -> list[float]:
    """The numbers a sentence states, a percentage as a share (80% is 0.8)."""
    return [float(number) / (100 if percent else 1) for number, percent in re.findall(r"(\d+(?:\.\d+)?)(%?)", text)]


def test_alarm_table_lists_every_alarm_the_code_raises():
    rows = table_under("Alarms", "alarm")
    assert sorted(dict.fromkeys(first_span(row["alarm"]) for row in rows)) == sorted(alarm_ids_in_code())


def test_alarm_thresholds_are_the_constants_of_alarms_py():
    constants = threshold_constants()
    stated = {}
    for row in table_under("Alarms", "alarm"):
        alarm = row["alarm"]
        row_values = {}
        for span in spans(row["thresholds"]):
            name, value = (part.strip() for part in span.split("="))
            assert name in constants, f"{alarm}: the README names {name}, which grpo_tool/alarms.py does not define"
            assert float(value) == constants[name], f"{alarm}: README says {name} = {value}, the code {constants[name]}"
            row_values[name] = float(value)
        stated.update(row_values)
        # Every figure the sentence gives is one of the row's thresholds (a row per threshold where an alarm has
        # several, so that a figure cannot pass for another threshold's).
        for figure in figures(row["fires when"]):
            assert figure in row_values.values(), (f"{alarm}: the README's figure {figure:g} is none of the "
                                                   f"thresholds it names ({row_values})")
    left_out = set(constants) - set(stated)
    assert not left_out, f"thresholds of grpo_tool/alarms.py the README leaves out: {left_out}"
    recent = re.search(r'"recent" means the last (\d+) training logs', section("Alarms"))
    assert recent and int(recent.group(1)) == constants["RECENT"]


# (c) Model and dataset presets.

def test_model_presets_table_is_the_model_registry():
    from grpo_tool.model_registry import MODEL_PRESETS
    from grpo_tool.settings import GRPOConfig

    rows = table_under("Models and backends", "preset")
    assert [first_span(row["preset"]) for row in rows] == list(MODEL_PRESETS)
    for row in rows:
        preset = MODEL_PRESETS[first_span(row["preset"])]
        assert first_span(row["checkpoint"]) == preset["model_name"]
        assert settings_in(row["settings it brings"]) == {k: v for k, v in preset.items() if k != "model_name"}
    assert [first_span(row["preset"]) for row in rows if "(default)" in row["preset"]] == [GRPOConfig.model_name]


def test_flag_table_names_the_model_and_dataset_presets():
    from grpo_tool.datasets import DATASET_NAMES, HUB_SOURCES
    from grpo_tool.model_registry import MODEL_PRESETS
    from grpo_tool.settings import GRPOConfig

    rows = {first_span(row["flag"]): row["what it does"] for row in table_under("Training", "flag")}
    assert set(spans(rows["--model NAME"])) == set(MODEL_PRESETS)
    assert f"`{GRPOConfig.model_name}` default" in rows["--model NAME"]
    named = spans(rows["--dataset NAME"])
    assert [name for name in named if "/" not in name] == list(DATASET_NAMES)
    assert {name for name in named if "/" in name} <= {source.repo_id for source in HUB_SOURCES.values()}
    assert f"`{GRPOConfig.dataset_name}` (default)" in rows["--dataset NAME"]


def test_dataset_table_is_the_dataset_registry():
    from grpo_tool.datasets import DATASET_PRESETS, HUB_SOURCES, SAMPLE_DATASET, SAMPLE_FILES

    rows = {first_span(row["`--dataset`"]): row for row in table_under("Data", "`--dataset`")}
    assert list(rows) == [*HUB_SOURCES, SAMPLE_DATASET]
    for name, source in HUB_SOURCES.items():
        row = rows[name]
        assert row["hub dataset"].split(",")[0].strip() == source.repo_id
        assert (f"configuration `{source.config_name}`" in row["hub dataset"]) == (source.config_name is not None)
        train, evaluation = (part.strip() for part in row["splits (train / eval)"].split("/"))
        assert train == source.train_split
        assert evaluation == (source.eval_split or "a held-out tenth")
        assert settings_in(row["settings it brings"]) == DATASET_PRESETS.get(name, {})
    counts = re.fullmatch(r"(\d+) / (\d+) rows", rows[SAMPLE_DATASET]["splits (train / eval)"])
    for split, count in zip(("train", "eval"), counts.groups()):
        assert len(SAMPLE_FILES[split].read_text(encoding="utf-8").splitlines()) == int(count)
    assert set(DATASET_PRESETS) <= set(rows)


def test_modes_table_is_the_mode_presets():
    from config import MODE_PRESETS, QUICK_TEST_REAL_MODEL

    rows = table_under("Modes", "mode")
    expected = {"`--quick-test`": MODE_PRESETS["quick_test"], "`--production`": MODE_PRESETS["production"],
                "`--quick-test` with a model other than `tiny`": QUICK_TEST_REAL_MODEL}
    assert {row["mode"]: settings_in(row["settings it sets"]) for row in rows} == expected


# (d) Reward components and presets.

def test_reward_components_table_is_the_built_in_components():
    from grpo_tool.reward_config import RULE_COMPONENTS

    rows = table_under("Rewards", "component")
    assert tuple(first_span(row["component"]) for row in rows) == RULE_COMPONENTS


def test_reward_presets_table_is_config_rewards():
    from grpo_tool.reward_config import DEFAULT_REWARD_PRESET, RULE_COMPONENTS, load_reward_config, reward_preset_names

    rows = table_under("Rewards", "preset")
    assert sorted(first_span(row["preset"]) for row in rows) == reward_preset_names()
    assert [name for name in rows[0] if name in RULE_COMPONENTS] == list(RULE_COMPONENTS)
    for row in rows:
        name = first_span(row["preset"])
        config = load_reward_config(name)
        for component in RULE_COMPONENTS:
            assert float(row[component]) == config[f"{component}_weight"], f"{name}: {component} weight"
        target = re.fullmatch(r"(\d+) words, falloff ([\d.]+)", row["length target"])
        if config["length_weight"] > 0:
            assert target, f"{name}: the length target of a preset that weighs length"
            assert int(target.group(1)) == config["length"]["optimal_length"]
            assert float(target.group(2)) == config["length"]["length_weight"]
    assert [first_span(row["preset"]) for row in rows if "the default" in row["for"]] == [DEFAULT_REWARD_PRESET]


# (e) Planned memory.

GB_TOLERANCE = 0.01  # the README rounds planned figures to two decimals of a GB
TINY_QUICK_TEST_PROMPT = 53  # tokens of the sample data's longest prompt (bench/results/plan_accuracy.json)


def quick_test_config(**changes):
    from config import MODE_PRESETS
    from grpo_tool.model_registry import model_preset
    from grpo_tool.settings import GRPOConfig

    model = changes.pop("model_name", "tiny")
    return GRPOConfig(model_name=model, dataset_name="sample",
                      **{**model_preset(model), **MODE_PRESETS["quick_test"], **changes})


def cpu(memory_gb: float):
    from grpo_tool.plan.device import GB, Device

    return Device("cpu", memory_gb * GB, "a CPU", 0, 0, "given")  # no throughput: no time planned


def test_tiny_plan_figures():
    from grpo_tool.plan.device import GB, Device
    from grpo_tool.plan.memory import make_plan

    text = section("Plan memory and time before a run")
    gpu_figure = re.search(r"`tiny` plans at about ([\d.]+) GB on a 24 GB GPU", text)
    cpu_figure = re.search(r"`tiny` plans at about [^;)]*? and ([\d.]+) GB on a CPU", text)
    assert gpu_figure and cpu_figure, "the README's tiny-model plan figures were not found"
    on_gpu = make_plan(quick_test_config(), Device.gpu(24), prompt=(TINY_QUICK_TEST_PROMPT, "given"))
    on_cpu = make_plan(quick_test_config(), cpu(16), prompt=(TINY_QUICK_TEST_PROMPT, "given"))
    assert abs(float(gpu_figure.group(1)) - on_gpu.peak / GB) <= GB_TOLERANCE, on_gpu.peak / GB
    assert abs(float(cpu_figure.group(1)) - on_cpu.peak / GB) <= GB_TOLERANCE, on_cpu.peak / GB
    assert on_gpu.runtime / on_gpu.peak > 0.9  # "almost all of it the CUDA runtime allowance"


def test_smollm2_plan_table():
    from config import QUICK_TEST_REAL_MODEL
    from grpo_tool.plan.device import MB
    from grpo_tool.plan.memory import make_plan

    block = next(body for body in code_blocks(section("Plan memory and time before a run")) if "part " in body)
    rows = [re.match(r"^\s*(\S+(?: \S+)*)\s{2,}(\d+)\s{2,}(\S+)\s+(.*)$", line) for line in block.splitlines()[1:]]
    assert all(rows), block
    stated = {row.group(1): (int(row.group(2)), row.group(3), row.group(4).removesuffix("...").strip()) for row in rows}
    config = quick_test_config(model_name="HuggingFaceTB/SmolLM2-135M-Instruct", **QUICK_TEST_REAL_MODEL)
    total_tokens = int(re.search(r"x (\d+) tokens", stated["KV cache"][2]).group(1))
    free = float(re.search(r"fits in ([\d.]+) GB", stated["peak"][2]).group(1))
    plan = make_plan(config, cpu(free), prompt=(total_tokens - config.max_completion_length, "given"))
    assert [name for name in stated if name != "peak"] == [part.name for part in plan.parts]
    for part in plan.parts:
        megabytes, phase, note = stated[part.name]
        assert abs(megabytes - part.bytes / MB) <= 1, f"{part.name}: README {megabytes} MB, plan {part.bytes / MB:.0f}"
        assert phase == part.phase and part.note.startswith(note), (part.name, part.phase, part.note)
    assert abs(stated["peak"][0] - plan.peak / MB) <= 1 and plan.fits


def test_preset_plan_table():
    from grpo_tool.model_registry import model_preset
    from grpo_tool.model_shapes import find_shape
    from grpo_tool.plan.device import GB, Device
    from grpo_tool.plan.memory import make_plan
    from grpo_tool.settings import GRPOConfig

    text = section("Plan memory and time before a run")
    rows = table_under("Plan memory and time before a run", "preset")
    assert rows
    budget = GRPOConfig.max_seq_length - GRPOConfig.max_completion_length
    assert f"{budget:,}-token budget" in text
    for row in rows:
        name = first_span(row["preset"])
        config = GRPOConfig(model_name=name, **model_preset(name))
        for column, memory in (("24 GB GPU", 24), ("80 GB GPU", 80)):
            plan = make_plan(config, Device.gpu(memory), prompt=(budget, "the prompt budget"))
            cell = row[column]
            assert abs(float(cell.split()[0]) - plan.peak / GB) <= 0.05, f"{name} on {column}: {plan.peak / GB:.2f}"
            assert ("does not fit" not in cell) == plan.fits, f"{name} on {column}: fits={plan.fits}"
            parts = {part.name: part.bytes / GB for part in plan.parts}
            if alone := re.search(r"weights alone ([\d.]+)", cell):
                assert abs(float(alone.group(1)) - parts["weights"]) <= 0.05
            if batch := re.search(r"batch (\d+) would", cell):
                assert any(f"per_device_train_batch_size {batch.group(1)} " in idea for idea in plan.would_fit)
            if seconds := re.search(r"~(\d+) s/step", cell):
                assert abs(int(seconds.group(1)) - plan.seconds_per_step) <= 0.1 * plan.seconds_per_step
        named = dict(re.findall(r"([A-Za-z][A-Za-z ]*?) (\d+\.\d+)", row["largest parts"]))
        assert named, row["largest parts"]
        for part, size in named.items():
            assert abs(float(size) - parts[part]) <= 0.05, f"{name}: {part} is {parts[part]:.2f} GB"
            assert all(parts[part] >= other - 0.05 for key, other in parts.items() if key not in named), \
                f"{name}: {part} is not among the largest parts {sorted(parts.items(), key=lambda item: -item[1])}"
        if shape := re.search(r"head dim (\d+), (\d+) layers", row["largest parts"]):
            found = find_shape(name)
            assert (found.head_dim, found.layers) == tuple(map(int, shape.groups()))


# (f) Flags.

def parser_flags() -> set[str]:
    from grpo_tool.cli import build_parser

    return {flag for action in build_parser()._actions for flag in action.option_strings}


def commands() -> list[str]:
    """What follows `train_grpo.py` in every command line of the README's code blocks."""
    found = []
    for block in code_blocks(readme()):
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
NOT_OUR_FLAGS = {"--flag", "--field-name", "--budget"}


def test_every_flag_written_inline_is_a_flag_the_parser_knows():
    known = parser_flags()
    written = {word.split("=")[0] for span in spans(readme()) if span.startswith("--")
               for word in span.split() if word.startswith("--")}
    assert len(written) > 30
    assert written - known - NOT_OUR_FLAGS == set()


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
    for span in spans(readme()):
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
    assert {first_span(row["recipe"]) for row in rows} == {*train_grpo.RECIPES, "report"}
    assert callable(train_grpo.report)


def test_output_dir_table_is_what_outputs_names():
    from grpo_tool import outputs

    rows = table_under("What a run leaves in the output dir", "entry")
    entries = {first_span(row["entry"]).rstrip("/") for row in rows}
    names = {value for name, value in vars(outputs).items() if name.endswith(("_FILE", "_DIR"))
             and name not in ("STAGING_DIR", "MERGED_DIR", "TRAINER_STATE_FILE", "EVAL_METRICS_FILE")}
    assert entries == names | {outputs.CHECKPOINT_PREFIX + "N"}


# Written by a script that has not run yet (bench/gpu.py needs a GPU).
NOT_YET_WRITTEN = {"bench/results/gpu.json"}


def test_every_repository_path_the_readme_names_exists():
    text = readme()
    paths = set(re.findall(r"(?<![\w/.~])((?:config|bench|tests|data|grpo_tool)/[\w./*-]*[\w*/])", text))
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
    text = re.sub(r"\s+", " ", readme())
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
