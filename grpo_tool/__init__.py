"""The tool's internals, one module per job; the user's modules (train_grpo, config, grpo_trainer, data_loader,
rewards, generation_logger) stay at the repository root and call into these.

Import rule, stated once: modules that need torch, transformers, trl or peft import them at the top and are listed in
HEAVY_MODULES; nothing at the root and no light module imports them at load time. The heavy ones are imported only
through `backend.import_training_modules()`, after the backend is decided, because Unsloth must be imported before
transformers, trl and peft to patch them. That keeps `--help` and config mistakes fast (no torch) and the Unsloth
order safe in one place.
"""

HEAVY_MODULES = ("models", "sampling", "callbacks", "trl_args", "pipeline")
