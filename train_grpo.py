"""Command line for GRPO fine-tuning. Run `python train_grpo.py --help`; `--quick-test` trains the tiny model offline.

This file is the whole run, read top to bottom: `main` parses the flags and builds the config, `RECIPES` picks the
task, and each recipe is a short sequence of named steps, each one call into the module that owns it. The parser is
in grpo_tool/cli.py; every config field is a flag generated from the field (grpo_tool/flags.py).

Nothing here imports torch, transformers or trl: they load once the flags and config have been checked (see
grpo_tool/__init__.py), so `--help` and mistakes answer at once.

    assert main(["--quick-test"]) == 0 and Path("grpo_outputs/final_model/README.md").is_file()
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from config import build_config, checkpoint_steps, load_config_file
from grpo_tool import checkpoints, outputs, run_record
from grpo_tool.cli import PLAN_ONLY, build_parser, chosen_task
from grpo_tool.console import (
    ConsoleHandler,
    EarlyRecords,
    detach_log_files,
    for_a_person,
    format_comparison,
    format_summary,
    quiet_library_progress_bars,
)
from grpo_tool.errors import Interrupted, UserError
from grpo_tool.flags import as_typed, config_overrides
from grpo_tool.json_files import write_json_atomic
from grpo_tool.launch import (
    close_process_group,
    is_main_process,
    launch_problem,
    leave,
    linger,
    planning_for,
    says_errors,
)
from grpo_tool.places import unwritable, write_failure
from grpo_tool.settings import FIELDS, GRPOConfig, expand_path, resolved_eval_samples
from grpo_tool.tools import ToolStop

logger = logging.getLogger("train_grpo")


# The recipes. Each takes the checked config and the parsed flags and returns the exit status. GRPOTrainer and the
# task modules are imported inside them: importing them is what the flags' checks must not wait for.

def train(config: GRPOConfig, args: argparse.Namespace, notes: list[str]) -> int:
    """Train, save, write the report, and say where everything went."""
    from grpo_tool.report import build_report
    from grpo_trainer import GRPOTrainer, TrainingInterrupted

    start = time.monotonic()
    trainer = GRPOTrainer(config)  # config checked, rewards resolved once
    trainer.check_output_dir()  # one run per output dir: refused before the lock creates anything
    try:
        with output_dir_lock(config):
            data = trainer.load_data()  # every data mistake found before a model loads
            trainer.check_arguments()  # so is every TRL option and resume mistake
            trainer.load_model()
            trainer.train(data)  # data fitted to the model, TRL trainer built, run record written, trained
            final = trainer.save_model()
            close_process_group()  # the last collective is behind every process
            report = build_report(config.output_dir) if is_main_process() else None
    except TrainingInterrupted as stop:
        return interrupted(config, stop)
    if is_main_process():
        summary = run_record.run_summary(config, trainer.trainer.state, final, report, trainer.record)
        print(format_summary({**summary, "seconds": round(time.monotonic() - start, 1), "settings": notes}))
    return 0


def evaluate(config: GRPOConfig, args: argparse.Namespace, notes: list[str]) -> int:
    """--eval-only: a checkpoint, the output dir's saved model, or the configured model, on the evaluation split;
    with --eval-checkpoints, the starting model and the run's checkpoints side by side."""
    from grpo_trainer import GRPOTrainer

    if config.eval_checkpoints is not None:
        return compare(config)
    with output_dir_lock(config):
        trainer = GRPOTrainer(config)
        data = trainer.load_data()
        checkpoint = trainer.check_arguments(training=False)
        if checkpoint is None:
            checkpoint, said = checkpoints.model_to_evaluate(config.output_dir, config.model_name)
            logger.info(said)
        trainer.load_model(checkpoint)
        metrics = trainer.evaluate(data)
    close_process_group()
    if is_main_process():
        print(format_summary({**metrics, "model": trainer.model_path}, eval_only=True))
    return 0


def compare(config: GRPOConfig) -> int:
    """--eval-only --eval-checkpoints: each model evaluated on the same held-out prompts from the same random state;
    the table (evaluation/comparison.json) is rewritten after each model, so a stop keeps the rows done."""
    from grpo_trainer import GRPOTrainer

    if config.resume_from_checkpoint is not None:
        raise UserError("--eval-checkpoints chooses the checkpoints to evaluate; --resume-from-checkpoint evaluates "
                        "one: give one of them")
    directory = Path(config.output_dir) / outputs.EVALUATION_DIR
    table = directory / outputs.COMPARISON_FILE
    with output_dir_lock(config):
        chosen = checkpoints.models_to_compare(config.output_dir, checkpoint_steps(config.eval_checkpoints),
                                               config.model_name)
        trainer = GRPOTrainer(config)
        data = trainer.load_data()
        rows = []
        for label, path, step in chosen:
            logger.info("comparison: evaluating %s (%d of %d)", path or config.model_name, len(rows) + 1, len(chosen))
            trainer.trainer = None  # a fresh TRL trainer around each model
            trainer.load_model(path)
            evaluated = trainer.evaluate(data, directory / label)
            rows.append({"model": label, "path": path or trainer.model_path, **evaluated, "step": step})
            if is_main_process():
                write_json_atomic(table, {"eval_samples": resolved_eval_samples(config),
                                          "eval_temperature": config.eval_temperature or config.temperature,
                                          "prompts": len(data["eval"]), "seed": config.seed, "models": rows})
    close_process_group()
    if is_main_process():
        print(format_comparison(rows, str(table)))
    return 0


def check_rewards(config: GRPOConfig, args: argparse.Namespace, notes: list[str]) -> int:
    """--check-rewards: every reward component on chosen against rejected answers and on sampled groups."""
    from grpo_tool.reward_check import format_report, run_reward_check
    from grpo_trainer import GRPOTrainer

    with output_dir_lock(config):
        trainer = GRPOTrainer(config)
        data = trainer.load_data()  # a data mistake costs no model load
        trainer.load_model()
        data = trainer.prepare_data(data)
        report = run_reward_check(config, trainer.components, trainer.reward_config, data, trainer.model,
                                  trainer.tokenizer, trainer.model_path, trainer.toolbox)
    if is_main_process():
        print(format_report(report))
    return 0


def plan(config: GRPOConfig, args: argparse.Namespace, notes: list[str]) -> int:
    """--plan: peak memory by part and seconds per step, from the model's shape; no weights loaded."""
    from data_loader import load_grpo_dataset
    from grpo_tool.plan.table import run_plan

    print(run_plan(config, getattr(args, "gpu_memory", None), lambda: load_grpo_dataset(config)["train"]["prompt"],
                   args.planned))
    return 0


@contextlib.contextmanager
def planned_launch(args: argparse.Namespace):
    """--plan: what it plans for (--sharding, --num-processes, --accelerate-config) is read first, and its processes
    count as the run's while its settings are checked, as they will under that launch."""
    from grpo_tool.plan.sharding import from_flags

    args.planned = from_flags(getattr(args, "sharding", None), getattr(args, "num_processes", None),
                              getattr(args, "accelerate_config", None))
    with planning_for(args.planned.processes):
        yield


RECIPES = {"train": train, "eval_only": evaluate, "check_rewards": check_rewards, "plan": plan}


def report(args: argparse.Namespace) -> int:
    """--report: rebuild report.html from what a run left in its output dir; needs no config."""
    from grpo_tool.report import build_report

    output_dir = expand_path(getattr(args, "output_dir", FIELDS["output_dir"].default))
    if Path(output_dir).is_dir() and (problem := unwritable("--report: output_dir", output_dir)):
        raise UserError(problem)
    print(f"report: {build_report(output_dir)}")
    return 0


def list_recipes(args: argparse.Namespace) -> int:
    """--list-recipes: the whole-run recipes of config/recipes/, each with what it needs and is for; needs no
    config."""
    from grpo_tool.recipes import format_recipes

    print(format_recipes())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    task = chosen_task(args)
    handlers = []
    previous = terminate_as_interrupt()
    try:
        if problem := launch_problem():
            raise UserError(problem)
        if task != "plan" and (given := [flag for dest, flag in PLAN_ONLY.items() if hasattr(args, dest)]):
            raise UserError(f"{given[0]} is a --plan setting (what to plan for); a run uses the GPU it finds and the "
                            "processes and engine accelerate launch gives it")
        if task == "report":
            return report(args)
        if task == "list_recipes":
            return list_recipes(args)
        with planned_launch(args) if task == "plan" else contextlib.nullcontext():
            notes: list[str] = []
            config = config_from_args(args, notes)
            if config.eval_checkpoints is not None and task != "eval_only":
                raise UserError("--eval-checkpoints compares a finished run's checkpoints: use it with --eval-only "
                                "(a training run evaluates as it goes, every eval_steps)")
            handlers = setup_console_logging()
            for note in notes:
                logger.info("settings: %s", note)
            return RECIPES[task](config, args, notes)
    except (UserError, ToolStop) as error:  # ToolStop: an environment's reset or get_reward failed outside training
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


# The steps the recipes share.

def config_from_args(args: argparse.Namespace, notes: list[str] | None = None) -> GRPOConfig:
    """Only flags the user gave override the layers below them; each flag's dest is the config field it sets."""
    overrides = config_overrides(args)
    reward_config = overrides.get("reward_config_path")
    if reward_config and not reward_config.endswith((".json", ".yaml", ".yml")):
        # A bare name is a reward preset from config/rewards/.
        overrides["reward_config_name"] = overrides.pop("reward_config_path")
    mode = next((mode for mode in ("quick_test", "production") if getattr(args, mode, False)), None)
    config_file = getattr(args, "config", None)
    try:
        return build_config(mode=mode, config_file=config_file, overrides=overrides, notes=notes)
    except UserError as error:
        if str(error).startswith("config file "):  # a mistake in the file itself, said in the file's own keys
            raise
        raise UserError(as_typed(str(error), set(file_keys(config_file)) - set(overrides))) from None


def file_keys(config_file: str | None) -> list[str]:
    """The settings a --config file gives (none when it is the file that cannot be read)."""
    try:
        return list(load_config_file(config_file)) if config_file else []
    except UserError:
        return []


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


def output_dir_lock(config: GRPOConfig):
    """The output dir's lock, held by the main process (the one that writes) while a task runs."""
    from grpo_tool.run_dir import DirectoryLock

    if not is_main_process():
        return contextlib.nullcontext()
    return DirectoryLock(config.output_dir, also=(config.generation_log_dir,))


def interrupted(config: GRPOConfig, stop) -> int:
    """Ctrl-C or SIGTERM during training: the checkpoint it saved, the report so far, and how to resume."""
    if stop.checkpoint and is_main_process():
        from grpo_tool.report import build_report

        print(f"report so far: {build_report(config.output_dir)}", file=sys.stderr)
    print(f"stopped at step {stop.step}; checkpoint: {stop.checkpoint}. Resume with the same command plus "
          f"--resume-from-checkpoint {stop.checkpoint}", file=sys.stderr)
    return 128 + stop.signal_number  # the shell's convention: 130 after Ctrl-C, 143 after SIGTERM


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
    it would reach Python's fallback handler and print it twice). Under a launcher only the main process says it."""
    if any(isinstance(handler, logging.FileHandler) for handler in logging.getLogger().handlers):
        logging.getLogger("grpo.error").error(line)
    if says_errors():
        print(line, file=sys.stderr)
    else:
        linger()
    return status


if __name__ == "__main__":
    leave(main())
