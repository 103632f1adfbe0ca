"""A real single-node Slurm (munged, slurmctld, slurmd) started by hand under one folder, for tests and CI.

No systemd, no cgroups and nothing under /etc: every daemon gets its config, socket, state, spool, pid and
log file under `root`, its own free ports and its own munge socket, so it cannot collide with a system
Slurm or another test's. Clients find it through SLURM_CONF (see `env()`). Needs Debian's `slurm-wlm`
and `munge` (`apt-get install -y slurm-wlm munge`).

    python tests/support/slurm_cluster.py /tmp/myslurm    # start one by hand; Ctrl-C stops it
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")
PARTITION = "debug"


class SlurmStartError(RuntimeError):
    """A daemon did not come up; the message carries its log."""


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> dict[str, str]:
    """This machine as slurmd sees it (`slurmd -C`): CPUs, sockets, cores, threads, RealMemory."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return {k: fields[k] for k in keep if k in fields}


def slurm_conf(root: Path, node: str, hardware: dict[str, str], ctld_port: int, slurmd_port: int) -> str:
    user = getpass.getuser()
    hw = " ".join(f"{k}={v}" for k, v in hardware.items())
    return f"""\
# Single-node test cluster written by tests/support/slurm_cluster.py
ClusterName=lrsweep-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
# cred_expire also delays a requeued job's restart (default 120 s)
AuthInfo=socket={root}/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: processes are tracked by parent pid, tasks are not bound (works in a plain container)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# finished jobs stay visible to `scontrol show job` for 10 min (there is no accounting database)
MinJobAge=600
KillWait=10
InactiveLimit=0
NodeName={node} NodeAddr=127.0.0.1 {hw} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """munged + slurmctld + slurmd for this host, all under `root`; `start()` waits for an idle node."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.node = socket.gethostname().split(".")[0]  # `hostname -s`: what slurmd calls itself
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self) -> dict[str, str]:
        """The environment for Slurm clients (sbatch, squeue, ...) to talk to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else f"(no {path})"

    def _spawn(self, name: str, args: list[str]) -> None:
        out = open(self.root / f"{name}.stdout", "w")  # noqa: SIM115 -- kept open for the daemon's life
        self.procs[name] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                            start_new_session=True)

    def _fail(self, what: str) -> SlurmStartError:
        logs = "\n".join(
            f"--- {n}.log ---\n{self.log(n)}\n--- {n}.stdout ---\n"
            + ((self.root / f"{n}.stdout").read_text(errors="replace")[-2000:]
               if (self.root / f"{n}.stdout").exists() else "")
            for n in ("munged", "slurmctld", "slurmd")
        )
        return SlurmStartError(f"{what}\n{logs}")

    def _wait(self, what: str, ready, timeout: float) -> None:  # noqa: ANN001 -- a no-arg predicate
        deadline = time.time() + timeout
        while time.time() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise self._fail(f"{', '.join(dead)} exited (code {self.procs[dead[0]].returncode}) while "
                                 f"waiting for {what}")
            if ready():
                return
            time.sleep(0.5)
        raise self._fail(f"timed out after {timeout:.0f}s waiting for {what}")

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        missing = missing_binaries()
        if missing:
            raise SlurmStartError(f"Slurm binaries not found: {missing}; install with "
                                  "`apt-get update && apt-get install -y slurm-wlm munge` (as root)")
        for sub in ("munge", "state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
            key.chmod(0o400)
        self.conf.write_text(slurm_conf(self.root, self.node, node_hardware(), free_port(), free_port()))
        sock = self.root / "munge" / "munge.socket"
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
                               f"--pid-file={self.root}/munge/munged.pid", f"--log-file={self.root}/munged.log",
                               f"--seed-file={self.root}/munge/munged.seed"])
        self._wait("the munge socket", sock.exists, timeout)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld to answer", lambda: self._ok(["scontrol", "ping"], "UP"), timeout)
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(f"node {self.node} to be idle", lambda: self._ok(
            ["sinfo", "-h", "-N", "-n", self.node, "-o", "%T"], "idle"), timeout)
        return self

    def _ok(self, cmd: list[str], expect: str) -> bool:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=30)
        return proc.returncode == 0 and expect in proc.stdout

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (the daemons this object started)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", f"--user={getpass.getuser()}"], env=self.env(),
                           capture_output=True, timeout=30)
            self._wait_no_jobs(30)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def _wait_no_jobs(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=self.env())
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(1)

    def __enter__(self) -> SlurmCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    cluster = SlurmCluster(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/lrsweep-slurm"))
    with cluster:
        print(f"export SLURM_CONF={cluster.conf}   # node {cluster.node} is idle; Ctrl-C stops the cluster")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
