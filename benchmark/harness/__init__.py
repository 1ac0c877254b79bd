"""Running the protocol: tasks and their data, patient-level splits and label fractions, presets,
pretraining and evaluation cells (fine-tuning, linear probe), metrics and scoring of prediction
files, and the result rows a run writes. Imports nothing from `benchmark.board`."""
