"""The manual as a reader meets it: the README is a front door (short, the task table on its first screen) and every
page of docs/ is reachable from it; every link between pages leads to a page and a heading that exist."""

from __future__ import annotations

import json
import math
import re

from readme_text import DOCS, README, headings, pages, prose_lines, readme, tables

from conftest import ROOT

FRONT_DOOR_LINES = 300
FIRST_SCREEN = 60  # lines: the task table starts within them
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    return {slug(title) for _, _, title in headings(text)}


def links(path) -> list[str]:
    prose = "\n".join(line or "" for line in prose_lines(path.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(prose) if not re.match(r"[a-z]+:", target)]


def test_the_slug_is_githubs():
    assert slug("Evaluation: pass@k, majority vote, and checkpoints compared") == \
        "evaluation-passk-majority-vote-and-checkpoints-compared"
    assert slug("Code that runs: the `code_tests` reward") == "code-that-runs-the-code_tests-reward"
    assert slug("TRL's private surface") == "trls-private-surface"


def test_the_readme_is_a_front_door():
    text = readme()
    assert len(text.splitlines()) <= FRONT_DOOR_LINES
    first = next(rows for rows in tables(text) if rows)
    assert next(iter(first[0])) == "I want to ..."
    start = next(number for number, line in enumerate(text.splitlines()) if line.startswith("| I want to"))
    assert start < FIRST_SCREEN, f"the task table starts at line {start + 1}"
    assert all(LINK.search(row["the manual"]) for row in first), "a task without its page in the manual"


def test_every_link_between_pages_leads_somewhere():
    dead = []
    for page in pages():
        for target in links(page):
            file, _, anchor = target.partition("#")
            found = (page.parent / file).resolve() if file else page
            if not found.exists():
                dead.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and found.suffix == ".md" and anchor not in anchors(found.read_text(encoding="utf-8")):
                dead.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not dead, "dead links:\n" + "\n".join(dead)


def test_every_page_is_reachable_from_the_readme():
    seen, todo = {README.resolve()}, [README]
    while todo:
        page = todo.pop()
        for target in links(page):
            found = (page.parent / target.partition("#")[0]).resolve()
            if found.suffix == ".md" and found.exists() and found not in seen:
                seen.add(found)
                todo.append(found)
    unreachable = sorted(str(page.relative_to(ROOT)) for page in DOCS.glob("*.md") if page.resolve() not in seen)
    assert not unreachable, f"pages no link from the README leads to: {unreachable}"


def test_each_page_opens_with_its_title():
    for page in sorted(DOCS.glob("*.md")):
        assert page.read_text(encoding="utf-8").startswith("# "), f"{page.name} does not open with a title"


def test_the_readmes_figures_are_the_benchmarks():
    def result(name):
        return json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text(encoding="utf-8"))

    text = re.sub(r"\s+", " ", readme())
    shared, overhead, plan = result("shared_prompts"), result("overhead"), result("plan_accuracy")
    zoo = result("alarms")
    errors = [case["peak_error"] for case in plan["cases"].values()]

    def two(value: float) -> str:  # two decimals, halves rounded up as a person rounds them
        return f"{math.floor(value * 100 + 0.5) / 100:.2f}"

    expected = [
        f"{two(shared['speed_ratio_ours_over_trl'])}× plain TRL's speed",
        f"in {shared['ours']['peak_memory_mb'] / 1000:.1f} GB instead of "
        f"{shared['trl']['peak_memory_mb'] / 1000:.1f} GB",
        f"{two(overhead['speed_ratio_ours_over_trl_matched'])}× TRL's speed",
        f"within {min(errors):+.0%} to {max(errors):+.0%}".replace("+-", "-"),
        f"{zoo['summary']['caught']} of {zoo['summary']['broken_runs']} deliberately broken runs",
        f"{zoo['summary']['false_alarms']} alarms on {zoo['summary']['healthy_runs']} healthy runs",
    ]
    for figure in expected:
        assert figure in text, f"the README no longer says {figure!r} (bench/results/ says so)"


def test_the_settings_page_is_generated_from_the_config():
    from grpo_tool.flags import settings_reference
    from grpo_tool.settings import FIELDS

    page = (DOCS / "settings.md").read_text(encoding="utf-8")
    regenerate = ("python -c \"from grpo_tool.flags import settings_reference; "
                  "open('docs/settings.md', 'w').write(settings_reference())\"")
    assert page == settings_reference(), f"docs/settings.md is out of date: {regenerate}"
    keys = [row["key"].strip("`") for rows in tables(page) for row in rows]
    assert keys == list(FIELDS)
