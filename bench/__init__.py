"""Benchmarks of genagent-thespian, each measured beside its raw Thespian floor (see run.py)."""
