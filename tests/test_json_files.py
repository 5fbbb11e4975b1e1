"""JSON files: atomic writes leave the old file whole on failure; reads name the file in their errors."""

import json
import os

import pytest

from grpo_tool.json_files import write_json_atomic


def test_replaces_the_file_whole(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"v": 1})
    write_json_atomic(path, {"v": 2, "text": "정확"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"v": 2, "text": "정확"}
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"v": 1})

    def crash(fd):
        raise KeyboardInterrupt  # as if Ctrl-C arrived mid-write

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["a.json"]


def test_unreadable_json_is_one_user_error(tmp_path):
    from grpo_tool.errors import UserError
    from grpo_tool.json_files import read_json_file

    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(UserError, match="settings .*bad.json: not readable JSON"):
        read_json_file(tmp_path / "bad.json", "settings")
    with pytest.raises(UserError, match="no such file"):
        read_json_file(tmp_path / "missing.json", "settings")
