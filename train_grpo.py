"""Command line for GRPO fine-tuning. Run `python train_grpo.py --help`; `--quick-test` trains the tiny model offline.

Heavy libraries (torch, transformers, trl) are imported only once the flags and config have been checked, so `--help`
and mistakes answer at once.
"""

from __future__ import annotations

import argparse
import logging
import sys

from config import DATASET_NAMES, FIELD_NAMES, MODEL_PRESETS, build_config, is_main_process
from errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error:` line (exit status 2) like every other mistake."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="train_grpo.py", description="GRPO fine-tuning of causal language models with TRL.")
    parser.add_argument("--model", dest="model_name", metavar="NAME", help=f"a preset ({', '.join(MODEL_PRESETS)}), a Hugging Face "
                                                        "model id, or a local model directory (default: llama-3.1-8b)")
    parser.add_argument("--dataset", dest="dataset_name", choices=DATASET_NAMES, help="dataset preset (default: ultrafeedback)")
    parser.add_argument("--custom-data", metavar="PATH", help="a JSONL file of {prompt, chosen, rejected} rows")
    parser.add_argument("--config", metavar="PATH", help="a config JSON file (see config/example_config.json)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick-test", action="store_true",
                      help="a one-minute smoke run (the tiny model on the sample data unless --model/--dataset given)")
    mode.add_argument("--production", action="store_true",
                      help="a real run: all data, checkpoints, evaluations, generation logs, W&B when installed")
    parser.add_argument("--max-samples", type=int, metavar="N", help="training prompts to use at most")
    parser.add_argument("--epochs", dest="num_train_epochs", type=float, metavar="N", help="passes over the training prompts")
    parser.add_argument("--learning-rate", type=float, metavar="LR", help="peak learning rate")
    parser.add_argument("--batch-size", dest="per_device_train_batch_size", type=int, metavar="N",
                        help="completions per device per step (per_device_train_batch_size)")
    parser.add_argument("--output-dir", metavar="PATH", help="where checkpoints, logs and the model go")
    model = parser.add_argument_group("model and backend")
    model.add_argument("--backend", choices=["auto", "unsloth", "transformers"],
                       help="auto (default): Unsloth on a CUDA GPU when installed, else transformers + peft")
    model.add_argument("--load-in-4bit", action=argparse.BooleanOptionalAction, default=None,
                       help="4-bit weights on a CUDA GPU (default: on)")
    model.add_argument("--lora", dest="use_lora", action=argparse.BooleanOptionalAction, default=None,
                       help="train a LoRA adapter rather than every weight (default: on, off for tiny)")
    model.add_argument("--lora-r", type=int, metavar="N", help="LoRA rank (default 16)")
    model.add_argument("--lora-alpha", type=int, metavar="N", help="LoRA alpha (default 16)")
    model.add_argument("--lora-dropout", type=float, metavar="P", help="LoRA dropout (default 0)")
    model.add_argument("--lora-target-modules", metavar="NAMES",
                       help="all-linear (default) or comma-separated module names, e.g. q_proj,v_proj")
    model.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                       help="recompute activations to save memory (default: on for CUDA models of 100M+ parameters)")
    model.add_argument("--trust-remote-code", action="store_true", default=None,
                       help="run code shipped with a hub checkpoint (only for checkpoints you trust)")
    model.add_argument("--use-vllm", action="store_true", default=None,
                       help="generate completions with vLLM (CUDA and the vllm package needed)")
    model.add_argument("--vllm-mode", choices=["colocate", "server"],
                       help="colocate (default): vLLM shares the GPU; server: a separate `trl vllm-serve`")
    model.add_argument("--vllm-gpu-memory-utilization", type=float, metavar="SHARE",
                       help="colocate: the share of GPU memory vLLM may take (default 0.3)")
    model.add_argument("--save-merged", action="store_true", default=None,
                       help="also save the LoRA adapter merged into 16-bit weights (final_model/merged)")
    parser.add_argument("--reward-function", dest="reward_function_type", choices=["single", "multi"],
                        help="one weighted reward (single, default) or one TRL reward per component (multi)")
    parser.add_argument("--reward-config", dest="reward_config_path", metavar="PATH", help="a reward config JSON file or a preset name")
    parser.add_argument("--reward-model", metavar="ID_OR_PATH",
                        help="a sequence-classification reward model as one more component (weight: "
                             "reward_model_weight in the reward config)")
    parser.add_argument("--reward-fn", dest="reward_functions", action="append", metavar="FILE.py:FUNCTION",
                        help="a custom reward function(completions, **kwargs); repeatable (weights: custom_weights)")
    wandb = parser.add_mutually_exclusive_group()
    wandb.add_argument("--wandb-project", metavar="NAME", help="log to this Weights & Biases project")
    wandb.add_argument("--no-wandb", action="store_true", help="do not log to Weights & Biases")
    parser.add_argument("--tensorboard", action="store_true", default=None,
                        help="also write TensorBoard event files under {output_dir}/runs/")
    task = parser.add_mutually_exclusive_group()
    task.add_argument("--eval-only", action="store_true",
                      help="no training: evaluate --resume-from-checkpoint, the output dir's model, or --model")
    task.add_argument("--report", action="store_true",
                      help="no training: rebuild report.html from the run in --output-dir")
    task.add_argument("--check-rewards", action="store_true",
                      help="no training: score chosen against rejected and sampled completions with every reward "
                           "component, print a table, write reward_check.json")
    parser.add_argument("--resume-from-checkpoint", metavar="PATH",
                        help="a checkpoint-N directory to continue from, or 'latest' in the output dir")
    logging_group = parser.add_mutually_exclusive_group()
    logging_group.add_argument("--enable-generation-logging", dest="enable_generation_logging", action="store_true",
                               default=None, help="write generation logs at each evaluation (default: on)")
    logging_group.add_argument("--disable-generation-logging", dest="enable_generation_logging", action="store_false",
                               help="write no generation logs")
    parser.add_argument("--generation-log-dir", metavar="PATH",
                        help="where generation logs go (default: {output_dir}/generation_logs)")
    parser.add_argument("--max-generation-samples", type=int, metavar="N",
                        help="prompts per generation log (default: 5)")
    return parser


def config_from_args(args: argparse.Namespace):
    """Only flags the user gave override the layers below them; a flag's dest is the config field it sets."""
    overrides = {name: value for name, value in vars(args).items() if name in FIELD_NAMES and value is not None}
    if args.no_wandb:
        overrides["wandb_project"] = None
    if args.reward_config_path and not args.reward_config_path.endswith(".json"):
        # A bare name is a reward preset from config/rewards/.
        overrides["reward_config_name"] = overrides.pop("reward_config_path")
    mode = "quick_test" if args.quick_test else "production" if args.production else None
    return build_config(mode=mode, config_file=args.config, overrides=overrides)


def setup_console_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    # Metrics reach the console through transformers' progress bar; the log file gets them from grpo.metrics.
    handler.addFilter(lambda record: record.name != "grpo.metrics")
    root = logging.getLogger()
    root.addHandler(handler)
    # With several processes (accelerate launch), only the main one narrates; the others speak up only on trouble.
    root.setLevel(logging.INFO if is_main_process() else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.report:
            from config import GRPOConfig
            from report import build_report

            print(f"report: {build_report(args.output_dir or GRPOConfig.output_dir)}")
            return 0
        config = config_from_args(args)
        setup_console_logging()
        if args.check_rewards:
            from reward_check import format_report, run_reward_check

            report = run_reward_check(config)
            if is_main_process():
                print(format_report(report))
            return 0
        from grpo_trainer import TrainingInterrupted, run_evaluation, run_training

        try:
            result = run_evaluation(config) if args.eval_only else run_training(config)
        except TrainingInterrupted as stop:
            if stop.checkpoint and is_main_process():
                from report import build_report

                print(f"report so far: {build_report(config.output_dir)}", file=sys.stderr)
            print(f"stopped at step {stop.step}; checkpoint: {stop.checkpoint}. Resume with the same command plus "
                  f"--resume-from-checkpoint {stop.checkpoint}", file=sys.stderr)
            return 128 + stop.signal_number  # the shell's convention: 130 after Ctrl-C, 143 after SIGTERM
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if is_main_process():
        print(format_summary(result, eval_only=args.eval_only))
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
             f"  checkpoints:     {', '.join(result['checkpoints']) or 'none'}",
             f"  generation logs: {result['generation_logs'] or 'off'}",
             f"  training log:    {result['log_file']}",
             f"  config:          {result['config']}",
             f"  report:          {result['report']}"]
    if "eval_reward" in result:
        rewards = result["eval_reward"]
        lines.append(f"  eval reward:     {rewards['first']:.4f} -> {rewards['last']:.4f} over "
                     f"{rewards['evaluations']} evaluations")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
