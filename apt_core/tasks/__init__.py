"""Benchmark tasks: offline datasets with their federated partitions, reference networks."""
