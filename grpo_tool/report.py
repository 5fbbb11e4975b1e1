"""The run report: one self-contained `report.html` in the output dir, rebuilt from what the run left there.

It reads the metric history (final_model/trainer_state.json, or the newest checkpoint's), the generation logs and
the run record (components and their weights, the effective config), and draws every curve as inline SVG: the page
needs no network and no script to view.

    path = build_report("grpo_outputs")    # python train_grpo.py --report --output-dir grpo_outputs
    assert path == Path("grpo_outputs/report.html") and "<svg" in path.read_text(encoding="utf-8")
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from grpo_tool import metrics
from grpo_tool.alarms import alarm_records, eval_logs, train_logs
from grpo_tool.errors import UserError
from grpo_tool.json_files import write_text_atomic
from grpo_tool.outputs import (
    ALARMS_FILE,
    CHECKPOINT_PREFIX,
    FINAL_MODEL_DIR,
    GENERATION_LOG_DIR,
    REPORT_FILE,
    TRAINER_STATE_FILE,
    generation_log_name,
    logged_steps,
    read_json,
)
from grpo_tool.run_record import read_run_record

COLUMN_PREVIEW = 120  # characters of a data column shown under its prompt
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP, PAD_RIGHT = 460, 220, 52, 28, 26, 12


def newest_state(output_dir: Path) -> dict | None:
    """The trainer state with the most steps: the final model's, or a checkpoint's when the run was stopped."""
    candidates = [output_dir / FINAL_MODEL_DIR / TRAINER_STATE_FILE,
                  *output_dir.glob(f"{CHECKPOINT_PREFIX}*/{TRAINER_STATE_FILE}")]
    states = [state for path in candidates if (state := read_json(path))]
    return max(states, key=lambda state: state.get("global_step", 0), default=None)


def format_number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2e}"
    return f"{value:.3g}"


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], note: str = "") -> str:
    """An SVG line chart of named (step, value) series, with axes, min/max labels and a legend."""
    series = {name: [(x, y) for x, y in points if y is not None and math.isfinite(y)]
              for name, points in series.items()}
    series = {name: points for name, points in series.items() if points}
    if not series:
        return ""
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points]
    x_low, x_high = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y_low, y_high = min(ys), max(ys)
    if y_high - y_low < 1e-12:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def point(x: float, y: float) -> str:
        return (f"{PAD_LEFT + (x - x_low) / (x_high - x_low) * plot_w:.1f},"
                f"{PAD_TOP + plot_h - (y - y_low) / (y_high - y_low) * plot_h:.1f}")

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<text x="{PAD_LEFT}" y="16" class="title">{html.escape(title)}</text>',
             f'<line x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" x2="{PAD_LEFT + plot_w}" y2="{PAD_TOP + plot_h}" '
             'class="axis"/>',
             f'<line x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{PAD_TOP + plot_h}" class="axis"/>',
             f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 4}" class="tick" text-anchor="end">'
             f'{format_number(y_high)}</text>',
             f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + plot_h}" class="tick" text-anchor="end">'
             f'{format_number(y_low)}</text>',
             f'<text x="{PAD_LEFT}" y="{HEIGHT - 8}" class="tick">step {format_number(x_low)}</text>',
             f'<text x="{PAD_LEFT + plot_w}" y="{HEIGHT - 8}" class="tick" text-anchor="end">'
             f'step {format_number(x_high)}</text>']
    for index, (name, points) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        if len(points) == 1:
            parts.append(f'<circle cx="{point(*points[0]).split(",")[0]}" cy="{point(*points[0]).split(",")[1]}" '
                         f'r="3" fill="{colour}"/>')
        else:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" '
                         f'points="{" ".join(point(x, y) for x, y in points)}"/>')
        parts.append(f'<text x="{PAD_LEFT + plot_w - 4}" y="{PAD_TOP + 12 + 13 * index}" class="legend" '
                     f'text-anchor="end" fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    caption = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f'<figure>{"".join(parts)}{caption}</figure>'


def metric_series(logs: list[dict], key: str) -> list[tuple[float, float]]:
    return [(entry["step"], entry[key]) for entry in logs if isinstance(entry.get(key), (int, float))]


def row_columns(by_step: dict[int, dict]) -> str:
    """The prompt's other columns as the rewards saw them (a reference answer, say), each cut to one short line."""
    columns = next((entry["columns"] for entry in by_step.values() if entry.get("columns")), {})
    lines = []
    for name, value in columns.items():
        text = " ".join((value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)).split())
        lines.append(f"{name}: {text if len(text) <= COLUMN_PREVIEW else text[:COLUMN_PREVIEW] + '...'}")
    return f'<div class="columns">{html.escape(chr(10).join(lines))}</div>' if lines else ""


def answers_table(log_dir: Path) -> str:
    """For each logged prompt, its answers across evaluations side by side."""
    steps = logged_steps(log_dir)
    if not steps:
        return "<p>No generation logs (generation logging was off, or no evaluation ran).</p>"
    logs = {step: read_json(log_dir / generation_log_name(step), []) for step in steps}
    prompts: dict[str, dict[int, dict]] = {}
    for step, entries in logs.items():
        for entry in entries:
            prompts.setdefault(entry.get("prompt", ""), {})[step] = entry
    header = "".join(f"<th>step {step}</th>" for step in steps)
    rows = []
    for prompt, by_step in prompts.items():
        cells = []
        for step in steps:
            entry = by_step.get(step)
            if entry is None:
                cells.append("<td></td>")
                continue
            total = (entry.get("rewards") or {}).get("total")
            shown = ([f"reward {format_number(total)}"] if total is not None else []) + (
                [f"base model's loss {format_number(entry[metrics.BASE_NLL])}/token"]
                if entry.get(metrics.BASE_NLL) is not None else [])
            reward = f'<div class="reward">{", ".join(shown)}</div>' if shown else ""
            cells.append(f'<td><div class="answer">{html.escape(entry.get("full_response", ""))}</div>{reward}</td>')
        rows.append(f'<tr><th class="prompt">{html.escape(prompt)}{row_columns(by_step)}</th>{"".join(cells)}</tr>')
    return f'<table class="answers"><tr><th>prompt</th>{header}</tr>{"".join(rows)}</table>'


def curves(train: list[dict], evaluations: list[dict], weights: dict, with_kl: bool, held_out: list[str] = ()
           ) -> list[str]:
    """Every chart the report draws, in reading order; a curve with no data is left out."""
    charts = [
        line_chart("Reward", {"train": metric_series(train, metrics.REWARD), "eval": metric_series(evaluations,
                                                                                            metrics.EVAL_REWARD)}),
        line_chart("Held-out answers right (answer-checked evaluations)",
                   {name.removeprefix(metrics.EVAL_PREFIX): metric_series(evaluations, name)
                    for name in metrics.held_out_keys(key for entry in evaluations for key in entry)}),
        line_chart("Reward components (train means)",
                   {name: metric_series(train, metrics.component_mean(name)) for name in weights}),
        line_chart("Completion length (tokens)", {"mean": metric_series(train, metrics.MEAN_LENGTH),
                                                  "eval mean": metric_series(evaluations,
                                                                             metrics.evaluation(metrics.MEAN_LENGTH))}),
        line_chart("Share of completions cut at the length cap",
                   {"train": metric_series(train, metrics.CLIPPED_RATIO)}),
        line_chart("Groups with no reward spread (no signal): share",
                   {"all generated": metric_series(train, metrics.FLAT_GROUPS),
                    "the step's own": metric_series(train, metrics.GROUPS_FLAT)}),
        line_chart("What zero_variance_groups did (groups per step)",
                   {"dropped": metric_series(train, metrics.GROUPS_DROPPED),
                    "resampled": metric_series(train, metrics.GROUPS_RESAMPLED),
                    "swapped by the curriculum": metric_series(train, metrics.GROUPS_SWAPPED)}),
        line_chart("Extra completions generated per step (resample)",
                   {"extra": metric_series(train, metrics.EXTRA_COMPLETIONS)}),
        line_chart("Tool calls per completion",
                   {"train": metric_series(train, metrics.TOOL_CALLS),
                    "eval": metric_series(evaluations, metrics.evaluation(metrics.TOOL_CALLS))}),
        line_chart("Share of tool calls that failed", {"train": metric_series(train, metrics.TOOL_FAILURES)}),
        line_chart("How the answers look to the starting model (nats per token)",
                   {"base model's loss": metric_series(evaluations, metrics.EVAL_BASE_NLL),
                    "drift from it": metric_series(evaluations, metrics.EVAL_BASE_DRIFT)},
                   ),
        line_chart("Held-out evaluation rewards (not trained on)",
                   {name: metric_series(evaluations, metrics.evaluation(metrics.component_mean(name)))
                    for name in held_out}),
        line_chart("Learning rate", {"learning rate": metric_series(train, metrics.LEARNING_RATE)}),
        line_chart("Loss", {"loss": metric_series(train, metrics.LOSS)}),
    ]
    if with_kl:
        charts.insert(3, line_chart("KL to the reference model", {"kl": metric_series(train, metrics.KL)}))
    return [chart for chart in charts if chart]


def run_summary_rows(config: dict, record: dict, steps: int | None) -> str:
    """The table at the top: what was trained on what, with which rewards and settings."""
    weights = record.get("components", {})
    summary = [("model", config.get("model_name")), ("data", config.get("custom_data") or config.get("dataset_name")),
               ("rewards", f"{record.get('reward_function_type')} ({record.get('reward_config')}: "
                           + ", ".join(f"{name} {weight}" for name, weight in weights.items()) + ")"),
               ("steps", steps), ("group size", config.get("group_size")),
               ("learning rate", config.get("learning_rate")), ("beta", config.get("beta"))]
    return "".join(f"<tr><td>{name}</td><td>{html.escape(str(value))}</td></tr>" for name, value in summary)


def build_report(output_dir: str | Path) -> Path:
    """Write {output_dir}/report.html from the run's files and return its path."""
    output_dir = Path(output_dir)
    state = newest_state(output_dir)
    if not output_dir.is_dir():
        raise UserError(f"--report: {output_dir} is no directory; give the --output-dir of a training run")
    if state is None:
        raise UserError(f"{output_dir}: no trainer_state.json in final_model/ or a checkpoint-N/ to build a report "
                        "from; is it the output dir of a run that got to its first checkpoint?")
    record = read_run_record(output_dir)
    config = record.get("config", {})
    history = state.get("log_history", [])
    train, evaluations = train_logs(history), eval_logs(history)
    weights = record.get("components", {})
    log_dir = Path(config.get("generation_log_dir") or output_dir / GENERATION_LOG_DIR)
    alarms = alarm_records(history, read_json(output_dir / ALARMS_FILE, None), weights=weights,
                           max_completion_length=config.get("max_completion_length"), generation_log_dir=str(log_dir),
                           zero_variance_groups=record.get("zero_variance_groups"))

    charts = curves(train, evaluations, weights, config.get("beta", 0) > 0, record.get("eval_rewards", []))
    eval_rows = "".join(f"<tr><td>{index}</td><td>{entry['step']}</td>"
                        f"<td>{format_number(entry[metrics.EVAL_REWARD])}</td></tr>"
                        for index, entry in enumerate(evaluations, start=1))
    alarm_items = "".join(f"<li><b>{html.escape(str(alarm.get('id')))}</b> (step {alarm.get('step')}): "
                          f"{html.escape(str(alarm.get('message')))}</li>" for alarm in alarms)
    summary_rows = run_summary_rows(config, record, state.get("global_step"))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GRPO run report: {html.escape(str(output_dir))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1500px; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
.summary td {{ padding: 2px 12px 2px 0; }} .summary td:first-child {{ color: #666; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px; }} figure {{ margin: 0; }}
.chart {{ background: #fafafa; border: 1px solid #ddd; }} .chart .title {{ font-size: 13px; font-weight: 600; }}
.chart .tick {{ font-size: 10px; fill: #555; }} .chart .legend {{ font-size: 11px; }} .axis {{ stroke: #999; }}
.alarms li {{ color: #a40000; margin: 4px 0; }} .note {{ font-size: 12px; color: #666; }}
table.answers {{ border-collapse: collapse; font-size: 12px; }}
table.answers th, table.answers td {{ border: 1px solid #ddd; padding: 6px; vertical-align: top; max-width: 320px; }}
.answer {{ white-space: pre-wrap; word-break: break-word; }} .reward {{ color: #666; margin-top: 4px; }}
.prompt {{ text-align: left; font-weight: normal; background: #f4f4f4; }}
.columns {{ white-space: pre-wrap; color: #666; margin-top: 4px; font-size: 90%; }}
</style></head><body>
<h1>GRPO run report</h1>
<table class="summary">{summary_rows}</table>
<h2>Alarms</h2>
{f'<ul class="alarms">{alarm_items}</ul>' if alarm_items else '<p>None: nothing in the metrics looks wrong.</p>'}
<h2>Curves</h2>
<div class="charts">{"".join(charts)}</div>
<h2>Evaluations</h2>
<table class="summary"><tr><td>#</td><td>step</td><td>eval reward</td></tr>{eval_rows}</table>
<h2>Answers across evaluations</h2>
<p class="note">The same prompts, sampled with the same seed at every evaluation.</p>
{answers_table(log_dir)}
</body></html>
"""
    path = output_dir / REPORT_FILE
    write_text_atomic(path, page)
    return path
