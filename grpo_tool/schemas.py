"""Dataset schemas: which layout a table is in, and how its rows become the common shape.

The common shape is a `prompt` (text or chat messages) plus every other column of the source, which reaches the
reward functions as keyword arguments, as TRL passes dataset columns. A schema names the source columns it builds the
prompt and the references from (`replaces`); those give way to what is built, and every other column passes on as it
is. Detected from the columns, in this order:

- prompt_column: `--prompt-column NAME` names the prompt's column, for any other layout.
- openbmb: `instruction` and rated `completions` (openbmb/UltraFeedback): chosen / rejected are the best and worst
  rated completions.
- ultrafeedback_binarized: `prompt` text, `chosen` / `rejected` as [user turn, assistant turn] message lists.
- custom: `prompt` (text or chat messages) with any other columns, TRL's prompt-only format; `chosen` / `rejected`
  (the original's format, TL;DR preference rows) become text.
- hh_rlhf: `chosen` / `rejected` as whole "\\n\\nHuman: ... \\n\\nAssistant: ..." dialogues, no prompt column.
- messages: a chat `messages` list; the prompt is the conversation before its last assistant turn, and that turn is
  the reference `answer`.
- question_answer: GSM8K's `question` / `answer`; `answer` becomes the text after `####` (the final answer) and the
  whole worked answer is kept as `solution`.
- problem_solution: MATH's `problem` / `solution`; the solution passes on as it is.
- alpaca: `instruction`, optional `input` (joined into the prompt by a blank line), `output` passed on.
- mbpp / mbpp_sanitized: MBPP's task in `text` (or `prompt`) with its `test_list` shown after it, since the tests
  name the function (left out when the prompt already shows them); every test column passes on to code_tests.
  HumanEval (`prompt`, `test`, `entry_point`) is custom's layout; APPS (`question`, `input_output`) question_answer's.
- livecodebench: `question_content` is the prompt.

A row that cannot be used gets a reason in ROW_PROBLEM (the caller drops it or names its line).

    schema = SCHEMAS[detect_schema(["question", "answer"], {})]    # question_answer: GSM8K's layout
    rows = schema.convert({"question": ["2 + 2?"], "answer": ["2 + 2 = 4\\n#### 4"]})    # a batch, column by column
    assert schema.replaces == ("question", "answer") and rows["answer"] == ["4"]    # the final answer, after ####
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from os.path import commonprefix
from typing import Any

from grpo_tool.messages import answer_text, is_message_list, message_text

ROW_PROBLEM = "__row_problem__"  # why a converted row cannot be used, None when it can; never leaves data_loader
HH_HUMAN, HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
HASH_MARK = "####"  # GSM8K writes the final answer after it
EXCLUDED_OPENBMB_SOURCES = {"truthful_qa"}  # its completions were rated against answers outside the data

# Arguments TRL passes to every reward function itself: a column of the same name could never reach a reward.
TRL_REWARD_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric",
                        "environments")
TRL_DROPPED_COLUMNS = ("completion",)  # TRL leaves these out of what it passes on
TRL_IMAGE_COLUMNS = ("image", "images")  # TRL reads these as the prompt's images; this tool trains text models
FORMATS_ACCEPTED = ("prompt (text or chat messages) with any other columns, {prompt, chosen, rejected}, "
                    "question/answer (GSM8K), problem/solution (MATH), chat messages, Alpaca instruction/input/output, "
                    "UltraFeedback-binarized, hh-rlhf and openbmb/UltraFeedback rows, MBPP (text, test_list) and "
                    "LiveCodeBench (question_content); for any other layout, name the prompt's column with "
                    "--prompt-column")


def prompt_problem(prompt: Any, field: str = "prompt") -> str | None:
    """Why a prompt cannot be trained on, or None."""
    if isinstance(prompt, str):
        return None if prompt.strip() else f"'{field}' is empty"
    if isinstance(prompt, list):
        if not prompt:
            return f"'{field}' has no user message"
        if not is_message_list(prompt):
            return f"'{field}' is a list but not of chat messages like {{\"role\": \"user\", \"content\": \"...\"}}"
        if not any(m["role"] == "user" for m in prompt):
            return f"'{field}' has no user message"
        return None
    return f"'{field}' must be text or a list of chat messages, got {type(prompt).__name__}"


def present_fields(batch: dict, index: int) -> str:
    return ", ".join(name for name, values in batch.items() if values[index] is not None) or "nothing"


def rows_in(batch: dict) -> int:
    return len(next(iter(batch.values())))


def prompts_from(batch: dict, field: str) -> dict:
    """prompt and ROW_PROBLEM columns from one source column, whose values are the prompts."""
    prompts, problems = [], []
    for index, value in enumerate(batch.get(field) or [None] * rows_in(batch)):
        problem = (f"no '{field}' field (found: {present_fields(batch, index)})" if value is None
                   else prompt_problem(value, field))
        prompts.append(None if problem else value)
        problems.append(problem)
    return {"prompt": prompts, ROW_PROBLEM: problems}


def convert_prompt_rows(batch: dict, field: str = "prompt") -> dict:
    """A prompt column (named `field`) with chosen / rejected, where present, as the text of their answers."""
    output = prompts_from(batch, field)
    for name in ("chosen", "rejected"):
        if name in batch:
            output[name] = [answer_text(value) for value in batch[name]]
    return output


def parse_hh_dialogue(text: str) -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{"role": "user", ...}, {"role": "assistant", ...}]."""
    parts = HH_TURN.split(text)
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts) - 1, 2)]


def first_turn(text: str) -> str:
    """The assistant answer at the start of `text`, up to the next human turn."""
    end = text.find(HH_HUMAN)
    return (text if end < 0 else text[:end]).strip()


def extract_hh_prompt(chosen: str, rejected: str) -> tuple[list[dict] | None, str | None, str | None, str | None]:
    """(prompt messages, chosen answer, rejected answer, problem) of one hh-rlhf pair.

    The prompt is the dialogue both sides share, cut back to the last assistant turn they both start; the answers
    are each side's first assistant turn after it. Where the two differ in an earlier turn, the prompt stops before
    that turn, so it is still a real shared context.
    """
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        return None, None, None, "'chosen' and 'rejected' must both be dialogue strings"
    cut = commonprefix([chosen, rejected]).rfind(HH_ASSISTANT)
    if cut < 0:
        return None, None, None, "no shared '\\n\\nHuman: ... \\n\\nAssistant:' dialogue in 'chosen' and 'rejected'"
    messages = parse_hh_dialogue(chosen[:cut])
    if not messages or messages[-1]["role"] != "user" or not messages[-1]["content"]:
        return None, None, None, "the dialogue does not end with a human turn before the answers"
    start = cut + len(HH_ASSISTANT)
    return messages, first_turn(chosen[start:]) or None, first_turn(rejected[start:]) or None, None


def convert_hh_rlhf(batch: dict) -> dict:
    output = {name: [] for name in ("prompt", "chosen", "rejected", ROW_PROBLEM)}
    for chosen, rejected in zip(batch["chosen"], batch["rejected"]):
        for name, value in zip(output, extract_hh_prompt(chosen, rejected)):
            output[name].append(value)
    return output


def mean_rating(completion: dict) -> float | None:
    """The mean of a completion's aspect ratings; ratings are strings and "N/A" ones are left out."""
    ratings = []
    for aspect in (completion.get("annotations") or {}).values():
        for entry in aspect if isinstance(aspect, list) else [aspect]:
            try:
                ratings.append(float(entry["Rating"]))
            except (TypeError, KeyError, ValueError):
                continue
    return sum(ratings) / len(ratings) if ratings else None


def convert_openbmb(batch: dict) -> dict:
    """Prompt = instruction; chosen / rejected = the best / worst rated completion (rejected None when one is rated)."""
    output = {name: [] for name in ("prompt", "chosen", "rejected", ROW_PROBLEM)}
    sources = batch.get("source") or [None] * len(batch["instruction"])
    for instruction, completions, source in zip(batch["instruction"], batch["completions"], sources):
        rated = sorted(((rating, c.get("response")) for c in completions or []
                        if (rating := mean_rating(c)) is not None and c.get("response")), key=lambda pair: pair[0])
        problem = prompt_problem(instruction, "instruction") if instruction is not None else "no 'instruction' field"
        keep = problem is None and source not in EXCLUDED_OPENBMB_SOURCES
        output["prompt"].append(instruction if keep else None)
        output["chosen"].append(rated[-1][1] if keep and rated else None)
        output["rejected"].append(rated[0][1] if keep and len(rated) > 1 else None)
        output[ROW_PROBLEM].append(problem)
    return output


def split_conversation(messages: Any) -> tuple[Any, str | None]:
    """(the conversation before its last assistant turn, that turn's text); a conversation that does not end with
    the assistant is all prompt, with no reference."""
    if is_message_list(messages) and messages[-1]["role"] == "assistant":
        return messages[:-1], message_text(messages[-1])
    return messages, None


def convert_messages(batch: dict) -> dict:
    conversations = [split_conversation(value) if value is not None else (None, None) for value in batch["messages"]]
    output = prompts_from({**batch, "messages": [prompt for prompt, _ in conversations]}, "messages")
    output["answer"] = [answer for _, answer in conversations]
    return output


def final_of_worked(answer: Any) -> Any:
    """GSM8K's final answer: the text after the last `####` of a worked answer; anything else as it is."""
    if isinstance(answer, str) and HASH_MARK in answer:
        return answer.rsplit(HASH_MARK, 1)[1].strip()
    return answer


def convert_question_answer(batch: dict) -> dict:
    output = prompts_from(batch, "question")
    if "answer" in batch:
        output["answer"] = [final_of_worked(answer) for answer in batch["answer"]]
        output["solution"] = list(batch["answer"])
    return output


def convert_alpaca(batch: dict) -> dict:
    """The instruction, then the input (when there is one) after a blank line."""
    inputs = batch.get("input") or [None] * rows_in(batch)
    joined = [f"{instruction}\n\n{extra}" if isinstance(instruction, str) and isinstance(extra, str) and extra.strip()
              else instruction for instruction, extra in zip(batch["instruction"], inputs)]
    output = prompts_from({**batch, "instruction": joined}, "instruction")
    for index, extra in enumerate(inputs):
        if extra is not None and not isinstance(extra, str) and output[ROW_PROBLEM][index] is None:
            output["prompt"][index] = None
            output[ROW_PROBLEM][index] = f"'input' must be text, got {type(extra).__name__}"
    return output


def with_tests(prompt: Any, tests: Any) -> Any:
    """An MBPP task with the tests it must pass (they name the function), unless the prompt already shows them."""
    if not isinstance(prompt, str) or not isinstance(tests, list) or not tests:
        return prompt
    shown = [str(test) for test in tests]
    if shown[0] in prompt:
        return prompt
    return f"{prompt.rstrip()}\n\nYour code should pass these tests:\n" + "\n".join(shown)


def convert_mbpp(field: str) -> Callable[[dict], dict]:
    def convert(batch: dict) -> dict:
        tests = batch.get("test_list") or [None] * rows_in(batch)
        return prompts_from({**batch, field: [with_tests(prompt, listed) for prompt, listed
                                              in zip(batch[field], tests)]}, field)

    return convert


@dataclass(frozen=True)
class Schema:
    convert: Callable[[dict], dict]  # a batch of source rows -> the columns built from them (with ROW_PROBLEM)
    replaces: tuple[str, ...]  # the source columns those are built from; they do not pass on


SCHEMAS = {
    "openbmb": Schema(convert_openbmb, ("instruction", "completions")),
    # The same rule as custom: answer_text takes the last assistant turn of the chosen and rejected conversations.
    "ultrafeedback_binarized": Schema(convert_prompt_rows, ("prompt", "chosen", "rejected")),
    "custom": Schema(convert_prompt_rows, ("prompt", "chosen", "rejected")),
    "hh_rlhf": Schema(convert_hh_rlhf, ("chosen", "rejected")),
    "messages": Schema(convert_messages, ("messages",)),
    "question_answer": Schema(convert_question_answer, ("question", "answer")),
    "problem_solution": Schema(lambda batch: prompts_from(batch, "problem"), ("problem",)),
    "alpaca": Schema(convert_alpaca, ("instruction", "input")),
    # Code problems; their test columns pass on to code_tests (grpo_tool/code_tests.py reads their layouts).
    "mbpp": Schema(convert_mbpp("text"), ("text",)),
    "mbpp_sanitized": Schema(convert_mbpp("prompt"), ("prompt",)),
    "livecodebench": Schema(lambda batch: prompts_from(batch, "question_content"), ("question_content",)),
}


def prompt_column_schema(column: str) -> Schema:
    """--prompt-column: that column is the prompt; chosen / rejected, where present, are read as everywhere."""
    return Schema(lambda batch: convert_prompt_rows(batch, column), (column, "chosen", "rejected"))


def detect_schema(columns: list[str], row: dict) -> str | None:
    """Which schema a table with these columns (and this first row) is in; None when none fits."""
    names = set(columns)
    if {"instruction", "completions"} <= names:
        return "openbmb"
    if "test_list" in names and ({"text", "prompt"} & names):
        return "mbpp" if "text" in names else "mbpp_sanitized"
    if "question_content" in names:
        return "livecodebench"
    if "prompt" in names:
        return "ultrafeedback_binarized" if isinstance(row.get("chosen"), list) else "custom"
    if {"chosen", "rejected"} <= names and HH_ASSISTANT in str(row.get("chosen") or ""):
        return "hh_rlhf"
    for column, schema in (("messages", "messages"), ("question", "question_answer"), ("problem", "problem_solution"),
                           ("instruction", "alpaca")):
        if column in names:
            return schema
    return None


def schema_for(columns: list[str], row: dict, prompt_column: str | None, source: str) -> Schema:
    """The schema of a table, the prompt column named by the user first; an error when no schema fits."""
    from grpo_tool.errors import UserError

    if prompt_column:
        if prompt_column not in columns:
            raise UserError(f"{source}: --prompt-column {prompt_column}: no such column (columns: "
                            f"{', '.join(columns)})")
        return prompt_column_schema(prompt_column)
    name = detect_schema(columns, row)
    if name is None:
        raise UserError(f"{source}: unrecognised columns ({', '.join(columns)}); accepted formats: "
                        f"{FORMATS_ACCEPTED}")
    return SCHEMAS[name]


def passed_on(columns: list[str], schema: Schema) -> list[str]:
    """The source columns that reach the rewards unchanged."""
    return [name for name in columns if name not in schema.replaces]


def reward_column_problem(columns: list[str], source: str) -> str | None:
    """Why a column of the data could not reach the reward functions under its name, or None."""
    for name in columns:
        if name in TRL_REWARD_ARGUMENTS:
            return (f"{source}: the column {name!r} has the name of an argument TRL passes to every reward function "
                    f"itself ({', '.join(TRL_REWARD_ARGUMENTS)}), so its values could never reach a reward; rename "
                    "the column")
        if name in TRL_DROPPED_COLUMNS:
            return (f"{source}: the column {name!r} is one TRL leaves out of what reward functions receive (it is "
                    "the name of the generated text); rename the column")
        if name in TRL_IMAGE_COLUMNS:
            return (f"{source}: the column {name!r} would be read by TRL as the prompts' images, and this tool trains "
                    "text models; rename or drop the column")
    return None
