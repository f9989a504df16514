"""Benchmarks and the datasets they (and the tests) draw from; not part of the installed service."""
