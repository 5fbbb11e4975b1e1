"""The reward check (`--check-rewards`): before any training step, does each reward component tell a good answer from
a bad one, and does it give GRPO something to learn from on what the model actually writes?

Two measurements, per component and for the weighted total:

- pairs: each row's `chosen` answer is scored against its `rejected` one. Pairwise accuracy is the share of rows where
  chosen scores higher (ties count against), margin the mean of chosen minus rejected. The references are withheld
  from the scoring, since a reference-aware component would otherwise just recognise the answer it was given.
- groups: `group_size` completions are sampled from the current model for a few prompts, as training would sample
  them. GRPO learns only from differences inside a group, so a group whose scores are all equal teaches nothing.

    python train_grpo.py --quick-test --check-rewards    # GRPOTrainer loads the model and data it is given
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from pathlib import Path

from grpo_tool.components import Component, weighted_totals
from grpo_tool.json_files import write_json_atomic
from grpo_tool.launch import is_main_process
from grpo_tool.outputs import REWARD_CHECK_FILE
from grpo_tool.reward_guard import call_reward, clean_scores, error_location, preview_text, sample_arguments
from grpo_tool.settings import GRPOConfig

logger = logging.getLogger(__name__)

PAIR_LIMIT = 1000  # rows scored chosen against rejected
CHECK_PROMPTS = 8  # prompts sampled group_size times
TIE = 1e-9  # scores closer than this are equal
WEAK_ACCURACY = 0.6  # below this share of pairs, a component is said not to tell chosen from rejected
FLAT_SHARE = 0.5  # from this share of zero-variance groups on, a component is said to give little signal


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


def run_reward_check(config: GRPOConfig, components: list[Component], data, model, tokenizer, model_path: str) -> dict:
    """Score pairs and sampled groups, write {output_dir}/reward_check.json (and nothing else), return the report.
    `data` is the run's data prepared for the loaded `model` (GRPOTrainer.prepare_data)."""
    from grpo_tool.sampling import sample  # heavy: after the model loaded, which decided the backend

    pairs = check_pairs(components, data["train"])
    source = data["eval"] if len(data["eval"]) else data["train"]
    rows = source.select(range(min(CHECK_PROMPTS, len(source))))
    samples = sample(model, tokenizer, rows, config, per_prompt=config.group_size)
    columns = {name: [value for value in rows[name] for _ in range(config.group_size)]
               for name in rows.column_names if name != "prompt"}
    report = {
        "model": model_path,
        "data": config.custom_data or config.dataset_name,
        "reward_function_type": config.reward_function_type,
        "weights": {c.name: c.weight for c in components},
        "pairs": pairs,
        "groups": check_groups(components, samples, config.group_size, columns),
    }
    report["warnings"] = warnings_for(report)
    path = Path(config.output_dir) / REWARD_CHECK_FILE
    if is_main_process():
        write_json_atomic(path, report)
    report["report_path"] = str(path)
    return report


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
    lines += [f"warning: {text}" for text in report["warnings"]] or ["no warnings"]
    lines.append(f"report: {report['report_path']}")
    return "\n".join(lines)
