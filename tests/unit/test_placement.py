"""Where trials' trainer workers and the sampler go: pure functions from config to bundles, strategy, options."""

import pytest

from orchestrator.config import compose_config
from orchestrator.placement import (
    SAMPLER_RESOURCE,
    data_parallel_shape,
    sampler_placement,
    trial_placement,
)
from orchestrator.schema import ConfigError


@pytest.mark.parametrize(
    ("num_workers", "cpus_per_trial", "gpus_per_node", "backend", "nodes", "bundle", "resolved_backend"),
    [
        (1, 1.0, 0, "auto", 1, {"CPU": 1.0}, "gloo"),  # laptop: one in-process trainer
        (2, 1.0, 0, "auto", 1, {"CPU": 0.5}, "gloo"),  # the trial's CPUs split over its workers
        (8, 64.0, 8, "auto", 1, {"CPU": 8.0, "GPU": 1.0}, "nccl"),  # one 8-GPU node
        (16, 128.0, 8, "auto", 2, {"CPU": 8.0, "GPU": 1.0}, "nccl"),  # wider than a node: spans two
        (2, 1.0, 1, "gloo", 3, {"CPU": 0.5, "GPU": 1.0}, "gloo"),  # logical GPUs, CPU training (tests)
    ],
)
def test_trial_bundles(num_workers, cpus_per_trial, gpus_per_node, backend, nodes, bundle, resolved_backend):
    p = trial_placement(num_workers, cpus_per_trial, gpus_per_node, backend, nodes)
    assert p.bundles == [bundle] * num_workers
    assert p.strategy == "PACK"  # one node when one has room, else as few as possible
    assert p.backend == resolved_backend


def test_tune_resources_hold_the_trainer_in_process_or_only_a_driver():
    assert trial_placement(1, 2.0, 0).tune_resources() == {"cpu": 2.0, "gpu": 0.0}
    assert trial_placement(1, 4.0, 8).tune_resources() == {"cpu": 4.0, "gpu": 1.0}
    driver = trial_placement(4, 4.0, 8).tune_resources()
    assert driver["cpu"] < 0.1 and "gpu" not in driver  # the workers' own placement group holds the GPUs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1.0, 0), "train.num_workers=0"),
        ((2, 0.0, 0), "sweep.cpus_per_trial"),
        ((1, 1.0, -1), "cluster.gpus_per_node"),
        ((17, 1.0, 8, "auto", 2), "needs 17 GPUs but the cluster has 2 x 8"),
    ],
)
def test_trial_placement_refuses(args, message):
    with pytest.raises(ConfigError, match=message):
        trial_placement(*args)


@pytest.mark.parametrize(
    ("tp", "gpus_per_node", "marker", "options"),
    [
        (4, 8, False, {"num_cpus": 1, "num_gpus": 4}),  # its own tensor-parallel GPUs
        (1, 2, True, {"num_cpus": 1, "num_gpus": 1, "resources": {SAMPLER_RESOURCE: 1}}),  # GPU, on the marked node
        (1, 0, True, {"num_cpus": 0, "num_gpus": 0, "resources": {SAMPLER_RESOURCE: 1}}),  # pinned to its node
        (1, 0, False, {"num_cpus": 0, "num_gpus": 0}),  # no node offers the marker: shares the CPU nodes
    ],
)
def test_sampler_placement(tp, gpus_per_node, marker, options):
    assert sampler_placement(tp, gpus_per_node, marker).actor_options() == options


def test_sampler_shares_the_gpu_of_a_machine_too_small_to_separate_them():
    assert sampler_placement(1, 1, False, nodes=1, trial_gpus=1).actor_options() == {"num_cpus": 0, "num_gpus": 0}
    assert sampler_placement(1, 1, False, nodes=3, trial_gpus=2).num_gpus == 1
    assert sampler_placement(2, 8, False, nodes=1, trial_gpus=8).num_gpus == 0  # a trial takes the whole node


def test_sampler_wider_than_a_node_is_refused():
    with pytest.raises(ConfigError, match="tensor_parallel_size=16 exceeds cluster.gpus_per_node=8"):
        sampler_placement(16, 8, False)


@pytest.mark.parametrize(
    ("batch", "micro", "world", "shape"),
    [(32, 32, 1, (32, 1)), (32, 8, 1, (8, 4)), (32, 32, 2, (16, 1)), (32, 4, 2, (4, 4)), (32, 16, 8, (4, 1)),
     (32, 32, 16, (2, 1)), (4, 4, 4, (1, 1))],
)
def test_data_parallel_shape(batch, micro, world, shape):
    m, accum = data_parallel_shape(batch, micro, world)
    assert (m, accum) == shape and m * accum * world == batch


@pytest.mark.parametrize(("batch", "micro", "world"), [(32, 32, 3), (32, 6, 2)])
def test_data_parallel_shape_refuses(batch, micro, world):
    with pytest.raises(ConfigError, match="train."):
        data_parallel_shape(batch, micro, world)


def test_config_validation_checks_workers_against_the_cluster():
    assert compose_config(["train.num_workers=2"]).train.num_workers == 2
    with pytest.raises(ConfigError, match="needs 4 GPUs"):
        compose_config(["train.num_workers=4", "cluster.gpus_per_node=2"])
    with pytest.raises(ConfigError, match="split evenly"):
        compose_config(["train.num_workers=3"])


@pytest.mark.parametrize(("hosts", "size", "fragment"), [
    (["a"] * 8 + ["b"] * 8, 8, None),  # node by node, as Ray Train orders ranks: each group is one node
    (["a", "b"] * 8, 8, "ranks 0-7 span the nodes ['a', 'b']"),  # interleaved: every group crosses nodes
    (["a"] * 4 + ["b"] * 8 + ["a"] * 4, 8, "ranks 0-7 span the nodes ['a', 'b']"),
    (["a"] * 12, 8, "does not divide the trial's 12 ranks"),
    (["a", "b"], 1, None),  # hpZ off
])
def test_hpz_groups_must_each_be_one_node(hosts, size, fragment):
    from workers.train.data_parallel import hpz_group_problem

    problem = hpz_group_problem(hosts, size)
    assert (problem is None) if fragment is None else (fragment in problem and "hpz_partition_size" in problem)
