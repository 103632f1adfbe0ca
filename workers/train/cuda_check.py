"""Refuse to run on CPU what the plan placed on GPUs: torch without a usable CUDA device (most often an NVIDIA driver
older than the CUDA build of torch needs) would otherwise make the trainer fall back to gloo on CPU and the sampler
take vLLM's CPU branch, hours into a job sized for GPUs.

The decision is `cuda_problem`, a pure function; `require_cuda` gathers the facts (torch's CUDA build, the host's
driver) and raises with its message.
"""

from __future__ import annotations

from pathlib import Path

from workers.errors import ConfigError

# the oldest Linux driver each CUDA major release runs on (NVIDIA's CUDA toolkit release notes: minor-version
# compatibility floor of each major)
DRIVER_FOR_CUDA = {13: 580, 12: 525, 11: 450}


def required_driver(cuda_version: str | None) -> int | None:
    """The oldest NVIDIA driver major version a torch built for `cuda_version` ("13.0") runs on; None: unknown."""
    if not cuda_version:
        return None
    try:
        return DRIVER_FOR_CUDA.get(int(cuda_version.split(".")[0]))
    except ValueError:
        return None


def cuda_problem(wants_cuda: bool, cuda_available: bool, cuda_version: str | None, driver: str | None,
                 what: str) -> str | None:
    """Why `what` (the trainer, the sampler) must not start, or None. `wants_cuda`: the plan placed it on GPUs;
    `cuda_version`: the CUDA torch was built for (None: a CPU build); `driver`: the host's NVIDIA driver version
    (None: no driver loaded)."""
    if not wants_cuda or cuda_available:
        return None
    head = f"{what}: the plan runs it on GPUs (cluster.gpus_per_node > 0), but torch sees no CUDA device"
    cpu_fix = "; to rehearse on CPU instead set cluster.gpus_per_node=0 (or train.dist_backend=gloo)"
    if cuda_version is None:
        return f"{head}: this torch is a CPU build. Install the GPU extra (pip install -e '.[gpu]'){cpu_fix}"
    need = required_driver(cuda_version)
    need_text = f"NVIDIA driver >= {need}" if need else "a matching NVIDIA driver"
    if driver is None:
        return (f"{head}: torch is built for CUDA {cuda_version} (it needs {need_text}) and no NVIDIA driver is "
                f"loaded on this host (no /proc/driver/nvidia/version): run on a GPU node{cpu_fix}")
    major = _major(driver)
    if need and major is not None and major < need:
        return (f"{head}: torch is built for CUDA {cuda_version}, which needs {need_text}, and this host has driver "
                f"{driver}. Update the driver, or install a torch built for an older CUDA{cpu_fix}")
    return (f"{head} (torch built for CUDA {cuda_version}, driver {driver}): check CUDA_VISIBLE_DEVICES and "
            f"nvidia-smi on this host{cpu_fix}")


def _major(version: str) -> int | None:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return None


def host_driver_version(proc_file: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    """The loaded NVIDIA kernel driver's version ("580.65.06"), or None without one."""
    try:
        words = proc_file.read_text().split()
    except OSError:
        return None
    return next((w for w in words if w[:1].isdigit() and w.count(".") >= 1), None)


def require_cuda(wants_cuda: bool, what: str) -> bool:
    """Raise ConfigError when the plan wants CUDA and torch has none; returns whether CUDA is available."""
    import torch

    available = torch.cuda.is_available()
    problem = cuda_problem(wants_cuda, available, torch.version.cuda, host_driver_version(), what)
    if problem:
        raise ConfigError(problem)
    return available
