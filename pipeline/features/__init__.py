"""Audio frontend, training-time augmentation and spectrogram drawing.

The public API (each module imports TensorFlow only where it must):
* `layers.feature_layer(features)` — the Keras feature layer a model sits on; `layers.extract` — numpy features of
  clips; `layers.sequence_capable(layer)` — whether a layer declares `capabilities` {"sequence"};
* `geometry` — TensorFlow-free frame / shape / streaming arithmetic (used by pipeline.config);
* `frontend` (tf.signal spectrogram, log-mel, MFCC, embedding_mel), `embedding` (the speech embedding layers),
  `onnx_weights` (the embedding's ONNX files, read without running them), `augment`, `plot`.
"""
