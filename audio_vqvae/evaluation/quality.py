"""Predicted quality: DNSMOS P.835 (Reddy et al. 2022), whose ONNX models ship in the ``speechmos`` wheel.

DNSMOS predicts the three ratings of ITU-T P.835 listening tests on a 1-5 scale: SIG (the speech
signal itself: distortion), BAK (the background: noise floor, hiss; higher is quieter) and OVRL (overall),
and the P.808 MOS of its second model. It was trained on 16 kHz speech, so clips at another rate are
resampled to 16 kHz first (an 8 kHz corpus has no energy above 4 kHz: its originals score lower SIG
and OVRL than wideband speech would, which is why every figure stands next to the originals').
DNSMOS scores 9.01 s segments; a shorter clip is looped to that length and scored once.

Figures per kind of item: ``<kind>_sig``, ``<kind>_bak``, ``<kind>_ovrl``, ``<kind>_p808`` (means over
the items), kinds as in :mod:`~audio_vqvae.evaluation.material`.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import librosa
import numpy as np
from tqdm import tqdm

from audio_vqvae.evaluation.material import KINDS, Judgement, Material, absent, mean

DNSMOS_RATE = 16000
RATINGS = ("sig", "bak", "ovrl", "p808")
SEGMENT_SECONDS = 9.01  # what DNSMOS scores


@lru_cache(maxsize=1)
def load_dnsmos():
    """speechmos' DNSMOS (P.835 model and P.808 model, ONNX on the CPU), loaded once per process."""
    import onnxruntime
    from speechmos import dnsmos

    models = Path(dnsmos.__file__).parent / "dnsmos_models"
    onnxruntime.set_default_logger_severity(3)
    return dnsmos.DNSMOS(str(models / "sig_bak_ovr.onnx"), str(models / "model_v8.onnx"))


def dnsmos_scores(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """``{"sig", "bak", "ovrl", "p808"}`` of float[T] audio at any rate."""
    wav = np.asarray(audio, dtype=np.float32)
    if sample_rate != DNSMOS_RATE:
        wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=DNSMOS_RATE)
    # One 9.01 s segment of the clip looped (speechmos would double it past 9.01 s and average over
    # every 1 s hop of the loop: the same figure for a looped clip, several times the work).
    wav = np.resize(wav if len(wav) else np.zeros(1, np.float32), int(SEGMENT_SECONDS * DNSMOS_RATE))
    if not np.any(wav):
        wav = wav.copy()
        wav[0] = 1e-4  # DNSMOS' mel front end takes the log of the spectrum relative to its maximum
    scores = load_dnsmos()(np.clip(wav, -1.0, 1.0), DNSMOS_RATE, False)
    return {rating: float(scores[f"{rating}_mos"]) for rating in RATINGS}


def quality_judge(material: Material) -> Judgement:
    """DNSMOS of every heard item; the mean of each rating per kind of item."""
    try:
        load_dnsmos()
    except (ImportError, OSError, RuntimeError) as err:
        return absent(f"DNSMOS did not load ({err})")
    scores = [dnsmos_scores(item.audio, material.sample_rate)
              for item in tqdm(material.heard, desc="DNSMOS", unit="clip", disable=not material.progress,
                               leave=False, file=sys.stderr)]
    section: dict = {"available": True, "model": "DNSMOS P.835 (speechmos)", "rate": DNSMOS_RATE}
    for kind in KINDS:
        rows = material.of_kind(kind)
        section[f"{kind}_clips"] = len(rows)
        for rating in RATINGS:
            section[f"{kind}_{rating}"] = mean([scores[i][rating] for i in rows])
    verdicts = {i: f"SIG {s['sig']:.2f} BAK {s['bak']:.2f} OVRL {s['ovrl']:.2f}" for i, s in enumerate(scores)}
    return Judgement(section, verdicts)
