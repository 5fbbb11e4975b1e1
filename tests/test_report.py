"""The run report: built from a real run's output dir, self-contained, and rendered by a real browser."""

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import run_main
from grpo_tool.errors import UserError
from grpo_tool.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("report") / "out"
    config = output_dir.parent / "run.json"
    config.write_text(json.dumps({"max_steps": 20, "eval_steps": 5, "save_steps": 10, "logging_steps": 2,
                                  "beta": 0.04}))
    result = run_main("--quick-test", "--config", str(config), "--reward-function", "multi", "--output-dir",
                     str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report:          {output_dir / 'report.html'}" in result.stdout
    return output_dir


def test_report_has_every_curve_and_the_answers_side_by_side(finished_run):
    page = (finished_run / "report.html").read_text(encoding="utf-8")
    for title in ("Reward", "Reward components", "Completion length", "KL to the reference model",
                  "Groups with no reward spread", "Learning rate"):
        assert f">{title}" in page
    for component in ("accuracy 0.4", "length 0.2", "quality 0.4"):
        assert component in page
    assert page.count("<svg") >= 7 and page.count("<polyline") >= 7
    assert all(f"<th>step {step}</th>" in page for step in (5, 10, 15, 20))
    logged = json.loads((finished_run / "generation_logs" / "generation_log_step_20.json").read_text("utf-8"))
    assert logged[0]["prompt"].split("\n")[0][:20] in page
    # Self-contained: nothing fetched from anywhere.
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page


def test_report_rebuilds_from_the_output_dir(finished_run):
    (finished_run / "report.html").unlink()
    result = run_main("--report", "--output-dir", str(finished_run))
    assert result.returncode == 0 and (finished_run / "report.html").is_file()


def test_report_of_a_directory_without_a_run(tmp_path):
    with pytest.raises(UserError, match="no trainer_state.json"):
        build_report(tmp_path)
    result = run_main("--report", "--output-dir", str(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith("error: ")


def test_alarms_reach_the_report_and_the_log(finished_run):
    page = (finished_run / "report.html").read_text(encoding="utf-8")
    log = (finished_run / "grpo_training.log").read_text(encoding="utf-8")
    # The tiny model's 32-token completions nearly always hit the cap: the length alarm must show in both.
    assert "hit max_completion_length=32" in page
    assert "alarm length_cap (step" in log and "hit max_completion_length=32" in log


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                    reason="Debian's chromium is not installed (.ci/run installs it)")
def test_plots_render_in_a_headless_browser(finished_run, tmp_path):
    """Chromium lays the page out and measures every chart and every curve drawn in it."""
    probe = tmp_path / "probe.html"
    page = (finished_run / "report.html").read_text(encoding="utf-8")
    probe.write_text(page.replace("</body>", """<script>
const charts = [...document.querySelectorAll('svg.chart')];
const drawn = charts.filter(svg => svg.getBoundingClientRect().width > 100 &&
  [...svg.querySelectorAll('polyline')].some(line => line.getTotalLength() > 10));
document.body.setAttribute('data-probe', drawn.length + ' of ' + charts.length);
</script></body>"""), encoding="utf-8")
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--no-first-run", "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                             probe.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'data-probe="(\d+) of (\d+)"', result.stdout)
    assert match, result.stderr[-2000:]
    drawn, charts = int(match.group(1)), int(match.group(2))
    assert charts >= 7 and drawn == charts
