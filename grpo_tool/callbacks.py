"""The tool's TrainerCallbacks: Ctrl-C handling, the metric log, the alarms. Heavy: imported only after
backend.prepare (see grpo_tool/__init__.py).

    callbacks = [MetricsLogCallback(), AlarmCallback({"accuracy": 0.4}, 256), InterruptCallback()]
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from alarms import find_alarms
from grpo_tool.console import compact_line

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
        if self.signal_name:
            control.should_save = True
            control.should_training_stop = True
        return control


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
    """Logs each kind of alarm once, when it first shows in the metric history."""

    def __init__(self, weights: dict[str, float], max_completion_length: int):
        self.weights = weights
        self.max_completion_length = max_completion_length
        self.raised: set[str] = set()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        for kind, text in find_alarms(state.log_history, self.weights, self.max_completion_length).items():
            if kind not in self.raised:
                self.raised.add(kind)
                logger.warning("alarm (step %d): %s", state.global_step, text)


def close_progress_bars(trainer) -> None:
    """So that an error message after a failure starts on a line of its own."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback):
            for bar in (callback.training_bar, callback.prediction_bar):
                if bar is not None:
                    bar.close()
