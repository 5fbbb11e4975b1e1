"""Whole-run recipes: the YAML files in config/recipes/, each a flat mapping of the settings a `--config` file takes,
for one run worth starting from (as open-r1's recipes/ and torchtune's shipped configs are). A recipe runs as
`--config config/recipes/NAME.yaml`, or by its name, `--config NAME`; `--list-recipes` lists them. (They are not
train_grpo.RECIPES, the tasks a command runs: train, evaluate, plan.)

A recipe's leading comment lines are its card, read without reading the settings: the first says what it is for,
a `needs:` line what it runs on and the memory its plan fits in (`CPU, 8 GB`, `1 GPU, 24 GB`, `8 GPUs, 80 GB each`).
Nothing of the card is a setting, so a recipe holds only keys that every config file may hold.

    recipe = find_recipe("gsm8k_smollm2_cpu")
    assert recipe.needs.startswith("CPU") and config_file_path("gsm8k_smollm2_cpu") == str(recipe.path)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from grpo_tool.errors import UserError, near_miss
from grpo_tool.json_files import read_text_file
from grpo_tool.reward_config import CONFIG_DIR

RECIPE_DIR = CONFIG_DIR / "recipes"
RECIPE_SUFFIXES = (".yaml", ".yml")
NEEDS = re.compile(r"needs:\s*(.*)", re.IGNORECASE)


@dataclass(frozen=True)
class Recipe:
    name: str  # the file's name without its suffix: what --config NAME takes
    path: Path
    description: str  # the card's first line
    needs: str  # the card's `needs:` line: CPU or how many GPUs, and how much memory


def read_card(path: Path) -> Recipe:
    """A recipe's card: its leading comment lines (up to the first setting)."""
    lines = []
    for line in read_text_file(path, "recipe").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            break
        if text := line.strip().lstrip("#").strip():
            lines.append(text)
    needs = next((found[1].strip() for line in lines if (found := NEEDS.fullmatch(line))), "")
    description = next((line for line in lines if not NEEDS.fullmatch(line)), "")
    return Recipe(path.stem, path, description, needs)


def recipe_files() -> dict[str, Path]:
    """The shipped recipes' files, by name (sorted)."""
    found: dict[str, Path] = {}
    for path in sorted(RECIPE_DIR.glob("*")):
        if path.suffix in RECIPE_SUFFIXES and path.is_file():
            found.setdefault(path.stem, path)  # NAME.yaml before NAME.yml
    return found


def recipes() -> list[Recipe]:
    return [read_card(path) for path in recipe_files().values()]


def find_recipe(name: str) -> Recipe | None:
    path = recipe_files().get(name)
    return read_card(path) if path else None


def config_file_path(value: str) -> str:
    """The file `--config VALUE` reads.

    The decision: a bare name (no folder, no suffix) that is no file here names a shipped recipe, as
    `--reward-config NAME` names a preset in config/rewards/; anything else is a path, as --config has always taken.
    - A file that exists wins over a recipe of the same name: --config took paths before recipes had names, and a
      user's own file is what the user means (a recipe stays reachable by its path).
    - A name with a folder or a suffix is never a recipe's (`./gsm8k`, `gsm8k.yaml`), so a path that is not there is
      the plain `no such file` it always was; recipe names hold no dot for that reason.
    - A bare name that is neither a file nor a recipe is an error that lists the recipes, since it was meant as one.
    """
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    if Path(value).is_file() or Path(value).suffix or any(sep in value for sep in separators):
        return value
    shipped = recipe_files()
    if value in shipped:
        return str(shipped[value])
    raise UserError(f"config file {value}: no such file, and no recipe of that name{near_miss(value, shipped)}; the "
                    f"recipes (config/recipes/): {', '.join(shipped) or 'none'} (--list-recipes says what each is "
                    "for)")


def format_recipes() -> str:
    """--list-recipes: each recipe's name, what it needs and what it is for, one line each."""
    found = recipes()
    if not found:
        return f"no recipes in {RECIPE_DIR}"
    name_width = max(len(recipe.name) for recipe in found) + 2
    needs_width = max(len(recipe.needs or "-") for recipe in found) + 2
    lines = [f"{'recipe':<{name_width}}{'needs':<{needs_width}}what it is for"]
    lines += [f"{recipe.name:<{name_width}}{recipe.needs or '-':<{needs_width}}{recipe.description or '-'}"
              for recipe in found]
    lines += ["", "run one: python train_grpo.py --config NAME (a flag you give beats the recipe's value); each file "
                  f"in {RECIPE_DIR.relative_to(CONFIG_DIR.parent)}/ says how to plan and launch it"]
    return "\n".join(lines)
