"""Evaluation of a trained model (see docs/evaluation.md).

* :mod:`audio_vqvae.evaluation.metrics`: mel-cepstral distortion, log-spectral distance, median f0 and
  code-stream statistics;
* :mod:`audio_vqvae.evaluation.speaker_id`: an independent speaker classifier;
* :mod:`audio_vqvae.evaluation.evaluate`: ``evaluate(checkpoint, ...)`` and the report writers;
* :mod:`audio_vqvae.evaluation.cli`: the ``audio-vqvae evaluate`` command.

Nothing is imported here, so that every ``audio-vqvae`` command starts without loading librosa.
"""
