"""The shared feature front-end: speech gate (VAD), per-frame features, pitch, analysis windows."""
