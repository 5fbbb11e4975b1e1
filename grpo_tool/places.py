"""Where the tool writes: each folder checked before any model loads, and the one translation of a failure to write
(a read-only mount, a folder without permission, a full disk) into a line a person can act on.

    assert unwritable("output_dir", "runs/first") is None    # or "output_dir runs/first: cannot write in ..."
    assert not Path("runs").exists()    # checked by writing in the nearest existing folder, which keeps nothing
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

# Why a write failed, in words, by errno: the failures that are the machine's, not a bug of the tool.
WRITE_FAILURES = {errno.EROFS: "a read-only file system", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted", errno.ENOSPC: "no space left on the device",
                  errno.EDQUOT: "the disk quota is used up",
                  errno.EBUSY: "it is in use (a mount point, or held by another program)"}
FULL = (errno.ENOSPC, errno.EDQUOT)
# torch.save reports a full disk as "unexpected pos"; safetensors and tokenizers name the OS error in their text.
FULL_WORDS = ("no space left", "os error 28", "disk quota exceeded", "storagefull", "file write failed")
NEARLY_FULL_BYTES = 16 * 2**20  # less than this free after a failed save: the save failed for want of space


def nearest_existing(path: Path) -> Path:
    """`path`, or the closest of its parents that exists (where a mkdir of `path` would have to write)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def unwritable(name: str, folder: str | os.PathLike, fix: str = "give a folder you can write to") -> str | None:
    """Why the tool cannot create files in `folder` (or create it), or None. Tried for real, with a file made and
    removed, since only that answers for read-only mounts, ACLs and root alike (os.access says yes to root)."""
    existing = nearest_existing(Path(folder))
    if not existing.is_dir():
        return None  # a file in the way: config.path_problems names it
    try:
        handle, probe = tempfile.mkstemp(prefix=".grpo-write-check-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        return (f"{name} {folder}: cannot write in {existing} ({reason(error)}); {fix}"
                + (", or free space" if error.errno in FULL else ""))
    return None


def reason(error: OSError) -> str:
    return WRITE_FAILURES.get(error.errno, error.strerror or type(error).__name__)


def causes(error: BaseException):
    """The error and those it was raised from or during."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def out_of_space(error: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """Whether a failure was a full disk: said by the error (its errno or its text), or, for a save into `folder` by
    a library that does not say (torch.save), by almost nothing being free there now."""
    for cause in causes(error):
        if isinstance(cause, OSError) and cause.errno in FULL:
            return True
        if any(word in str(cause).lower() for word in FULL_WORDS):
            return True
    if folder is None:
        return False
    try:
        return shutil.disk_usage(nearest_existing(Path(folder))).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def write_failure(error: BaseException) -> str | None:
    """One line for an OSError that is the machine's doing (read-only, permission, full disk), naming the path; None
    for any other error, which is a bug and keeps its traceback."""
    cause = next((c for c in causes(error) if isinstance(c, OSError) and c.errno in WRITE_FAILURES), None)
    if cause is None:
        return None
    where = cause.filename or "a file"
    if cause.errno in FULL:
        return f"no space left on {Path(where).parent if cause.filename else 'the disk'} (writing {where}): free space"
    return f"cannot write {where}: {reason(cause)}; give a folder you can write to"
