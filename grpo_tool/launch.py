"""The processes of a run: how many a launcher (accelerate launch, torchrun) started, which one is the main one
(it writes the files and narrates), the engine it set up to share the model among them (DeepSpeed ZeRO, FSDP, or
none), and a leftover launcher environment that would make a lone process wait.

    assert world_size() >= 1 and is_main_process() in (True, False)
    sharding = from_environment()    # the engine accelerate launch set up, and the processes it started
    assert sharding.processes == world_size() and sharding.engine in ("none", "zero1", "zero2", "zero3", "fsdp")
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import NoReturn

PLANNED: list[int] = []  # the processes a --plan plans for, while it is checked and computed (planning_for)


@contextlib.contextmanager
def planning_for(processes: int):
    """Within: world_size() is the processes a --plan plans for, so the checks that count processes (the batch's
    divisibility, the eval group) count them as the launch would announce them."""
    PLANNED.append(processes)
    try:
        yield
    finally:
        PLANNED.pop()


def world_size() -> int:
    """Processes in this run, as `accelerate launch` / torchrun announce them (or as a --plan plans them)."""
    if PLANNED:
        return PLANNED[-1]
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """Whether this is the process that writes files and narrates (rank 0, or the only one)."""
    return os.environ.get("RANK", "0") == "0"


# What a launcher (accelerate launch, torchrun) sets for each process it starts, and what it must set with them.
PROCESS_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT")


def launch_problem() -> str | None:
    """A process that the environment calls one of several, though no launcher started it: RANK or WORLD_SIZE left
    over in a shell (or a job script), which would make it wait for processes that never come, or stay silent."""
    given = {name: os.environ[name] for name in PROCESS_VARIABLES if name in os.environ}
    missing = [name for name in LAUNCHER_VARIABLES if not os.environ.get(name)]
    if not given or not missing:
        return None
    shown = " ".join(f"{name}={value}" for name, value in given.items())
    return (f"the environment says {shown}, but no launcher started this process ({' and '.join(missing)} unset): "
            f"unset {' '.join(given)} for a run of one process, or start it with accelerate launch")


def launcher_says(name: str) -> bool:
    """A yes/no that `accelerate launch` passes its processes in the environment (ACCELERATE_USE_DEEPSPEED,
    ACCELERATE_USE_FSDP, FSDP_CPU_RAM_EFFICIENT_LOADING, ...): accelerate writes them as "true" or "false"."""
    return os.environ.get(name, "").strip().lower() in ("true", "1", "yes")


ENGINES = ("none", "zero2", "zero3", "fsdp")  # --sharding's choices; an accelerate config may also say ZeRO stage 0/1
ZERO_STAGES = {0: "none", 1: "zero1", 2: "zero2", 3: "zero3"}


@dataclass(frozen=True)
class Sharding:
    """How a run's processes share the model: the engine, how many processes, what is offloaded to CPU memory, and
    where that was read. What each engine divides and gathers is the plan's business (grpo_tool/plan/sharding.py)."""
    engine: str = "none"
    processes: int = 1
    offload_optimizer: bool = False  # ZeRO's offload_optimizer_device, FSDP's offload_params: on the CPU instead
    offload_weights: bool = False  # ZeRO-3's offload_param_device, FSDP's offload_params
    reshard_after_forward: bool = True  # FSDP: False keeps every layer gathered from forward to backward
    source: str = "one device"

    @property
    def deepspeed(self) -> bool:
        return self.engine.startswith("zero")


ONE_DEVICE = Sharding()


def reshards(value) -> bool:
    """FSDP's reshard_after_forward as a config or accelerate launch gives it: a yes/no, or FSDP1's strategy names,
    of which NO_SHARD and SHARD_GRAD_OP keep the weights gathered between forward and backward."""
    return str(value).strip().lower() not in ("false", "no_shard", "shard_grad_op")


def from_environment() -> Sharding:
    """At a run's start: what `accelerate launch` told this process (its environment variables for DeepSpeed and
    FSDP), and the number of processes."""
    processes = world_size()
    if launcher_says("ACCELERATE_USE_DEEPSPEED"):
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        stage = int(stage) if stage.isdigit() else 2  # accelerate's default stage
        optimizer = os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none").lower()
        params = os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none").lower()
        return Sharding(ZERO_STAGES.get(stage, "zero2"), processes, optimizer not in ("", "none"),
                        stage == 3 and params not in ("", "none"), source="accelerate launch")
    if launcher_says("ACCELERATE_USE_FSDP"):
        offload = launcher_says("FSDP_OFFLOAD_PARAMS")
        reshard = reshards(os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true"))
        return Sharding("fsdp", processes, offload, offload, reshard, source="accelerate launch")
    return Sharding(processes=processes, source="accelerate launch" if processes > 1 else "one device")


def engine_of(trainer) -> str:
    """The engine a built trainer runs under, as accelerate set it up (on CPUs it drops FSDP: see the README)."""
    if trainer.is_deepspeed_enabled:
        return ZERO_STAGES.get(trainer.accelerator.state.deepspeed_plugin.zero_stage, "none")
    return "fsdp" if trainer.is_fsdp_enabled else "none"


QUIET_LINGER_SECONDS = 3.0


def says_errors() -> bool:
    """The main process, or one that only the environment calls another (no launcher started it: it is alone). Every
    process checks the same settings and data, so the others would repeat what it says."""
    return is_main_process() or launch_problem() is not None


def close_process_group() -> None:
    """A process done with its collectives closes its process group itself, so that nothing is still waiting on it
    while the main one writes the report. Closing is local to this process."""
    import sys

    if "torch.distributed" not in sys.modules:  # nothing loaded torch: no group to close
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def leave(status: int) -> NoReturn:
    """End the process with `status`. One of several processes runs its exit handlers (logs, W&B), flushes its
    output, and leaves without the interpreter's teardown. Closing the group does not free gloo's C++ objects while
    DistributedDataParallel still holds them; they are freed during that teardown, where a gloo thread that asks for
    the interpreter's lock is stopped and aborts the whole process (`terminate called without an active exception`,
    status -6), at random, after a run that went well. The launcher then reports a failed run."""
    import sys

    if world_size() == 1 or "torch.distributed" not in sys.modules:
        sys.exit(status)
    close_process_group()
    atexit._run_exitfuncs()  # what a normal exit would run: logging's shutdown, W&B's finish, temporary folders
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def linger() -> None:
    """A process that stops quietly waits a moment first: the launcher stops every process once one has ended, and
    the main one, meeting the same mistake a moment later, must have printed it by then. The launcher's SIGTERM
    during the wait ends it as quietly (the tool's own handler would raise Ctrl-C's exception inside the exit)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    time.sleep(QUIET_LINGER_SECONDS)
