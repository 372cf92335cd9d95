"""Audio frontend, training-time augmentation and spectrogram drawing."""
