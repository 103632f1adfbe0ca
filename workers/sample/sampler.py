"""The sweep's sampler: one vLLM engine serving every checkpoint's LoRA adapter (multi-LoRA).

Engine start costs ~25 s on CPU, so a sweep starts one and every trial sends it requests. The
orchestrator wraps this class as a threaded Ray actor; it is also usable directly (tests, benchmarks).

Requests are batched across adapters: while the engine runs one batch, requests from every trial queue up,
and the next engine call takes them all at once, one LoRA request per prompt (vLLM batches different
adapters together). Throughput then grows with the number of checkpoints waiting, instead of each
checkpoint paying a full pass of the engine alone.

On CPU builds of vLLM the LoRA ops are workers/sample/vllm_cpu_lora.py's grouped kernels
(`sample.engine.cpu_lora_kernel`),
and MoE experts with LoRA run in torch (workers/sample/vllm_cpu_moe_lora.py).

Every adapter is checked by the engine (`add_lora`: read, validated, no forward pass) the first time a batch
names it. One vLLM refuses becomes an AdapterRefused for the requests that named it, and the rest of the batch
is served: a bad adapter sent to generate() would instead kill the engine process and every request with it.
A dead engine is restarted; MAX_ENGINE_RESTARTS caps the restarts in a row (a success resets the count).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from eval.knobs import require_planned
from workers.sample.config import EngineConfig, unplanned_engine
from workers.sample.engine_log import route_engine_logs
from workers.sample.vllm_cpu_lora import ENV as CPU_LORA_ENV
from workers.sample.vllm_cpu_lora import registered as cpu_lora_registered


@dataclass(frozen=True)
class SamplerSpec:
    """What the engine needs: the base model and the sample block's engine knobs (workers/sample/config.py, resolved
    by the plan), nothing else of the config. A knob added to EngineConfig reaches the engine as
    `spec.engine.<knob>`."""

    model_path: str
    dtype: str
    max_model_len: int
    chat_template_kwargs: dict
    seed: int
    # the engine block with the plan's numbers in place of auto; an engine started without a plan: unplanned_engine()
    engine: EngineConfig = field(default_factory=unplanned_engine)
    # the plan placed the engine on GPUs: without CUDA it refuses to start (workers/train/cuda_check.py) instead of
    # taking vLLM's CPU branch
    require_cuda: bool = False

    def __post_init__(self) -> None:
        require_planned(self.engine, "sample.engine", "build the spec from a resolved config "
                        "(orchestrator/run/build.py sampler_spec) or from unplanned_engine()")

    def with_engine(self, **knobs: Any) -> SamplerSpec:
        """This spec with some of its engine knobs changed."""
        return replace(self, engine=replace(self.engine, **knobs))


class DeterministicError(Exception):
    """An error a retry would repeat (a bad adapter, a bad config): the trial fails once, without retries."""


class RequestRefused(DeterministicError):
    """vLLM refused a batch's requests before running them (a prompt longer than max_model_len, bad sampling
    parameters): the config, not the engine, has to change."""


class AdapterRefused(DeterministicError):
    """vLLM refused to load an adapter; only the requests that named it fail."""

    def __init__(self, adapter_dir: str, reason: str) -> None:
        super().__init__(adapter_dir, reason)  # both in args, so the error pickles (Ray) whole
        self.adapter_dir, self.reason = adapter_dir, reason

    def __str__(self) -> str:
        return (f"vLLM refused the adapter {self.adapter_dir}: {self.reason}. Its requests were not served; check "
                "that the adapter was written whole and for this base model and sampler config (LoRA rank, targets)")


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


@dataclass(frozen=True)
class Request:
    """One checkpoint's sampling: the adapter (None: the base model) and its prompts, all with one setting."""

    adapter_dir: str | None
    user_texts: list[str]
    max_new_tokens: int
    temperature: float
    top_p: float = 1.0
    ignore_eos: bool = False  # benchmarks: every completion runs to max_new_tokens
    # prompt i samples from its own generator seeded seed + i (vLLM's SamplingParams.seed), so its answer does not
    # depend on what else shares the batch; None: the engine's stream (order-dependent)
    seed: int | None = None


def request_seed(sample_seed: int, trial_seed: int, step: int) -> int:
    """A checkpoint's sampling seed from the sweep's sample.seed, the trial's seed and the step: every
    (trial, checkpoint) its own stream, the same on a rerun. Spaced so prompt offsets (+ i) never collide."""
    return (sample_seed * 1_000_003 + trial_seed * 10_007 + step) * 4096 % (2**31 - 4096)


@dataclass(frozen=True)
class Completions:
    """One request's answers, and for each whether it was cut at max_new_tokens (vLLM's finish_reason
    "length"): a cut answer may lack the words its grade depends on (eval/report.py warns when many are)."""

    texts: list[str]
    cut: list[bool]


@dataclass
class _Pending:
    request: Request
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class Batcher:
    """Group commit over one engine: callers queue requests; whoever gets the engine runs everything queued.

    Callers are threads (a threaded Ray actor's calls, or a benchmark's). While one engine call runs, new
    requests wait in the queue; when it ends, the next caller takes the whole queue in one call.
    """

    def __init__(self, run: Callable[[list[Request]], list[Any]]) -> None:  # a result or a BaseException each
        self._run = run
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._engine_lock = threading.Lock()
        self.batch_sizes: list[int] = []  # requests per engine call, for tests and benchmarks

    def submit(self, requests: list[Request]) -> list[Any]:
        """Results of these requests, in order, after they ran (possibly batched with other callers')."""
        items = [_Pending(r) for r in requests]
        with self._queue_lock:
            self._queue.extend(items)
        with self._engine_lock:
            # a leader takes the whole queue and finishes it before releasing the engine, so an item that
            # is not done yet is still queued
            if not all(i.done.is_set() for i in items):
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self.batch_sizes.append(len(batch))
                try:
                    for item, result in zip(batch, self._run([i.request for i in batch]), strict=True):
                        if isinstance(result, BaseException):  # this request alone failed (AdapterRefused)
                            item.error = result
                        else:
                            item.result = result
                except BaseException as err:  # every caller of the failed batch sees the error
                    for item in batch:
                        item.error = err
                finally:
                    for item in batch:
                        item.done.set()
        for item in items:
            if item.error is not None:
                raise item.error
        return [i.result for i in items]


class Sampler:
    def __init__(self, spec: SamplerSpec) -> None:
        from workers.train.cuda_check import require_cuda

        require_cuda(spec.require_cuda, "the sampler")
        if not _cuda_available():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(spec.engine.cpu_kvcache_space_gib))
            if spec.engine.cpu_lora_kernel == "grouped" and not cpu_lora_registered():
                print("[sampler] lrsweep's grouped CPU LoRA kernels are not registered with vLLM, so vLLM's own ops "
                      "are used: install the package (pip install -e .) to register them", flush=True)
        os.environ[CPU_LORA_ENV] = spec.engine.cpu_lora_kernel  # read in vLLM's engine processes (they inherit it)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        route_engine_logs()  # during a sweep: vLLM's start-up messages to sweep.log, not the terminal
        self.spec = spec
        self.restarts = 0  # engine restarts since start, for stats
        self.failure_streak = 0  # engine deaths since the last successful call: capped by MAX_ENGINE_RESTARTS
        self._checked: set[str] = set()  # adapters the engine accepted
        self.generated_tokens = 0
        self._lora_ids: dict[str, int] = {}
        self._batcher = Batcher(self._run_batch)
        self.sleeps = 0  # times the engine went to sleep (sleep mode)
        self._busy = 0  # nested _awake() blocks
        self._asleep = False
        if spec.engine.sleep and not _cuda_available():
            raise ValueError("SamplerSpec.engine.sleep=True without CUDA: vLLM's CPU platform has no sleep mode; the "
                             "plan resolves sample.engine.sleep to false there (set it to auto)")
        self._start()

    def _start(self) -> None:
        from vllm import LLM

        spec = self.spec
        self.llm = LLM(
            model=spec.model_path,
            dtype=spec.dtype,
            max_model_len=spec.max_model_len,
            enable_lora=True,
            max_loras=spec.engine.max_loras,
            max_cpu_loras=spec.engine.max_cpu_loras,
            max_lora_rank=spec.engine.max_lora_rank,
            gpu_memory_utilization=spec.engine.gpu_memory_utilization,
            tensor_parallel_size=spec.engine.tensor_parallel_size,
            fully_sharded_loras=spec.engine.fully_sharded_loras,
            enforce_eager=spec.engine.enforce_eager,
            seed=spec.seed,
            # a seeded request's generator is rewound when its prefill was chunked, which a CPU generator cannot
            # do (vLLM 0.32, gpu_model_runner: set_offset); unchunked prefills never are (prompts < max_model_len)
            # (vLLM's CPU budget is 4096 tokens a step; a longer max_model_len raises it so a prompt fits whole)
            **({} if _cuda_available() else {"enable_chunked_prefill": False}
               | ({"max_num_batched_tokens": spec.max_model_len} if spec.max_model_len > 4096 else {})),
            **({"enable_mixed_moe_lora_format": True} if spec.engine.moe_lora_3d else {}),
            **({"max_num_seqs": spec.engine.max_num_seqs} if spec.engine.max_num_seqs else {}),
            **({"enable_sleep_mode": True} if spec.engine.sleep else {}),
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._watch_stop = watch_engine(self.llm)
        self._asleep = False
        if spec.engine.sleep and not self._busy:  # a fresh engine holds its memory until the first batch
            self._sleep()

    def _sleep(self) -> None:
        self.llm.sleep(level=1)
        self._asleep = True
        self.sleeps += 1

    @contextlib.contextmanager
    def _awake(self) -> Iterator[None]:
        """The engine awake for a batch (sleep mode: woken before, put back to sleep after, even on error)."""
        self._busy += 1
        try:
            if self._asleep:
                self.llm.wake_up()
                self._asleep = False
            yield
        finally:
            self._busy -= 1
            if self.spec.engine.sleep and not self._busy and self.llm is not None and not self._asleep:
                self._sleep()

    def ready(self) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        """Engine calls and requests served so far: how much batching happened."""
        sizes = self._batcher.batch_sizes
        return {"engine_calls": len(sizes), "requests": sum(sizes), "max_batch_requests": max(sizes, default=0),
                "generated_tokens": self.generated_tokens, "restarts": self.restarts, "sleeps": self.sleeps}

    def _lora(self, adapter_dir: str) -> Any:
        from vllm.lora.request import LoRARequest

        lora_id = self._lora_ids.setdefault(adapter_dir, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter{lora_id}", lora_id, adapter_dir, is_3d_lora_weight=self.spec.engine.moe_lora_3d)

    def generate(
        self, adapter_dir: str | None, user_texts: list[str], max_new_tokens: int, temperature: float,
        top_p: float, seed: int | None = None,
    ) -> list[str]:
        """One completion per user text, through the chat template, with the given adapter (or base).

        Batched with whatever other requests are waiting for the engine. Without a seed the engine's seed fixes
        the stream (which then depends on the batch); with one, see Request.seed.
        """
        return self.complete(adapter_dir, user_texts, max_new_tokens, temperature, top_p, seed).texts

    def complete(
        self, adapter_dir: str | None, user_texts: list[str], max_new_tokens: int, temperature: float,
        top_p: float, seed: int | None = None,
    ) -> Completions:
        """generate(), and which completions stopped at max_new_tokens rather than at their end."""
        request = Request(adapter_dir, list(user_texts), max_new_tokens, temperature, top_p, seed=seed)
        return self._batcher.submit([request])[0]

    def generate_many(self, requests: list[Request]) -> list[list[str]]:
        """Several checkpoints' requests in one engine call (plus any others waiting); results in order."""
        return [c.texts for c in self._batcher.submit(requests)]

    def _run_batch(self, requests: list[Request]) -> list[Completions | BaseException]:
        with self._awake():
            return self._serve(requests)

    def _serve(self, requests: list[Request]) -> list[Completions | BaseException]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMValidationError

        from workers.labels.prompts import format_for_model

        refused: dict[str, AdapterRefused] = {}
        for adapter_dir in dict.fromkeys(r.adapter_dir for r in requests if r.adapter_dir):
            try:
                self._check_adapter(adapter_dir)
            except AdapterRefused as err:
                refused[adapter_dir] = err
        served = [r for r in requests if r.adapter_dir not in refused]
        prompts, params, loras = [], [], []
        for r in served:
            lora = self._lora(r.adapter_dir) if r.adapter_dir else None
            for i, text in enumerate(r.user_texts):
                prompts.append(format_for_model(self.tokenizer, text, self.spec.chat_template_kwargs))
                params.append(SamplingParams(max_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                                             ignore_eos=r.ignore_eos, seed=None if r.seed is None else r.seed + i))
                loras.append(lora)
        try:
            outputs = self._with_restarts(
                lambda: self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)) if prompts else []
        except VLLMValidationError as err:
            raise RequestRefused(f"vLLM refused the requests: {err}") from None
        self.generated_tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
        done = iter(o.outputs[0] for o in outputs)

        def completions(n: int) -> Completions:
            got = [next(done) for _ in range(n)]
            return Completions([o.text for o in got], [o.finish_reason == "length" for o in got])

        return [refused[r.adapter_dir] if r.adapter_dir in refused else completions(len(r.user_texts))
                for r in requests]

    def _check_adapter(self, adapter_dir: str) -> None:
        """Have the engine load the adapter now, outside a batch: raises AdapterRefused with vLLM's reason."""
        if adapter_dir in self._checked:
            return
        lora = self._lora(adapter_dir)
        try:
            with self._awake():
                self._with_restarts(lambda: self.llm.llm_engine.add_lora(lora))
        except Exception as err:
            if _engine_dead(err):
                raise
            raise AdapterRefused(adapter_dir, _vllm_reason(err)) from None
        self._checked.add(adapter_dir)

    def _with_restarts(self, call: Callable[[], Any]) -> Any:
        """call(), starting a fresh engine and calling again while the engine process dies, up to
        MAX_ENGINE_RESTARTS times in a row; a call that returns ends the streak."""
        while True:
            try:
                result = call()
            except Exception as err:
                if not _engine_dead(err):
                    raise
                if self.failure_streak >= MAX_ENGINE_RESTARTS:
                    raise RuntimeError(f"the vLLM engine died {self.failure_streak + 1} times in a row (restarted "
                                       f"{self.failure_streak} times); last error: {err}") from err
                # the engine process died (OOM killer, a crash): start a fresh one and call again
                self.failure_streak += 1
                self.restarts += 1
                print(f"[sampler] vLLM engine died ({type(err).__name__}); restart {self.failure_streak} of at most "
                      f"{MAX_ENGINE_RESTARTS} in a row", flush=True)
                self.shutdown()
                self._start()
                continue
            self.failure_streak = 0
            return result

    def shutdown(self) -> None:
        import gc

        if getattr(self, "_watch_stop", None) is not None:
            self._watch_stop.set()
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception:
                pass
        self.llm = None
        gc.collect()


MAX_ENGINE_RESTARTS = 3


def watch_engine(llm: Any) -> threading.Event | None:
    """Wake a generate() that waits on a dead engine; returns the event that stops the watch.

    vLLM's synchronous client notices when its engine process dies (it sets `resources.engine_dead` and stops
    its output thread) but leaves a generate() already waiting on the output queue blocked forever; its async
    client does not have this gap. Putting EngineDeadError on that queue makes the waiting call raise, so the
    restart in Sampler.generate runs. Where a vLLM version lacks these attributes nothing is watched.
    """
    from vllm.v1.engine.exceptions import EngineDeadError

    client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    resources, outputs = getattr(client, "resources", None), getattr(client, "outputs_queue", None)
    if resources is None or outputs is None or not hasattr(resources, "engine_dead"):
        return None
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            if resources.engine_dead:
                outputs.put_nowait(EngineDeadError())
                return

    threading.Thread(target=watch, name="lrsweep-engine-watch", daemon=True).start()
    return stop


def _vllm_reason(err: BaseException) -> str:
    """vLLM's own words from a failed add_lora, without the wrapping ("Call to add_lora method failed: Worker
    failed with error '...', please check the stack trace above")."""
    import re

    text = str(err)
    found = re.search(r"failed with error '(.*)', please check", text, re.S)
    return found.group(1) if found else f"{type(err).__name__}: {text}"


def _engine_dead(err: BaseException) -> bool:
    from vllm.v1.engine.exceptions import EngineDeadError

    return isinstance(err, EngineDeadError) or "EngineCore" in str(err) or "Engine" in type(err).__name__
