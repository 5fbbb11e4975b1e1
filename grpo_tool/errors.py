"""The one exception type for mistakes a user can make and fix.

Raise `UserError("what is wrong and how to fix it")` anywhere; `train_grpo.main()` prints it as a single
`error: ...` line and exits with status 2. Anything else is a bug in this tool and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's flags, files or machine, phrased so that the message alone says how to fix it."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped the tool; the message says what was kept. `main()` prints it and exits 130."""


def near_miss(word: str, known) -> str:
    """' (did you mean X?)' for the closest known spelling, or '': the one way every message suggests a fix."""
    import difflib  # small; only an error ever needs it

    match = difflib.get_close_matches(word, list(known), n=1, cutoff=0.75)
    return f" (did you mean {match[0]!r}?)" if match else ""
