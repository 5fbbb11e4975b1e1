"""A test's entry point in place of train_grpo.py under `accelerate launch` with an FSDP config on CPU processes:
accelerate 1.15 turns FSDP on only for GPU-like process types (accelerate/state.py, AcceleratorState: the MULTI_GPU
family), and TrainingArguments' use_cpu makes the type MULTI_CPU, so on this machine it would drop the FSDP plugin
and run DDP. This script lets the state keep the plugin it was given, then runs the tool unchanged: torch's
fully_shard itself runs on CPU processes over gloo. Not part of the tool: a run on GPUs needs none of it."""

import sys
from pathlib import Path

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
given = AcceleratorState.__init__


def keep_fsdp(self, *args, **kwargs):
    given(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin")
    if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP


AcceleratorState.__init__ = keep_fsdp

if __name__ == "__main__":
    import train_grpo

    train_grpo.leave(train_grpo.main())
