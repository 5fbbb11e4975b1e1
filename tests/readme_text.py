"""The manual read as a person reads it: the README and the pages of docs/, their headings, the tables under them,
code blocks and code spans. The tests find a table by the heading it sits under and its header, not by line numbers
or by page, so prose may change freely and a section may move from one page to another."""

from __future__ import annotations

import json
import re

from conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
FENCE = re.compile(r"^\s*```")


# The parser.

def pages() -> list:
    """The manual's files: the README first, then docs/ (each page opens with a level-1 heading)."""
    return [README, *sorted(DOCS.glob("*.md"))]


def readme() -> str:
    return README.read_text(encoding="utf-8")


def manual() -> str:
    """Every page of the manual, one after the other."""
    return "\n\n".join(page.read_text(encoding="utf-8") for page in pages())


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


def headings(text: str) -> list[tuple[int, int, str]]:
    """(line number, level, title) of every heading outside code blocks."""
    found = []
    for number, line in enumerate(prose_lines(text)):
        if heading := re.match(r"^(#+)\s+(.*?)\s*$", line or ""):
            found.append((number, len(heading.group(1)), heading.group(2)))
    return found


def section(title: str, text: str | None = None) -> str:
    """The text under the heading `title` (any level, in the manual unless `text` is given), up to the next heading of
    the same or a higher level."""
    text = manual() if text is None else text
    raw, found = text.splitlines(), headings(text)
    for index, (number, level, name) in enumerate(found):
        if name == title:
            end = next((later for later, later_level, _ in found[index + 1:] if later_level <= level), len(raw))
            return "\n".join(raw[number + 1:end])
    raise AssertionError(f"the manual has no heading {title!r}; its headings: {[name for _, _, name in found]}")


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
    raise AssertionError(f"no table with first column {first_column!r} under the manual's heading {title!r} (found "
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
