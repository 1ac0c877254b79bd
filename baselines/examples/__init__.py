"""Example methods showing how to plug a new pretraining method into the benchmark."""
