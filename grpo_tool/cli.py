"""The command line's parser: the modes (--quick-test, --production), the tasks (--eval-only, --report,
--check-rewards, --plan, --list-recipes) and a flag for every config field (grpo_tool/flags.py). A usage mistake is
one `error:` line with exit status 2, like every other mistake, with the nearest spelling or TRL's word for it.

    args = build_parser().parse_args(["--quick-test", "--epochs", "2"])
    assert args.quick_test and args.num_train_epochs == 2.0
"""

from __future__ import annotations

import argparse
import re

from grpo_tool.errors import near_miss
from grpo_tool.flags import add_config_flags, positive_number, positive_whole_number, trl_flag_problem
from grpo_tool.launch import ENGINES, linger, says_errors
from grpo_tool.reward_config import reward_key_problem

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
            if reward_key := reward_key_problem(unknown):
                self.exit(2, f"error: {message.split(': ', 1)[1]}: {reward_key}\n")
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
                        help="a config file, JSON or YAML, of any settings below (see config/example_config.json), "
                             "or the name of a recipe in config/recipes/ (see --list-recipes)")
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
    task.add_argument("--list-recipes", action="store_true",
                      help="no training: list the whole-run recipes of config/recipes/, what each is for and what it "
                           "needs (CPU, GPUs); run one with --config NAME")
    task.add_argument("--check-rewards", action="store_true",
                      help="no training: score chosen against rejected and sampled completions with every reward "
                           "component, print a table, write reward_check.json")
    task.add_argument("--plan", action="store_true",
                      help="no training: estimate the run's peak memory by part and its seconds per step from the "
                           "model's shape, print a table, write plan.json (no weights loaded, no network)")
    parser.add_argument("--gpu-memory", type=positive_number, metavar="GB",
                        help="with --plan: plan for a GPU of this many GB (default: this machine's GPU, else its CPU)")
    parser.add_argument("--num-processes", type=positive_whole_number, metavar="N",
                        help="with --plan: plan one device of a run of N processes (accelerate launch's count, all "
                             "machines together)")
    parser.add_argument("--sharding", choices=ENGINES,
                        help="with --plan: what divides the run among the processes: none (DDP, a full replica on "
                             "each), zero2 or zero3 (DeepSpeed ZeRO), fsdp (FSDP2)")
    parser.add_argument("--accelerate-config", metavar="FILE",
                        help="with --plan: read the processes and the engine from this accelerate config (the two "
                             "flags above, when given, override it)")
    groups = add_config_flags(parser)
    groups["wandb"].add_argument("--no-wandb", dest="wandb_project", action="store_const", const=None,
                                 help="do not log to Weights & Biases")
    return parser


# The tasks besides training, as their flags' dests; they exclude each other (one argparse group).
TASKS = ("plan", "check_rewards", "eval_only", "report", "list_recipes")
# Flags that describe what --plan plans for; a run takes its GPU, processes and engine from where it runs.
PLAN_ONLY = {"gpu_memory": "--gpu-memory", "num_processes": "--num-processes", "sharding": "--sharding",
             "accelerate_config": "--accelerate-config"}


def chosen_task(args: argparse.Namespace) -> str:
    """The task the flags ask for: one of TASKS, or "train"."""
    return next((task for task in TASKS if getattr(args, task, False)), "train")
