"""The sweep's sampler: one vLLM engine serving every checkpoint's LoRA adapter (multi-LoRA).

Engine start costs ~25 s on CPU, so a sweep starts one and every trial sends it requests. The
orchestrator wraps this class as a Ray actor; it is also usable directly (tests, benchmarks).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplerSpec:
    """What the engine needs: the base model and the serving knobs, nothing else of the config."""

    model_path: str
    dtype: str
    max_model_len: int
    max_lora_rank: int
    chat_template_kwargs: dict
    gpu_memory_utilization: float
    cpu_kvcache_space_gib: int
    max_loras: int
    max_cpu_loras: int
    tensor_parallel_size: int
    enforce_eager: bool
    seed: int


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


class Sampler:
    def __init__(self, spec: SamplerSpec) -> None:
        if not _cuda_available():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(spec.cpu_kvcache_space_gib))
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        self.spec = spec
        self.restarts = 0
        self._start()
        self._lora_ids: dict[str, int] = {}

    def _start(self) -> None:
        from vllm import LLM

        spec = self.spec
        self.llm = LLM(
            model=spec.model_path,
            dtype=spec.dtype,
            max_model_len=spec.max_model_len,
            enable_lora=True,
            max_loras=spec.max_loras,
            max_cpu_loras=spec.max_cpu_loras,
            max_lora_rank=spec.max_lora_rank,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            tensor_parallel_size=spec.tensor_parallel_size,
            enforce_eager=spec.enforce_eager,
            seed=spec.seed,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._watch_stop = watch_engine(self.llm)

    def ready(self) -> bool:
        return True

    def _lora(self, adapter_dir: str) -> Any:
        from vllm.lora.request import LoRARequest

        lora_id = self._lora_ids.setdefault(adapter_dir, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter{lora_id}", lora_id, adapter_dir)

    def generate(
        self, adapter_dir: str | None, user_texts: list[str], max_new_tokens: int, temperature: float,
        top_p: float,
    ) -> list[str]:
        """One completion per user text, through the chat template, with the given adapter (or base).

        No per-request seed: vLLM's CPU sampler cannot offset a generator; the engine's seed fixes the stream.
        """
        from vllm import SamplingParams

        from workers.prompts import format_for_model

        prompts = [format_for_model(self.tokenizer, t, self.spec.chat_template_kwargs) for t in user_texts]
        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        lora = self._lora(adapter_dir) if adapter_dir else None
        try:
            outputs = self.llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        except Exception as err:
            if not _engine_dead(err) or self.restarts >= MAX_ENGINE_RESTARTS:
                raise
            # the engine process died (OOM killer, a crash): start a fresh one and retry this request
            self.restarts += 1
            print(f"[sampler] vLLM engine died ({type(err).__name__}); restart {self.restarts}", flush=True)
            self.shutdown()
            self._start()
            outputs = self.llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]

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


def _engine_dead(err: BaseException) -> bool:
    from vllm.v1.engine.exceptions import EngineDeadError

    return isinstance(err, EngineDeadError) or "EngineCore" in str(err) or "Engine" in type(err).__name__
