"""Streaming recognition: TF's RecognizeCommands, the long test recording, its accuracy stats (no TensorFlow)."""
