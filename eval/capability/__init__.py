"""Capability: the benchmarks' data, their scoring (IFEval, MATH answers), intervals and the report."""
