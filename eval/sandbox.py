"""Run untrusted Python (model answers, coding-problem tests) in a contained subprocess.

    from eval.sandbox import run_python
    result = run_python("print(sum(range(10)))", timeout_s=5)   # result.ok, result.stdout == "45\\n"

Every run gets:
- a fresh temporary directory as its working directory and HOME, removed afterwards (also on timeout);
- an environment built from scratch (PATH, LANG, HOME, TMPDIR): nothing of the parent's, so API keys and W&B
  keys are invisible; `python -I -S` ignores PYTHON* variables, the user site and site-packages (stdlib only);
- a wall-clock timeout (the whole process group is killed) plus an RLIMIT_CPU backstop;
- resource limits set with resource.setrlimit before the untrusted code runs: CPU seconds, address space,
  file size (stdout and stderr go to files, so a print loop is capped too), open files, processes;
- no network, by one of two methods, chosen once per process by probing this machine (`network_isolation()`):
  "netns": the child starts inside a fresh network namespace (`unshare --net`, or `unshare --net
  --map-root-user` when not root) that has no interface up, so every connect fails, loopback included;
  "audit-hook": where namespaces are not allowed (some containers), only the Python audit hook below refuses
  sockets. The audit hook is installed in both cases, as a second layer;
- when the parent runs as root and the interpreter is readable by `nobody`, the child drops to uid/gid 65534
  (`setpriv`), so it cannot write outside its directory either; `SandboxResult.dropped_privileges` says whether.

Why the limits are set in the child's first Python lines and not in a `preexec_fn`: graders run inside Ray
workers, which are multi-threaded, and CPython documents preexec_fn as unsafe there (the forked child can
deadlock); the limits still apply before a single line of the untrusted code runs.

The audit hook (refusing sockets, process creation, and file writes outside the sandbox directory) is a
tripwire, not a security boundary: ctypes could get past it. The boundary is the OS: the namespace, the
limits, the throwaway directory, the empty environment and, where possible, the unprivileged uid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

NOBODY = 65534
OUTPUT_CAP = 64 * 1024  # characters of stdout / stderr kept in the result


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    memory_mib: int = 1024  # address space
    file_mib: int = 16  # largest file the child may write (stdout and stderr included)
    open_files: int = 64
    processes: int = 32  # RLIMIT_NPROC; only enforced for a non-root child


@dataclass(frozen=True)
class SandboxResult:
    returncode: int | None  # None when killed on timeout
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    network_isolation: str  # "netns" or "audit-hook"
    dropped_privileges: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


# The child's first code: limits, audit hook, then the untrusted program. Kept as source text because it runs
# in the sandboxed interpreter, not here. argv: guard.py <config.json>.
GUARD = r'''
import json, os, resource, sys

cfg = json.load(open(sys.argv[1], encoding="utf-8"))
source = open(cfg["main"], encoding="utf-8").read()
MIB = 1024 * 1024
for name, value in (("RLIMIT_CPU", cfg["cpu_s"]), ("RLIMIT_AS", cfg["memory_mib"] * MIB),
                    ("RLIMIT_FSIZE", cfg["file_mib"] * MIB), ("RLIMIT_NOFILE", cfg["open_files"]),
                    ("RLIMIT_NPROC", cfg["processes"]), ("RLIMIT_CORE", 0)):
    resource.setrlimit(getattr(resource, name), (value, value))

ROOT = os.path.realpath(cfg["root"])
NETWORK = {"socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
           "socket.gethostbyname_ex", "socket.sendto", "socket.sendmsg"}
SPAWN = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
         "pty.spawn"}
PATH_WRITES = {"os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chmod", "os.chown", "os.symlink", "os.link",
               "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def inside(path):
    if isinstance(path, int):
        return True  # an already-open descriptor
    real = os.path.realpath(os.fsdecode(path))
    return real == ROOT or real.startswith(ROOT + os.sep)


def hook(event, args):
    if event in NETWORK:
        raise PermissionError(f"sandbox: network access refused ({event})")
    if event in SPAWN:
        raise PermissionError(f"sandbox: starting processes is refused ({event})")
    if event == "open" and args and args[0] is not None:
        mode, flags = args[1], args[2] if len(args) > 2 else 0
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
        if writes and not inside(args[0]):
            raise PermissionError(f"sandbox: writing outside the sandbox directory is refused ({args[0]!r})")
    elif event in PATH_WRITES and args and not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes))):
        raise PermissionError(f"sandbox: changing files outside the sandbox directory is refused ({event})")


sys.addaudithook(hook)
del cfg, hook
sys.argv = ["main.py"]
exec(compile(source, "main.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
'''


def _probe(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=20, env=_base_env("/"))
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@lru_cache(maxsize=1)
def _netns_prefix() -> tuple[str, ...]:
    """The argv prefix that starts the child in an empty network namespace, or () where the machine refuses."""
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if unshare is None:
        return ()
    prefix = (unshare, "--net") if os.geteuid() == 0 else (unshare, "--net", "--map-root-user")
    return prefix if _probe([*prefix, sys.executable, "-I", "-S", "-c", "pass"]) else ()


@lru_cache(maxsize=1)
def _drop_prefix() -> tuple[str, ...]:
    """setpriv to nobody when we are root and the interpreter still works as nobody (it may live under /root)."""
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if os.geteuid() != 0 or setpriv is None:
        return ()
    prefix = (setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    return prefix if _probe([*prefix, sys.executable, "-I", "-S", "-c", "import json, resource"]) else ()


def network_isolation() -> str:
    """How this machine keeps sandboxed code off the network: "netns" or "audit-hook"."""
    return "netns" if _netns_prefix() else "audit-hook"


def _base_env(home: str) -> dict[str, str]:
    """Built from nothing: no variable of the parent (keys, tokens, proxies) reaches the child."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(OUTPUT_CAP)


def run_python(source: str, timeout_s: float, files: dict[str, str] | None = None, limits: Limits | None = None,
               netns: bool | None = None) -> SandboxResult:
    """Run `source` as a Python program in the sandbox; `files` (name -> text) are written next to it.

    `netns=False` forces the audit-hook-only method (tests use it to check the fallback); None picks the best.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s={timeout_s}: must be > 0")
    limits = limits or Limits()
    use_netns = bool(_netns_prefix()) if netns is None else (netns and bool(_netns_prefix()))
    drop = _drop_prefix()
    root = Path(tempfile.mkdtemp(prefix="lrsweep-sandbox-"))
    guard_dir = Path(tempfile.mkdtemp(prefix="lrsweep-guard-"))  # outside root: the child cannot rewrite it
    try:
        work = root / "work"
        work.mkdir()
        for name, text in (files or {}).items():
            if Path(name).name != name:
                raise ValueError(f"sandbox file name {name!r} must be a plain file name")
            (work / name).write_text(text, encoding="utf-8")
        main = guard_dir / "main.py"
        main.write_text(source, encoding="utf-8")
        config = {"main": str(main), "root": str(work), "cpu_s": int(timeout_s) + 1, "memory_mib": limits.memory_mib,
                  "file_mib": limits.file_mib, "open_files": limits.open_files, "processes": limits.processes}
        (guard_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
        (guard_dir / "guard.py").write_text(GUARD, encoding="utf-8")
        if drop:
            for path in (root, work, *work.iterdir()):
                os.chown(path, NOBODY, NOBODY)
            for path in (guard_dir, *guard_dir.iterdir()):
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
        argv = [*(_netns_prefix() if use_netns else ()), *drop, sys.executable, "-I", "-S", "-B",
                str(guard_dir / "guard.py"), str(guard_dir / "config.json")]
        out_path, err_path = guard_dir / "stdout", guard_dir / "stderr"
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(argv, cwd=work, env=_base_env(str(work)), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True, close_fds=True)
            try:
                returncode: int | None = proc.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out, returncode = True, None
            finally:
                _kill_group(proc)
        return SandboxResult(returncode=returncode, stdout=_read(out_path), stderr=_read(err_path),
                             timed_out=timed_out, duration_s=round(time.monotonic() - start, 3),
                             network_isolation="netns" if use_netns else "audit-hook",
                             dropped_privileges=bool(drop))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(guard_dir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's whole session (anything it forked too) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
