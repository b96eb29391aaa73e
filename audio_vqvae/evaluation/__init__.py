"""Evaluation of a trained model (see docs/evaluation.md).

* :mod:`audio_vqvae.evaluation.evaluate`: ``evaluate(checkpoint, ...)``, running an evaluation, and
  :data:`~audio_vqvae.evaluation.evaluate.JUDGES`, the judges it runs;
* :mod:`audio_vqvae.evaluation.material`: what every judge hears (clips, reconstructions, conversions,
  f0-only controls) and what it returns;
* one module per measurement: :mod:`~audio_vqvae.evaluation.likelihood` (bits per sample, codes),
  :mod:`~audio_vqvae.evaluation.reconstruction`, :mod:`~audio_vqvae.evaluation.speaker_id` (the two
  in-house speaker classifiers), :mod:`~audio_vqvae.evaluation.speaker_encoder` (Resemblyzer),
  :mod:`~audio_vqvae.evaluation.controls` (PSOLA f0 controls), :mod:`~audio_vqvae.evaluation.quality`
  (DNSMOS), :mod:`~audio_vqvae.evaluation.phone_recognizer` (intelligibility),
  :mod:`~audio_vqvae.evaluation.parallel`, :mod:`~audio_vqvae.evaluation.units` (the codes as speech units);
  :mod:`~audio_vqvae.evaluation.metrics` holds the distances and statistics they share;
* :mod:`audio_vqvae.evaluation.measures`: the one table of measures; :mod:`~audio_vqvae.evaluation.report`
  (JSON, markdown, TensorBoard) and :mod:`~audio_vqvae.evaluation.listening` (report.html) write it;
  :mod:`~audio_vqvae.evaluation.compare` puts reports side by side;
* the ``audio-vqvae evaluate`` and ``compare`` commands are :mod:`audio_vqvae.commands.evaluate`.

Nothing is imported here, so that every ``audio-vqvae`` command starts without loading librosa.
"""
