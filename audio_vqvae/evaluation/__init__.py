"""Evaluation of a trained model (see docs/evaluation.md).

* :mod:`audio_vqvae.evaluation.metrics`: mel-cepstral distortion, log-spectral distance, median f0 and
  code-stream statistics;
* :mod:`audio_vqvae.evaluation.speaker_id`: an independent speaker classifier;
* :mod:`audio_vqvae.evaluation.evaluate`: ``evaluate(checkpoint, ...)`` and the report writers;
* :mod:`audio_vqvae.evaluation.units`: the codes as speech units (phone accuracy, ABX, speaker information);
* the ``audio-vqvae evaluate`` command is :mod:`audio_vqvae.commands.evaluate`.

Nothing is imported here, so that every ``audio-vqvae`` command starts without loading librosa.
"""
