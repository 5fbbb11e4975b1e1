"""The shipped whole-run recipes (config/recipes/, grpo_tool/recipes.py): each loads as a --config file does and passes
every check, by its path and by its name; --list-recipes lists every file with what it needs; the commands each
recipe's comments give parse, and its --plan plans on this machine what its card says it needs; a CPU recipe also
reads its data (a local copy of the hub dataset) and builds its trainer's arguments as a run does, without a model."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from config import load_config_file
from conftest import ROOT, run_main
from grpo_tool.recipes import RECIPE_DIR, config_file_path, find_recipe, recipes
from train_grpo import build_parser, config_from_args

RECIPES = recipes()
NAMES = [recipe.name for recipe in RECIPES]
# What a card's `needs:` line says: the hardware, and the memory the plan must fit in (each GPU's, with several).
NEEDS = re.compile(r"(?:CPU|1 GPU|(\d+) GPUs), (\d+) GB(?: each)?")
CPU_RECIPES = [recipe for recipe in RECIPES if recipe.needs.startswith("CPU")]


def from_flags(*argv: str):
    return config_from_args(build_parser().parse_args(list(argv)))


def commands(recipe) -> list[list[str]]:
    """The train_grpo.py command lines the recipe's comments give (a line ending in a backslash goes on), as the
    words after train_grpo.py."""
    text = "\n".join(line.lstrip("#") for line in recipe.path.read_text(encoding="utf-8").splitlines()
                     if line.startswith("#"))
    lines = text.replace("\\\n", " ").splitlines()
    return [shlex.split(line.split("train_grpo.py", 1)[1], comments=True) for line in lines if "train_grpo.py" in line]


def test_the_four_recipes_are_shipped_and_nothing_else_is_in_their_folder():
    assert {"gsm8k_smollm2_cpu", "gsm8k_calculator_qwen_1gpu", "ultrafeedback_llama8b_1gpu",
            "ultrafeedback_llama70b_8gpu"} <= set(NAMES)
    assert sorted(path.name for path in RECIPE_DIR.iterdir()) == sorted(recipe.path.name for recipe in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=NAMES)
def test_each_recipe_says_what_it_is_for_and_what_it_needs(recipe):
    assert recipe.description and len(recipe.description) <= 120, recipe.description
    assert NEEDS.fullmatch(recipe.needs), f"{recipe.name}: needs {recipe.needs!r}, not as 'CPU, 8 GB' or '1 GPU, 24 GB'"
    assert re.fullmatch(r"[a-z0-9_]+", recipe.name), "a recipe's name is its --config NAME: no dot (a suffix), no space"


@pytest.mark.parametrize("recipe", RECIPES, ids=NAMES)
def test_each_recipe_loads_by_path_and_by_name_and_passes_every_check(recipe):
    notes: list[str] = []
    parsed = build_parser().parse_args(["--config", str(recipe.path)])
    by_path = config_from_args(parsed, notes)
    assert notes == [], "a recipe says each setting once, in this tool's own names"
    assert from_flags("--config", recipe.name) == by_path
    written = load_config_file(recipe.path)
    assert {key: getattr(by_path, key) for key in written} == written  # every value as the file writes it
    assert by_path.output_dir.endswith(recipe.name)  # a run of each recipe in a folder of its own


def test_a_flag_beats_the_recipe():
    assert from_flags("--config", "gsm8k_smollm2_cpu", "--max-steps", "7").max_steps == 7


@pytest.mark.parametrize("recipe", RECIPES, ids=NAMES)
def test_every_command_a_recipe_gives_parses_and_names_it(recipe):
    given = commands(recipe)
    assert [words for words in given if "--plan" in words], f"{recipe.name} gives no --plan command"
    for words in given:
        build_parser().parse_args(words)
        assert words[words.index("--config") + 1] == recipe.name


@pytest.mark.parametrize("recipe", RECIPES, ids=NAMES)
def test_each_recipe_plans_within_what_it_needs(recipe, tmp_path):
    """The recipe's own --plan command, run from the repository as its comment gives it: a plan, not an error, also
    for the GPU recipes on a machine without a GPU (--gpu-memory), and a peak within the memory the card names."""
    words = next(words for words in commands(recipe) if "--plan" in words)
    result = run_main(*words, "--output-dir", str(tmp_path), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "plan.json").read_text())
    gpus, gigabytes = NEEDS.fullmatch(recipe.needs).groups()
    assert record["peak"] <= float(gigabytes)
    if recipe.needs.startswith("CPU"):
        return
    assert record["device"]["kind"] == "cuda" and record["memory"] == float(gigabytes) and record["fits"]
    assert record["sharding"]["processes"] == int(gpus or 1)


@pytest.mark.parametrize("recipe", CPU_RECIPES, ids=[recipe.name for recipe in CPU_RECIPES])
def test_a_cpu_recipe_reads_its_data_and_builds_its_trainers_arguments(recipe, hub_mirror, monkeypatch, tmp_path):
    """As a run starts, up to the model: the rewards and tools resolved, the machine checked for the model, the
    dataset read (the hub's layout, from a local copy) and checked against the rewards, TRL's arguments built."""
    from grpo_trainer import GRPOTrainer

    monkeypatch.setenv("GRPO_DATASET_MIRROR", str(hub_mirror))
    config = from_flags("--config", recipe.name, "--output-dir", str(tmp_path / "out"))
    trainer = GRPOTrainer(config)
    data = trainer.load_data()
    assert len(data["train"]) and len(data["eval"])
    if config.dataset_name == "gsm8k":
        assert [component.name for component in trainer.components] == ["answer_match"]
        assert "answer" in data["train"].column_names
    assert trainer.check_arguments() is None  # nothing to resume; every TRL option accepted
    assert not (tmp_path / "out").exists()


def test_list_recipes_lists_every_file_with_what_it_needs_and_is_for():
    result = run_main("--list-recipes")
    assert (result.returncode, result.stderr) == (0, "")
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    files = sorted(path for path in RECIPE_DIR.iterdir() if path.suffix in (".yaml", ".yml"))
    assert files
    for path in files:
        recipe = find_recipe(path.stem)
        assert path.stem in rows, result.stdout
        assert recipe.needs in rows[path.stem] and recipe.description in rows[path.stem]


def test_a_name_that_is_no_file_and_no_recipe_lists_the_recipes(tmp_path):
    result = run_main("--plan", "--config", "gsm8k_smollm2", "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: config file gsm8k_smollm2: no such file, and no recipe of that name (did you "
                               "mean 'gsm8k_smollm2_cpu'?)")
    assert all(name in lines[0] for name in NAMES) and "--list-recipes" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["./gsm8k_smollm2_cpu", "gsm8k_smollm2_cpu.yaml", "recipes/gsm8k_smollm2_cpu"])
def test_a_path_is_never_read_as_a_recipe(tmp_path, value):
    result = run_main("--plan", "--config", value, "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: config file ")
    assert result.stderr.endswith(": no such file\n") and "--list-recipes" not in result.stderr  # as before recipes


def test_a_file_of_the_recipes_name_is_read_as_the_file(tmp_path, monkeypatch):
    """--config took paths first: a file the user has is what the user means, even without a suffix."""
    (tmp_path / "gsm8k_smollm2_cpu").write_text('{"model_name": "tiny", "dataset_name": "sample"}')
    monkeypatch.chdir(tmp_path)
    assert config_file_path("gsm8k_smollm2_cpu") == "gsm8k_smollm2_cpu"
    assert from_flags("--config", "gsm8k_smollm2_cpu").model_name == "tiny"
