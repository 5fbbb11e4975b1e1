"""Atomic writes: a failure part-way leaves the old file whole and no temporary file behind."""

import json
import os

import pytest

from atomic_files import write_json_atomic


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
