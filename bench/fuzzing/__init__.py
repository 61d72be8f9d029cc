"""Fuzzing of every hierloc reader: targets (a valid seed input and the command that reads it) and the runner."""
