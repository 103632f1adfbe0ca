"""One sampler session: Ray up (unless the caller already runs it), sampler actors, their stats, and teardown in
try/finally. The sweep, recover and labels all start their engines through here.

    with ray_cluster(address, env) , sampler_actors(log) as start:
        sampler = start(spec, max_concurrency=64)          # a Ray actor: ray.get(sampler.generate.remote(...))
    with local_sampler(spec) as sampler:                    # in this process, no Ray (labels, probe, organism)
        sampler.generate(...)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from orchestrator.placement import SAMPLER_RESOURCE
from workers.sample.sampler import Sampler, SamplerSpec
from workers.tracking import OWN_WANDB_SERVICE


@contextmanager
def ray_cluster(address: str | None, env: dict[str, str], sampler_resource: bool = False) -> Iterator[bool]:
    """Ray for the block: a fresh local cluster ("local" never joins a stale one) or `address`; a cluster the
    caller started is used as it is and left running. Yields whether this block started it."""
    import ray

    own = not ray.is_initialized()
    if own:
        local = {"resources": {SAMPLER_RESOURCE: 1}} if sampler_resource else {}
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"} | env | OWN_WANDB_SERVICE}, **local)
    try:
        yield own
    finally:
        if own:
            ray.shutdown()


@contextmanager
def sampler_actors(log: Callable[[str], None]) -> Iterator[Callable[..., Any]]:
    """Yields start(spec, options=None, **ray_remote_args) -> a ready sampler actor. On leaving, each actor's
    batching stats are logged and the actor is killed, whatever happened in the block."""
    import ray

    actors: list[Any] = []

    def start(spec: SamplerSpec, options: dict[str, Any] | None = None, **remote_args: Any) -> Any:
        actor = ray.remote(**remote_args)(Sampler)
        actor = (actor.options(**options) if options else actor).remote(spec)
        actors.append(actor)  # before ready: an engine that fails to start is still killed
        ray.get(actor.ready.remote())
        return actor

    try:
        yield start
    finally:
        for actor in actors:
            try:  # how much cross-trial batching happened: requests per engine call
                st = ray.get(actor.stats.remote(), timeout=10)
                log(f"[sampler] {st['requests']} requests in {st['engine_calls']} engine calls "
                    f"(at most {st['max_batch_requests']} in one), {st['generated_tokens']} tokens generated")
            except Exception:  # a dead engine must not hide the caller's own error
                pass
            ray.kill(actor, no_restart=True)


@contextmanager
def local_sampler(spec: SamplerSpec) -> Iterator[Sampler]:
    """A vLLM engine in this process for the block (no Ray), shut down on leaving."""
    sampler = Sampler(spec)
    try:
        yield sampler
    finally:
        sampler.shutdown()
