"""A sweep running: its trials, packs, the sampler session, labels, builders from config to engine specs,
and regrading a finished sweep's files."""
