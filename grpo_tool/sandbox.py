"""Running a completion's code where it can do no harm: bubblewrap (`bwrap`) by default, or `unsafe-local` (limits
only, trusted code only) when asked for by name.

What a program sees under bwrap: read-only /usr (with /bin, /lib, /lib64 as links into it), the Python interpreter's
own folders read-only, a private /tmp of TMP_BYTES and a /dev holding only null, zero, random and urandom, a fresh
/proc of its own processes, no network (a network namespace of its own: not even the host's 127.0.0.1), no
environment but PATH, HOME=/tmp and a locale, and nothing of the user's home, the run's files or /etc. Limits, set
inside before the program starts: CPU seconds, memory (address space), processes, file size, open files; a
wall-clock timeout; at the end the whole process tree goes (the program is PID 1's only child in a namespace of its
own, so when it ends or is killed, so is everything it started); output is kept up to OUTPUT_BYTES.

Processes are counted per user, so the program runs as a user of its own: under a user namespace (bwrap's own mode
for a user who is not root) the count is the namespace's; run by root, bwrap makes no user namespace and the launcher
drops to an unprivileged uid of its slot (SANDBOX_UIDS + slot), which no process outside uses.

    sandbox = Sandbox("unsafe-local", Limits(timeout=5))  # "bwrap" for code that is not yours; the same calls
    run = sandbox.run({"mode": "main", "code": "print(input()[::-1])"}, stdin=b"abc")
    assert run.status == 0 and run.stdout == b"cba\\n"
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from grpo_tool.errors import UserError

SANDBOXES = ("bwrap", "unsafe-local")  # docker: not offered (a daemon, root or a group, and seconds per container)
UNSAFE_LABEL = "trusted code only: no isolation, limits only"
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install "
                "bubblewrap; Arch: sudo pacman -S bubblewrap)")
SANDBOX_UIDS = 1_900_000_000  # run by root: the program's uid is this plus its slot (see module docstring)
OUTPUT_BYTES = 1 << 20  # stdout and stderr each, and any file the program writes
TMP_BYTES = 64 << 20  # the private /tmp
OPEN_FILES = 64
GRACE_SECONDS = 1.0  # CPU seconds beyond the wall-clock timeout: the wall clock ends a program, the CPU limit backs it
DEVICES = ("null", "zero", "random", "urandom")


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall-clock seconds for one program
    memory_mb: int = 1024  # address space of each process
    processes: int = 8  # processes and threads at once, the program's first thread included

    def rlimits(self) -> dict[str, int]:
        return {"RLIMIT_CPU": int(self.timeout + GRACE_SECONDS + 0.999), "RLIMIT_AS": self.memory_mb << 20,
                "RLIMIT_NPROC": self.processes, "RLIMIT_FSIZE": OUTPUT_BYTES, "RLIMIT_NOFILE": OPEN_FILES,
                "RLIMIT_CORE": 0}


@dataclass
class Run:
    """How one program ended: its exit status (negative: the signal that ended it; None: stopped at the timeout),
    what it wrote (each capped at OUTPUT_BYTES) and the lines of the judge's channel (tests mode)."""
    status: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    results: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def timed_out(self) -> bool:
        return self.status is None


# Runs inside the sandbox, as `python -I -c LAUNCHER payload_fd result_fd uid limits`: reads the job, drops to the
# slot's uid when it was started as root, sets the limits, then runs the program in this same process (one
# interpreter start per program). Mode "main": the program as __main__, reading stdin. Mode "tests": the program as
# a module (its `if __name__ == "__main__":` block does not run), then each test, each result written to the judge's
# channel with the job's nonce as soon as it is known, so a program killed at test 3 keeps tests 1 and 2.
LAUNCHER = r'''
import json, os, resource, sys
def _job():
    payload_fd, result_fd, uid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    chunks = []
    while True:
        chunk = os.read(payload_fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(payload_fd)
    if uid >= 0:
        os.setgroups([]); os.setgid(uid); os.setuid(uid)
    for name, value in json.loads(sys.argv[4]).items():
        resource.setrlimit(getattr(resource, name), (value, value))
    del sys.argv[1:]
    sys.argv[0] = "main.py"
    return json.loads(b"".join(chunks)), result_fd
_job, _result_fd = _job()
if _job["mode"] == "main":
    os.close(_result_fd)
    _code = compile(_job.pop("code"), "main.py", "exec")
    del _job, _result_fd
    exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
else:
    def _tests(job, fd, write=os.write, kind=type):
        nonce = job["nonce"].encode()
        def say(text):
            write(fd, nonce + b" " + text.encode() + b"\n")
        program = {"__name__": "solution", "__builtins__": __builtins__}
        try:
            exec(compile(job["setup"], "setup.py", "exec"), program)
            exec(compile(job["code"], "solution.py", "exec"), program)
        except BaseException as error:
            say("program-failed " + kind(error).__name__)
            return
        space = program
        if job["checks"] is not None:
            space = {"__name__": "checks", "__builtins__": __builtins__}
            try:
                exec(compile(job["checks"], "checks.py", "exec"), space)
                space["candidate"] = program[job["entry_point"]]
            except BaseException as error:
                say("checks-failed " + kind(error).__name__)
                return
        for index, (source, counts) in enumerate(job["steps"]):
            try:
                exec(compile(source, "test.py", "exec"), space)
            except BaseException as error:
                if counts:
                    say("fail %d %s" % (index, kind(error).__name__))
                continue
            if counts:
                say("pass %d" % index)
        say("done")
    _tests(_job, _result_fd)
    del _job, _result_fd, _tests
'''


def interpreter_folders() -> list[str]:
    """The folders the interpreter needs: its installation and, in a virtual environment, the environment. One that
    is the home folder or holds it would show the programs everything in it: refused."""
    folders = []
    home = os.path.realpath(os.path.expanduser("~"))
    for folder in (sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parent.parent)):
        folder = os.path.realpath(folder)
        if folder in folders or folder == "/usr" or folder.startswith("/usr/"):
            continue
        if folder == "/" or home == folder or home.startswith(folder.rstrip("/") + "/"):
            raise UserError(f"code_tests would have to show its programs {folder}, which holds your home folder, to "
                            "give them this Python: run the tool from a Python installed elsewhere (a virtual "
                            "environment, conda or pyenv) or set code_tests.sandbox to \"unsafe-local\" "
                            f"({UNSAFE_LABEL})")
        folders.append(folder)
    return folders


def bwrap_arguments(as_root: bool) -> list[str]:
    """The sandbox's view, the same for every program (see the module docstring)."""
    arguments = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--hostname", "sandbox",
                 "--unshare-cgroup-try",
                 "--die-with-parent", "--new-session", "--clearenv",
                 "--ro-bind", "/usr", "/usr"]
    for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        target = os.path.realpath(f"/{link}")
        if os.path.islink(f"/{link}") and target.startswith("/usr/"):
            arguments += ["--symlink", target.removeprefix("/"), f"/{link}"]
        elif os.path.isdir(f"/{link}"):
            arguments += ["--ro-bind", f"/{link}", f"/{link}"]
    if os.path.isfile("/etc/ld.so.cache"):
        arguments += ["--perms", "0755", "--dir", "/etc", "--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    arguments += ["--proc", "/proc", "--perms", "0755", "--size", "65536", "--tmpfs", "/dev"]
    for device in DEVICES:
        arguments += ["--dev-bind", f"/dev/{device}", f"/dev/{device}"]
    arguments += ["--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp", "--chdir", "/tmp"]
    made = set()
    for folder in interpreter_folders():
        parts = Path(folder).parts
        for depth in range(2, len(parts)):  # readable parents (bwrap would give a parent of /root its 0700)
            parent = str(Path(*parts[:depth]))
            if parent not in made and not parent.startswith("/usr"):
                arguments += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        arguments += ["--ro-bind", folder, folder]
    if not as_root:
        arguments += ["--unshare-user"]
    for name, value in program_environment().items():
        arguments += ["--setenv", name, value]
    return arguments


def program_environment() -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8",
            "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "USER": "sandbox"}


def local_rank() -> int:
    """This process's place among a launcher's processes on this machine: each has uids of its own (as root)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Sandbox:
    """Where programs run, with their limits; `run` is safe to call from several threads (each takes a slot)."""

    def __init__(self, kind: str = "bwrap", limits: Limits | None = None):
        if kind not in SANDBOXES:
            raise UserError(f"code_tests.sandbox={kind!r}: use \"bwrap\" (bubblewrap, the default) or "
                            f"\"unsafe-local\" ({UNSAFE_LABEL}); docker is not offered")
        self.kind = kind
        self.limits = limits or Limits()
        self.as_root = kind == "bwrap" and os.geteuid() == 0
        self.slots = list(range(workers() * 4))
        self.lock = threading.Lock()
        if kind == "bwrap":
            if shutil.which("bwrap") is None:
                raise UserError(f"code_tests runs the completions' code in bubblewrap, which this machine lacks: "
                                f"{INSTALL_HINT}; or set code_tests.sandbox to \"unsafe-local\" ({UNSAFE_LABEL})")
            self.prefix = bwrap_arguments(self.as_root)
            trial = self.run({"mode": "main", "code": "print('ready')"}, timeout=30)
            if trial.status != 0 or trial.stdout != b"ready\n":
                said = (trial.stderr or trial.stdout).decode(errors="replace").strip().splitlines()
                raise UserError(f"bubblewrap is installed but could not start a sandbox here ("
                                f"{said[-1] if said else f'status {trial.status}'}): it needs user namespaces, which "
                                "some containers and kernels turn off (in Docker: --security-opt seccomp=unconfined, "
                                "or run this on the host); or set code_tests.sandbox to \"unsafe-local\" "
                                f"({UNSAFE_LABEL})")
        else:
            self.prefix = []

    def describe(self) -> str:
        limits = self.limits
        where = "bwrap" if self.kind == "bwrap" else f"unsafe-local ({UNSAFE_LABEL})"
        return (f"{where}; {limits.timeout:g} s, {limits.memory_mb} MB and {limits.processes} processes per program, "
                f"{workers()} at once")

    def run(self, job: dict, stdin: bytes | None = None, timeout: float | None = None, tag: str = "grpo-sandbox"
            ) -> Run:
        """One program, to its end or its timeout; `job` is the launcher's (see LAUNCHER). `tag` ends the command
        line, where a look at /proc finds the program and anything it left."""
        timeout = self.limits.timeout if timeout is None else timeout
        with self.lock:
            slot = self.slots.pop(0) if self.slots else 0
        files = [tempfile.TemporaryFile() for _ in range(5)]  # stdin, stdout, stderr, payload, results
        started = time.monotonic()
        try:
            stdin_file, stdout_file, stderr_file, payload_file, result_file = files
            stdin_file.write(stdin or b"")
            payload_file.write(json.dumps(job).encode())
            for file in (stdin_file, payload_file):
                file.flush()
                file.seek(0)
            payload_fd, result_fd = payload_file.fileno(), result_file.fileno()
            uid = SANDBOX_UIDS + 1000 * local_rank() + slot if self.as_root else -1
            limits = json.dumps(Limits(timeout, self.limits.memory_mb, self.limits.processes).rlimits())
            command = [*self.prefix, sys.executable, "-I", "-c", LAUNCHER, str(payload_fd), str(result_fd), str(uid),
                       limits, tag]
            unsafe = self.kind != "bwrap"
            with tempfile.TemporaryDirectory() if unsafe else contextlib.nullcontext() as folder:
                process = subprocess.Popen(command, stdin=stdin_file, stdout=stdout_file, stderr=stderr_file,
                                           pass_fds=(payload_fd, result_fd), start_new_session=True,
                                           env=program_environment() if unsafe else {}, cwd=folder)
                try:
                    status = wait_for(process, timeout)
                finally:
                    end_group(process)
            outputs = []
            for file in (stdout_file, stderr_file, result_file):
                file.seek(0)
                outputs.append(file.read(OUTPUT_BYTES))
            results = outputs[2].decode(errors="replace").splitlines()
            return Run(status, outputs[0], outputs[1], results, time.monotonic() - started)
        finally:
            for file in files:
                file.close()
            with self.lock:
                self.slots.append(slot)

    def run_all(self, jobs: list[tuple[dict, bytes | None]]) -> list[Run]:
        """Programs run in parallel across the machine's cores; results in the order given."""
        if len(jobs) <= 1:
            return [self.run(job, stdin) for job, stdin in jobs]
        with concurrent.futures.ThreadPoolExecutor(min(workers(), len(jobs))) as pool:
            return list(pool.map(lambda pair: self.run(*pair), jobs))


def wait_for(process: subprocess.Popen, timeout: float) -> int | None:
    """The exit status, or None at the timeout. Popen.wait(timeout) polls with growing sleeps (up to 50 ms, most of a
    short program's time); a pidfd wakes exactly when the process ends."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # Linux before 5.3
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    return process.wait() if ready else None


def end_group(process: subprocess.Popen) -> None:
    """The program and everything it started: bwrap's namespace ends with its first process; unsafe-local can only
    kill the process group (a program that leaves it survives: that is why it is unsafe)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


# The containment check: known-hostile programs, each of which must stay inside. A program reports what it managed;
# the check looks outside for what it tried (a file, a connection, a process left running).

@dataclass(frozen=True)
class Attempt:
    name: str
    code: str


def hostile_programs(outside: Path, secret: Path, port: int, marker: str) -> list[Attempt]:
    return [
        Attempt("file written outside", f"""
import os
for path in [{str(outside / 'escaped')!r}, {os.path.expanduser('~/' + marker)!r}, '/tmp/../{marker}',
             {os.path.join(os.getcwd(), marker)!r}]:
    try:
        with open(path, 'w') as f: f.write('x')
    except OSError: pass
"""),
        Attempt("file outside read", f"""
for path in [{str(secret)!r}, '/proc/1/environ', '/etc/shadow', '/etc/passwd', {os.path.expanduser('~/.bashrc')!r}]:
    try: print(open(path, errors='replace').read())
    except OSError: pass
"""),
        Attempt("network connection", f"""
import socket
for host in ['127.0.0.1', {socket.gethostname()!r}, '1.1.1.1']:
    try:
        socket.create_connection((host, {port}), timeout=0.5).sendall(b'{marker}')
        print('connected')
    except OSError: pass
"""),
        Attempt("fork bomb", """
import os, time
while True:
    try: os.fork()
    except OSError: time.sleep(0.01)
"""),
        Attempt("endless loop", "while True: pass"),
        Attempt("memory bomb", """
blocks = []
try:
    while True: blocks.append(bytearray(64 << 20))
except MemoryError: pass
print(len(blocks) * 64)
"""),
        Attempt("process left running", """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(30)
    os._exit(0)
"""),
        Attempt("output flood", "import sys\nwhile True: sys.stdout.write('x' * 65536)"),
    ]


def marked_processes(marker: str) -> list[int]:
    """Processes whose command line holds the marker (the hostile programs carry it in their source)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def containment_check(sandbox: Sandbox, only: tuple[str, ...] = ()) -> list[str]:
    """The hostile programs that got out (empty: all contained). Each runs for at most 2 s. `only`: these of them
    (by name), for a sandbox that cannot be trusted with the others (unsafe-local run by root has no process limit)."""
    marker = "grpo-escape-" + secrets.token_hex(6)
    with tempfile.TemporaryDirectory(prefix="grpo-containment-") as folder:
        outside, secret = Path(folder), Path(folder) / "secret.txt"
        secret.write_text(marker + "-secret")
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        attempts = [attempt for attempt in hostile_programs(outside, secret, server.getsockname()[1], marker)
                    if not only or attempt.name in only]
        jobs = [({"mode": "main", "code": attempt.code}, None) for attempt in attempts]
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            runs = list(pool.map(lambda pair: sandbox.run(pair[0], pair[1], timeout=2.0, tag=marker), jobs))
        escaped = []
        for attempt, run in zip(attempts, runs):
            output = run.stdout + run.stderr
            if attempt.name == "file written outside":
                written = [path for path in (outside / "escaped", Path(os.path.expanduser("~/" + marker)),
                                             Path("/tmp") / marker, Path(os.getcwd()) / marker) if path.exists()]
                for path in written:
                    path.unlink(missing_ok=True)
                if written:
                    escaped.append(f"{attempt.name} ({written[0]})")
            elif attempt.name == "file outside read" and (marker.encode() in output or b"root:" in output):
                escaped.append(attempt.name)
            elif attempt.name == "network connection":
                try:
                    server.accept()[0].close()
                    escaped.append(attempt.name)
                except BlockingIOError:
                    if b"connected" in output:
                        escaped.append(attempt.name)
            elif attempt.name in ("endless loop", "fork bomb", "output flood") and run.seconds > 6.0:
                escaped.append(f"{attempt.name} (ran {run.seconds:.0f} s past a 2 s timeout)")
            elif attempt.name == "memory bomb":
                got = output.split()
                if got and got[-1].isdigit() and int(got[-1]) > sandbox.limits.memory_mb:
                    escaped.append(f"{attempt.name} ({int(got[-1])} MB taken)")
            elif attempt.name == "output flood" and len(run.stdout) > OUTPUT_BYTES:
                escaped.append(attempt.name)
        server.close()
        time.sleep(0.1)
        if left := marked_processes(marker):
            escaped.append(f"process left running ({len(left)} after the call)")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        return escaped


def checked_sandbox(kind: str, limits: Limits) -> tuple[Sandbox, str]:
    """A sandbox that held every hostile program, and the one line that says so; refused when one got out."""
    sandbox = Sandbox(kind, limits)
    if kind != "bwrap":
        return sandbox, f"code sandbox: {sandbox.describe()}; no containment check (nothing is contained)"
    started = time.monotonic()
    escaped = containment_check(sandbox)
    if escaped:
        raise UserError(f"the code sandbox let {len(escaped)} of 8 hostile programs out ({'; '.join(escaped)}); "
                        "nothing was trained: this machine's bubblewrap cannot be trusted with generated code")
    return sandbox, (f"code sandbox: {sandbox.describe()}; 8 of 8 hostile programs contained (file written outside, "
                     "file read outside, network, fork bomb, endless loop, memory bomb, process left running, output "
                     f"flood) in {time.monotonic() - started:.1f} s")
