"""Benchmarks: sweeps, result tables and plots."""
