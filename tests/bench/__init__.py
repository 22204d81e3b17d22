"""Benchmarks (`make bench`): each figure next to a baseline measured in the same run, as a ratio."""
