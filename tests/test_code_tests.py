"""The code_tests reward and its sandbox: programs taken from completions, tests in MBPP's, HumanEval's and stdin/stdout
layouts, scores as shares or all-or-nothing, hostile programs contained (and shown to get out without the sandbox),
limits, a missing sandbox refused, and a run of the tiny model on an MBPP file whose completions are scripted (the
tiny model writes no Python), so the reward has right, partly right and wrong programs to tell apart."""

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GenerationMixin

from conftest import run_main
from grpo_tool.code_tests import humaneval_program, make_code_tests_reward, program_of, row_tests
from grpo_tool.errors import UserError
from grpo_tool.sandbox import Limits, Sandbox, containment_check
from grpo_tool.tiny_model import ensure_tiny_model

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None and os.environ.get("CI") != "true",
                                 reason="bubblewrap is not installed (.ci/run installs it)")

SHARE = {"mode": "share", "sandbox": "bwrap", "timeout": 3, "memory_mb": 1024}
ALL = {**SHARE, "mode": "all"}
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]


def fenced(code: str, language: str = "python") -> str:
    return f"Here you go:\n```{language}\n{code}\n```\nIt adds."


# Which program a completion gives.

@pytest.mark.parametrize(("text", "program"), [
    (fenced("x = 1"), "x = 1\n"),
    ("```python\nfirst = 1\n```\nthen\n```py\nsecond = 2\n```", "second = 2\n"),  # the last block
    ("```\nbare = 1\n```", "bare = 1\n"),  # a fence with no language
    ("```python\nx = 1\n```\nRun it:\n```bash\npython x.py\n```", "x = 1\n"),  # another language's block is not it
    ("```python\ndef f():\n    return 1", "def f():\n    return 1"),  # left open where the completion was cut off
    ("def f():\n    return 1", "def f():\n    return 1"),  # no fence: the whole text
])
def test_the_program_is_the_last_python_block_else_the_whole_text(text, program):
    assert program_of(text) == program


def test_test_layouts_are_read_from_the_row():
    assert row_tests({"test_list": ADD_TESTS}).count == 4
    assert row_tests({"test_list": ["assert f() == 1"], "test_setup_code": "import math",
                      "test_imports": ["import re"]}).setup == "import re\nimport math"
    human = row_tests({"test": "def check(candidate):\n    x = 2\n    assert candidate(x) == 3\n"
                               "    for y in range(3):\n        assert candidate(y) > y\n", "entry_point": "inc"})
    assert human.count == 2 and [counts for _, counts in human.steps] == [False, True, True]
    assert row_tests({"inputs": ["1\n"], "outputs": ["2\n"]}).cases == (("1\n", "2\n"),)
    assert row_tests({"input_output": json.dumps({"inputs": ["1"], "outputs": ["2"]})}).kind == "io"
    assert row_tests({"input_output": json.dumps({"fn_name": "f", "inputs": [[1]], "outputs": [2]})}) is None
    assert row_tests({"answer": "4"}) is None and row_tests({"test_list": []}) is None


def test_a_humaneval_body_continues_the_prompt_and_a_whole_function_stands_alone():
    prompt = 'def inc(x):\n    """Add one."""\n'
    assert humaneval_program("    return x + 1\n", prompt, "inc") == prompt + "    return x + 1\n"
    assert humaneval_program("def inc(x):\n    return x + 1", prompt, "inc") == "def inc(x):\n    return x + 1"
    assert humaneval_program("    return x + 1", "Write inc(x).", "inc") == "    return x + 1"  # not Python


# Scores, in each layout.

@needs_bwrap
def test_mbpp_programs_score_the_share_of_tests_they_pass_or_all_or_nothing():
    right = fenced("def add(a, b):\n    return a + b")
    half = fenced("def add(a, b):\n    return a + b if a >= 0 else 5")  # passes the first, second and last
    wrong = fenced("def add(a, b):\n    return a - b")  # passes add(0, 0) only
    broken = fenced("def add(a, b) return a + b")
    completions = [right, half, wrong, broken, "I cannot write code.", right]
    columns = {"test_list": [ADD_TESTS] * 5 + [None], "test_setup_code": [""] * 6}
    assert make_code_tests_reward(SHARE)(completions, **columns) == [1.0, 0.75, 0.25, 0.0, 0.0, None]
    assert make_code_tests_reward(ALL)(completions, **columns) == [1.0, 0.0, 0.0, 0.0, 0.0, None]


@needs_bwrap
def test_setup_code_runs_first_and_a_main_block_does_not_run():
    program = fenced("def area(r):\n    return math.pi * r * r\n\n"
                     "if __name__ == '__main__':\n    print(area(int(input())))")
    scores = make_code_tests_reward(SHARE)([program], test_list=[["assert round(area(1), 2) == 3.14"]],
                                           test_setup_code=["import math"])
    assert scores == [1.0]  # input() in the main block would have ended the program at EOF


@needs_bwrap
def test_humaneval_rows_check_each_assert_of_check_and_take_a_body_after_the_prompt():
    prompt = 'def inc(x: int) -> int:\n    """Add one to x."""\n'
    test = ("METADATA = {'author': 'x'}\n\n\ndef check(candidate):\n    assert candidate(1) == 2\n"
            "    assert candidate(-1) == 0\n    assert candidate(5) == 6\n")
    body = "    return x + 1\n"
    partly = fenced("def inc(x):\n    return x + 1 if x > 0 else 7")
    faker = fenced("def inc(x):\n    print('pass 0', 'pass 1', 'pass 2', 'done')\n    return 0")
    scores = make_code_tests_reward(SHARE)([body, partly, faker], prompts=[[{"role": "user", "content": prompt}]] * 3,
                                           test=[test] * 3, entry_point=["inc"] * 3)
    assert scores == [1.0, pytest.approx(2 / 3), pytest.approx(1 / 3)]  # printing lookalikes earns nothing


@needs_bwrap
def test_stdin_stdout_cases_pass_on_the_printed_words_and_a_clean_exit():
    cases = {"inputs": [["1 2\n", "10 20\n", "0 0\n"]] * 4, "outputs": [["3\n", "30", "0\n"]] * 4}
    programs = ["a, b = map(int, input().split())\nprint(a + b)",
                "a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)",
                "a, b = map(int, input().split())\nprint(a + b)\nraise SystemExit(1)",  # right words, a failing exit
                "print(  3 )"]
    assert make_code_tests_reward(SHARE)(programs, **cases) == [1.0, pytest.approx(2 / 3), 0.0, pytest.approx(1 / 3)]
    apps = json.dumps({"inputs": ["4\n"], "outputs": ["16\n"]})
    assert make_code_tests_reward(SHARE)(["print(int(input()) ** 2)"], input_output=[apps]) == [1.0]


@needs_bwrap
def test_programs_that_exit_hang_or_crash_before_the_tests_score_what_they_passed():
    reward = make_code_tests_reward({**SHARE, "timeout": 1})
    loop_at_third = fenced("def add(a, b):\n    while a == -1:\n        pass\n    return a + b")
    exits = fenced("import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b")
    hard_exit = fenced("import os\ndef add(a, b):\n    os._exit(0)")
    start = time.monotonic()
    scores = reward([loop_at_third, exits, hard_exit], test_list=[ADD_TESTS] * 3)
    assert scores == [0.5, 0.0, 0.0] and time.monotonic() - start < 5  # two tests passed before the loop


# Containment.

@needs_bwrap
def test_every_hostile_program_stays_inside_the_sandbox():
    assert containment_check(Sandbox("bwrap", Limits(timeout=2))) == []


def test_without_the_sandbox_the_same_programs_get_out():
    # The check would fail if the sandbox were off: unsafe-local runs the same programs with limits only.
    # The three that need no process limit to stay harmless (run by root, unsafe-local has none).
    escaped = " ".join(containment_check(Sandbox("unsafe-local", Limits(timeout=2)), only=(
        "file written outside", "file outside read", "network connection")))
    assert "file written outside" in escaped and "file outside read" in escaped and "network connection" in escaped


@needs_bwrap
def test_a_completion_sees_nothing_of_the_machine_and_cannot_write_to_it(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    monkeypatch.setenv("WANDB_API_KEY", "key-that-must-not-leak")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    program = f"""
import os, socket, subprocess
seen = []
for path in [{str(secret)!r}, {str(tmp_path)!r}, os.path.expanduser('~'), '/etc', {os.getcwd()!r}]:
    try:
        seen.append(open(path).read() if os.path.isfile(path) else ' '.join(os.listdir(path)))
    except OSError:
        pass
seen.append(' '.join(os.environ))
for target in [{str(tmp_path / 'written')!r}, {os.path.join(os.getcwd(), 'written-by-completion')!r}]:
    try:
        open(target, 'w').write('x')
    except OSError:
        pass
try:
    socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=0.5)
    seen.append('connected')
except OSError:
    pass
print(repr(seen))
"""
    run = Sandbox("bwrap", Limits(timeout=5)).run({"mode": "main", "code": program})
    output = run.stdout.decode()
    assert run.status == 0 and output.startswith("[")
    assert "hunter2" not in output and "WANDB_API_KEY" not in output and "connected" not in output
    assert "ld.so.cache" in output and "passwd" not in output  # /etc holds only the loader's cache
    assert not (tmp_path / "written").exists() and not os.path.exists("written-by-completion")
    with pytest.raises(OSError):
        server.accept()
    server.close()


@needs_bwrap
def test_limits_stop_memory_processes_output_and_time():
    sandbox = Sandbox("bwrap", Limits(timeout=2, memory_mb=256, processes=4))
    memory = sandbox.run({"mode": "main", "code": "x = bytearray(512 << 20)"})
    assert memory.status == 1 and b"MemoryError" in memory.stderr
    bomb = ("import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            import time; time.sleep(5); os._exit(0)\n        n += 1\nexcept OSError:\n    print(n)")
    forks = sandbox.run({"mode": "main", "code": bomb})
    assert forks.status == 0 and int(forks.stdout) <= 3  # 4 processes at once, the program's own included
    flood = sandbox.run({"mode": "main", "code": "while True: print('x' * 10000)"})
    # Python ignores SIGXFSZ: the write past the cap fails (EFBIG) and the program ends at once.
    assert flood.status not in (None, 0) and b"File too large" in flood.stderr and len(flood.stdout) <= 1 << 20
    start = time.monotonic()
    assert sandbox.run({"mode": "main", "code": "while True: pass"}).timed_out and time.monotonic() - start < 4


# Refusals, before any model loads.

def error_line(result) -> str:
    """The run's one error line (the lines before it are the start-up's narration)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def test_a_missing_sandbox_is_refused_in_one_line_with_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    data = tmp_path / "mbpp.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in MBPP_ROWS))
    result = run_main("--quick-test", "--custom-data", str(data), "--reward-config", "code", "--output-dir",
                      str(tmp_path / "out"))
    line = error_line(result)
    assert line.startswith("error: code_tests runs the completions' code in bubblewrap, which this machine lacks: "
                           "install bubblewrap (Debian/Ubuntu: sudo apt-get install bubblewrap")
    assert "unsafe-local" in line and not (tmp_path / "out").exists()


def test_data_without_tests_and_bad_settings_are_refused_in_one_line(tmp_path):
    data = tmp_path / "plain.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Add {n} and 2.", "answer": str(n + 2)}) + "\n" for n in range(4)))
    result = run_main("--quick-test", "--custom-data", str(data), "--reward-config", "code", "--output-dir",
                      str(tmp_path / "out"))
    line = error_line(result)
    assert "code_tests runs each completion against its row's tests, but the training data has no test columns " \
           "(it has answer)" in line and "MBPP: test_list" in line
    config = tmp_path / "rewards.json"
    config.write_text(json.dumps({"code_tests_weight": 1, "code_tests": {"sandbox": "docker", "timeout": -1}}))
    result = run_main("--quick-test", "--reward-config", str(config), "--output-dir", str(tmp_path / "out"))
    line = error_line(result)
    assert "code_tests.sandbox='docker' must be" in line and "code_tests.timeout=-1" in line
    with pytest.raises(UserError, match="use \"bwrap\""):
        Sandbox("firejail")


def test_unsafe_local_must_be_named_and_says_what_it_is():
    sandbox = Sandbox("unsafe-local", Limits(timeout=2))
    assert "trusted code only" in sandbox.describe()
    assert sandbox.run({"mode": "main", "code": "print(6 * 7)"}).stdout == b"42\n"


# A run of the tiny model on an MBPP file.

MBPP_ROWS = [
    {"text": "Write a function add(a, b) that adds two numbers.", "code": "def add(a, b): return a + b",
     "test_list": ADD_TESTS, "test_setup_code": ""},
    {"text": "Write a function rev(s) that reverses a string.", "code": "def rev(s): return s[::-1]",
     "test_list": ["assert rev('ab') == 'ba'", "assert rev('') == ''"], "test_setup_code": ""},
    {"text": "Write a function sq(x) that squares a number.", "code": "def sq(x): return x * x",
     "test_list": ["assert sq(3) == 9", "assert sq(0) == 0"], "test_setup_code": ""},
    {"text": "Write a function big(xs) that returns the largest number.", "code": "def big(xs): return max(xs)",
     "test_list": ["assert big([1, 5]) == 5", "assert big([2]) == 2"], "test_setup_code": ""},
]
ANSWERS = {"add": ("def add(a, b):\n    return a + b", "def add(a, b):\n    return a * b"),
           "rev": ("def rev(s):\n    return s[::-1]", "def rev(s):\n    return s"),
           "sq": ("def sq(x):\n    return x * x", "def sq(x):\n    return x + x"),
           "big": ("def big(xs):\n    return max(xs)", "def big(xs):\n    return xs[0]")}


def scripted_code(tokenizer):
    """generate writing, for each prompt, the right program in even rows and a wrong one in odd rows."""

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        replies = []
        for index, row in enumerate(input_ids.tolist()):
            text = tokenizer.decode([token for token in row if token != tokenizer.pad_token_id])
            name = next(name for name in ANSWERS if f"function {name}(" in text[text.rfind("<|user|>"):])
            code = ANSWERS[name][index % 2]
            replies.append(tokenizer(f"```python\n{code}\n```<|end|>", add_special_tokens=False)["input_ids"])
        width = max(len(reply) for reply in replies)
        padded = [reply + [tokenizer.pad_token_id] * (width - len(reply)) for reply in replies]
        return torch.cat([input_ids, torch.tensor(padded, device=input_ids.device)], dim=1)

    return generate


@needs_bwrap
def test_the_tiny_model_trains_on_an_mbpp_file_with_the_code_preset(tmp_path, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
    monkeypatch.setattr(GenerationMixin, "generate", scripted_code(tokenizer))
    data = tmp_path / "mbpp.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in MBPP_ROWS))
    output_dir = tmp_path / "out"
    result = run_main("--quick-test", "--custom-data", str(data), "--reward-config", "code", "--max-steps", "4",
                      "--eval-steps", "2", "--save-steps", "4", "--logging-steps", "1", "--max-completion-length",
                      "64", "--zero-variance-groups", "keep", "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    log = (output_dir / "grpo_training.log").read_text("utf-8")
    assert "code sandbox: bwrap; 3 s" not in log and "8 of 8 hostile programs contained" in log
    state = json.loads((output_dir / "final_model" / "trainer_state.json").read_text("utf-8"))
    means = [entry["rewards/code_tests/mean"] for entry in state["log_history"] if "rewards/code_tests/mean" in entry]
    # Right programs score 1, wrong ones their share (add: 1 of 4 with a * b; rev: 1 of 2; sq: 1 of 2; big: 1 of 2).
    assert means and all(0.6 < mean < 0.9 for mean in means)
    from safetensors.torch import load_file

    before = load_file(str(Path(ensure_tiny_model()) / "model.safetensors"))
    after = load_file(str(output_dir / "final_model" / "model.safetensors"))
    assert any(not torch.equal(before[name], after[name]) for name in before if name in after)  # it trained
    record = json.loads((output_dir / "run_record.json").read_text("utf-8"))
    assert record["code_tests"]["sandbox"] == "bwrap" and "hostile programs contained" in record["code_tests"]["said"]
    entries = json.loads((output_dir / "generation_logs" / "generation_log_step_4.json").read_text("utf-8"))
    prompt = entries[0]["prompt"]
    assert "Your code should pass these tests:\nassert" in prompt  # MBPP's tests name the function
    assert {entry["rewards"]["code_tests"] for entry in entries} >= {1.0}


@needs_bwrap
def test_the_reward_check_runs_the_data_s_own_solutions_and_says_the_sandbox_held(tmp_path):
    rows = [{**row, "code": ANSWERS[name][0]} for row, name in zip(MBPP_ROWS, ANSWERS)]
    rows[2]["code"] = ANSWERS["sq"][1]  # a solution its own tests fail: x + x passes sq(0) == 0 only
    data = tmp_path / "mbpp.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_main("--check-rewards", "--quick-test", "--custom-data", str(data), "--reward-config", "code",
                      "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "8 of 8 hostile programs contained" in result.stderr
    report = json.loads((tmp_path / "out" / "reward_check.json").read_text("utf-8"))
    solutions = report["solutions"]
    assert solutions["column"] == "code" and solutions["all_passed"] == solutions["rows"] - 1
    assert "warning: code_tests gives 1 of" in result.stdout and "'Write a function sq(x)" in result.stdout
