"""The one exception type for mistakes a user can make and fix.

Raise `UserError("what is wrong and how to fix it")` anywhere; `train_grpo.main()` prints it as a single
`error: ...` line and exits with status 2. Anything else is a bug in this tool and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's flags, files or machine, phrased so that the message alone says how to fix it."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped the tool; the message says what was kept. `main()` prints it and exits 130."""
