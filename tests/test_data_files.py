"""Local data as users keep it: JSON and Parquet files, gzip-compressed JSON Lines, folders written by datasets'
save_to_disk, folders of shards, and the one-line errors for files and folders that hold no readable data."""

import gzip
import json

import datasets
import pytest

from conftest import FIXTURES, rows_of
from data_loader import convert_local_file, load_grpo_dataset
from grpo_tool.data_files import data_path_problem
from grpo_tool.errors import UserError
from grpo_tool.settings import GRPOConfig


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_json_and_parquet_files(tmp_path, suffix):
    rows = datasets.load_dataset("json", data_files=str(FIXTURES / "hh_rlhf.jsonl"), split="train")
    path = tmp_path / f"hh{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows.to_list()), encoding="utf-8")
    else:
        rows.to_parquet(str(path))
    converted = rows_of(convert_local_file(path))
    assert converted == rows_of(convert_local_file(FIXTURES / "hh_rlhf.jsonl"))


# compressed files and data folders

def write_gzip(path, text):
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


@pytest.mark.parametrize("name", ["hh.jsonl.gz", "hh.json.gz"])
def test_gzip_files_read_like_plain_ones(tmp_path, name):
    path = write_gzip(tmp_path / name, (FIXTURES / "hh_rlhf.jsonl").read_text(encoding="utf-8"))
    assert rows_of(convert_local_file(path)) == rows_of(convert_local_file(FIXTURES / "hh_rlhf.jsonl"))


@pytest.mark.parametrize("content, fragment", [
    ('{"prompt": "a"}\n{"prompt": "b"\n', "bad.jsonl.gz line 2: not valid JSON"),
    ('{"prompt": "a"}\n\n{"prompt": " "}\n', "bad.jsonl.gz line 3: 'prompt' is empty"),
])
def test_a_bad_line_in_a_gzip_file_is_named(tmp_path, content, fragment):
    with pytest.raises(UserError) as error:
        convert_local_file(write_gzip(tmp_path / "bad.jsonl.gz", content))
    assert fragment in str(error.value)


def test_a_file_named_gz_that_is_not_gzip(tmp_path):
    (tmp_path / "plain.jsonl.gz").write_text('{"prompt": "a"}\n')
    with pytest.raises(UserError, match="plain.jsonl.gz: not a readable gzip file"):
        convert_local_file(tmp_path / "plain.jsonl.gz")


SAVED_ROWS = [{"prompt": "q1", "answer": "1"}, {"prompt": "q2", "answer": "2"}]


@pytest.mark.parametrize("layout", ["Dataset", "DatasetDict with train", "DatasetDict of one split"])
def test_save_to_disk_folders(tmp_path, layout):
    rows = datasets.Dataset.from_list(SAVED_ROWS)
    other = datasets.Dataset.from_list([{"prompt": "held out", "answer": "0"}])
    saved = {"Dataset": rows, "DatasetDict with train": datasets.DatasetDict({"test": other, "train": rows}),
             "DatasetDict of one split": datasets.DatasetDict({"validation": rows})}[layout]
    saved.save_to_disk(str(tmp_path / "saved"))
    files_before = sorted(path.name for path in (tmp_path / "saved").rglob("*"))
    assert rows_of(convert_local_file(tmp_path / "saved")) == SAVED_ROWS
    assert sorted(path.name for path in (tmp_path / "saved").rglob("*")) == files_before  # no cache files left there


def test_a_saved_dataset_dict_without_a_train_split_is_refused(tmp_path):
    rows = datasets.Dataset.from_list(SAVED_ROWS)
    datasets.DatasetDict({"validation": rows, "test": rows}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(UserError, match="splits validation, test and none named 'train'"):
        convert_local_file(tmp_path / "saved")


def test_a_bad_row_of_a_saved_dataset_is_named_by_its_position(tmp_path):
    datasets.Dataset.from_list([{"prompt": "a"}, {"prompt": ""}]).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(UserError, match="saved row 2: 'prompt' is empty"):
        convert_local_file(tmp_path / "saved")


def write_shards(folder):
    folder.mkdir()
    (folder / "part-10.jsonl").write_text('{"prompt": "d"}\n', encoding="utf-8")
    (folder / "part-02.jsonl").write_text('{"prompt": "b"}\n{"prompt": "c"}\n', encoding="utf-8")
    write_gzip(folder / "part-01.jsonl.gz", '{"prompt": "a"}\n')
    (folder / "README.md").write_text("not data")
    (folder / ".part-00.jsonl.crc").write_text("not data either")
    return folder


def test_a_folder_of_shards_is_read_in_name_order(tmp_path):
    folder = write_shards(tmp_path / "shards")
    assert [row["prompt"] for row in convert_local_file(folder)] == ["a", "b", "c", "d"]
    data = load_grpo_dataset(GRPOConfig(custom_data=str(folder), streaming=True, max_steps=5, max_eval_samples=1))
    assert [row["prompt"] for row in data["eval"]] + [row["prompt"] for row in data["train"]] == ["a", "b", "c", "d"]


def test_a_folder_of_parquet_shards(tmp_path):
    (tmp_path / "shards").mkdir()
    for index, rows in enumerate([SAVED_ROWS[:1], SAVED_ROWS[1:]]):
        datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "shards" / f"{index}.parquet"))
    assert rows_of(convert_local_file(tmp_path / "shards")) == SAVED_ROWS


@pytest.mark.parametrize("content, fragment", [
    ('{"prompt": "e"}\n{broken\n', "part-11.jsonl line 2: not valid JSON"),
    ('{"prompt": "e"}\n\n{"prompt": ""}\n', "part-11.jsonl line 3: 'prompt' is empty"),
])
def test_a_bad_line_in_a_shard_names_the_shard(tmp_path, content, fragment):
    folder = write_shards(tmp_path / "shards")
    (folder / "part-11.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as error:
        convert_local_file(folder)
    assert fragment in str(error.value)


@pytest.mark.parametrize("files, fragment", [
    ({"a.jsonl": '{"prompt": "a"}\n', "b.parquet": ""}, "mixes JSON and Parquet shards (a.jsonl, b.parquet)"),
    ({}, "an empty folder; use a .jsonl"),
    ({"a.csv": "prompt\nx\n", "b.csv": "prompt\ny\n"}, "no data files in this folder (found .csv); use a .jsonl"),
])
def test_folders_that_hold_no_readable_data_are_one_line_errors(tmp_path, files, fragment):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_text(content)
    for read in (convert_local_file, lambda path: load_grpo_dataset(GRPOConfig(custom_data=str(path),
                                                                               streaming=True, max_steps=5))):
        with pytest.raises(UserError) as error:
            read(folder)
        assert fragment in str(error.value) and "\n" not in str(error.value)
    assert fragment in data_path_problem(folder)


def test_the_config_check_takes_folders_and_a_home_relative_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_shards(tmp_path / "shards")
    assert data_path_problem(tmp_path / "shards") is None and data_path_problem("~/shards") is None
    data = load_grpo_dataset(GRPOConfig(custom_data="~/shards"))
    assert sorted([*data["train"]["prompt"], *data["eval"]["prompt"]]) == ["a", "b", "c", "d"]
    assert data_path_problem("~/missing.jsonl").startswith(f"custom data {tmp_path / 'missing.jsonl'}: no such file")


# the formats of answer-checked data: the prompt, and every other column for the rewards
