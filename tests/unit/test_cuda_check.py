"""No CUDA, no start: a plan that placed the trainer and the sampler on GPUs refuses to run them on CPU (the trainer
would fall back to gloo, the sampler to vLLM's CPU branch), naming the driver torch's CUDA build needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.errors import ConfigError
from workers.train.cuda_check import cuda_problem, host_driver_version, required_driver

CASES = [
    # wants, available, torch's CUDA, driver, expected words (None: no problem)
    (False, False, None, None, None),  # a CPU plan on a CPU build
    (False, False, "13.0", "550.54.14", None),  # a CPU plan: an old driver does not matter
    (True, True, "13.0", "580.65.06", None),  # GPUs wanted and there
    (True, False, "13.0", "550.54.14", ["CUDA 13.0", "NVIDIA driver >= 580", "550.54.14", "Update the driver"]),
    (True, False, "12.8", "470.1", ["NVIDIA driver >= 525", "470.1"]),
    (True, False, "13.0", None, ["NVIDIA driver >= 580", "no NVIDIA driver is loaded"]),
    (True, False, None, None, ["CPU build", ".[gpu]"]),
    (True, False, "13.0", "580.65.06", ["CUDA_VISIBLE_DEVICES", "nvidia-smi"]),  # driver fine, no device seen
]


@pytest.mark.parametrize(("wants", "available", "cuda", "driver", "words"), CASES)
def test_cuda_problem(wants: bool, available: bool, cuda: str | None, driver: str | None,
                      words: list[str] | None) -> None:
    problem = cuda_problem(wants, available, cuda, driver, "the trainer")
    if words is None:
        assert problem is None
        return
    assert problem is not None and problem.startswith("the trainer: the plan runs it on GPUs")
    for word in words:
        assert word in problem, (word, problem)
    assert "cluster.gpus_per_node=0" in problem  # the CPU way out


def test_required_driver_by_cuda_major() -> None:
    assert [required_driver(v) for v in ("13.0", "13.1", "12.4", "11.8", "10.2", None, "x")] == \
        [580, 580, 525, 450, None, None, None]


def test_host_driver_version_reads_the_kernel_module_line(tmp_path: Path) -> None:
    line = tmp_path / "version"
    line.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:39 UTC 2025\n"
                    "GCC version:  gcc version 13.3.0\n")
    assert host_driver_version(line) == "580.65.06"
    assert host_driver_version(tmp_path / "absent") is None


@pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="checks the refusal on a host without CUDA")
def test_trainer_and_sampler_refuse_to_start_on_cpu_when_the_plan_wants_gpus() -> None:
    from workers.sample.config import unplanned_engine
    from workers.sample.sampler import Sampler, SamplerSpec
    from workers.train.trainer import init_distributed

    with pytest.raises(ConfigError, match="the trainer: the plan runs it on GPUs"):
        init_distributed("auto", require_cuda=True)
    with pytest.raises(ConfigError, match="the trainer: the plan runs it on GPUs"):
        init_distributed("nccl")  # NCCL asked for explicitly: no silent gloo either
    spec = SamplerSpec(model_path="/nonexistent", dtype="bfloat16", max_model_len=64, chat_template_kwargs={}, seed=0,
                       engine=unplanned_engine(gpu_memory_utilization=0.5), require_cuda=True)
    with pytest.raises(ConfigError, match="the sampler: the plan runs it on GPUs"):
        Sampler(spec)  # before vLLM starts


def test_the_plan_wants_cuda_on_gpu_clusters_unless_rehearsing_on_gloo() -> None:
    from orchestrator.config import compose_config
    from orchestrator.run.build import plan_wants_cuda

    def wants(*overrides: str) -> bool:
        return plan_wants_cuda(compose_config(list(overrides)))

    assert not wants("cluster=local")  # gpus_per_node: 0
    assert wants("cluster=slurm")
    assert wants("cluster=local", "cluster.gpus_per_node=2")
    assert not wants("cluster=slurm", "train.dist_backend=gloo")  # the CPU rehearsal on logical GPUs
