"""Conversions against the target speaker's own reading of the same sentence, where the corpus has one.

Where the target speaker also read the clip's sentence (same normalised transcript, any split): the
DTW-aligned MCD of the conversion to that reading, next to the unconverted source's, and the ratio of
their median f0. Absent, with the reason, when the corpus has no such pairs.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from tqdm import tqdm

from audio_vqvae.evaluation.material import Judgement, Material, absent, mean, median
from audio_vqvae.evaluation.metrics import median_f0, mel_cepstral_distortion


def parallel_judge(material: Material) -> Judgement:
    """DTW-aligned MCD and median-f0 ratio of each conversion to the target's reading of its sentence."""
    conversions = [(i, material.heard[i]) for i in material.of_kind("conversion")]
    if not conversions:
        return absent("no conversions (one training speaker, or --conversions 0)")
    corpus, rate, clips, sentences = material.corpus, material.sample_rate, material.clips, material.sentences
    readings: dict[tuple[str, str], int] = {}
    for index, record in enumerate(corpus.utterances):
        if sentences[index]:
            readings.setdefault((sentences[index], record["speaker"]), index)
    pairs = [(i, item, readings[(clips[item.clip].sentence, item.intended)]) for i, item in conversions
             if (clips[item.clip].sentence, item.intended) in readings]
    if not pairs:
        return absent("the corpus has no transcripts" if not readings else
                      "no target speaker read the sentence of a converted clip (not a parallel corpus)")
    conversion_mcd, source_mcd, ratios, source_ratios = [], [], [], []  # f0 ratios: NaN where a side is unvoiced
    reading_f0: dict[tuple[int, int], float] = {}  # several clips are converted to the same target's reading
    verdicts = {}
    for index, item, reading in tqdm(pairs, desc="parallel", unit="pair", disable=not material.progress,
                                     leave=False, file=sys.stderr):
        clip = clips[item.clip]
        # The same share of the sentence as the clip is of its utterance.
        length = corpus.utterances[reading]["length"]
        excerpt_length = min(length, round(len(clip.audio) * length / clip.length))
        reference = corpus.samples(reading, 0, excerpt_length)
        conversion_mcd.append(mel_cepstral_distortion(reference, item.audio, rate, dtw=True))
        source_mcd.append(mel_cepstral_distortion(reference, clip.audio, rate, dtw=True))
        if (reading, excerpt_length) not in reading_f0:
            reading_f0[(reading, excerpt_length)] = median_f0(reference, rate)
        target_f0 = reading_f0[(reading, excerpt_length)]
        ratios.append(median_f0(item.audio, rate) / target_f0)
        source_ratios.append(material.pitch_tracks[item.clip].median_f0 / target_f0)
        verdicts[index] = f"MCD to the target's reading {conversion_mcd[-1]:.2f} dB (source {source_mcd[-1]:.2f})"
    voiced = np.array([r for r in ratios if math.isfinite(r)])
    source_voiced = np.array([r for r in source_ratios if math.isfinite(r)])
    return Judgement({
        "available": True,
        "pairs": len(pairs),
        "conversion_mcd_db": mean(conversion_mcd),
        "source_target_mcd_db": mean(source_mcd),
        "f0_ratio_median": median(voiced),
        "f0_error_semitones": median(np.abs(12 * np.log2(voiced))),
        "source_f0_ratio_median": median(source_voiced),
        "source_f0_error_semitones": median(np.abs(12 * np.log2(source_voiced))),
        "f0_pairs": len(voiced),
        "source_f0_pairs": len(source_voiced),
    }, verdicts)
