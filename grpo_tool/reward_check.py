"""The reward check (`--check-rewards`): before any training step, does each reward component tell a good answer from
a bad one, and does it give GRPO something to learn from on what the model actually writes?

Three measurements, per component and for the weighted total:

- pairs: each row's `chosen` answer is scored against its `rejected` one. Pairwise accuracy is the share of rows where
  chosen scores higher (ties count against), margin the mean of chosen minus rejected. The references are withheld
  from the scoring, since a reference-aware component would otherwise just recognise the answer it was given.
- references: for data with a reference answer (answer_match's column), each row's reference is scored as a
  completion beside a wrong answer of the same kind (73 for 72, C for B, no for yes, another row's answer for text),
  in the layouts a reward may expect: as the data writes it (`... #### 72`), bare (`72`), and in the format
  reward's tags (`<think>...</think><answer>72</answer>`). A reward that gives the reference 0, or less than the
  wrong answer, in every layout cannot teach the model to answer right, whatever the samples say.
- groups: `group_size` completions are sampled from the current model for a few prompts, as training would sample
  them. GRPO learns only from differences inside a group, so a group whose scores are all equal teaches nothing.

    python train_grpo.py --quick-test --check-rewards    # GRPOTrainer loads the model and data it is given
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from pathlib import Path

from grpo_tool.answers import accepted_answers, answer_matches, choice_letter, reference_of
from grpo_tool.components import REWARD_MODEL, Component, weighted_totals
from grpo_tool.json_files import write_json_atomic
from grpo_tool.launch import is_main_process
from grpo_tool.messages import answer_text, transcript
from grpo_tool.outputs import REWARD_CHECK_FILE
from grpo_tool.reward_config import BUILT_IN_COMPONENTS, reference_column
from grpo_tool.reward_guard import call_reward, clean_scores, error_location, preview_text, sample_arguments
from grpo_tool.settings import GRPOConfig

logger = logging.getLogger(__name__)

PAIR_LIMIT = 1000  # rows scored chosen against rejected
CHECK_PROMPTS = 8  # prompts sampled group_size times
TIE = 1e-9  # scores closer than this are equal
WEAK_ACCURACY = 0.6  # below this share of pairs, a component is said not to tell chosen from rejected
FLAT_SHARE = 0.5  # from this share of zero-variance groups on, a component is said to give little signal
REFERENCE_ROWS = 64  # rows whose reference is scored beside a wrong answer
# What the components that check no answer score instead, for the warning that says why they give a reference 0:
# the built-in ones say it in their registry; answer_match, the one that checks answers, has a warning of its own.
NOT_ANSWER_CHECKERS = {**BUILT_IN_COMPONENTS, REWARD_MODEL: "what a reward model prefers"}


def failure(error: Exception, component: Component, arguments: dict, index: int, completion) -> dict:
    """What a person needs to fix a reward that raised: the exception, where, and the sample it failed on."""
    return {"type": type(error).__name__, "message": str(error),
            "where": error_location(error, component.function, ["completions", *arguments]), "sample": index,
            "prompt": preview_text(arguments["prompts"][0]), "completion": preview_text(completion)}


def score(component: Component, completions: list, prompts: list, columns: dict) -> tuple[list, list[dict], float]:
    """(scores with None for missing, the failures, seconds). A failing batch is retried one sample at a time, so one
    bad sample costs one score, not the batch, and each failure is known with its sample."""
    start = time.perf_counter()
    try:
        values = clean_scores(component.name, call_reward(component.function, completions=completions,
                                                          prompts=prompts, **columns), len(completions))
        failures = []
    except Exception:  # noqa: BLE001 - counting failures is the point
        values, failures = [], []
        for index, completion in enumerate(completions):
            arguments = sample_arguments({"prompts": prompts, **columns}, index, len(completions))
            try:
                values += clean_scores(component.name, call_reward(component.function, completions=[completion],
                                                                   **arguments), 1)
            except Exception as error:  # noqa: BLE001 - each failure is counted with its sample
                values.append(None)
                failures.append(failure(error, component, arguments, index, completion))
    return values, failures, time.perf_counter() - start


def progress(items, description: str):
    """A progress bar over `items` on the main process (one line that updates, not a line per item)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, disable=not is_main_process(), leave=False)


def with_total(components: list[Component], per_component: dict[str, list]) -> dict[str, list]:
    """The weighted total beside the components (a missing score counts 0, as in training)."""
    count = len(next(iter(per_component.values()), []))
    return {**per_component, "total": weighted_totals(components, per_component, count)}


def as_completion(text: str, chat: bool):
    return [{"role": "assistant", "content": text}] if chat else text


def check_pairs(components: list[Component], rows) -> dict:
    if "chosen" not in rows.column_names or "rejected" not in rows.column_names:
        return {"pairs": 0}
    rows = rows.filter(lambda row: bool(row["chosen"]) and bool(row["rejected"]))
    rows = rows.select(range(min(PAIR_LIMIT, len(rows))))
    if len(rows) == 0:
        return {"pairs": 0}
    prompts = list(rows["prompt"])
    chat = isinstance(prompts[0], list)
    chosen = [as_completion(text, chat) for text in rows["chosen"]]
    rejected = [as_completion(text, chat) for text in rows["rejected"]]
    # The other columns (an answer, metadata) reach the rewards as in training; the two references do not.
    columns = {name: list(rows[name]) for name in rows.column_names if name not in ("prompt", "chosen", "rejected")}
    scores, failures = {"chosen": {}, "rejected": {}}, {}
    steps = [(side, completions, component) for side, completions in (("chosen", chosen), ("rejected", rejected))
             for component in components]
    for side, completions, component in progress(steps, "scoring chosen and rejected answers"):
        scores[side][component.name], failed, _ = score(component, completions, prompts, columns)
        failures.setdefault(component.name, []).extend(failed)
    scores = {side: with_total(components, values) for side, values in scores.items()}
    result = {"pairs": len(rows), "components": {}}
    for name in scores["chosen"]:
        margins = [c - r for c, r in zip(scores["chosen"][name], scores["rejected"][name])
                   if c is not None and r is not None]
        result["components"][name] = {
            "pairwise_accuracy": round(sum(m > TIE for m in margins) / len(margins), 4) if margins else None,
            "ties": round(sum(abs(m) <= TIE for m in margins) / len(margins), 4) if margins else None,
            "mean_margin": round(statistics.fmean(margins), 4) if margins else None,
            **failure_summary(failures.get(name, [])),
        }
    return result


def failure_summary(failures: list[dict]) -> dict:
    return {"exceptions": len(failures), "first_exception": failures[0] if failures else None}


def wrong_answer(answer: str, others: list[str]) -> str | None:
    """A clearly wrong answer of the kind `answer` is: the next integer, another option letter, the other of yes and
    no, else another row's answer that does not match it. None when none can be found."""
    reference = reference_of(answer)
    candidates = []
    if reference.kind == "number":
        value = reference.number.value
        candidates.append(str(value.numerator + value.denominator) if value.denominator == 1 else str(float(value) + 1))
    elif reference.kind == "choice":
        letter = choice_letter(answer) or "A"
        candidates.append("B" if letter == "A" else "A")
    elif reference.kind == "yes_no":
        candidates += ["no", "yes"]
    candidates += others
    return next((text for text in candidates if text.strip() and not answer_matches(text, [answer])), None)


def written_wrong(written: str, answer: str, wrong: str) -> str:
    """The reference as the data writes it, its final answer replaced by the wrong one (or the wrong one alone when the
    answer is not written as such)."""
    head, found, tail = written.rpartition(answer)
    return head + wrong + tail if found else wrong


def layouts(reward_config: dict) -> dict:
    """How a right or wrong answer is written as a completion: (written reference text, answer) -> completion."""
    *reasoning, last = reward_config["format"]["tags"]
    opening = "".join(f"<{tag}>Working it out.</{tag}>\n" for tag in reasoning)
    return {"as written": lambda written, answer: written, "bare": lambda written, answer: answer,
            "tagged": lambda written, answer: f"{opening}<{last}>{answer}</{last}>"}


def check_references(components: list[Component], reward_config: dict, rows, column: str | None) -> dict:
    """Each row's reference scored as a completion beside a wrong answer, per component and layout (module
    docstring)."""
    if column is None or column not in (rows.column_names or ()):
        return {"rows": 0}
    written, answers = [], []
    for value in rows[column]:
        accepted = accepted_answers(value)
        if accepted:
            text = value[0] if isinstance(value, (list, tuple)) and value and isinstance(value[0], str) else value
            written.append(answer_text(text) or accepted[0])
            answers.append(accepted[0])
        else:
            written.append(None)
            answers.append(None)
    others = list(dict.fromkeys(answer for answer in answers if answer))
    picked = []
    for index, answer in enumerate(answers):
        wrong = wrong_answer(answer, [other for other in others if other != answer]) if answer else None
        if wrong is not None:
            picked.append((index, wrong))
        if len(picked) == REFERENCE_ROWS:
            break
    if not picked:
        return {"rows": 0, "column": column}
    indices = [index for index, _ in picked]
    chosen_rows = rows.select(indices)
    prompts = list(chosen_rows["prompt"])
    chat = isinstance(prompts[0], list)
    columns = {name: list(chosen_rows[name]) for name in chosen_rows.column_names if name != "prompt"}
    result = {"rows": len(picked), "column": column, "example": {"reference": answers[indices[0]],
                                                                 "wrong": picked[0][1]}, "components": {}}
    per_layout: dict[str, dict[str, dict]] = {}
    for layout, write in layouts(reward_config).items():
        right = [as_completion(write(written[index], answers[index]), chat) for index in indices]
        wrong = [as_completion(write(written_wrong(written[index], answers[index], text), text), chat)
                 for index, text in picked]
        for component in components:
            right_scores, right_failures, _ = score(component, right, prompts, columns)
            wrong_scores, wrong_failures, _ = score(component, wrong, prompts, columns)
            per_layout.setdefault(component.name, {})[layout] = {
                "right": mean_or_none(right_scores), "wrong": mean_or_none(wrong_scores),
                "exceptions": len(right_failures) + len(wrong_failures)}
    for name, scored in per_layout.items():
        # The layout that tells right from wrong best, else the one the reward credits most; of equals, the first.
        best = max(scored, key=lambda layout: (margin(scored[layout]), scored[layout]["right"] or 0.0))
        result["components"][name] = {**scored[best], "layout": best, "layouts": scored}
    return result


SOLUTION_COLUMNS = ("code", "canonical_solution", "solutions")  # MBPP's, HumanEval's and APPS's own solutions


def solution_text(value) -> str | None:
    """A row's own solution: the text, or the first of a list (APPS keeps a JSON list of them)."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if isinstance(value, (list, tuple)):
        value = next((item for item in value if isinstance(item, str) and item.strip()), None)
    return value if isinstance(value, str) and value.strip() else None


def check_solutions(components: list[Component], rows) -> dict:
    """code_tests on the data's own solutions: each should pass all of its tests. One that does not shows tests, a
    setup or limits (timeout, memory) at fault before any model is blamed."""
    component = next((c for c in components if c.name == "code_tests"), None)
    column = next((name for name in SOLUTION_COLUMNS if name in (rows.column_names or ())), None)
    if component is None or column is None:
        return {"rows": 0}
    picked = [index for index, value in enumerate(rows[column][:REFERENCE_ROWS * 4]) if solution_text(value)]
    picked = picked[:REFERENCE_ROWS]
    if not picked:
        return {"rows": 0, "column": column}
    chosen = rows.select(picked)
    prompts = list(chosen["prompt"])
    chat = isinstance(prompts[0], list)
    completions = [as_completion(f"```python\n{solution_text(value)}\n```", chat) for value in chosen[column]]
    columns = {name: list(chosen[name]) for name in chosen.column_names if name != "prompt"}
    scores, failures, _ = score(component, completions, prompts, columns)
    scored = [(prompt, value) for prompt, value in zip(prompts, scores) if value is not None]
    return {"rows": len(scored), "column": column, "mean": mean_or_none([value for _, value in scored]),
            "all_passed": sum(value == 1.0 for _, value in scored), "exceptions": len(failures),
            "short": [{"prompt": preview_text(prompt, 60), "score": round(value, 4)} for prompt, value in scored
                      if value < 1.0][:3]}


def solution_lines(solutions: dict) -> list[str]:
    if not solutions.get("rows"):
        return []
    return [f"solutions: the data's own {solutions['column']!r} on {solutions['rows']} rows, scored by code_tests: "
            f"mean {cell(solutions['mean'])}, {solutions['all_passed']} pass every test", ""]


def mean_or_none(values: list) -> float | None:
    present = [value for value in values if value is not None]
    return round(statistics.fmean(present), 4) if present else None


def margin(scores: dict) -> float:
    if scores["right"] is None:
        return -math.inf
    return scores["right"] - (scores["wrong"] or 0.0)


def reference_warnings(references: dict) -> list[str]:
    """A reward that gives the reference nothing, or less than a wrong answer, in every layout; and data on which no
    reward tells right from wrong at all."""
    found = []
    column, components = references.get("column"), references.get("components", {})
    for name, stats in components.items():
        right, wrong = stats["right"], stats["wrong"]
        if stats["exceptions"]:
            continue  # the sampled groups' check reports what it raised, with the sample
        if right is not None and wrong is not None and right < wrong - TIE:
            found.append(f"{name} gives a right answer less than a wrong one ({right:.2f} against {wrong:.2f} on "
                         f"{references['rows']} references): is its sign reversed, a penalty where a reward was "
                         "meant?")
        elif right is None or abs(right) <= TIE:
            given = "nothing (None)" if right is None else "0"
            found.append(f"{name} gives the reference answer {given} on {references['rows']} rows, written as the "
                         f"data has it, bare and in tags: {reference_cause(name, column)}")
    if components and not any(stats["right"] is not None and stats["right"] > (stats["wrong"] or 0.0) + TIE
                              for stats in components.values()):
        found.append("no reward gives a right answer more than a wrong one: training cannot learn to answer right")
    return found


def reference_cause(name: str, column: str) -> str:
    """The likely reason a reward gives a reference nothing."""
    if name == "answer_match":
        return (f"it reads the reference from the column {column!r}; if that column holds something other than the "
                "answer, set answer_match.reference_column in the reward config to the one that does")
    if name in NOT_ANSWER_CHECKERS:
        return (f"it scores {NOT_ANSWER_CHECKERS[name]}, not the answer; add answer_match (--reward-config "
                "verifiable, or answer_match_weight) to reward right answers")
    return (f"it is given the reference as the keyword argument {column!r} (every column arrives under its own "
            "name); a reward that reads another name, or expects a layout none of these has, finds no right answer")


def check_groups(components: list[Component], samples: list[dict], group_size: int, columns: dict) -> dict:
    if not samples:
        return {"groups": 0}
    prompts = [sample["prompt"] for sample in samples]
    completions = [sample["reward_input"] for sample in samples]
    results, per_component = {}, {}
    for component in progress(components, "scoring sampled completions"):
        values, failures, seconds = score(component, completions, prompts, columns)
        per_component[component.name] = values
        results[component.name] = {**failure_summary(failures),
                                   "ms_per_1000": round(1000 * 1000 * seconds / len(samples), 2)}
    for name, values in with_total(components, per_component).items():
        present = [value for value in values if value is not None]
        groups = [values[start:start + group_size] for start in range(0, len(values), group_size)]
        flat = [group for group in groups
                if len([v for v in group if v is not None]) < 2
                or max(v for v in group if v is not None) - min(v for v in group if v is not None) <= TIE]
        results.setdefault(name, {**failure_summary([]), "ms_per_1000": None})
        results[name].update({
            "mean": round(statistics.fmean(present), 4) if present else None,
            "std": round(statistics.pstdev(present), 4) if len(present) > 1 else 0.0,
            "zero_variance_groups": round(len(flat) / len(groups), 4),
            "missing": values.count(None) - results[name]["exceptions"],  # None or NaN returned, not raised
        })
    return {"groups": len(samples) // group_size, "group_size": group_size, "completions": len(samples),
            "truncated": round(sum(s["truncated"] for s in samples) / len(samples), 4), "components": results}


def warnings_for(report: dict) -> list[str]:
    """Plain sentences for what would waste a run."""
    found = []
    pairs = report["pairs"]
    for name, stats in pairs.get("components", {}).items():
        accuracy = stats["pairwise_accuracy"]
        if accuracy is not None and accuracy < WEAK_ACCURACY:
            found.append(f"{name} cannot tell chosen from rejected answers: it scores the chosen one higher in only "
                         f"{accuracy:.0%} of {pairs['pairs']} pairs (ties {stats['ties']:.0%})")
        if stats.get("exceptions"):
            found.append(f"{name} raised an exception on {stats['exceptions']} of {2 * pairs['pairs']} chosen and "
                         f"rejected answers; {first_exception_text(stats['first_exception'])}")
    found += reference_warnings(report.get("references", {}))
    solutions = report.get("solutions", {})
    if solutions.get("rows") and solutions["all_passed"] < solutions["rows"]:
        shown = "; ".join(f"{short['prompt']!r}: {short['score']:g}" for short in solutions["short"])
        found.append(f"code_tests gives {solutions['rows'] - solutions['all_passed']} of {solutions['rows']} of the "
                     f"data's own solutions in {solutions['column']!r} less than 1 ({shown}): their tests, the tests' "
                     "setup or the sandbox's limits (code_tests.timeout, code_tests.memory_mb) are at fault, not the "
                     "model")
    if episodes := report.get("episodes"):
        if not episodes["with_a_call"]:
            found.append(f"none of {episodes['completions']} sampled completions called a tool: GRPO only reinforces "
                         "calls the model makes, so tell it about the tools in --system-prompt or start from a model "
                         "that calls them")
        elif (episodes["failed_calls"] or 0) > 0.5:
            found.append(f"{episodes['failed_calls']:.0%} of the sampled tool calls failed: see the episodes above "
                         "for the errors the model was given")
    groups = report["groups"]
    for name, stats in groups.get("components", {}).items():
        if stats["zero_variance_groups"] >= FLAT_SHARE:
            found.append(f"{name} gives every completion of a group the same score in "
                         f"{stats['zero_variance_groups']:.0%} of groups: GRPO learns nothing from those")
        if stats["exceptions"]:
            found.append(f"{name} raised an exception on {stats['exceptions']} of {groups['completions']} "
                         f"completions, and training would stop at the first one; "
                         f"{first_exception_text(stats['first_exception'])}")
        if stats["missing"]:
            found.append(f"{name} returned None or NaN for {stats['missing']} of {groups['completions']} "
                         "completions (left out of its mean)")
    if groups.get("truncated", 0) >= 0.5:
        found.append(f"{groups['truncated']:.0%} of sampled completions hit max_completion_length: length-based "
                     "rewards will mostly see cut-off answers")
    return found


def first_exception_text(failure: dict) -> str:
    where = f", {failure['where']}" if failure["where"] else ""
    return (f"the first: {failure['type']}: {failure['message']}{where}, on sample {failure['sample']} (prompt "
            f"{failure['prompt']!r}, completion {failure['completion']!r})")


def run_reward_check(config: GRPOConfig, components: list[Component], reward_config: dict, data, model, tokenizer,
                     model_path: str, toolbox=None) -> dict:
    """Score pairs, references and sampled groups, write {output_dir}/reward_check.json (and nothing else), return the
    report. `data` is the run's data prepared for the loaded `model` (GRPOTrainer.prepare_data). With tools
    (`toolbox`), the groups are episodes that call them, and the report shows the first few."""
    from grpo_tool.sampling import sample  # heavy: after the model loaded, which decided the backend

    pairs = check_pairs(components, data["train"])
    column = reference_column(reward_config["answer_match"], data["train"].column_names or ())
    references = check_references(components, reward_config, data["train"], column)
    solutions = check_solutions(components, data["train"])
    source = data["eval"] if len(data["eval"]) else data["train"]
    rows = source.select(range(min(CHECK_PROMPTS, len(source))))
    samples = sample(model, tokenizer, rows, config, per_prompt=config.group_size, toolbox=toolbox)
    columns = {name: [value for value in rows[name] for _ in range(config.group_size)]
               for name in rows.column_names if name != "prompt"}
    if toolbox is not None and toolbox.environments:
        columns["environments"] = [entry["environment"] for entry in samples]
    report = {
        "model": model_path,
        "data": config.custom_data or config.dataset_name,
        "reward_function_type": config.reward_function_type,
        "weights": {c.name: c.weight for c in components},
        "pairs": pairs,
        "references": references,
        "solutions": solutions,
        "groups": check_groups(components, samples, config.group_size, columns),
    }
    if toolbox is not None and toolbox.active:
        report["episodes"] = episode_summary(samples)
    report["warnings"] = warnings_for(report)
    path = Path(config.output_dir) / REWARD_CHECK_FILE
    if is_main_process():
        write_json_atomic(path, report)
    report["report_path"] = str(path)
    return report


EPISODES_SHOWN = 3


def episode_summary(samples: list[dict]) -> dict:
    """How the sampled episodes used their tools, and the first few as transcripts: a tool that fails on every
    call, or is never called, shows here before any training."""
    calls = sum(entry["tool_calls"] for entry in samples)
    return {"completions": len(samples), "calls_per_completion": round(calls / len(samples), 4),
            "with_a_call": round(sum(entry["tool_calls"] > 0 for entry in samples) / len(samples), 4),
            "failed_calls": round(sum(entry["tool_failures"] for entry in samples) / calls, 4) if calls else None,
            "shown": [{"prompt": preview_text(entry["prompt"], 120), "transcript": transcript(entry["turns"])}
                      for entry in samples[:EPISODES_SHOWN]]}


def episode_lines(episodes: dict | None) -> list[str]:
    if not episodes:
        return []
    failed = episodes["failed_calls"]
    lines = [f"tools: {episodes['calls_per_completion']:g} calls per completion, {episodes['with_a_call']:.0%} of "
             f"completions call one, {'no calls to fail' if failed is None else f'{failed:.0%} of calls failed'}"]
    for number, shown in enumerate(episodes["shown"], start=1):
        lines.append(f"  episode {number}: {shown['prompt']!r}")
        lines += [f"    {line}" for line in shown["transcript"].splitlines()[:12]]
    return [*lines, ""]


def cell(value, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.0%}" if percent else f"{value:.3f}" if isinstance(value, float) else str(value)


def format_report(report: dict) -> str:
    """The report as a table a person reads at a glance, then the warnings. Columns are as wide as their widest
    cell, two spaces apart, so slow rewards' large timings never run into their neighbours."""
    pairs, groups = report["pairs"], report["groups"]
    header = ["component", "weight", "pair acc", "margin", "mean", "std", "flat grp", "missing", "errors", "ms/1k"]
    rows = [header]
    for name in [*report["weights"], "total"]:
        pair = pairs.get("components", {}).get(name, {})
        group = groups.get("components", {}).get(name, {})
        rows.append([name, cell(report["weights"].get(name)), cell(pair.get("pairwise_accuracy"), True),
                     cell(pair.get("mean_margin")), cell(group.get("mean")), cell(group.get("std")),
                     cell(group.get("zero_variance_groups"), True), cell(group.get("missing")),
                     cell(group.get("exceptions")), cell(group.get("ms_per_1000"))])
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    table = ["  ".join(text.ljust(width) if column == 0 else text.rjust(width)
                       for column, (text, width) in enumerate(zip(row, widths))) for row in rows]
    lines = [f"reward check: {report['model']} on {report['data']} ({report['reward_function_type']})",
             f"  pairs: {pairs['pairs']} chosen/rejected rows (scored without their references); groups: "
             f"{groups.get('groups', 0)} prompts x {groups.get('group_size', 0)} sampled completions", "", *table, ""]
    lines += reference_table(report.get("references", {}))
    lines += solution_lines(report.get("solutions", {}))
    lines += episode_lines(report.get("episodes"))
    lines += [f"warning: {text}" for text in report["warnings"]] or ["no warnings"]
    lines.append(f"report: {report['report_path']}")
    return "\n".join(lines)


def reference_table(references: dict) -> list[str]:
    """A row per reward: what it gives a right answer and a wrong one, in the layout that tells them apart best."""
    if not references.get("components"):
        return []
    example = references["example"]
    rows = [["component", "right", "wrong", "written"]]
    for name, stats in references["components"].items():
        same = stats["right"] is not None and stats["wrong"] is not None and abs(stats["right"] - stats["wrong"]) <= TIE
        rows.append([name, cell(stats["right"]), cell(stats["wrong"]),
                     stats["layout"] + ("  (alike: it does not judge the answer)" if same else "")])
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    table = ["  ".join([row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]), row[3]])
             for row in rows]
    return [f"references: {references['rows']} rows' reference in {references['column']!r} scored as a completion "
            f"beside a wrong answer (e.g. {example['reference']!r} against {example['wrong']!r}), written as the data "
            "has it, bare, or in the format's tags: 'written' names the way that told them apart best", "", *table, ""]
