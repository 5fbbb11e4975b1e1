"""The project's GRPOTrainer: wires a model, the data, the rewards and the callbacks into TRL's GRPOTrainer.

It holds no schema or scoring logic (data_loader.py and rewards.py do) and no GRPO loop (TRL does). It decides the
backend, loads the model, fits prompts to the token budget, maps our config onto TRL's, and saves what a user needs.

    trainer = GRPOTrainer(config); trainer.load_model(); trainer.train(dataset); trainer.save_model()
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from config import (MODEL_SIZES_BILLION, TINY_MODEL, GRPOConfig, is_main_process, resolve_model_name,
                    resolved_eval_group_size, save_config_to_file, validate_config)
from errors import UserError
from json_files import write_json_atomic, write_text_atomic
from prompt_budget import fit_prompts, uses_chat
from rewards import (REWARD_MODEL, Component, assemble_components, build_reward_functions, load_reward_config,
                     make_reward_model_reward, score_completions)

__all__ = ["GRPOConfig", "GRPOTrainer"]

# TRL phones home unless told not to; an offline training machine gains nothing from the attempt.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

logger = logging.getLogger(__name__)
metrics_logger = logging.getLogger("grpo.metrics")

LOG_FILE_NAME = "grpo_training.log"
CONFIG_FILE_NAME = "grpo_config.json"
FINAL_MODEL_DIR = "final_model"
STAGING_DIR = ".staging"  # checkpoints being written; renamed into the output dir when complete
CPU_MODEL_LIMIT_BILLION = 1  # larger models are refused on a machine without CUDA
CHECKPOINTING_MIN_PARAMETERS = 100_000_000  # below this, recomputing activations costs more time than memory saved
UNSLOTH_ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C / SIGTERM once the checkpoint of the interrupted step is on disk."""

    def __init__(self, step: int, checkpoint: str | None, signal_number: int):
        self.step, self.checkpoint, self.signal_number = step, checkpoint, signal_number
        super().__init__(f"interrupted at step {step}")


def attach_log_file(output_dir: str) -> Path:
    """Send this tool's log records (metrics included) to {output_dir}/grpo_training.log as well."""
    path = Path(output_dir) / LOG_FILE_NAME
    root = logging.getLogger()
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve() for h in root.handlers):
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    return path


def package_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def choose_backend(config: GRPOConfig, cuda_available: bool, unsloth_available: bool) -> tuple[str, str]:
    """(backend, the reason in words). Unsloth where it can run, transformers + peft everywhere else."""
    four_bit = " with 4-bit weights" if config.load_in_4bit else " in 16-bit"
    if config.backend == "unsloth":
        if not cuda_available:
            raise UserError("backend=unsloth needs a CUDA GPU and none was found: use backend auto or transformers")
        if not unsloth_available:
            raise UserError("backend=unsloth, but the unsloth package is not installed: pip install -r "
                            "requirements-gpu.txt, or use backend transformers")
        return "unsloth", f"asked for (backend=unsloth){four_bit}"
    if config.backend == "transformers":
        return "transformers", ("asked for (backend=transformers)" + (four_bit if cuda_available else ", on the CPU"))
    if cuda_available and unsloth_available:
        return "unsloth", f"CUDA GPU and Unsloth installed: Unsloth{four_bit} + LoRA"
    if cuda_available:
        return "transformers", (f"CUDA GPU but no Unsloth (pip install -r requirements-gpu.txt for it): transformers + "
                                f"peft{four_bit}")
    return "transformers", "no CUDA GPU: transformers on the CPU in full precision"


def check_model_fits_machine(config: GRPOConfig, cuda_available: bool) -> None:
    """Refuse, before any download, what this machine cannot run: a big or pre-quantised model without a GPU, vLLM
    without a GPU or without the vllm package."""
    choose_backend(config, cuda_available, package_installed("unsloth"))  # an impossible backend is refused here
    if config.use_vllm and not cuda_available:
        raise UserError("use_vllm needs a CUDA GPU and none was found: set use_vllm to false")
    if config.use_vllm and not package_installed("vllm"):
        raise UserError("use_vllm is set, but the vllm package is not installed: pip install vllm, or set use_vllm "
                        "to false")
    if cuda_available:
        return
    name = resolve_model_name(config.model_name)
    size = MODEL_SIZES_BILLION.get(name)
    if (size or 0) >= CPU_MODEL_LIMIT_BILLION or "bnb-4bit" in name.lower():
        described = f"{config.model_name} ({size}B parameters, pre-quantised 4-bit)" if size else config.model_name
        raise UserError(f"{described} needs a CUDA GPU and none was found: on this machine run "
                        "`python train_grpo.py --quick-test` or pass `--model tiny` (or a small model such as a "
                        "0.5B checkpoint)")


def lora_targets(config: GRPOConfig, backend: str):
    """LoRA target modules as peft / Unsloth take them."""
    if config.lora_target_modules.strip() == "all-linear":
        # Unsloth wants names; these are the linear layers of the Llama, Qwen and Gemma families.
        return UNSLOTH_ALL_LINEAR if backend == "unsloth" else "all-linear"
    return [name.strip() for name in config.lora_target_modules.split(",") if name.strip()]


def model_parameters(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def configure_wandb(config: GRPOConfig) -> list[str]:
    """TRL's report_to for this run. W&B never prompts for a login: without credentials it runs offline."""
    if not config.wandb_project:
        return []
    try:
        import wandb  # noqa: F401
    except ImportError:
        logger.warning("W&B: the wandb package is not installed; logging to W&B is skipped (pip install wandb)")
        return []
    os.environ["WANDB_PROJECT"] = config.wandb_project
    os.environ.setdefault("WANDB_DIR", config.output_dir)
    has_key = bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in _netrc_text()
    if not has_key and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
        logger.warning("W&B: no credentials (WANDB_API_KEY or `wandb login`), so the run is logged offline under "
                       "%s; upload it later with `wandb sync`", config.output_dir)
    return ["wandb"]


def _netrc_text() -> str:
    try:
        return (Path.home() / ".netrc").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def resolve_checkpoint(config: GRPOConfig) -> str | None:
    """The checkpoint to resume from: the one given (which must be complete), or with 'latest' the newest complete."""
    if config.resume_from_checkpoint is None:
        return None
    if config.resume_from_checkpoint == "latest":
        checkpoints = complete_checkpoints(config.output_dir)
        if not checkpoints:
            raise UserError(f"--resume-from-checkpoint latest: no complete checkpoint-N directory in "
                            f"{config.output_dir}")
        return str(checkpoints[-1])
    if not checkpoint_is_complete(Path(config.resume_from_checkpoint)):
        raise UserError(f"checkpoint {config.resume_from_checkpoint} is incomplete (no readable trainer_state.json): "
                        "it was cut off while being written; resume from an earlier checkpoint-N or use 'latest'")
    return config.resume_from_checkpoint


def as_dataset_dict(dataset, config: GRPOConfig):
    """Accept what users pass: a DatasetDict with train/eval, a single Dataset, or the (data_loader, dataset) pair."""
    import datasets

    from data_loader import hold_out, load_grpo_dataset

    if dataset is None:
        return load_grpo_dataset(config)
    if isinstance(dataset, tuple) and len(dataset) == 2:
        dataset = dataset[1]
    if isinstance(dataset, datasets.DatasetDict):
        train = dataset.get("train")
        evaluation = dataset.get("eval", dataset.get("test", dataset.get("validation")))
        if train is None:
            raise UserError(f"the dataset has splits {', '.join(dataset)}; a 'train' split is needed")
        if evaluation is None:
            train, evaluation = hold_out(train, config.seed)
        return datasets.DatasetDict({"train": train, "eval": evaluation})
    if isinstance(dataset, datasets.Dataset):
        train, evaluation = hold_out(dataset, config.seed)
        return datasets.DatasetDict({"train": train, "eval": evaluation})
    raise UserError(f"train() takes a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")


def make_interrupt_callback():
    """A callback turning Ctrl-C / SIGTERM into 'save a checkpoint at the end of this step and stop'.

    Built on call, so importing this module does not import transformers.
    """
    from transformers import TrainerCallback

    class _InterruptCallback(TrainerCallback):
        def __init__(self):
            self.signal_name = None
            self.signal_number = None
            self.previous = {}

        def install(self):
            if threading.current_thread() is not threading.main_thread():
                return
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self.handle)

        def uninstall(self):
            for number, handler in self.previous.items():
                signal.signal(number, handler)
            self.previous = {}

        def handle(self, number, frame):
            self.signal_name, self.signal_number = signal.Signals(number).name, number
            self.uninstall()  # a second Ctrl-C falls through to Python's default and stops at once
            logger.warning("%s received: saving a checkpoint at the end of this step (press Ctrl-C again to abort "
                           "without saving)", self.signal_name)

        def on_step_end(self, args, state, control, **kwargs):
            if self.signal_name:
                control.should_save = True
                control.should_training_stop = True
            return control

    return _InterruptCallback()


def staged_checkpoint_trainer_class():
    """TRL's GRPOTrainer, writing each checkpoint into {output_dir}/.staging/ and renaming it into place only once it
    is complete, so a checkpoint-N directory is always whole: a kill at any moment leaves the last one usable.

    Built on call, so importing this module does not import trl.
    """
    import trl
    from transformers.trainer_utils import rotate_checkpoints

    class StagedCheckpointGRPOTrainer(trl.GRPOTrainer):
        staging = False

        def _load_optimizer_and_scheduler(self, checkpoint):
            import torch

            if checkpoint is None or self.args.world_size == 1 or self.args.device.type != "cpu":
                return super()._load_optimizer_and_scheduler(checkpoint)
            # With several CPU processes, transformers 5.17 maps the optimizer state onto args.device, "cpu:N",
            # which torch cannot restore to; on a CPU every process's state belongs on plain "cpu".
            original_load = torch.load

            def load_on_cpu(*args, **kwargs):
                kwargs["map_location"] = "cpu"
                return original_load(*args, **kwargs)

            torch.load = load_on_cpu
            try:
                return super()._load_optimizer_and_scheduler(checkpoint)
            finally:
                torch.load = original_load

        def _get_output_dir(self, trial):
            run_dir = super()._get_output_dir(trial)
            return os.path.join(run_dir, STAGING_DIR) if self.staging else run_dir

        def _save_checkpoint(self, model, trial):
            run_dir = super()._get_output_dir(trial)
            name = f"checkpoint-{self.state.global_step}"
            staged, final = os.path.join(run_dir, STAGING_DIR, name), os.path.join(run_dir, name)
            if self.args.should_save:
                shutil.rmtree(staged, ignore_errors=True)  # what a killed save left behind
            self.accelerator.wait_for_everyone()
            self.staging = True
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.staging = False
            self.accelerator.wait_for_everyone()  # every process has written its part (RNG states are per process)
            if self.args.should_save:
                if os.path.isdir(final):
                    shutil.rmtree(final)
                os.replace(staged, final)
                rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit, use_mtime=True)
            self.accelerator.wait_for_everyone()

    return StagedCheckpointGRPOTrainer


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """The checkpoint-N directories of a run that were written in full, oldest first."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return []
    found = [path for path in directory.glob("checkpoint-*") if path.name.split("-")[-1].isdigit()
             and checkpoint_is_complete(path)]
    return sorted(found, key=lambda path: int(path.name.split("-")[-1]))


def checkpoint_is_complete(path: Path) -> bool:
    """Transformers writes trainer_state.json last: a checkpoint whose state parses was written in full."""
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def close_progress_bars(trainer) -> None:
    from transformers.trainer_callback import ProgressCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback):
            for bar in (callback.training_bar, callback.prediction_bar):
                if bar is not None:
                    bar.close()


def make_metrics_callback():
    from transformers import TrainerCallback

    class _MetricsLogCallback(TrainerCallback):
        """Copies each metrics dict into grpo_training.log (the console already shows it through the progress bar)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                metrics_logger.info("step %d: %s", state.global_step,
                                    ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in logs.items()))

    return _MetricsLogCallback()


class GRPOTrainer:
    """GRPO training of one model on one dataset with the configured rewards."""

    def __init__(self, config: GRPOConfig | None = None, callbacks: list | None = None):
        """`callbacks`: extra transformers TrainerCallbacks, added to the tool's own."""
        self.config = config or GRPOConfig()
        self.callbacks = list(callbacks or [])
        validate_config(self.config)
        self.reward_config = load_reward_config(self.config.reward_config_path or self.config.reward_config_name)
        self.model = None
        self.tokenizer = None
        self.trainer = None
        self.backend = None
        self.model_path = None
        self.interrupt = None
        self.components = None

    # model

    def load_model(self, path: str | None = None):
        """Load the tokenizer and model (the configured one, or a saved model / checkpoint directory at `path`)."""
        import torch

        cuda = torch.cuda.is_available()
        if path is None:
            check_model_fits_machine(self.config, cuda)
        self.backend, reason = choose_backend(self.config, cuda, package_installed("unsloth"))
        logger.info("backend: %s (%s)", self.backend, reason)
        source = path or self._model_location()
        if self.backend == "unsloth":
            model, self.tokenizer = self._load_with_unsloth(source, fresh=path is None)
        else:
            model = self._load_with_transformers(source, cuda, fresh=path is None)
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        self.model, self.model_path = model, source
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info("model: %s (%s parameters, %s trainable)", source, f"{model_parameters(model):,}",
                    f"{trainable:,}")
        return model, self.tokenizer

    def _load_with_transformers(self, source: str, cuda: bool, fresh: bool):
        adapter = Path(source, "adapter_config.json")
        self.tokenizer = self._load_tokenizer(source)
        if adapter.is_file():
            from peft import PeftModel

            base = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
            return PeftModel.from_pretrained(self._load_causal_lm(base, cuda), source, is_trainable=True)
        model = self._load_causal_lm(source, cuda)
        # A saved model given by path is evaluated as it is; a fresh adapter goes only on a base model.
        return self._add_lora(model) if fresh and self.config.use_lora else model

    def _load_with_unsloth(self, source: str, fresh: bool):
        if "transformers" in sys.modules and "unsloth" not in sys.modules:
            logger.warning("transformers was imported before Unsloth, so some of Unsloth's patches may not apply")
        from unsloth import FastLanguageModel

        config = self.config
        try:
            model, tokenizer = FastLanguageModel.from_pretrained(
                model_name=source, max_seq_length=config.max_seq_length, load_in_4bit=config.load_in_4bit,
                full_finetuning=not config.use_lora, fast_inference=config.use_vllm, max_lora_rank=config.lora_r,
                gpu_memory_utilization=config.vllm_gpu_memory_utilization, dtype=None,
                trust_remote_code=config.trust_remote_code)
        except OSError as error:
            raise UserError(self._load_failure(source, error)) from None
        if fresh and config.use_lora:
            checkpointing = config.gradient_checkpointing is not False
            model = FastLanguageModel.get_peft_model(
                model, r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                target_modules=lora_targets(config, "unsloth"),
                use_gradient_checkpointing="unsloth" if checkpointing else False, random_state=config.seed)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    def _model_location(self) -> str:
        if self.config.model_name == TINY_MODEL:
            from tiny_model import ensure_tiny_model

            return str(ensure_tiny_model())
        return resolve_model_name(self.config.model_name)

    def _load_tokenizer(self, source: str):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=self.config.trust_remote_code)
        except OSError as error:
            raise UserError(self._load_failure(source, error)) from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def _load_causal_lm(self, source: str, cuda: bool):
        import torch
        from transformers import AutoModelForCausalLM

        options: dict[str, Any] = {}
        if cuda:
            options["dtype"] = torch.bfloat16 if self._use_bf16(cuda) else torch.float16
            options["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
            if self.config.load_in_4bit:
                from transformers import BitsAndBytesConfig

                options["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=options["dtype"])
        else:
            options["dtype"] = torch.float32
        try:
            return AutoModelForCausalLM.from_pretrained(source, trust_remote_code=self.config.trust_remote_code,
                                                        **options)
        except OSError as error:
            raise UserError(self._load_failure(source, error)) from None

    @staticmethod
    def _load_failure(source: str, error: OSError) -> str:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return (f"model {source}: cannot be loaded ({first_line}). Without network access, use a model already in "
                "the Hugging Face cache, a local model directory, or --model tiny")

    def _add_lora(self, model):
        from peft import LoraConfig, get_peft_model

        if getattr(model, "is_loaded_in_4bit", False):
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        lora = LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                          lora_dropout=self.config.lora_dropout, target_modules=lora_targets(self.config, self.backend),
                          task_type="CAUSAL_LM")
        return get_peft_model(model, lora)

    def _use_bf16(self, cuda: bool) -> bool:
        if self.config.bf16 is not None:
            return self.config.bf16
        import torch

        # bf16 on a CPU is emulated and slower than fp32 (about 1.5x here); on a GPU that supports it, it is faster.
        return cuda and torch.cuda.is_bf16_supported()

    # training

    def _trl_arguments(self, evaluate: bool):
        import torch
        from trl import GRPOConfig as TRLGRPOConfig

        config, cuda = self.config, torch.cuda.is_available()
        checkpointing = config.gradient_checkpointing
        if checkpointing is None:
            checkpointing = cuda and model_parameters(self.model) >= CHECKPOINTING_MIN_PARAMETERS
        return TRLGRPOConfig(
            output_dir=config.output_dir,
            learning_rate=config.learning_rate,
            num_train_epochs=config.num_train_epochs,
            max_steps=config.max_steps,
            per_device_train_batch_size=config.per_device_train_batch_size,
            per_device_eval_batch_size=config.per_device_eval_batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            num_generations=config.group_size,
            num_generations_eval=resolved_eval_group_size(config),
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            top_p=config.top_p,
            beta=config.beta,
            loss_type=config.loss_type,
            seed=config.seed,
            bf16=self._use_bf16(cuda),
            gradient_checkpointing=checkpointing,
            logging_steps=config.logging_steps,
            eval_strategy="steps" if evaluate else "no",
            eval_steps=config.eval_steps,
            save_strategy="steps",
            save_steps=config.save_steps,
            save_total_limit=config.save_total_limit,
            report_to=configure_wandb(config) + (["tensorboard"] if config.tensorboard else []),
            dataloader_pin_memory=cuda,
            use_cpu=not cuda,  # also what lets several CPU processes train together over gloo
            ddp_find_unused_parameters=False,  # every trainable parameter takes part in each step's loss
            use_vllm=config.use_vllm,
            vllm_mode=config.vllm_mode,
            vllm_gpu_memory_utilization=config.vllm_gpu_memory_utilization,
        )

    def reward_components(self) -> list[Component]:
        """The run's reward components: the rules, the --reward-fn functions and the --reward-model (loaded once)."""
        if self.components is None:
            reward_model = None
            if self.config.reward_model:
                model, tokenizer = self._load_reward_model(self.config.reward_model)
                reward_model = Component(REWARD_MODEL, make_reward_model_reward(model, tokenizer),
                                         float(self.reward_config["reward_model_weight"]))
            self.components = assemble_components(self.reward_config, self.config.reward_functions, reward_model)
        return self.components

    def _load_reward_model(self, name: str):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if name == TINY_MODEL:
            from tiny_model import ensure_tiny_reward_model

            name = str(ensure_tiny_reward_model())
        cuda = torch.cuda.is_available()
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=self.config.trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(
                name, num_labels=1, dtype=(torch.bfloat16 if self._use_bf16(cuda) else torch.float32),
                trust_remote_code=self.config.trust_remote_code,
                **({"device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}} if cuda else {}))
        except OSError as error:
            raise UserError(self._load_failure(name, error).replace("model ", "reward model ", 1)) from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        model.eval().requires_grad_(False)
        logger.info("reward model: %s (weight %s)", name, self.reward_config["reward_model_weight"])
        return model, tokenizer

    def sample(self, model, tokenizer, rows, per_prompt: int = 1) -> list[dict]:
        """`per_prompt` completions for each row's prompt, sampled as TRL samples (temperature, top_p, length cap)
        from a fixed seed. One dict per completion, grouped by prompt; `reward_input` is the completion in the shape
        TRL hands reward functions (text, or a one-message list for chat prompts)."""
        import torch

        prompts = list(rows["prompt"])
        if not prompts:
            return []
        chat = isinstance(prompts[0], list)
        if chat:
            # Rendered to text first: apply_chat_template pads on the tokenizer's side, and generation needs the left.
            texts = [tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
                     for prompt in prompts]
            encoded = tokenizer(texts, padding=True, padding_side="left", add_special_tokens=False,
                                return_tensors="pt")
        else:
            encoded = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
        encoded = {key: value.to(model.device) for key, value in encoded.items()}
        was_training = model.training
        model.eval()
        # A private RNG stream: samples are reproducible and training's own sampling is left untouched.
        with torch.no_grad(), torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            torch.manual_seed(self.config.seed)
            output = model.generate(**encoded, do_sample=True, temperature=self.config.temperature,
                                    top_p=self.config.top_p, top_k=0, max_new_tokens=self.config.max_completion_length,
                                    num_return_sequences=per_prompt, pad_token_id=tokenizer.pad_token_id)
        if was_training:
            model.train()
        samples = []
        for index, ids in enumerate(output[:, encoded["input_ids"].shape[1]:].tolist()):
            ended = tokenizer.eos_token_id in ids
            tokens = ids.index(tokenizer.eos_token_id) + 1 if ended else len(ids)
            text = tokenizer.decode(ids[:tokens], skip_special_tokens=True)
            samples.append({"prompt": prompts[index // per_prompt], "completion": text, "completion_tokens": tokens,
                            "truncated": not ended,
                            "reward_input": [{"role": "assistant", "content": text}] if chat else text})
        return samples

    def _probe_sampler(self, evaluation):
        """The generation logger's sampling: one scored completion for each of the first max_generation_samples
        evaluation prompts, the same prompts and seed at every evaluation."""
        rows = evaluation.select(range(min(self.config.max_generation_samples, len(evaluation))))
        columns = {name: list(rows[name]) for name in rows.column_names if name != "prompt"}

        def sample(model, tokenizer):
            samples = self.sample(model, tokenizer, rows)
            completions = [entry.pop("reward_input") for entry in samples]
            scores = score_completions(self.reward_components(), completions, prompts=list(rows["prompt"]),
                                       **columns)
            for entry, score in zip(samples, scores):
                entry["rewards"] = {name: None if value is None else round(value, 4) for name, value in score.items()}
            return samples

        return sample

    def _build_trainer(self, data, evaluate: bool):
        from alarms import make_alarm_callback
        from generation_logger import GenerationLoggingCallback

        components = self.reward_components()
        functions, weights = build_reward_functions(components, self.config.reward_function_type)
        args = self._trl_arguments(evaluate)
        args.reward_weights = weights
        callbacks = [make_metrics_callback()]
        if self.config.enable_generation_logging and self.config.max_generation_samples > 0:
            callbacks.append(GenerationLoggingCallback(self._probe_sampler(data["eval"]),
                                                       self.config.effective_generation_log_dir))
        callbacks.append(make_alarm_callback({c.name: c.weight for c in components},
                                             self.config.max_completion_length))
        self.interrupt = make_interrupt_callback()
        callbacks += [self.interrupt, *self.callbacks]
        trainer_class = staged_checkpoint_trainer_class()
        return trainer_class(model=self.model, reward_funcs=functions, args=args, train_dataset=data["train"],
                             eval_dataset=data["eval"] if evaluate else None, processing_class=self.tokenizer,
                             callbacks=callbacks)

    def prepare_data(self, dataset=None, write_outputs: bool = True):
        """Everything a run needs before TRL starts: the model, the data in its form and token budget, and (with
        `write_outputs`) the output dir with its log file and effective configs."""
        if self.model is None:
            import torch

            # Before the data is read, so a user on the wrong machine learns it first.
            check_model_fits_machine(self.config, torch.cuda.is_available())
        data = as_dataset_dict(dataset, self.config)
        if self.model is None:
            self.load_model()
        budget = self.config.max_seq_length - self.config.max_completion_length
        chat = uses_chat(self.config.prompt_format, self.tokenizer, self.config.model_name)
        truncate = self.config.prompt_overflow == "truncate"
        for split in ("train", "eval"):
            data[split] = fit_prompts(data[split], self.tokenizer, budget, split, chat, truncate)
        if write_outputs and is_main_process():
            log_path = attach_log_file(self.config.output_dir)
            logger.info("logging to %s", log_path)
            save_config_to_file(self.config, Path(self.config.output_dir) / CONFIG_FILE_NAME)
            # What a killed run left half-written; nothing reads it.
            shutil.rmtree(Path(self.config.output_dir) / STAGING_DIR, ignore_errors=True)
            write_json_atomic(Path(self.config.output_dir) / "reward_config.json", self.reward_config)
        return data

    def train(self, dataset=None):
        """Run GRPO. `dataset`: a DatasetDict (train/eval), a Dataset, the (data_loader, dataset) pair, or None to load
        the configured data. Raises TrainingInterrupted after saving a checkpoint when stopped by Ctrl-C / SIGTERM."""
        checkpoint = resolve_checkpoint(self.config)
        data = self.prepare_data(dataset)
        self.trainer = self._build_trainer(data, evaluate=len(data["eval"]) > 0)
        self.interrupt.install()
        try:
            result = self.trainer.train(resume_from_checkpoint=checkpoint)
        except BaseException:
            close_progress_bars(self.trainer)  # so an error message starts on a line of its own
            raise
        finally:
            self.interrupt.uninstall()
        if self.interrupt.signal_name:
            checkpoints = complete_checkpoints(self.config.output_dir)
            raise TrainingInterrupted(self.trainer.state.global_step, str(checkpoints[-1]) if checkpoints else None,
                                      self.interrupt.signal_number)
        return result

    def evaluate(self, dataset=None) -> dict:
        """Generate and score completions for the evaluation prompts; writes eval_metrics.json and a generation log."""
        if self.trainer is None:
            data = self.prepare_data(dataset)
            self.trainer = self._build_trainer(data, evaluate=True)
            state_file = Path(self.model_path or "", "trainer_state.json")
            if state_file.is_file():
                # A checkpoint's logs carry the step it was saved at.
                self.trainer.state.global_step = json.loads(state_file.read_text(encoding="utf-8"))["global_step"]
            metrics = self.trainer.evaluate(data["eval"])
        else:
            metrics = self.trainer.evaluate()
        metrics["global_step"] = self.trainer.state.global_step
        if is_main_process():
            write_json_atomic(Path(self.config.output_dir) / "eval_metrics.json", metrics)
        return metrics

    # output

    def save_model(self, output_dir: str | None = None) -> Path:
        """Save the trained weights (the LoRA adapter when LoRA is on), the tokenizer and a model card."""
        if self.model is None:
            raise UserError("save_model() needs a model: call load_model() and train() first")
        target = Path(output_dir or Path(self.config.output_dir) / FINAL_MODEL_DIR)
        if self.trainer is not None:
            self.trainer.save_model(str(target))
            if is_main_process():
                # The step and metric history travel with the model (--eval-only reads the step back).
                write_json_atomic(target / "trainer_state.json", dataclasses.asdict(self.trainer.state))
        elif is_main_process():
            self.model.save_pretrained(target)
        if is_main_process():
            self.tokenizer.save_pretrained(target)
            write_text_atomic(target / "README.md", self._model_card())
            logger.info("model saved to %s", target)
            if self.config.save_merged:
                self.save_merged(target, target / "merged")
        return target

    def save_merged(self, adapter_dir: Path, target: Path) -> Path | None:
        """The LoRA adapter merged into 16-bit base weights: a plain checkpoint any transformers code loads."""
        if not self.config.use_lora:
            logger.info("save_merged: the model was trained in full, so %s already holds merged weights", adapter_dir)
            return None
        if self.backend == "unsloth":
            self.model.save_pretrained_merged(str(target), self.tokenizer, save_method="merged_16bit")
        else:
            import torch
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            # The base is loaded afresh in 16-bit (never merged into 4-bit weights, which would round the update).
            base_name = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
            dtype = torch.bfloat16 if self._use_bf16(torch.cuda.is_available()) else torch.float32
            base = AutoModelForCausalLM.from_pretrained(base_name, dtype=dtype,
                                                        trust_remote_code=self.config.trust_remote_code)
            if getattr(base, "is_quantized", False):
                base = base.dequantize()
            merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
            merged.save_pretrained(target)
            self.tokenizer.save_pretrained(target)
        logger.info("merged 16-bit model saved to %s", target)
        return target

    def _model_card(self) -> str:
        config = self.config
        history = self.trainer.state.log_history if self.trainer is not None else []
        steps = self.trainer.state.global_step if self.trainer is not None else 0
        last_eval = next((entry for entry in reversed(history) if "eval_reward" in entry), {})
        last_train = next((entry for entry in reversed(history) if "reward" in entry), {})
        weights = ", ".join(f"{name} {self.reward_config[f'{name}_weight']}" for name in ("accuracy", "length",
                                                                                          "quality"))
        lines = [
            f"# GRPO fine-tune of {resolve_model_name(config.model_name)}",
            "",
            "Trained with GRPO (Group Relative Policy Optimization, Shao et al. 2024, arXiv:2402.03300) through "
            "TRL's GRPOTrainer.",
            "",
            f"- base model: `{self.model_path}`",
            f"- weights saved: {'LoRA adapter' if config.use_lora else 'full model'}",
            f"- data: `{config.custom_data or config.dataset_name}`",
            f"- rewards: {config.reward_function_type} ({config.reward_config_path or config.reward_config_name}: "
            f"{weights})",
            f"- optimizer steps: {steps}; group size {config.group_size}; learning rate {config.learning_rate}; "
            f"beta {config.beta}",
        ]
        if last_train:
            lines.append(f"- last training reward: {last_train['reward']:.4f}")
        if last_eval:
            lines.append(f"- last evaluation reward: {last_eval['eval_reward']:.4f}")
        lines += ["", "Load it with `AutoModelForCausalLM.from_pretrained(path)`"
                  + (" after `peft.AutoPeftModelForCausalLM` for the adapter." if config.use_lora else ".")]
        return "\n".join(lines) + "\n"


def run_training(config: GRPOConfig) -> dict:
    """The CLI's training run: train, save, write the report, and say where everything went."""
    import time

    from report import build_report

    start = time.monotonic()
    trainer = GRPOTrainer(config)
    trainer.train()
    final = trainer.save_model()
    state = trainer.trainer.state
    report = build_report(config.output_dir) if is_main_process() else None
    summary = {
        "steps": state.global_step,
        "seconds": round(time.monotonic() - start, 1),
        "model": str(final),
        "checkpoints": sorted(str(p) for p in Path(config.output_dir).glob("checkpoint-*")),
        "generation_logs": config.effective_generation_log_dir if config.enable_generation_logging else None,
        "log_file": str(Path(config.output_dir) / LOG_FILE_NAME),
        "config": str(Path(config.output_dir) / CONFIG_FILE_NAME),
        "report": str(report),
    }
    evaluations = [entry["eval_reward"] for entry in state.log_history if "eval_reward" in entry]
    if evaluations:
        summary["eval_reward"] = {"first": evaluations[0], "last": evaluations[-1], "evaluations": len(evaluations)}
    return summary


def run_evaluation(config: GRPOConfig) -> dict:
    """The CLI's --eval-only: evaluate a checkpoint, the output dir's saved model, or the configured model."""
    checkpoint = resolve_checkpoint(config)
    final = Path(config.output_dir) / FINAL_MODEL_DIR
    source = checkpoint or (str(final) if (final / "config.json").is_file() or (final / "adapter_config.json")
                            .is_file() else None)
    trainer = GRPOTrainer(config)
    from data_loader import load_grpo_dataset

    data = load_grpo_dataset(config)
    trainer.load_model(source)
    metrics = trainer.evaluate(data)
    metrics["model"] = trainer.model_path
    return metrics
