"""The README's figures and tables against the code that owns them: metrics, alarms, presets, rewards and planned
memory. Each test fails when one drifts from the other (tests/readme_text.py reads the README)."""

from __future__ import annotations

import inspect
import re

import pytest
from readme_text import code_blocks, first_span, section, settings_in, spans, table_under, tables


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
    recent = re.search(r'"recent" means the last (\d+) steps, "the start" the first (\d+)', section("Alarms"))
    assert recent and (int(recent.group(1)), int(recent.group(2))) == (constants["RECENT"], constants["START"])


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


def test_recipes_table_is_config_recipes():
    from grpo_tool.recipes import recipes

    rows = table_under("Recipes: whole runs as files", "recipe")
    assert [(first_span(row["recipe"]), row["needs"], row["what it is for"]) for row in rows] == \
        [(recipe.name, recipe.needs, recipe.description) for recipe in recipes()]


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
    from grpo_tool.plan.fitting import make_plan

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
    from grpo_tool.plan.fitting import make_plan

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
    from grpo_tool.plan.fitting import make_plan
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
