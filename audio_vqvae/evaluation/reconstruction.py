"""Reconstruction distortion: each clip regenerated from its own codes with its own speaker, against the original.

Mel-cepstral distortion and log-spectral distance, time-paired (generation keeps the timing); the
baseline is the original against the start of another utterance of the same speaker, held-out ones
first (the right voice, other content). The voiced share (pYIN) of the reconstructions next to the
originals' says whether the decoder makes harmonics or formant-coloured noise.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from audio_vqvae.evaluation.material import Judgement, Material, mean
from audio_vqvae.evaluation.metrics import log_spectral_distance, mel_cepstral_distortion, silence_floor, voiced_share


def reconstruction_judge(material: Material) -> Judgement:
    """MCD and LSD of each reconstruction to its original and of the original to another utterance of its
    speaker with other content (the baseline); voiced shares of both; the level of each in the original's pauses
    (:func:`audio_vqvae.evaluation.metrics.silence_floor`)."""
    corpus, rate = material.corpus, material.sample_rate
    clips, sentences = material.clips, material.sentences
    reconstructions = [material.heard[i] for i in material.of_kind("reconstruction")]
    mcd, lsd, baseline_mcd, baseline_lsd, voiced, original_voiced = [], [], [], [], [], []
    floors, original_floors = [], []
    verdicts = {}
    for index, item in zip(material.of_kind("reconstruction"),
                           tqdm(reconstructions, desc="reconstruction", unit="clip", disable=not material.progress,
                                leave=False, file=sys.stderr)):
        clip = clips[item.clip]
        mcd.append(mel_cepstral_distortion(clip.audio, item.audio, rate))
        lsd.append(log_spectral_distance(clip.audio, item.audio, rate))
        voiced.append(voiced_share(item.audio, rate))
        original_voiced.append(material.pitch_tracks[item.clip].voiced_share)
        floor = silence_floor(clip.audio, item.audio, rate)
        if floor is not None:
            original_floors.append(floor[0])
            floors.append(floor[1])
        verdicts[index] = f"MCD {mcd[-1]:.2f} dB, voiced {100 * voiced[-1]:.0f} %"
        others = material.heldout.get(clip.speaker, []) + material.train_all.get(clip.speaker, [])
        other = next((j for j in others
                      if j != clip.utterance and (not clip.sentence or sentences[j] != clip.sentence)), None)
        if other is not None:
            reference = corpus.samples(other, 0, len(clip.audio))
            baseline_mcd.append(mel_cepstral_distortion(clip.audio, reference, rate))
            baseline_lsd.append(log_spectral_distance(clip.audio, reference, rate))
    section = {"mcd_db": mean(mcd), "lsd_db": mean(lsd), "baseline_mcd_db": mean(baseline_mcd),
               "baseline_lsd_db": mean(baseline_lsd), "voiced_share": mean(voiced),
               "original_voiced_share": mean(original_voiced), "silence_floor_db": mean(floors),
               "original_silence_floor_db": mean(original_floors), "clips_with_pauses": len(floors),
               "clips": len(reconstructions),
               "baseline_pairs": len(baseline_mcd), "clip_seconds": mean([len(clip.audio) / rate for clip in clips]),
               "max_seconds": material.seconds}
    return Judgement(section, verdicts)
