"""The model boundary: TFLite interpreter, model metadata, emotion model."""
