"""Audio input: sources (microphone, file, stdin), ring buffer, resampling, codecs."""
