"""One module per DVC stage: a pure `run(...)` plus thin file I/O (`run_stage`)."""
