"""The pipeline: session plan, channel pipeline, smoothing, statistics, events, the processing thread."""
