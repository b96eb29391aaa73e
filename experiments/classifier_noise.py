"""Probe (2026-12-02): how the evaluation's speaker classifier names real held-out clips with white noise added.

Trains the classifier exactly as ``evaluate`` does (mel-cepstral statistics of 2 s windows of real training
audio, here every 4th training utterance), then names the 16 held-out clips of the demo corpus clean and at
40, 30, 20 and 10 dB SNR. It shows why generated audio with a broadband noise floor is named as one speaker.

    .venv/bin/python experiments/classifier_noise.py data/cache/demo-<hash>
"""

import sys
from collections import Counter

import numpy as np

from audio_vqvae.data import PreparedCorpus
from audio_vqvae.evaluation.speaker_id import SpeakerClassifier, signal_features, window_features


def main(cache: str) -> None:
    corpus = PreparedCorpus.open(cache)
    rate = corpus.sample_rate
    window = 2 * rate
    train, valid = corpus.split("train"), corpus.split("valid")
    features, labels = [], []
    for i in range(0, len(train), 4):
        rows = window_features(train.samples(i), rate, window)
        features.append(rows)
        labels += [corpus.speakers[int(train.speaker_ids[i])]["name"]] * len(rows)
    classifier = SpeakerClassifier.fit(np.concatenate(features), labels)
    rng = np.random.default_rng(0)
    clips = [(valid.samples(i)[:window], corpus.speakers[int(valid.speaker_ids[i])]["name"]) for i in range(len(valid))]
    for snr in (None, 40, 30, 20, 10):
        named = []
        for audio, _ in clips:
            noisy = audio.copy()
            if snr is not None:
                scale = np.sqrt(np.mean(audio ** 2) / 10 ** (snr / 10))
                noisy = noisy + scale * rng.standard_normal(len(audio)).astype(np.float32)
            named.append(classifier.predict(signal_features(noisy, rate)[None])[0])
        accuracy = np.mean([name == speaker for name, (_, speaker) in zip(named, clips)])
        label = "clean" if snr is None else f"{snr} dB SNR"
        print(f"{label}: accuracy {accuracy:.2f}, most named {Counter(named).most_common(3)}")


if __name__ == "__main__":
    main(sys.argv[1])
