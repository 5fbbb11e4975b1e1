"""The tool's internals, one module per job. The user's modules (train_grpo, config, grpo_trainer, data_loader,
rewards, generation_logger) stay at the repository root and call into these; nothing here imports them, and no two
modules import each other (tests/test_layers.py checks both from the source).

Import rule, stated once: the modules in HEAVY_MODULES import torch, transformers, trl or peft at the top; no other
module does at load time (tests/test_cli.py checks it). The heavy ones are imported inside GRPOTrainer's methods only
after `backend.prepare` has decided the backend, because Unsloth must be imported before transformers, trl and peft
to patch them. That keeps `--help` and config mistakes fast (no torch) and the Unsloth order safe in one place.
"""

HEAVY_MODULES = ("grpo_tool.models", "grpo_tool.sampling", "grpo_tool.callbacks", "grpo_tool.trl_setup",
                 "grpo_tool.trainer_hooks", "grpo_tool.gguf_models", "grpo_tool.base_view", "grpo_tool.shared_prompts",
                 "generation_logger")
