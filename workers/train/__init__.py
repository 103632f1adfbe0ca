"""Training: the DeepSpeed ZeRO + PEFT trainer, its state on disk, the loss, batching, loading a hub
checkpoint into ZeRO-3, and packed trials."""
