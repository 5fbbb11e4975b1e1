"""Tools and environments (grpo_tool/tools.py): the calculator, the checks before any model loads, the guards around
a call, chat templates that carry tool calls, and training with tools on the tiny model.

The training tests script what the model writes, as TRL's own tests do (tests/scripted_tools.py: a valid call, a
failing one, an unknown tool, no call, calls until the round limit, a tool that hangs), so every path of the tool loop
runs on a model too small to call tools.
"""

import asyncio
import inspect
import json
import time

import datasets
import pytest
import torch
from scripted_tools import QUESTIONS, call, scripted_generate
from transformers import AutoTokenizer, GenerationMixin

from config import build_config
from conftest import run_main
from grpo_tool import tools
from grpo_tool.errors import UserError
from grpo_tool.tiny_model import ensure_tiny_model
from grpo_tool.tools import ToolStop, calculator, guarded_tool, prepare_tokenizer, resolve


@pytest.mark.parametrize("expression, result", [
    ("12 * 34", "408"), ("123*456", "56088"), ("1/4", "0.25"), ("2/3", "2/3 (0.666666666667)"), ("-3.5 * 2", "-7"),
    ("2^10", "1024"), ("1,234 + 1", "1235"), ("7 // 2", "3"), ("7 % 3", "1"), ("0.1 + 0.2", "0.3"), ("2**-2", "0.25"),
    ("(2)**0.5", "1.41421356237 (rounded)"), ("12 × 3 =", "36"), ("10 ÷ 4", "2.5"),
])
def test_the_calculator_is_exact(expression, result):
    assert calculator(expression) == result


@pytest.mark.parametrize("expression, said", [
    ("1/0", "division by zero"), ("abs(3)", "is not arithmetic"), ("__import__('os').system('ls')", "not arithmetic"),
    ("9**9**9", "over 10,000 digits"), ("(-8)**(1/3)", "not a real number"), ("", "empty expression"),
    ("2 +", "cannot read"), ("x * 2", "not arithmetic"), ("[1, 2]", "not arithmetic"),
])
def test_the_calculator_says_what_it_cannot_do(expression, said):
    with pytest.raises(ValueError, match=said.replace("(", r"\(").replace(")", r"\)")):
        calculator(expression)


# Tools and environments as a user may write them, right and wrong.

def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b


def undocumented(a: int) -> int:
    return a


def unhinted(a):
    """Echo.

    Args:
        a: Anything.
    """
    return a


def spread(*values: int) -> int:
    """Add them.

    Args:
        values: The numbers.
    """
    return sum(values)


def slow(seconds: float) -> str:
    """Wait.

    Args:
        seconds: How long.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except Exception:  # noqa: BLE001 - a tool that swallows errors is still stopped
            pass
    return "done"


def quits(code: int) -> str:
    """Leave.

    Args:
        code: The status.
    """
    raise SystemExit(code)


class Counter:
    """An episode: count up to the row's target."""

    def __init__(self):
        self.count, self.target = 0, 0

    def reset(self, target: int = 3, **row) -> str:
        self.count, self.target = 0, target
        return f" (the count is 0; reach {target})"

    def increment(self, by: int) -> str:
        """Add to the count.

        Args:
            by: How much to add.
        """
        self.count += by
        return str(self.count)

    def get_reward(self) -> float:
        return 1.0 if self.count == self.target else 0.0


class Echo:
    """An episode without a reward of its own."""

    def reset(self, **row) -> None:
        return None

    def echo(self, text: str) -> str:
        """Say it back.

        Args:
            text: What to say.
        """
        return text


class Broken:
    def reset(self, **row) -> None:
        return row["level"]


class NoReset:
    def go(self, x: int) -> int:
        """Go.

        Args:
            x: Where.
        """
        return x


class BadMethod:
    def reset(self, **row):
        return None

    def step(self, x):
        return x


class NeedsArguments:
    def __init__(self, size):
        self.size = size

    def reset(self, **row):
        return None


def config_with(**overrides):
    return build_config(overrides={"model_name": "tiny", **overrides})


@pytest.mark.parametrize("overrides, said", [
    ({"tools": ["calculater"]}, "no built-in tool of that name (built in: calculator) (did you mean 'calculator'?)"),
    ({"tools": ["nofile.py:f"]}, "--tools 'nofile.py:f': no such file nofile.py"),
    ({"tools": [undocumented]}, "undocumented cannot be shown to the model as a tool: Cannot generate JSON schema"),
    ({"tools": [unhinted]}, "missing a type hint"),
    ({"tools": [Counter]}, "is a class; a class whose methods are tools is an environment: give it to --environment"),
    ({"tools": [add, add]}, "another tool is already named 'add'"),
    ({"environments": [NoReset]}, "class NoReset has no reset method"),
    ({"environments": [BadMethod]}, "method BadMethod.step cannot be shown to the model as a tool"),
    ({"environments": [NeedsArguments]}, "cannot be built without arguments"),
    ({"environments": [Counter, Echo]}, "2 environments, so each needs a name"),
    ({"environments": ["a=x.py:A", "a=y.py:B"]}, "the name 'a' is given twice"),
    ({"environments": [Echo]}, "no rewards: the environment has no get_reward() method"),
    ({"tools": ["calculator"], "prompt_format": "text"}, "tools need chat prompts"),
    ({"chat_template": "nonesuch"}, "chat_template='nonesuch': no such file, and no bundled template"),
    ({"max_tool_calls": 0}, "max_tool_calls=0 must be at least 1"),
    ({"tools": [""]}, "--tools '' names no tool"),
    ({"tools": [spread]}, "spread takes *values, which a tool call cannot fill"),
])
def test_tool_mistakes_are_one_line_before_any_model_loads(overrides, said):
    from grpo_trainer import GRPOTrainer

    with pytest.raises(UserError) as raised:
        GRPOTrainer(config_with(**overrides))
    assert said in str(raised.value) and "\n" not in str(raised.value)


def test_tool_mistakes_on_the_command_line(tmp_path):
    result = run_main("--quick-test", "--tools", "calculator,nope", "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --tools 'nope': no built-in tool of that name (built in: calculator); or give calculator, "
        "path/to/file.py:function_name or package.module:function_name"]
    assert not (tmp_path / "o").exists()


def test_a_tool_call_is_guarded():
    fast = guarded_tool(slow, 0.3, "slow")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="slow ran past 0.3 s"):
        fast(5)
    assert time.monotonic() - started < 2  # stopped, though the tool swallows every Exception
    assert fast(0) == "done" and fast.__name__ == "slow" and fast.__doc__ == slow.__doc__
    with pytest.raises(ToolStop, match=r"tool quits called sys.exit\(3\): a tool must not end the program"):
        guarded_tool(quits, 1, "quits")(3)
    with pytest.raises(ValueError, match="division by zero"):
        guarded_tool(calculator, 1, "calculator")("1/0")


async def slow_async(seconds: float) -> str:
    """Wait, without holding the event loop.

    Args:
        seconds: How long.
    """
    await asyncio.sleep(seconds)
    return "done"


def test_an_async_tool_stays_async_and_is_bounded():
    bounded = guarded_tool(slow_async, 0.2, "slow_async")
    assert inspect.iscoroutinefunction(bounded)  # TRL runs it on its event loop, as it would the tool itself
    with pytest.raises(TimeoutError, match="slow_async ran past 0.2 s"):
        asyncio.run(bounded(5))
    assert asyncio.run(bounded(0)) == "done"


def test_environments_are_resolved_as_trl_takes_them():
    box = resolve(config_with(environments={"count": Counter, "echo": Echo}))
    arguments = box.trainer_arguments()
    assert set(arguments["environment_factory"]) == {"count", "echo"}
    episode = arguments["environment_factory"]["count"]()
    assert type(episode).__name__ == "Counter"
    assert not inspect.ismethod(episode.get_reward)  # TRL passes it by: scored by our component, not TRL's as well
    assert [c.name for c in box.rewards] == ["Counter"]
    assert box.specs["environments"] == ["count=test_tools:Counter", "echo=test_tools:Echo"]
    assert "environments: count=Counter (tools: increment), echo=Echo (tools: echo)" in box.describe()
    episode.reset(target=2)
    episode.increment(2)
    reward = box.rewards[0].function
    assert reward(["a", "b"], environments=[episode, arguments["environment_factory"]["echo"]()]) == [1.0, None]
    broken = resolve(config_with(environments=[Broken], reward_functions=[seen_reward])).environments[None]()
    with pytest.raises(ToolStop, match=r"environment Broken.reset raised KeyError: 'level' while starting an episode "
                                       r"\(reset\(\*\*row\)\) \(at .*test_tools.py:\d+\)"):
        broken.reset(prompt="p")


def test_several_environments_need_the_data_to_choose(tmp_path):
    box = resolve(config_with(environments={"count": Counter, "echo": Echo}))
    rows = datasets.Dataset.from_list([{"prompt": "p"}])
    assert "has no environment column" in tools.column_problem(box, rows, "train")
    rows = datasets.Dataset.from_list([{"prompt": "p", "environment": "cuont"}])
    assert "names 'cuont', which is none of the environments given (count, echo) (did you mean 'count'?)" in \
        tools.column_problem(box, rows, "train")


def tiny_tokenizer():
    return AutoTokenizer.from_pretrained(ensure_tiny_model())


def test_the_tiny_model_carries_tool_calls_and_reads_them_back():
    from trl.chat_template_utils import parse_response

    tokenizer = tiny_tokenizer()
    prepare_tokenizer(tokenizer, config_with(tools=["calculator"]), "tiny")  # nothing to say: it can
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "12*34?"}], tools=[calculator],
                                           add_generation_prompt=True)
    assert "calculator(expression)" in tokenizer.decode(prompt)
    written = '<tool_call>{"name": "calculator", "arguments": {"expression": "12*34"}}</tool_call><|end|>'
    message = parse_response(tokenizer, tokenizer(written, add_special_tokens=False)["input_ids"], prefix=prompt)
    assert message["tool_calls"] == [{"type": "function",
                                      "function": {"name": "calculator", "arguments": {"expression": "12*34"}}}]
    # Without tools the template renders what it always did.
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True) == "<|begin|><|user|>hi<|end|><|assistant|>"


@pytest.mark.slow  # the real model's tokenizer comes from its GGUF, converted once (about 30 s)
def test_a_template_without_tools_is_refused_and_the_bundled_one_serves_chatml(smollm2_tokenizer):
    plain = tiny_tokenizer()
    plain.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    with pytest.raises(UserError, match="the chat template of tiny cannot render tool calls and their results: pass "
                                        "--chat-template FILE.jinja"):
        prepare_tokenizer(plain, config_with(tools=["calculator"]), "tiny")
    with pytest.raises(UserError, match="cannot render tool calls"):
        prepare_tokenizer(smollm2_tokenizer, config_with(tools=["calculator"]), "SmolLM2")
    prepare_tokenizer(smollm2_tokenizer, config_with(tools=["calculator"], chat_template="chatml_tools"), "SmolLM2")
    from trl.chat_template_utils import is_chat_template_prefix_preserving, parse_response

    assert is_chat_template_prefix_preserving(smollm2_tokenizer)
    prompt = smollm2_tokenizer.apply_chat_template([{"role": "user", "content": "12*34?"}], tools=[calculator],
                                                   add_generation_prompt=True)
    written = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "12*34"}}\n</tool_call><|im_end|>'
    message = parse_response(smollm2_tokenizer, smollm2_tokenizer(written)["input_ids"], prefix=prompt)
    assert message["tool_calls"][0]["function"] == {"name": "calculator", "arguments": {"expression": "12*34"}}


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_gguf):
    from grpo_tool.gguf_models import converted_gguf
    from grpo_tool.models import load_tokenizer

    return load_tokenizer(str(converted_gguf(smollm2_gguf)), False)


# Training with tools, on a script.

@pytest.fixture
def scripted(monkeypatch):
    """transformers' generate answering from the script (TRL's sampling and the tool's sampler both call it)."""
    tokenizer = tiny_tokenizer()
    monkeypatch.setattr(GenerationMixin, "generate", scripted_generate(tokenizer))
    return tokenizer


def seen_reward(completions, **kwargs):
    """Records what TRL hands a reward with tools; scores a final answer of 408."""
    SEEN.append({"completions": completions, "keys": sorted(kwargs)})
    return [1.0 if "408" in tools_free_text(completion) else 0.0 for completion in completions]


SEEN: list = []


def tools_free_text(completion) -> str:
    from grpo_tool.messages import completion_text

    return completion_text(completion)


def questions():
    rows = datasets.Dataset.from_list([{"prompt": question, "answer": answer}
                                       for question, answer in QUESTIONS.items()])
    return datasets.DatasetDict({"train": rows, "eval": rows})


def test_training_with_tools_calls_them_masks_their_results_and_logs_the_conversation(scripted, tmp_path):
    from grpo_trainer import GRPOTrainer

    SEEN.clear()
    config = build_config(overrides={
        "model_name": "tiny", "tools": ["calculator", slow], "reward_functions": [seen_reward], "max_tool_calls": 2,
        "tool_timeout": 0.3, "group_size": 2, "per_device_train_batch_size": 14, "per_device_eval_batch_size": 14,
        "gradient_accumulation_steps": 1, "max_steps": 2, "eval_steps": 2, "save_steps": 2, "logging_steps": 1,
        "max_seq_length": 512, "max_completion_length": 300, "zero_variance_groups": "keep",
        "max_generation_samples": 7, "output_dir": str(tmp_path / "out")})
    trainer = GRPOTrainer(config)
    trainer.load_model()
    before = [parameter.detach().clone() for parameter in trainer.model.parameters()]
    trainer.train(questions())
    assert any(not torch.equal(b, a) for b, a in zip(before, trainer.model.parameters()))

    # What TRL handed the reward: the whole conversation, the model's turns and the tools' results.
    completions = SEEN[0]["completions"]
    episode = next(c for c in completions if "12*34" in json.dumps(c))
    assert [m["role"] for m in episode] == ["assistant", "tool", "assistant"] and episode[1]["content"] == "408"
    looped = next(c for c in completions if "1+1" in json.dumps(c))
    assert [m["role"] for m in looped].count("tool") == 2  # max_tool_calls rounds, then the call is left unrun
    failures = [m["content"] for c in completions for m in c if m["role"] == "tool" and "error" in m["content"]]
    assert any("division by zero" in text for text in failures)
    assert any("Tool nope not found" in text for text in failures)
    assert any("slow ran past 0.3 s (tool_timeout)" in text for text in failures)
    assert any("got an unexpected keyword argument 'expr'" in text for text in failures)

    history = trainer.trainer.state.log_history
    logged = [entry for entry in history if "tools/call_frequency" in entry]
    # 14 completions: two calls each of the looping pair, one each of 10 others, none of the pair that says hi; the
    # 8 to 1/0, nope, the hanging tool and with the wrong argument fail.
    assert logged and logged[0]["tools/call_frequency"] == 1.0
    assert logged[0]["tools/failure_frequency"] == pytest.approx(8 / 14)
    assert any(entry.get("rewards/seen_reward/mean", 0) > 0 for entry in history)

    # The tools' results are kept out of the loss: TRL's tool_mask is 0 on them and 1 on what the model wrote.
    inputs = [{"prompt": [{"role": "user", "content": "What is 12*34?"}], "answer": "408"}] * 14
    output = trainer.trainer._generate_and_score_completions(inputs)
    ids, mask = output["completion_ids"][0], output["tool_mask"][0] * output["completion_mask"][0]
    masked = scripted.decode([t for t, m in zip(ids.tolist(), mask.tolist()) if m == 0 and t != scripted.pad_token_id])
    kept = scripted.decode([t for t, m in zip(ids.tolist(), mask.tolist()) if m == 1])
    assert masked == "<|tool|>408<|end|><|assistant|>"  # the result, and the turn markers around it
    assert kept == call("calculator", {"expression": "12*34"}) + "The answer is 408.<|end|>"

    # The generation log holds each completion's turns, and its transcript.
    log = json.loads((tmp_path / "out" / "generation_logs" / "generation_log_step_2.json").read_text("utf-8"))
    entry = next(e for e in log if "12*34" in e["prompt"])
    assert entry["tool_calls"] == 1 and entry["tool_failures"] == 0
    assert entry["full_response"].splitlines() == ["-> calculator(expression='12*34')", "<- calculator: 408",
                                                   "The answer is 408."]
    assert [turn["role"] for turn in entry["turns"]] == ["assistant", "tool", "assistant"]
    record = json.loads((tmp_path / "out" / "run_record.json").read_text("utf-8"))
    assert record["tools"]["tools"] == ["calculator", "test_tools:slow"] and record["tools"]["max_tool_calls"] == 2
    trainer.save_model()
    saved = AutoTokenizer.from_pretrained(tmp_path / "out" / "final_model")  # saved with the template it trained with
    assert saved.response_template is not None and "calculator(expression)" in saved.apply_chat_template(
        [{"role": "user", "content": "hi"}], tools=[calculator], tokenize=False)
    from grpo_tool.report import build_report

    report = (build_report(str(tmp_path / "out"))).read_text("utf-8")
    assert "-&gt; calculator(expression=&#x27;12*34&#x27;)\n&lt;- calculator: 408\nThe answer is 408." in report
    assert "Tool calls per completion" in report


def test_an_environment_episode_is_scored_by_its_own_reward(scripted, tmp_path):
    from grpo_trainer import GRPOTrainer

    rows = [{"prompt": "Make the count right.", "target": 2, "environment": "count"},
            {"prompt": "Echo me.", "environment": "echo"}] * 2
    data = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                                 "eval": datasets.Dataset.from_list(rows[:2])})
    config = build_config(overrides={
        "model_name": "tiny", "environments": {"count": Counter, "echo": Echo}, "group_size": 2,
        "per_device_train_batch_size": 8, "per_device_eval_batch_size": 4, "gradient_accumulation_steps": 1,
        "max_steps": 1, "eval_steps": 1, "save_steps": 1, "logging_steps": 1, "max_seq_length": 512,
        "max_completion_length": 300, "zero_variance_groups": "keep", "output_dir": str(tmp_path / "out")})
    trainer = GRPOTrainer(config)
    assert [c.name for c in trainer.components] == ["Counter"]
    trainer.train(data)
    history = trainer.trainer.state.log_history
    # Half the count episodes add 2 (the target), half add 1: the environment's reward is their mean.
    assert any(entry.get("rewards/Counter/mean") == pytest.approx(0.5) for entry in history)
    log = json.loads((tmp_path / "out" / "generation_logs" / "generation_log_step_1.json").read_text("utf-8"))
    counted = next(e for e in log if "count" in e["prompt"])
    assert "(the count is 0; reach 2)" in counted["prompt"] and "<- increment: 1" in counted["full_response"]


def test_a_tool_that_exits_ends_the_run_in_one_line(scripted, tmp_path):
    from grpo_trainer import GRPOTrainer

    def calculator_that_quits(expression: str) -> str:
        """Quit.

        Args:
            expression: Ignored.
        """
        raise SystemExit(1)

    calculator_that_quits.__name__ = "calculator"
    config = build_config(overrides={
        "model_name": "tiny", "tools": [calculator_that_quits], "reward_functions": [seen_reward], "group_size": 2,
        "per_device_train_batch_size": 12, "gradient_accumulation_steps": 1, "max_steps": 1,
        "max_seq_length": 512, "max_completion_length": 300, "zero_variance_groups": "keep",
        "enable_generation_logging": False, "output_dir": str(tmp_path / "out")})
    with pytest.raises(UserError, match=r"^tool calculator called sys.exit\(1\): a tool must not end the program"):
        GRPOTrainer(config).train(questions())


def test_the_plan_counts_the_tokens_tools_add(tmp_path):
    plain = run_main("--plan", "--quick-test", "--output-dir", str(tmp_path / "a"))
    tooled = run_main("--plan", "--quick-test", "--tools", "calculator", "--output-dir", str(tmp_path / "b"))
    assert plain.returncode == tooled.returncode == 0, tooled.stderr
    longest = [int(result.stdout.split("prompts up to ")[1].split(" tokens")[0]) for result in (plain, tooled)]
    described = int(tooled.stdout.split(" tokens of tool descriptions")[0].rsplit("with ", 1)[1])
    assert described > 0 and longest[1] == longest[0] + described


def test_the_game_recipe_runs_from_the_command_line(tmp_path):
    from conftest import ROOT

    out = tmp_path / "out"
    result = run_main("--quick-test", "--custom-data", "examples/guess_number.jsonl", "--environment",
                      "examples/guess_number.py:GuessNumber", "--max-steps", "2", "--output-dir", str(out), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "run_record.json").read_text("utf-8"))
    assert record["components"] == {"GuessNumber": 1.0}
    assert record["tools"]["environments"] == ["examples/guess_number.py:GuessNumber"]
    log = (out / "grpo_training.log").read_text("utf-8")
    assert "environment: GuessNumber (tools: guess)" in log and "rewards/GuessNumber/mean=" in log


def test_the_guessing_game_scores_its_episodes():
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("guess_number", ROOT / "examples" / "guess_number.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    game = module.GuessNumber()
    assert "between 1 and 100" in game.reset(secret=42, prompt="Find it.")
    assert [game.guess(50), game.guess(25), game.guess(42)] == ["lower", "higher", "correct"]
    assert game.get_reward() == pytest.approx(0.8)
    game.reset(secret=7)
    assert game.get_reward() == 0.0


@pytest.mark.slow  # two processes, each importing torch and TRL
def test_tools_train_on_two_processes_and_resume(tmp_path):
    import subprocess
    import sys

    from scripted_tools import questions_file

    from conftest import ROOT

    data = questions_file(tmp_path / "questions.jsonl")

    def launch(*more: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
             str(ROOT / "config/accelerate/cpu_2proc.yaml"), "--main_process_port", "29561",
             str(ROOT / "tests" / "scripted_tools.py"), "--quick-test", "--custom-data", str(data), "--tools",
             "calculator", "--reward-fn", f"{ROOT / 'tests' / 'scripted_tools.py'}:final_408", "--max-tool-calls", "2",
             "--group-size", "2", "--batch-size", "4", "--max-seq-length", "512", "--max-completion-length", "300",
             "--eval-steps", "2", "--save-steps", "2", "--logging-steps", "1", "--zero-variance-groups", "keep",
             "--output-dir", str(tmp_path / "out"), *more], capture_output=True, text=True, timeout=600, cwd=ROOT)

    first = launch("--max-steps", "2")
    assert first.returncode == 0, first.stderr[-4000:]
    out = tmp_path / "out"
    record = json.loads((out / "run_record.json").read_text("utf-8"))
    assert record["launch"]["processes"] == 2 and record["tools"]["tools"] == ["calculator"]
    resumed = launch("--max-steps", "4", "--resume-from-checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert resumed.stdout.count("done: 4 steps") == 1
    state = json.loads((out / "final_model" / "trainer_state.json").read_text("utf-8"))
    calls = [entry["tools/call_frequency"] for entry in state["log_history"] if "tools/call_frequency" in entry
             and "eval_reward" not in entry]
    assert len(calls) == 4 and all(value > 0 for value in calls)  # steps 1-2, then 3-4 after the resume


def test_the_reward_check_runs_the_tools_and_shows_the_episodes(scripted, tmp_path):
    from conftest import ROOT

    data = tmp_path / "questions.jsonl"  # whichever row is held out, its episodes call the calculator
    data.write_text("".join(json.dumps({"prompt": f"What is 12*34? (case {case})", "answer": "408"}) + "\n"
                            for case in range(6)), encoding="utf-8")
    result = run_main("--check-rewards", "--quick-test", "--custom-data", str(data), "--tools", "calculator",
                      "--reward-fn", f"{ROOT / 'tests' / 'scripted_tools.py'}:final_408", "--max-seq-length", "512",
                      "--max-completion-length", "300", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tools: 1 calls per completion, 100% of completions call one, 0% of calls failed" in result.stdout
    assert "-> calculator(expression='12*34')\n    <- calculator: 408\n    The answer is 408." in result.stdout
    report = json.loads((tmp_path / "out" / "reward_check.json").read_text("utf-8"))
    assert report["episodes"]["with_a_call"] == 1.0


class Scored:
    """An environment whose own code calls get_reward, with a static helper (not a tool) and an async score."""

    def reset(self, **row) -> None:
        self.total = 0

    def add(self, amount: int) -> str:
        """Add to the total and say how the episode scores so far.

        Args:
            amount: How much.
        """
        self.total += amount
        return f"{self.total} (score {self.get_reward()})"

    @staticmethod
    def helper(x):
        return x

    def get_reward(self) -> float:
        return float(self.total == 3)


class AsyncScored(Scored):
    def add(self, amount: int) -> str:
        """Add to the total.

        Args:
            amount: How much.
        """
        self.total += amount
        return str(self.total)

    async def get_reward(self) -> float:
        return float(self.total == 3)


def test_environment_edges_behave_as_trl_and_the_class_expect():
    box = resolve(config_with(environments={"one": Scored}))
    assert list(box.environments) == [None]  # one environment, named or not: TRL's single form, no column needed
    assert box.trainer_arguments()["environment_factory"] is box.environments[None]
    episode = box.environments[None]()
    episode.reset()
    assert episode.add(3) == "3 (score 1.0)"  # its own call to get_reward still works, though TRL cannot see it
    assert tools.tool_names(Scored) == ["add"]  # a staticmethod is no tool (TRL finds bound methods only)
    assert box.rewards[0].function(["x"], environments=[episode]) == [1.0]
    twice = resolve(config_with(environments={"a": Scored, "b": Scored}))
    assert twice.environments["a"] is twice.environments["b"] and len(twice.rewards) == 1
    asynchronous = resolve(config_with(environments=[AsyncScored])).environments[None]()
    asynchronous.reset()
    asynchronous.add(3)
    assert resolve(config_with(environments=[AsyncScored])).rewards[0].function([""], environments=[asynchronous]) \
        == [None]  # another resolve, another class: its episodes are not this one's
    box = resolve(config_with(environments=[AsyncScored]))
    episode = box.environments[None]()
    episode.reset()
    episode.add(3)
    assert box.rewards[0].function([""], environments=[episode]) == [1.0]


def test_nested_limits_keep_the_outer_deadline():
    outer = guarded_tool(lambda: guarded_tool(slow, 5, "inner")(0.05) and slow(5), 0.4, "outer")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="outer ran past 0.4 s"):
        outer()
    assert time.monotonic() - started < 2


async def exits_async(code: int) -> str:
    """Leave.

    Args:
        code: The status.
    """
    raise SystemExit(code)


def test_an_async_tool_that_exits_is_a_failed_call_not_a_stuck_loop():
    with pytest.raises(RuntimeError, match=r"tool exits_async called sys.exit\(4\)"):
        asyncio.run(guarded_tool(exits_async, 1, "exits_async")(4))


def test_a_template_whose_calls_do_not_read_back_is_refused():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = tokenizer.chat_template.replace("<tool_call>", "<function_call>").replace(
        "</tool_call>", "</function_call>")  # renders calls, but not in the form the response template reads
    with pytest.raises(UserError, match="writes a tool call in a form its parser does not read back"):
        prepare_tokenizer(tokenizer, config_with(tools=["calculator"]), "tiny")


def test_the_sampler_gives_no_result_past_the_cap_and_runs_async_tools(scripted):
    from grpo_tool.backend import prepare
    from grpo_tool.models import load_policy
    from grpo_tool.sampling import sample, with_observation

    assert with_observation({"role": "user", "content": [{"type": "text", "text": "a"}]}, " b")["content"] == [
        {"type": "text", "text": "a"}, {"type": "text", "text": " b"}]
    config = config_with(tools=["calculator"], max_seq_length=512, max_completion_length=300, max_tool_calls=2)
    model, tokenizer, _ = load_policy(config, prepare(config))
    rows = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "Loop forever."}]}])
    box = resolve(config)
    (looped,) = sample(model, tokenizer, rows, config, toolbox=box)
    assert [turn["role"] for turn in looped["turns"]].count("tool") == 2 and looped["completion_tokens"] <= 300
    # The call takes 64 tokens of the tiny tokenizer, its result and turn markers 10 more: past a cap of 66.
    tight = config_with(tools=["calculator"], max_seq_length=512, max_completion_length=66, max_tool_calls=2)
    (cut,) = sample(model, tokenizer, rows, tight, toolbox=resolve(tight))
    assert "tool" not in [turn["role"] for turn in cut["turns"]] and cut["tool_calls"] == 1  # counted, not given
    assert cut["completion_tokens"] == 64

    async def calculator(expression: str) -> str:
        """Work it out later.

        Args:
            expression: The arithmetic.
        """
        return "2"

    rows = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "Loop forever."}]}])
    (ran,) = sample(model, tokenizer, rows, config, toolbox=resolve(config_with(tools=[calculator])))
    assert [turn["content"] for turn in ran["turns"] if turn["role"] == "tool"] == ["2", "2"]


ENVIRONMENT_FILE = """
class Board:
    def reset(self, level):
        return 7

    def move(self, to: int) -> str:
        \"\"\"Move.

        Args:
            to: Where.
        \"\"\"
        return str(to)

    def get_reward(self) -> float:
        return 1.0
"""


def test_environment_files_named_twice_and_resets_as_users_write_them(tmp_path):
    path = tmp_path / "board.py"
    path.write_text(ENVIRONMENT_FILE, encoding="utf-8")
    box = resolve(config_with(environments=[f"a={path}:Board", f"b={path}:Board"]))
    assert box.environments["a"] is box.environments["b"] and [c.name for c in box.rewards] == ["Board"]
    episode = box.environments["a"]()
    assert episode.reset(level=1) == "7"  # what reset returns reaches the prompt as text
    with pytest.raises(ToolStop, match=r"environment Board.reset raised TypeError: .* \(calling Board.reset with "
                                       r"prompt, level\)"):
        episode.reset(prompt="p", level=1)
    template = tmp_path / "broken.jinja"
    template.write_text("{% for m in messages %}{{ m.content }", encoding="utf-8")
    with pytest.raises(UserError, match=r"chat_template='.*broken.jinja': not a Jinja template: unexpected '}' at "
                                        r"line 1"):
        config_with(chat_template=str(template))
