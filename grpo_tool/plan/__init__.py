"""`--plan` and the start-up memory check: what a run needs, counted from the model's shape before any weight loads.

- device.py: the device planned for (a GPU by name or memory, or this CPU measured now);
- memory.py: peak memory by part, seconds per step, what would fit, and the check at a run's start;
- sharding.py: what DDP, DeepSpeed ZeRO and FSDP divide among a run's processes, and gather back;
- table.py: the table `--plan` prints and the plan.json it writes.
"""
