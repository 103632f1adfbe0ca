"""What the researcher's terminal shows and does while a sweep runs: the sweep's log, the live progress
table, and Ctrl-C as a pause."""
