"""Harness for the medical self-supervised benchmark: tasks, label-fraction protocol, metrics with
patient-level bootstrap intervals, the results store, leaderboards and the command line."""
