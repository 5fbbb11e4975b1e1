"""`--plan` and the start-up memory check: what a run needs, counted from the model's shape before any weight loads.

- device.py: the device planned for (a GPU by name or memory, or this CPU measured now);
- memory.py: one device's memory by part, and its peak;
- timing.py: seconds per optimizer step and per evaluation;
- fitting.py: the plan (memory and seconds together), what would fit, and the check at a run's start;
- sharding.py: what DDP, DeepSpeed ZeRO and FSDP divide among a run's processes, and gather back (the engine a run
  was launched under is grpo_tool/launch.py's);
- table.py: the table `--plan` prints and the plan.json it writes.
"""
