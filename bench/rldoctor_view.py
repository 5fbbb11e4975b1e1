"""rldoctor's findings on a run of the tool, for bench/alarms.py: run with the Python of a scratch venv that has
rldoctor 0.2.0 (it imports as rl_doctor), never by the tool itself.

    python -m venv /tmp/rldvenv && /tmp/rldvenv/bin/pip install rldoctor==0.2.0
    /tmp/rldvenv/bin/python bench/rldoctor_view.py OUTPUT_DIR/checkpoint-N/trainer_state.json

It reads the log history the run logged (at its --logging-steps), merges each step's training and evaluation logs,
keeps one held-out score per evaluation (eval_reward first: rldoctor would take whichever eval key it meets first),
runs every detector, and prints one line of JSON: {"findings": [{"detector", "step", "message"}]}. A finding counts
when its severity is WARNING or more, as in rldoctor's own selftest; its step is the first logged step at which the
detector fires on the history up to there (rldoctor's findings carry no step).
"""

from __future__ import annotations

import json
import math
import sys

MAX_REPLAYS = 120

# TRL eval entries hold eval_-prefixed copies of every training metric.
# rldoctor maps eval_<something containing "reward"/"acc"/...> to its held-out
# `eval_score`, first writer wins, so with several such keys which one wins
# depends on dict order (eval_rewards/<fn>/mean could beat eval_reward).
# Pin it: pick ONE key per eval record (this priority list first, then any
# other key rldoctor itself would read as eval_score, per-reward-function keys
# last) and drop every other eval key.
EVAL_SCORE_KEYS = ("eval_reward", "eval_score", "eval/reward", "eval/score",
                   "eval_accuracy", "eval/accuracy")
# Summary record Trainer appends at the end of train(): not a training step.
SUMMARY_KEYS = ("train_runtime", "train_loss", "train_samples_per_second",
                "train_steps_per_second", "total_flos")


def _num(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


_EVAL_PREFIXES = ("eval_", "eval/", "val/", "val_", "val-core/", "val-aux/",
                  "test/", "test_", "validation/", "validation_")


def _is_eval(k):
    return k.lower().startswith(_EVAL_PREFIXES)


def _eval_rank(k):
    """Lower is preferred; None = not a held-out score according to rldoctor."""
    if k in EVAL_SCORE_KEYS:
        return EVAL_SCORE_KEYS.index(k)
    from rl_doctor import aliases
    if aliases.resolve(k) != "eval_score":
        return None
    per_fn = k.split("/", 1)[0].lower().endswith("rewards") and k.count("/") >= 2
    return 200 if per_fn else 100


def adapt(log_history):
    """TRL log_history -> list of per-step dicts in the shape rldoctor ingests."""
    by_step = {}
    order = []
    for idx, rec in enumerate(log_history or []):
        if not isinstance(rec, dict):
            continue
        if any(k in rec for k in SUMMARY_KEYS):
            continue
        step = _num(rec.get("step"))
        if step is None or not math.isfinite(step):
            step = float(idx)
        out = by_step.get(step)
        if out is None:
            out = by_step[step] = {"step": step}
            order.append(step)
        eval_cands = []
        for k, v in rec.items():
            if k in ("step", "epoch") or not isinstance(k, str):
                continue
            if _num(v) is None:
                continue  # strings, lists, None ...
            if _is_eval(k):
                if _num(v) is not None and math.isfinite(_num(v)):
                    eval_cands.append((_eval_rank(k), k, v))
                continue
            out.setdefault(k, v)  # train + eval records of one step merge
        eval_cands = [c for c in eval_cands if c[0] is not None]
        if eval_cands:
            out.setdefault("eval_score", min(eval_cands)[2])
    records = [by_step[s] for s in sorted(order)]

    # TRL logs rewards/<fn>/mean per reward function.  A function that *is*
    # the aggregate (e.g. a `total_reward` wrapper) would look to rldoctor's
    # reward_composition check like a component; drop one that equals
    # `reward` wherever both are logged.
    comp_keys = {k for r in records for k in r
                 if k.startswith("rewards/") and k.endswith("/mean") and k.count("/") == 2}
    if len(comp_keys) > 1:
        for k in comp_keys:
            pairs = [(_num(r[k]), _num(r["reward"])) for r in records if k in r and "reward" in r]
            if pairs and all(a is not None and b is not None and
                             (a == b or (math.isfinite(a) and math.isfinite(b)
                                         and abs(a - b) <= 1e-6 * max(1.0, abs(b))))
                             for a, b in pairs):
                for r in records:
                    r.pop(k, None)
    return records


def config_from(state):
    cfg = {k: v for k, v in state.items()
           if k != "log_history" and isinstance(v, (int, float, str, bool))}
    cfg.setdefault("algorithm", "grpo")  # TRL GRPOTrainer run
    return cfg


def main(argv):
    args = list(argv[1:])
    min_sev_name = "warning"
    if "--min-severity" in args:
        i = args.index("--min-severity")
        min_sev_name = args[i + 1].lower()
        del args[i:i + 2]
    if len(args) != 1:
        print("usage: rld_adapter.py PATH/trainer_state.json [--min-severity info|warning|critical]",
              file=sys.stderr)
        return 2

    from rl_doctor import diagnose, run_from_records
    from rl_doctor.detectors.base import Severity

    min_sev = {"info": Severity.INFO, "warning": Severity.WARNING,
               "critical": Severity.CRITICAL}[min_sev_name]

    with open(args[0], encoding="utf-8") as fh:
        state = json.load(fh)
    history = state.get("log_history") if isinstance(state, dict) else state
    records = adapt(history if isinstance(history, list) else [])
    config = config_from(state if isinstance(state, dict) else {})

    def fired(recs):
        try:
            run = run_from_records(recs, config=config, name="trl", source="trainer_state")
            dx = diagnose(run)
        except Exception:  # noqa: BLE001 - a prefix too short for a detector: nothing fired yet
            return {}
        return {f.detector: f for f in dx.findings if f.severity >= min_sev}

    findings = []
    final = fired(records) if records else {}
    if final:
        # First step at which each fired detector fires on a prefix of the history.
        first = {}
        n = len(records)
        stride = max(1, math.ceil(n / MAX_REPLAYS))
        cuts = list(range(stride, n, stride)) + [n]
        for cut in cuts:
            todo = [d for d in final if d not in first]
            if not todo:
                break
            got = fired(records[:cut])
            for d in todo:
                if d in got:
                    first[d] = records[cut - 1]["step"]
        for name, f in final.items():
            step = first.get(name)
            if step is not None:
                step = int(step) if float(step).is_integer() else step
            msg = f"[{f.severity.label}] {f.title}: {f.summary}"
            findings.append({"detector": name, "step": step, "message": msg})

    print(json.dumps({"findings": findings}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
