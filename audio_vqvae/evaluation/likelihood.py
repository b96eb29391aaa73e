"""The model's own measures of the held-out utterances: teacher-forced bits per sample and code statistics.

``teacher_forced``: cross-entropy of the whole utterances given their own codes and speaker, overall and
by frame level next to the envelope-only reference (:func:`~audio_vqvae.evaluation.metrics.level_bits`);
``codes``: codebook use of the same utterances (:class:`~audio_vqvae.evaluation.metrics.CodeStatistics`).
"""

from __future__ import annotations

import math
import sys
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from audio_vqvae.data import PreparedCorpus
from audio_vqvae.emphasis import preemphasis
from audio_vqvae.evaluation.metrics import (
    analysis_frames,
    code_statistics,
    frame_levels,
    level_bits,
    lpc_reference_bits,
)
from audio_vqvae.model import VQVAE


def likelihood(model: VQVAE, corpus: PreparedCorpus, utterances: Sequence[int], progress: bool) -> tuple[dict, dict]:
    """The ``teacher_forced`` and ``codes`` sections of whole utterances (indices into ``corpus.utterances``)."""
    teacher_forced, counts = teacher_forced_bits(model, corpus, utterances, progress)
    return teacher_forced, code_statistics(counts, model.config.frame_rate).to_dict()


@torch.no_grad()
def teacher_forced_bits(model: VQVAE, corpus: PreparedCorpus, utterances: Sequence[int],
                    progress: bool) -> tuple[dict, np.ndarray]:
    """Bits per sample of whole utterances given their codes and speaker, overall and by frame level next
    to the envelope-only reference (:func:`~audio_vqvae.evaluation.metrics.level_bits`), and the counts of the codes."""
    device = next(model.parameters()).device
    nats, samples, used = 0.0, 0, 0
    counts = np.zeros(model.config.quantizer.num_codes, dtype=np.int64)
    frame = analysis_frames(model.config.sample_rate)[0]
    levels, decoder_bits, reference_bits = [], [], []
    for index in tqdm(utterances, desc="teacher forced", unit="utt", disable=not progress, leave=False,
                      file=sys.stderr):
        audio = corpus.samples(index)
        if len(audio) < model.hop_length:
            continue
        used += 1
        speaker = torch.tensor([model.speaker_id(corpus.utterances[index]["speaker"])], device=device)
        waveform = torch.from_numpy(audio).unsqueeze(0).to(device)
        pitch = torch.from_numpy(corpus.pitch_rows(index)).unsqueeze(0).to(device) if model.needs_pitch else None
        out = model(waveform, speaker, pitch=pitch)
        targets = out.targets  # the excitation's classes for a source-filter decoder
        per_sample = F.cross_entropy(out.logits.float(), targets, reduction="none")[0]
        nats += float(per_sample.sum())
        samples += len(audio)
        counts += np.bincount(out.codes.flatten().cpu().numpy(), minlength=len(counts))
        # The reference scores the signal's classes in the decoder's domain (pre-emphasised, if it is); a
        # source-filter decoder scores its excitation's classes instead, another alphabet of the same size.
        levels.append(frame_levels(audio, frame))
        decoder_bits.append(per_sample.cpu().numpy() / math.log(2))
        reference_bits.append(lpc_reference_bits(preemphasis(waveform, model.config.preemphasis)[0].cpu().numpy(),
                                                 model.targets(waveform)[0].cpu().numpy(), frame,
                                                 quantization_channels=model.decoder.quantization_channels))
    quantization = model.decoder.quantization_channels
    by_level = level_bits(*(np.concatenate(parts) if parts else np.zeros(0)
                            for parts in (levels, decoder_bits, reference_bits)))
    return {"bits_per_sample": nats / max(samples, 1) / math.log(2), "chance_bits_per_sample": math.log2(quantization),
            "utterances": used, "seconds": samples / model.config.sample_rate, **by_level}, counts

