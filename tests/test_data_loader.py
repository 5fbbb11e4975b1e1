"""Data sources on small fixture files with the real schemas: conversions, the hub path (offline, through a local
mirror), streaming, and the mistakes a user can make."""

import json
import os

import datasets
import pytest
from torch.utils.data import DataLoader

from conftest import FIXTURES, configurations_readme, rows_of, run_main
from data_loader import convert_local_file, create_grpo_dataloader, load_grpo_dataset
from grpo_tool.datasets import SAMPLE_FILES
from grpo_tool.errors import UserError
from grpo_tool.schemas import extract_hh_prompt, mean_rating
from grpo_tool.settings import GRPOConfig


@pytest.fixture
def mirror(hub_mirror, monkeypatch):
    monkeypatch.setenv("GRPO_DATASET_MIRROR", str(hub_mirror))
    return hub_mirror


# the bundled sample data

def test_sample_data_is_large_varied_and_split():
    data = load_grpo_dataset(GRPOConfig(dataset_name="sample", max_eval_samples=1000))
    assert len(data["train"]) + len(data["eval"]) >= 200 and len(data["eval"]) >= 20
    assert data["train"].column_names == ["prompt", "chosen", "rejected"]
    prompts = set(data["train"]["prompt"])
    assert len(prompts) == len(data["train"]) and not prompts & set(data["eval"]["prompt"])
    assert any(any("\uac00" <= ch <= "\ud7a3" for ch in p) for p in prompts)  # Korean rows are there too


def test_sample_data_is_in_the_original_custom_format():
    for path in SAMPLE_FILES.values():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert set(row) == {"prompt", "chosen", "rejected"} and all(row.values())


# conversions of each schema, from local files

def test_custom_jsonl_is_split_and_capped():
    data = load_grpo_dataset(GRPOConfig(custom_data=str(FIXTURES / "custom.jsonl"), max_samples=5))
    assert len(data["train"]) == 5 and len(data["eval"]) == 1
    assert data["train"].column_names == ["prompt", "chosen", "rejected"]


def test_chat_prompts_and_missing_references():
    rows = rows_of(convert_local_file(FIXTURES / "chat_prompts.jsonl"))
    assert len(rows) == 3
    assert rows[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert rows[0]["rejected"] is None and rows[2]["chosen"] is None and rows[0]["chosen"] == "Yes."


def test_ultrafeedback_binarized_rows():
    rows = rows_of(convert_local_file(FIXTURES / "ultrafeedback_binarized.jsonl"))
    first = rows[0]
    assert {key: first[key] for key in ("prompt", "chosen", "rejected")} == {
        "prompt": "What is the capital of France?", "chosen": "The capital of France is Paris.",
        "rejected": "I don't know."}
    # The source's other columns pass on to the rewards as they are.
    assert set(first) == {"prompt", "chosen", "rejected", "prompt_id", "messages", "score_chosen", "score_rejected"}
    assert first["messages"][-1] == {"role": "assistant", "content": "The capital of France is Paris."}
    assert len(rows) == 5  # the repeated France prompt is dropped


def test_hh_rlhf_rows():
    rows = rows_of(convert_local_file(FIXTURES / "hh_rlhf.jsonl"))
    assert rows[0] == {"prompt": [{"role": "user", "content": "What is a good name for a cat?"}],
                       "chosen": "Whiskers is a classic choice.", "rejected": "Cats do not need names."}
    multi_turn = rows[1]
    assert [m["role"] for m in multi_turn["prompt"]] == ["user", "assistant", "user"]
    assert multi_turn["prompt"][-1]["content"] == "Yes, dry yeast."
    assert multi_turn["rejected"] == "Just buy bread instead."


def test_hh_rlhf_pairs_that_differ_early_keep_only_the_shared_context():
    chosen = "\n\nHuman: How do I fix a flat tyre?\n\nAssistant: First remove the wheel.\n\nHuman: Then what?"
    rejected = "\n\nHuman: How do I fix a flat tyre?\n\nAssistant: Call someone.\n\nHuman: Then what?"
    prompt, good, bad, problem = extract_hh_prompt(chosen, rejected)
    assert problem is None
    assert prompt == [{"role": "user", "content": "How do I fix a flat tyre?"}]
    assert (good, bad) == ("First remove the wheel.", "Call someone.")
    no_dialogue = "no shared '\\n\\nHuman: ... \\n\\nAssistant:' dialogue in 'chosen' and 'rejected'"
    assert extract_hh_prompt("no dialogue", "at all") == (None, None, None, no_dialogue)


def test_openbmb_rows_use_mean_ratings_and_skip_truthful_qa():
    rows = rows_of(convert_local_file(FIXTURES / "openbmb_ultrafeedback.jsonl"))
    prompts = [row["prompt"] for row in rows]
    assert "Do we only use 10% of our brains?" not in prompts
    synonym = rows[prompts.index("Give me a synonym for happy.")]
    assert (synonym["chosen"], synonym["rejected"]) == ("Joyful.", "Sad.")
    # Only one completion has a rating that is not "N/A": it is the chosen one, and there is no rejected one.
    spanish = rows[prompts.index("Translate 'good morning' into Spanish.")]
    assert (spanish["chosen"], spanish["rejected"]) == ("Buenas noches.", None)


def test_mean_rating_reads_string_ratings_and_skips_na():
    completion = {"annotations": {"helpfulness": {"Rating": "4"}, "honesty": {"Rating": "N/A"},
                                  "truthfulness": [{"Rating": "2"}], "instruction_following": None}}
    assert mean_rating(completion) == 3.0
    assert mean_rating({"annotations": {"honesty": {"Rating": "N/A"}}}) is None


def test_tldr_rows_are_deduplicated():
    rows = rows_of(convert_local_file(FIXTURES / "tldr_preference.jsonl"))
    assert len(rows) == 3
    assert rows[0]["prompt"].startswith("SUBREDDIT: r/relationships") and rows[0]["prompt"].endswith("TL;DR:")


USER_FORMATS = {
    "prompt-only text with extra columns": (
        {"prompt": "What is 2 + 2?", "answer": "4", "difficulty": 1},
        {"prompt": "What is 2 + 2?", "answer": "4", "difficulty": 1}),
    "prompt-only chat": (
        {"prompt": [{"role": "user", "content": "What is 2 + 2?"}], "ground_truth": "4"},
        {"prompt": [{"role": "user", "content": "What is 2 + 2?"}], "ground_truth": "4"}),
    "GSM8K question/answer": (
        {"question": "Sam has 3 bags of 4. How many?", "answer": "3 * 4 = <<3*4=12>>12\n#### 12", "id": "a1"},
        {"prompt": "Sam has 3 bags of 4. How many?", "answer": "12", "solution": "3 * 4 = <<3*4=12>>12\n#### 12",
         "id": "a1"}),
    "MATH problem/solution": (
        {"problem": "Solve x + 1 = 3.", "solution": "Subtract 1: \\boxed{2}", "level": "Level 1"},
        {"prompt": "Solve x + 1 = 3.", "solution": "Subtract 1: \\boxed{2}", "level": "Level 1"}),
    "chat messages": (
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                      {"role": "assistant", "content": "Paris"}]},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
         "answer": "Paris"}),
    "Alpaca with input": (
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        {"prompt": "Translate to French.\n\ncat", "output": "chat"}),
    "Alpaca without input": (
        {"instruction": "Name a prime.", "input": "", "output": "7"},
        {"prompt": "Name a prime.", "output": "7"}),
}


@pytest.mark.parametrize("name", USER_FORMATS)
def test_each_format_gives_a_prompt_and_passes_the_other_columns_on(tmp_path, name):
    row, expected = USER_FORMATS[name]
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert rows_of(convert_local_file(path)) == [expected]


def test_a_conversation_that_does_not_end_with_the_assistant_is_all_prompt(tmp_path):
    path = tmp_path / "data.jsonl"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "What is 2 + 2?"}]
    path.write_text(json.dumps({"messages": turns}) + "\n", encoding="utf-8")
    assert rows_of(convert_local_file(path)) == [{"prompt": turns, "answer": None}]


def test_prompt_column_names_the_prompt_of_any_layout(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"query": "Capital of Peru?", "gold": "Lima", "chosen": [
        {"role": "user", "content": "Capital of Peru?"}, {"role": "assistant", "content": "Lima."}]}) + "\n",
        encoding="utf-8")
    assert rows_of(convert_local_file(path, prompt_column="query")) == [
        {"prompt": "Capital of Peru?", "gold": "Lima", "chosen": "Lima."}]
    with pytest.raises(UserError, match=r"--prompt-column question: no such column \(columns: query, gold, chosen\)"):
        convert_local_file(path, prompt_column="question")


def test_columns_stream_to_the_rewards_too(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text((FIXTURES / "gsm8k.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    data = load_grpo_dataset(GRPOConfig(custom_data=str(path), streaming=True, max_steps=5, max_eval_samples=1))
    streamed = list(data["train"])
    assert [row["answer"] for row in streamed] == ["48", "27", "27", "2,000"]
    assert streamed[0]["solution"].endswith("#### 48") and "question" not in streamed[0]
    assert data["eval"][0]["answer"] == "27"


def test_a_column_no_reward_could_receive_is_refused_when_streaming_too(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "q", "log_metric": 1}\n', encoding="utf-8")
    with pytest.raises(UserError, match="the column 'log_metric' has the name of an argument TRL passes"):
        load_grpo_dataset(GRPOConfig(custom_data=str(path), streaming=True, max_steps=5))


def test_a_users_dataset_with_such_a_column_is_refused():
    from data_loader import as_dataset_dict

    dataset = datasets.Dataset.from_list([{"prompt": f"q{i}", "completions": "x"} for i in range(4)])
    with pytest.raises(UserError, match="the column 'completions'"):
        as_dataset_dict(dataset, GRPOConfig())


# the hub path, offline through a mirror of each repository

UFB_EXTRAS = {"prompt_id", "messages", "score_chosen", "score_rejected"}


@pytest.mark.parametrize("name, train_rows, eval_rows, extras", [
    ("ultrafeedback", 3, 2, UFB_EXTRAS),            # train_prefs has the France prompt twice
    ("HuggingFaceH4/ultrafeedback_binarized", 3, 2, UFB_EXTRAS),
    # No eval split: one of the four usable rows is held out. instruction and completions become prompt, chosen and
    # rejected; the rest pass on.
    ("ultrafeedback_large", 3, 1, {"source", "models", "correct_answers", "incorrect_answers"}),
    ("hh_rlhf", 3, 2, set()),
    ("openai_summarize", 2, 2, set()),              # train repeats a post
    ("gsm8k", 3, 2, {"answer", "solution"}),
])
def test_hub_datasets_through_a_mirror(mirror, name, train_rows, eval_rows, extras):
    data = load_grpo_dataset(GRPOConfig(dataset_name=name))
    assert (len(data["train"]), len(data["eval"])) == (train_rows, eval_rows)
    references = {"chosen", "rejected"} if name != "gsm8k" else set()
    assert set(data["train"].column_names) == {"prompt"} | references | extras


def test_gsm8k_preset_reads_the_main_configuration(mirror):
    data = load_grpo_dataset(GRPOConfig(dataset_name="gsm8k"))
    first = data["train"][0]
    assert first["prompt"].startswith("A baker makes 12 loaves")
    assert first["answer"] == "27" and first["solution"].endswith("#### 27")
    assert data["eval"]["answer"] == ["27", "2,000"]  # the test split


def gsm8k_mirror(root, train_rows: int, readme: bool = True, folder: str = "main"):
    """A mirror of openai/gsm8k as the hub lays it out, with rows of its own: main/{split}-00000-of-00001.parquet and
    the README that declares the configuration (or not)."""
    repository = root / "openai" / "gsm8k"
    for split, count in (("train", train_rows), ("test", 2)):
        rows = [{"question": f"{root.name} {split} question {k}?", "answer": f"{k} + 1 = {k + 1}\n#### {k + 1}"}
                for k in range(count)]
        target = repository / folder / f"{split}-00000-of-00001.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(rows).to_parquet(str(target))
    if readme:
        (repository / "README.md").write_text(configurations_readme("main", ("train", "test")), encoding="utf-8")
    return root


def test_each_mirror_loads_its_own_current_files(tmp_path, monkeypatch):
    # Two mirrors of one repository in turn, then one of them changed in place: each load reads the files as they are,
    # not what the datasets cache kept of the repository's name.
    for name, rows in (("first", 3), ("second", 5)):
        monkeypatch.setenv("GRPO_DATASET_MIRROR", str(gsm8k_mirror(tmp_path / name, rows)))
        data = load_grpo_dataset(GRPOConfig(dataset_name="gsm8k"))
        assert len(data["train"]) == rows and data["train"][0]["prompt"].startswith(f"{name} train")
    gsm8k_mirror(tmp_path / "first", 4)
    changed = tmp_path / "first" / "openai" / "gsm8k" / "main" / "train-00000-of-00001.parquet"
    os.utime(changed, (1_000_000_000, 1_000_000_000))  # a modification time of its own, whatever the clock's grain
    monkeypatch.setenv("GRPO_DATASET_MIRROR", str(tmp_path / "first"))
    assert len(load_grpo_dataset(GRPOConfig(dataset_name="gsm8k"))["train"]) == 4


def test_a_mirror_without_the_readme_configurations_reads_the_configurations_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPO_DATASET_MIRROR", str(gsm8k_mirror(tmp_path, 3, readme=False)))
    data = load_grpo_dataset(GRPOConfig(dataset_name="gsm8k"))
    assert (len(data["train"]), len(data["eval"]), data["train"][0]["answer"]) == (3, 2, "1")


def test_a_mirror_laid_out_otherwise_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPO_DATASET_MIRROR", str(gsm8k_mirror(tmp_path, 3, readme=False, folder="other")))
    result = run_main("--dataset", "gsm8k", "--quick-test", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: dataset mirror {tmp_path}/openai/gsm8k declares no configuration 'main' in its README.md and has no "
        "main/ folder")
    assert not (tmp_path / "out").exists()


def test_hub_dataset_streams(mirror):
    data = load_grpo_dataset(GRPOConfig(dataset_name="hh_rlhf", streaming=True, max_steps=5, max_samples=2))
    assert isinstance(data["train"], datasets.IterableDataset)
    streamed = list(data["train"])
    assert len(streamed) == 2 and streamed[0]["chosen"] == "Whiskers is a classic choice."
    assert list(data["train"]) == streamed  # a second pass (epoch) sees the same rows
    assert len(data["eval"]) == 2


def test_streaming_without_an_eval_split_holds_out_the_first_rows(mirror):
    data = load_grpo_dataset(GRPOConfig(dataset_name="ultrafeedback_large", streaming=True, max_steps=5,
                                        max_eval_samples=1))
    assert [row["prompt"] for row in data["eval"]] == ["Give me a synonym for happy."]
    assert "Give me a synonym for happy." not in [row["prompt"] for row in data["train"]]
    assert len(list(data["train"])) == 3


def test_streaming_needs_max_steps():
    from config import build_config

    with pytest.raises(UserError, match="streaming=true needs max_steps"):
        build_config(overrides={"streaming": True})


def test_no_network_says_how_to_use_a_local_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("GRPO_DATASET_MIRROR", str(tmp_path))  # an empty mirror
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        load_grpo_dataset(GRPOConfig(dataset_name="hh_rlhf"))
    message = str(error.value)
    assert "Anthropic/hh-rlhf" in message and "GRPO_DATASET_MIRROR" in message and "--custom-data" in message


# mistakes and edge cases

def test_malformed_line_is_named():
    with pytest.raises(UserError) as error:
        convert_local_file(FIXTURES / "malformed_line3.jsonl")
    assert "malformed_line3.jsonl line 3: not valid JSON" in str(error.value)


def test_missing_prompt_is_named_with_the_fields_found():
    with pytest.raises(UserError) as error:
        convert_local_file(FIXTURES / "missing_prompt_line2.jsonl")
    assert "line 2: no 'prompt' field (found: " in str(error.value)
    assert "question" in str(error.value) and "chosen" in str(error.value)


@pytest.mark.parametrize("content, fragment", [
    ("", "no rows"),
    ("\n\n   \n", "no rows"),
    ('{"prompt": "a"}\n{"prompt": "   "}\n', "line 2: 'prompt' is empty"),
    ('{"prompt": "a"}\n\n\n{"prompt": ""}\n', "line 4: 'prompt' is empty"),
    ('{"prompt": "a"}\n[1, 2]\n', "line 2: expected a JSON object"),
    ('{"prompt": 5}\n', "line 1: 'prompt' must be text or a list of chat messages"),
    ('{"prompt": "a"}\n{"prompt": [{"role": "user", "content": "b"}]}\n', "use one form per file"),
    ('{"prompt": [{"role": "system", "content": "Be nice."}]}\n', "line 1: 'prompt' has no user message"),
    ('{"text": "q", "label": "a"}\n', "unrecognised columns (text, label); accepted formats:"),
    ('{"prompt": "q", "completions": 3}\n', "the column 'completions' has the name of an argument TRL passes"),
    ('{"question": "q", "trainer_state": 1}\n', "the column 'trainer_state' has the name of an argument"),
    ('{"prompt": "q", "completion": "a"}\n', "the column 'completion' is one TRL leaves out"),
    ('{"prompt": "q", "image": "a.png"}\n', "the column 'image' would be read by TRL as the prompts' images"),
    ('{"messages": [{"role": "assistant", "content": "hi"}]}\n', "line 1: 'messages' has no user message"),
    ('{"question": "", "answer": "#### 1"}\n', "line 1: 'question' is empty"),
    ('{"instruction": 3, "output": "x"}\n', "line 1: 'instruction' must be text"),
    ('{"instruction": "a", "input": "", "output": "x"}\n{"instruction": "b", "input": [1], "output": "y"}\n',
     "line 2: 'input' must be text, got list"),
])
def test_bad_rows(tmp_path, content, fragment):
    path = tmp_path / "data.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as error:
        convert_local_file(path)
    assert fragment in str(error.value)


def test_blank_lines_chosen_without_rejected_and_duplicates(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('\n{"prompt": "a", "chosen": "x"}\n  \n{"prompt": "b"}\n{"prompt": "a", "chosen": "y"}\n',
                    encoding="utf-8")
    assert rows_of(convert_local_file(path)) == [{"prompt": "a", "chosen": "x"}, {"prompt": "b", "chosen": None}]


def test_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(UserError) as error:
        convert_local_file(path)
    assert "line 2: not UTF-8" in str(error.value)


def test_unsupported_file_type(tmp_path):
    (tmp_path / "data.csv").write_text("prompt\nhello\n")
    with pytest.raises(UserError, match="unsupported file type .csv"):
        convert_local_file(tmp_path / "data.csv")


def test_one_row_is_not_enough(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text('{"prompt": "only one"}\n')
    with pytest.raises(UserError) as error:
        load_grpo_dataset(GRPOConfig(custom_data=str(path)))
    assert "at least 2" in str(error.value)


def test_create_grpo_dataloader_returns_loader_and_splits(mirror):
    data_loader, dataset = create_grpo_dataloader(model_name="tiny", dataset_name=str(FIXTURES / "custom.jsonl"),
                                                  max_samples=4, batch_size=2)
    assert isinstance(data_loader, DataLoader)
    batches = list(data_loader)
    assert len(batches) == 2 and batches[0][0]["prompt"] == dataset["train"][0]["prompt"]
    assert set(dataset) == {"train", "eval"}
    # The original's call: a hub id.
    _, hub = create_grpo_dataloader(model_name="unsloth/llama-3.1-8b-bnb-4bit",
                                    dataset_name="HuggingFaceH4/ultrafeedback_binarized", max_samples=1000)
    assert len(hub["train"]) == 3


def test_the_tiny_models_tokenizer_learns_from_every_sample_file():
    from grpo_tool.tiny_model import training_text

    texts = training_text()
    rows = sum(len(path.read_text(encoding="utf-8").splitlines()) for path in SAMPLE_FILES.values())
    assert len(texts) >= rows  # each row gives its prompt and at least one answer
