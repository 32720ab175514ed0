"""Applications built on the pipeline: the command line, live monitor, file analysis, call batches."""
