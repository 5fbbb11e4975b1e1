"""`accelerate launch` with its failures in one line: `python -m grpo_tool.accelerate_launch` takes exactly the
arguments of `accelerate launch` and runs accelerate's own launcher (torch.distributed's agent) in this process. What
it adds is the ending:
- a machine that never joins: the others stop at the end of the rendezvous timeout (torch's static rendezvous:
  `--rdzv_conf timeout=SECONDS`, 600 by default) with one `error:` line naming the address and port, instead of
  torch's traceback; so does a machine that cannot reach the main one, and a port already taken;
- a training process that fails: the launcher exits with that process's own status (2 after a mistake, which the
  main process has already said in one line; 130 after Ctrl-C) instead of torch's report of the failure;
- a launch that needs what is not installed (a DeepSpeed config without deepspeed): one line naming the config and
  the package, instead of accelerate's ImportError.
Run from the checkout, e.g. `python -m grpo_tool.accelerate_launch --config_file config/accelerate/cpu_2proc.yaml
train_grpo.py --quick-test`.

    from types import SimpleNamespace
    args = SimpleNamespace(main_process_ip="10.0.0.1", main_process_port=29500, num_machines=2)
    line = rendezvous_failure("Timed out after 600 seconds waiting for clients. 1/2 clients joined.", args)
    assert line.startswith("1 of 2 machines joined the rendezvous at 10.0.0.1:29500 within 600 s")
"""

from __future__ import annotations

import os
import re
import sys


def main(argv: list[str] | None = None) -> int:
    # torch's C++ side logs every failed connection attempt with a stack of frames; in this process only (the level is
    # read when torch loads, and the training processes, which inherit the environment, keep their own).
    previous = os.environ.get("TORCH_CPP_LOG_LEVEL")
    os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
    import torch  # noqa: F401 - loaded now, at that level

    if previous is None:
        del os.environ["TORCH_CPP_LOG_LEVEL"]
    else:
        os.environ["TORCH_CPP_LOG_LEVEL"] = previous
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed import DistNetworkError, DistStoreError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    parser = launch_command_parser()

    def one_line(message: str):
        parser.exit(2, f"error: {message} (see accelerate launch --help)\n")

    parser.error = one_line  # accelerate's own arguments, its own checks: only the form is the tool's
    args = parser.parse_args(argv)
    try:
        launch_command(args)  # fills args from the config file (accelerate's _validate_launch_command) as it starts
    except (DistStoreError, DistNetworkError) as error:
        print(f"error: {rendezvous_failure(str(error), args)}", file=sys.stderr)
        return 2
    except ImportError as error:  # raised by accelerate's launcher itself, before any training process starts
        print(f"error: {missing_package(str(error), args)}", file=sys.stderr)
        return 2
    except ChildFailedError as failed:
        statuses = [failure.exitcode for failure in failed.failures.values() if failure.exitcode]
        return next((status for status in statuses if status > 0), 1)
    except SignalException as stopped:  # Ctrl-C or SIGTERM here: the processes were handed it and have ended
        return 128 + int(stopped.sigval)
    return 0


def missing_package(message: str, args) -> str:
    """accelerate's ImportError for a launch whose engine is not installed, naming the config that asked for it."""
    asked = f"the accelerate config {args.config_file}" if getattr(args, "config_file", None) else "this launch"
    if "deepspeed" in message.lower():
        return (f"{asked} runs DeepSpeed, which is not installed here: pip install deepspeed (or launch with "
                "config/accelerate/ddp.yaml, which needs nothing more)")
    return f"{asked} needs a package that is not installed: {message.strip().splitlines()[0]}"


def rendezvous_failure(message: str, args) -> str:
    """torch's rendezvous errors (the master's store waiting for the other machines, a client's connection, the
    listening socket) in words that name the address, the port and what to do."""
    host, port = getattr(args, "main_process_ip", None), getattr(args, "main_process_port", None)
    address = f"{host or '127.0.0.1'}:{port or 29500}"  # accelerate's defaults for a launch of one machine
    machines = getattr(args, "num_machines", None) or 1
    if waited := re.search(r"Timed out after (\d+) seconds waiting for clients\. (\d+)/(\d+) clients joined", message):
        seconds, joined, expected = waited.groups()
        return (f"{joined} of {expected} machines joined the rendezvous at {address} within {seconds} s: start the "
                "same command on every other machine (with its own --machine_rank), check that they can reach "
                f"{address}, or raise the wait with --rdzv_conf timeout=SECONDS")
    if connect := re.search(r"timed out after (\d+)ms while trying to connect to \(([^,]+), (\d+)\)", message):
        milliseconds, host, port = connect.groups()
        return (f"the main machine (machine_rank 0) at {host}:{port} did not answer within "
                f"{int(milliseconds) // 1000} s: start the same command there, and check that this machine can reach "
                f"it ({machines} machines expected)")
    if "EADDRINUSE" in message or "address already in use" in message.lower():
        return (f"the port of {address} is taken on this machine: give every machine the same free "
                "--main_process_port")
    return f"the rendezvous at {address} failed: {message.strip().splitlines()[0]}"


if __name__ == "__main__":
    sys.exit(main())
