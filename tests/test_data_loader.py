"""Data sources on small fixture files: the sample data, custom JSONL, and the errors a user can hit."""

import json
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from config import GRPOConfig
from data_loader import SAMPLE_FILES, create_grpo_dataloader, load_grpo_dataset, read_jsonl
from errors import UserError

FIXTURES = Path(__file__).resolve().parent / "fixtures"


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


def test_custom_jsonl_is_split_and_capped():
    data = load_grpo_dataset(GRPOConfig(custom_data=str(FIXTURES / "custom.jsonl"), max_samples=5))
    assert len(data["train"]) == 5 and len(data["eval"]) == 1
    assert set(data["train"].column_names) == {"prompt", "chosen", "rejected"}


def test_chat_prompts_and_missing_references():
    rows = read_jsonl(FIXTURES / "chat_prompts.jsonl")
    assert len(rows) == 3
    assert rows[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert rows[0]["rejected"] is None and rows[2]["chosen"] is None


def test_malformed_line_is_named():
    with pytest.raises(UserError) as error:
        read_jsonl(FIXTURES / "malformed_line3.jsonl")
    assert "malformed_line3.jsonl line 3: not valid JSON" in str(error.value)


def test_missing_prompt_is_named_with_the_columns_found():
    with pytest.raises(UserError) as error:
        read_jsonl(FIXTURES / "missing_prompt_line2.jsonl")
    message = str(error.value)
    assert "line 2: no 'prompt' field (found: question, chosen)" in message


@pytest.mark.parametrize("content, fragment", [
    ("", "no rows"),
    ('{"prompt": "a"}\n{"prompt": "   "}\n', "line 2: 'prompt' is empty"),
    ('{"prompt": "a"}\n[1, 2]\n', "line 2: expected a JSON object"),
    ('{"prompt": 5}\n', "line 1: 'prompt' must be text or a list of chat messages"),
    ('{"prompt": "a"}\n{"prompt": [{"role": "user", "content": "b"}]}\n', "use one form per file"),
])
def test_bad_rows(tmp_path, content, fragment):
    path = tmp_path / "data.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as error:
        read_jsonl(path)
    assert fragment in str(error.value)


def test_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(UserError) as error:
        read_jsonl(path)
    assert "line 2: not UTF-8" in str(error.value)


def test_one_row_is_not_enough(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text('{"prompt": "only one"}\n')
    with pytest.raises(UserError) as error:
        load_grpo_dataset(GRPOConfig(custom_data=str(path)))
    assert "at least 2" in str(error.value)


def test_create_grpo_dataloader_returns_loader_and_splits():
    data_loader, dataset = create_grpo_dataloader(model_name="tiny", dataset_name=str(FIXTURES / "custom.jsonl"),
                                                  max_samples=4, batch_size=2)
    assert isinstance(data_loader, DataLoader)
    batches = list(data_loader)
    assert len(batches) == 2 and batches[0][0]["prompt"] == dataset["train"][0]["prompt"]
    assert set(dataset) == {"train", "eval"}


def test_hub_dataset_names_say_what_to_do_instead():
    with pytest.raises(UserError) as error:
        load_grpo_dataset(GRPOConfig(dataset_name="ultrafeedback"))
    assert "--custom-data" in str(error.value)
