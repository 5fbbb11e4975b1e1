"""TRL's and transformers' private surface (grpo_tool/trl_surface.py) against the installed libraries and against
the code that uses it, and the two guards trainer_hooks.py puts around it: the mixins' order checked when the class
is made, and torch.load replaced only in transformers' trainer module, only while a resume loads its optimizer."""

import ast

import pytest

from conftest import ROOT
from grpo_tool import trl_surface

LIBRARIES = ("trl", "transformers", "accelerate", "peft")


def test_the_declared_surface_is_what_is_installed():
    moved = trl_surface.moved()
    assert not moved, "\n".join(moved)


def test_a_changed_signature_is_named_in_one_line():
    import trl

    class Upgraded(trl.GRPOTrainer):
        def _compute_loss(self, model, inputs, scale):
            return None

    moved = [line for line in trl_surface.moved(Upgraded) if "_compute_loss" in line]
    assert len(moved) == 1 and "\n" not in moved[0]
    assert moved[0].startswith("Upgraded._compute_loss takes (model, inputs, scale) in trl ")
    assert "not (model, inputs) (used by StepRecords" in moved[0]


def project_trees():
    for path in [*ROOT.glob("*.py"), *(ROOT / "grpo_tool").rglob("*.py")]:
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def test_every_overridden_method_is_declared():
    import trl

    from grpo_tool import trainer_hooks

    declared = {method.name for method in trl_surface.METHODS}
    mixins = [mixin for mixin in trainer_hooks.GRPOTrainerWithHooks.__mro__
              if mixin.__module__ == trainer_hooks.__name__]
    overridden = {name for mixin in mixins
                  for name, value in vars(mixin).items() if callable(value) and hasattr(trl.GRPOTrainer, name)
                  and not name.startswith("__")}
    assert overridden - declared == set(), "overrides missing from trl_surface.METHODS"
    assert declared - overridden <= {"_load_from_checkpoint"}, "declared methods no mixin overrides"


def test_every_private_name_the_code_reaches_into_is_declared():
    """`self._x`, `super()._x` and `trainer._x` in the tool's code, where `_x` belongs to TRL's trainer."""
    import trl

    declared = {item.name for item in (*trl_surface.METHODS, *trl_surface.ATTRIBUTES)}
    source = trl_surface.trainer_sources(trl.GRPOTrainer)
    reached = set()
    for path, tree in project_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and (hasattr(trl.GRPOTrainer, node.attr) or f"self.{node.attr}" in source):
                reached.add((node.attr, path.name))
    missing = sorted(f"{name} ({file})" for name, file in reached if name not in declared)
    assert not missing, f"private names of TRL's trainer used but not declared in trl_surface: {missing}"
    assert {attribute.name for attribute in trl_surface.ATTRIBUTES} <= {name for name, _ in reached}


def test_every_import_from_inside_a_library_is_declared():
    declared = {(item.module, item.name) for item in trl_surface.IMPORTED}
    found = set()
    for _, tree in project_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and "." in node.module \
                    and node.module.split(".")[0] in LIBRARIES:
                found |= {(node.module, alias.name) for alias in node.names}
    assert found - declared == set(), "imports from inside a library missing from trl_surface.IMPORTED"
    assert {pair for pair in declared if pair[1] != "torch"} <= found, "declared imports nothing imports"


def test_the_mixin_order_is_checked_when_the_class_is_made():
    from grpo_tool import trainer_hooks as hooks

    with pytest.raises(TypeError, match="SignalGroupsOnly must come after StagedCheckpoints"):
        @hooks.mixins_in_order
        class Wrong(hooks.SignalGroupsOnly, hooks.StagedCheckpoints):
            pass
    with pytest.raises(TypeError, match="StepRecords must come after SignalGroupsOnly"):
        @hooks.mixins_in_order
        class AlsoWrong(hooks.StagedCheckpoints, hooks.StepRecords, hooks.SignalGroupsOnly):
            pass


def test_torch_load_onto_the_cpu_only_in_the_trainer_module_and_only_within(tmp_path):
    import torch
    import transformers.trainer

    from grpo_tool import trainer_hooks
    from grpo_tool.shared_prompts import replaced

    path = tmp_path / "state.pt"
    torch.save({"x": torch.ones(2)}, path)
    seen = []
    original = torch.load

    def recording_load(*args, **kwargs):
        seen.append(kwargs.get("map_location"))
        return original(*args, **kwargs)

    torch.load = recording_load
    try:
        with replaced(transformers.trainer, "torch", trainer_hooks.TorchLoadingOnCpu):
            transformers.trainer.torch.load(path, map_location="cpu:1", weights_only=True)
            torch.load(path, map_location="meta", weights_only=True)  # anyone else: untouched
            assert transformers.trainer.torch.float32 is torch.float32
    finally:
        torch.load = original
    assert seen == ["cpu", "meta"]
    assert transformers.trainer.torch is torch


def test_the_tested_versions_are_the_pinned_ones():
    pins = dict(line.split("#")[0].strip().split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line.split("#")[0])
    assert {name: pins[name] for name in trl_surface.TESTED} == trl_surface.TESTED


def test_other_versions_are_compared_before_training(monkeypatch, caplog):
    monkeypatch.setattr(trl_surface, "installed", lambda: {"trl": "9.0.0", "transformers": "5.17.0"})
    monkeypatch.setattr(trl_surface, "moved", lambda: ["GRPOTrainer._compute_loss is gone"])
    with caplog.at_level("WARNING", logger=trl_surface.__name__):
        assert trl_surface.warn_if_moved() == ["GRPOTrainer._compute_loss is gone"]
    assert "pin trl==1.14.2 and transformers==5.17.0" in caplog.text and "_compute_loss is gone" in caplog.text
    monkeypatch.setattr(trl_surface, "installed", lambda: dict(trl_surface.TESTED))
    assert trl_surface.warn_if_moved() == []


def test_a_trl_that_needs_triton_where_there_is_none_is_one_error_line(monkeypatch):
    import trl.trainer.utils as utils

    assert trl_surface.unusable() is None
    monkeypatch.setattr(utils, "add_fused_lm_head", lambda *args, **kwargs: None, raising=False)
    monkeypatch.setattr(utils, "_ChunkedLogProbFunction", None, raising=False)
    said = trl_surface.unusable()
    assert "computes log-probabilities with a Triton kernel" in said and "install trl==1.14.2" in said
