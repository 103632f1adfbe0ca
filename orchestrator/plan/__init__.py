"""The resource plan of a sweep from its config alone, before any compute: memory, shape, sampler, time,
disk, adapters kept; one resolution of it (resolve) and the checks a sweep passes first (preflight)."""
