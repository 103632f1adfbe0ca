"""Sampling: the vLLM engine serving every checkpoint's adapter, its log, and the CPU LoRA kernels."""
