"""Keeping records and boards: the run's printed table, leaderboards (collected lines, their
statistics and each output format), submissions, reproduction of a row and precision parity.
Builds on `benchmark.harness` (scoring, tasks, presets, result rows); never the other way."""
