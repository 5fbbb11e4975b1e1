"""The tool's TrainerCallbacks: Ctrl-C handling, the metric log, the alarms. Heavy: imported only after
backend.prepare (see grpo_tool/__init__.py).

    from transformers import TrainerControl, TrainingArguments
    callbacks = [MetricsLogCallback(), AlarmCallback(weights={"accuracy": 0.4}), InterruptCallback()]
    callbacks[2].handle(signal.SIGINT, None)    # Ctrl-C during a step
    control = callbacks[2].on_step_end(TrainingArguments(use_cpu=True, report_to=[]), None, TrainerControl())
    assert control.should_save and control.should_training_stop    # a checkpoint at the step's end, then stop
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from grpo_tool.alarms import eval_logs, find_alarms
from grpo_tool.console import compact_line
from grpo_tool.json_files import write_json_atomic
from grpo_tool.outputs import ALARMS_FILE, read_json

logger = logging.getLogger(__name__)
metrics_logger = logging.getLogger("grpo.metrics")


class InterruptCallback(TrainerCallback):
    """Ctrl-C / SIGTERM become 'save a checkpoint at the end of this step and stop'; a second one stops at once."""

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
        if self.agreed_signal(args):
            control.should_save = True
            control.should_training_stop = True
        return control

    def agreed_signal(self, args) -> int:
        """The signal that stops the run, agreed by every process at the end of each step. Ctrl-C on one machine
        reaches only that machine's processes (torch's launcher hands it to its own), so they all stop at the same
        step and save one checkpoint together, instead of the others waiting for them in the next step's collective."""
        number = self.signal_number or 0
        if args.world_size > 1:
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                flag = torch.tensor([number], device=args.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                number = int(flag.item())
        if number and not self.signal_name:  # another process's signal
            self.signal_name, self.signal_number = signal.Signals(number).name, number
        return number


class ConsoleProgressCallback(ProgressCallback):
    """transformers' progress bar, with one compact line per log in place of its dict of every metric (the log file
    has those)."""

    def __init__(self, components: list[str]):
        super().__init__()
        self.components = components

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        line = compact_line(logs, state.global_step, state.max_steps, self.components)
        if line is not None:
            tqdm.write(line, file=sys.stderr)  # beside the bar, on its own line


class MetricsLogCallback(TrainerCallback):
    """Copies each metrics dict into grpo_training.log (the console shows a compact line)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            metrics_logger.info("step %d: %s", state.global_step,
                                ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in logs.items()))


class AlarmCallback(TrainerCallback):
    """Judges the run after each optimizer step (trainer_hooks.StepRecords hands it the step's record, then calls
    `judge`) and raises each alarm once, when it first shows: a warning in the log, and a record in
    {output_dir}/alarms.json (id, step, message), rewritten whole at each new alarm. A resumed run starts from the
    records already there and the step records of its checkpoint, so an alarm keeps the step it was first raised at.

    `settings` are find_alarms' keyword arguments: the run's weights, max_completion_length, generation log dir,
    zero_variance_groups, learning rate, temperature, beta and max_grad_norm."""

    def __init__(self, **settings):
        self.settings = settings
        self.records: list[dict] = []
        self.steps: list[dict] = []

    @property
    def last_step(self) -> int:
        return self.steps[-1].get("step", 0) if self.steps else 0

    def add(self, record: dict) -> None:
        self.steps.append(record)

    def on_train_begin(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / ALARMS_FILE
        resumed = state.global_step > 0 and path.is_file()
        self.records = [record for record in (read_json(path, []) if resumed else []) if isinstance(record, dict)]
        if state.global_step == 0:
            self.steps = []  # a fresh run (a resumed one has its checkpoint's step records)
        if state.is_world_process_zero and not resumed:
            write_json_atomic(path, [])  # present from the start: no alarm yet is an answer too

    def judge(self, args, state) -> None:
        """The step records and the evaluations so far, judged; each new alarm said and written."""
        if not state.is_world_process_zero:
            return
        history = sorted(self.steps + eval_logs(state.log_history), key=lambda entry: entry.get("step", 0))
        raised = {record.get("id") for record in self.records}
        new = [(kind, text) for kind, text in find_alarms(history, **self.settings).items() if kind not in raised]
        for kind, text in new:
            self.records.append({"id": kind, "step": state.global_step, "message": text})
            logger.warning("alarm %s (step %d): %s", kind, state.global_step, text)
        if new:
            write_json_atomic(Path(args.output_dir) / ALARMS_FILE, self.records)


def close_progress_bars(trainer) -> None:
    """So that an error message after a failure starts on a line of its own."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback):
            for bar in (callback.training_bar, callback.prediction_bar):
                if bar is not None:
                    bar.close()
