"""Command line for GRPO fine-tuning. Run `python train_grpo.py --help`; `--quick-test` trains the tiny model offline.

Every config field is a flag (generated from the field by grpo_tool/flags.py), besides the run's modes and tasks.
Nothing here imports torch, transformers or trl: they load once the flags and config have been checked (see
grpo_tool/__init__.py), so `--help` and mistakes answer at once.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
import time
from pathlib import Path

from config import FIELDS, build_config, expand_path, is_main_process, launch_problem
from errors import Interrupted, UserError, near_miss
from grpo_tool.console import ConsoleHandler, for_a_person, quiet_library_progress_bars
from grpo_tool.flags import add_config_flags, as_typed, config_overrides, positive_number, trl_flag_problem
from grpo_tool.outputs import EarlyRecords, detach_log_files
from grpo_tool.places import unwritable, write_failure


OTHER_HUB_DATASET = ("a hub dataset without a preset, save it as files (datasets' to_json or save_to_disk) and give "
                     "--custom-data PATH")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error:` line (exit status 2) like every other mistake."""

    def error(self, message):
        if not says_errors():
            linger()
            self.exit(2)  # every process parses the same flags; the main one says what is wrong
        if message.startswith("unrecognized arguments: "):
            unknown = message.split(": ", 1)[1].split()[0].split("=")[0]
            if trl_word := trl_flag_problem(unknown):
                self.exit(2, f"error: {trl_word} (see --help)\n")
            message += near_miss(unknown, [flag for action in self._actions for flag in action.option_strings
                                           if flag.startswith("-")])
        elif (choice := re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)):
            message += near_miss(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
            if "--dataset" in message and "/" in choice.group(1):
                message += f"; for {OTHER_HUB_DATASET}"
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="train_grpo.py", description="GRPO fine-tuning of causal language models with TRL.",
                    argument_default=argparse.SUPPRESS, allow_abbrev=False)
    parser.add_argument("--config", metavar="PATH",
                        help="a config file, JSON or YAML, of any settings below (see config/example_config.json)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick-test", action="store_true",
                      help="a one-minute smoke run (the tiny model on the sample data unless --model/--dataset given)")
    mode.add_argument("--production", action="store_true",
                      help="a real run: all data, checkpoints, evaluations, generation logs, W&B when installed")
    task = parser.add_mutually_exclusive_group()
    task.add_argument("--eval-only", action="store_true",
                      help="no training: evaluate --resume-from-checkpoint, the output dir's model, or --model")
    task.add_argument("--report", action="store_true",
                      help="no training: rebuild report.html from the run in --output-dir")
    task.add_argument("--check-rewards", action="store_true",
                      help="no training: score chosen against rejected and sampled completions with every reward "
                           "component, print a table, write reward_check.json")
    task.add_argument("--plan", action="store_true",
                      help="no training: estimate the run's peak memory by part and its seconds per step from the "
                           "model's shape, print a table, write plan.json (no weights loaded, no network)")
    parser.add_argument("--gpu-memory", type=positive_number, metavar="GB",
                        help="with --plan: plan for a GPU of this many GB (default: this machine's GPU, else its CPU)")
    groups = add_config_flags(parser)
    groups["wandb"].add_argument("--no-wandb", dest="wandb_project", action="store_const", const=None,
                                 help="do not log to Weights & Biases")
    return parser


def config_from_args(args: argparse.Namespace, notes: list[str] | None = None):
    """Only flags the user gave override the layers below them; each flag's dest is the config field it sets."""
    overrides = config_overrides(args)
    reward_config = overrides.get("reward_config_path")
    if reward_config and not reward_config.endswith((".json", ".yaml", ".yml")):
        # A bare name is a reward preset from config/rewards/.
        overrides["reward_config_name"] = overrides.pop("reward_config_path")
    mode = "quick_test" if getattr(args, "quick_test", False) else "production" if getattr(args, "production",
                                                                                           False) else None
    try:
        return build_config(mode=mode, config_file=getattr(args, "config", None), overrides=overrides, notes=notes)
    except UserError as error:
        raise UserError(as_typed(str(error), overrides)) from None


def setup_console_logging() -> list[logging.Handler]:
    """The console handler (a person's view), and a buffer that hands the log file what came before it."""
    quiet_library_progress_bars()
    # A log line that cannot be written (a disk filled mid-run) must not print a traceback of its own at every
    # record: the next checkpoint's save meets the same disk and says so in one line.
    logging.raiseExceptions = False
    console = ConsoleHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    console.addFilter(for_a_person)
    # transformers prints through a handler of its own (no propagation): its resume's false alarm is filtered there.
    logging.getLogger("transformers.trainer").addFilter(for_a_person)
    early = EarlyRecords(capacity=100_000)
    root = logging.getLogger()
    root.addHandler(console)
    root.addHandler(early)
    # With several processes (accelerate launch), only the main one narrates; the others speak up only on trouble.
    root.setLevel(logging.INFO if is_main_process() else logging.WARNING)
    return [console, early]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = []
    previous = terminate_as_interrupt()
    try:
        if problem := launch_problem():
            raise UserError(problem)
        if hasattr(args, "gpu_memory") and not getattr(args, "plan", False):
            raise UserError("--gpu-memory is a --plan setting (the GPU to plan for); a run uses the GPU it finds")
        if getattr(args, "report", False):
            from report import build_report

            output_dir = expand_path(getattr(args, "output_dir", FIELDS["output_dir"].default))
            if Path(output_dir).is_dir() and (problem := unwritable("--report: output_dir", output_dir)):
                raise UserError(problem)
            print(f"report: {build_report(output_dir)}")
            return 0
        notes: list[str] = []
        config = config_from_args(args, notes)
        handlers = setup_console_logging()
        for note in notes:
            logging.getLogger("train_grpo").info("settings: %s", note)
        return run(config, args, notes)
    except UserError as error:
        return stop(f"error: {error}", 2)
    except Interrupted as interruption:
        return stop(f"interrupted: {interruption}", 130)
    except OSError as error:
        # The machine's refusals (a read-only mount, no permission, a full disk) wherever they surface; found before
        # the model loads where that can be known (config.place_problems), here where it cannot.
        if (line := write_failure(error)) is None:
            raise
        return stop(f"error: {line}", 2)
    except KeyboardInterrupt:
        # Outside the training loop (which turns Ctrl-C into a checkpoint): files, checkpoints and the final model
        # are all written whole or not at all, so there is nothing half-written to report.
        return stop("interrupted: stopped by Ctrl-C or SIGTERM outside training; nothing was left half-written", 130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
        detach_log_files()


def terminate_as_interrupt():
    """SIGTERM (a scheduler's stop, `timeout`) outside the training loop unwinds as Ctrl-C does, so that the lock and
    the folders the run made are removed; training installs its own handler, which saves a checkpoint first. Returns
    the handler it replaced (None off the main thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(number, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def stop(line: str, status: int) -> int:
    """The last line printed, also recorded in grpo_training.log when the run has one (without a log file, logging
    it would reach Python's fallback handler and print it twice). Under a launcher only the main process says it:
    every process checks the same settings and data, so the others would repeat it."""
    if any(isinstance(handler, logging.FileHandler) for handler in logging.getLogger().handlers):
        logging.getLogger("grpo.error").error(line)
    if says_errors():
        print(line, file=sys.stderr)
    else:
        linger()
    return status


QUIET_LINGER_SECONDS = 3.0


def linger() -> None:
    """A process that stops quietly waits a moment first: the launcher stops every process once one has ended, and
    the main one, meeting the same mistake a moment later, must have printed it by then."""
    time.sleep(QUIET_LINGER_SECONDS)


def says_errors() -> bool:
    """The main process, or one that only the environment calls another (no launcher started it: it is alone)."""
    return is_main_process() or launch_problem() is not None


def run(config, args: argparse.Namespace, notes: list[str]) -> int:
    """The chosen task: the reward check, an evaluation, or training."""
    if getattr(args, "plan", False):
        from grpo_tool.memory_plan import run_plan

        print(run_plan(config, getattr(args, "gpu_memory", None)))
        return 0
    if getattr(args, "check_rewards", False):
        from reward_check import format_report, run_reward_check

        from grpo_tool.pipeline import output_dir_lock

        with output_dir_lock(config):
            report = run_reward_check(config)
        if is_main_process():
            print(format_report(report))
        return 0
    from grpo_tool.pipeline import run_evaluation, run_training
    from grpo_trainer import TrainingInterrupted

    eval_only = getattr(args, "eval_only", False)
    try:
        result = run_evaluation(config) if eval_only else run_training(config)
    except TrainingInterrupted as stop:
        if stop.checkpoint and is_main_process():
            from report import build_report

            print(f"report so far: {build_report(config.output_dir)}", file=sys.stderr)
        print(f"stopped at step {stop.step}; checkpoint: {stop.checkpoint}. Resume with the same command plus "
              f"--resume-from-checkpoint {stop.checkpoint}", file=sys.stderr)
        return 128 + stop.signal_number  # the shell's convention: 130 after Ctrl-C, 143 after SIGTERM
    if is_main_process():
        print(format_summary({**result, "settings": notes}, eval_only=eval_only))
    return 0


def format_summary(result: dict, eval_only: bool) -> str:
    """What the run produced and where it went, one item a line."""
    if eval_only:
        lines = [f"evaluated {result.get('model')} at step {result.get('global_step')}"]
        lines += [f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}"
                  for key, value in result.items() if key.startswith("eval_reward")]
        return "\n".join(lines)
    lines = [f"done: {result['steps']} steps in {result['seconds']} s",
             f"  model:           {result['model']}",
             *([f"  merged model:    {result['merged']}"] if "merged" in result else []),
             f"  checkpoints:     {', '.join(result['checkpoints']) or 'none'}",
             f"  generation logs: {result['generation_logs'] or 'off'}",
             f"  training log:    {result['log_file']}",
             f"  config:          {result['config']}",
             f"  report:          {result['report']}"]
    if "eval_reward" in result:
        rewards = result["eval_reward"]
        lines.append(f"  eval reward:     {rewards['first']:.4f} -> {rewards['last']:.4f} over "
                     f"{rewards['evaluations']} evaluations")
    lines += [f"  settings:        {note}" for note in result.get("settings", [])]
    lines += [f"  alarm:           {text}" for text in result.get("alarms", [])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
