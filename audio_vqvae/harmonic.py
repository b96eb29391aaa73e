"""The decoder's harmonic part: the periodic part of voiced speech, predicted per frame and synthesised on
the f0 phase, so that the WaveNet models only what it cannot explain (``decoder.harmonics``).

A WaveNet trained on a CPU budget does not learn to voice speech cleanly: its free-running output keeps
a broadband noise floor. Voiced speech, though, is close to a sum of harmonics of f0 (on the demo corpus a
least-squares fit of ``a_k cos kφ + b_k sin kφ`` per 10 ms frame on the measured phase explains the voiced
samples to a median 17 dB SNR: ``shared/probes/harmonic_oracle.py``). The harmonic-plus-noise split of
speech coding (Stylianou's HNM; the harmonic sources of NSF and DDSP) makes that part deterministic:

* a frame-rate network (:class:`HarmonicPart`, a synthesis part of :mod:`audio_vqvae.parts`) maps the code
  vectors, the speaker embedding and the frame's log-f0 and voicing to K pairs ``(a_k, b_k)`` per code frame;
* the pairs are interpolated linearly to the sample rate and multiplied with the source excitation's
  harmonics (:func:`audio_vqvae.pitch.excitation`: ``v cos kφ``, ``v sin kφ``, zero at or above 0.45 sr),
  ``h[t] = Σ_k a_k(t) v cos kφ(t) + b_k(t) v sin kφ(t)`` (:func:`synthesize`);
* the network is trained by the waveform error of ``h`` on the voiced samples, relative to their energy
  (:func:`harmonic_loss`): in training φ is the phase measured in the audio, so the relative phases
  ``atan2(b_k, a_k)`` it learns are those of the voice; in generation φ is the integral of the (converted) f0;
  optionally (``decoder.harmonic_spectral_weight``) also by a multi-resolution log-mel distance on the voiced
  frames (:func:`spectral_loss`), which weighs the weak upper harmonics (the second and third formants) as
  much as the strong lower ones, where the waveform error is dominated by harmonics 1-4;
* the WaveNet models the residual ``x − h`` (``h`` detached), gets ``h`` as an input through the same
  prediction embedding that the LPC split uses, and generation emits ``h[t] + r[t]``. With ``lpc_order``
  the linear prediction acts on the residual: ``p[t] = h[t] + Σ_i c_i (s − h)[t − i]`` (see
  :func:`audio_vqvae.lpc.synthesis_rows`).

``h`` depends only on the codes, the speaker and f0, so it is computed for the whole utterance before the
sample loop, like the conditioning.

Example:
    >>> import torch
    >>> part = HarmonicPart(code_dim=8, speaker_dim=4, harmonics=5)
    >>> amplitudes = part(torch.randn(2, 8, 10), torch.randn(2, 4), torch.zeros(2, 2, 10))
    >>> amplitudes.shape                                      # (B, 2K, T'): a_1..a_K, then b_1..b_K
    torch.Size([2, 10, 10])
    >>> pitch = torch.stack([torch.zeros(2, 640), torch.full((2, 640), 100.0), torch.ones(2, 640)], dim=1)
    >>> synthesize(amplitudes, pitch, hop=64, sample_rate=8000).shape    # (B, T)
    torch.Size([2, 640])
"""

from __future__ import annotations

import functools
from typing import Iterator

import librosa
import torch
import torch.nn.functional as F
from torch import nn

from audio_vqvae.parts import DecoderPart, PartInputs, Split, frame_means, frames_to_samples
from audio_vqvae.pitch import F0_MIN, excitation

OUTPUT_SCALE = 0.1  # the output layer starts small: h ≈ 0 at step 0, so the WaveNet first sees the plain signal
# spectral_loss: window lengths (s) of its resolutions, hop a quarter of each; mel bands; the power floor
SPECTRAL_WINDOWS, SPECTRAL_BANDS, SPECTRAL_FLOOR = (0.064, 0.032, 0.016), 40, 1e-5


def frame_pitch(pitch: torch.Tensor, hop: int, frames: int) -> torch.Tensor:
    """The network's f0 inputs per code frame: Tensor[B x 3 x T] ``(phase, f0, voiced)`` rows -> Tensor[B x 2 x T'].

    Channel 0 is the frame's mean voicing ``v``, channel 1 its mean ``v log2(f0 / 200 Hz)`` (the excitation's
    log-f0 channel), over the ``hop`` samples of each of the ``frames`` code frames (the last rows held to fill).
    """
    voiced, f0 = pitch[:, 2:3], pitch[:, 1:2]
    return frame_means(torch.cat([voiced, voiced * torch.log2(f0.clamp(min=F0_MIN) / 200.0)], dim=1), hop, frames)


class HarmonicPart(DecoderPart, nn.Module):
    """Codes, speaker and f0 to harmonic amplitudes: Tensor[B x D x T'], Tensor[B x S], Tensor[B x 2 x T']
    -> Tensor[B x 2K x T'] (``a_1..a_K``, then ``b_1..b_K``); as a synthesis part, ``h`` and its loss.

    Two 3-wide convolutions over frames (ReLU) and a 1x1 output, like the envelope network
    (:class:`audio_vqvae.lpc.SourceFilter`); the speaker vector and the f0 inputs join every frame.

    Args:
        code_dim, speaker_dim: D and S.
        harmonics: K.
        hidden: channels of the two hidden convolutions.
        loss_weight: the weight of :func:`harmonic_loss` in the total (``decoder.harmonic_weight``).
        spectral_weight: the weight of :func:`spectral_loss`, logged as ``harmonic_spectral`` (0: not computed;
            ``decoder.harmonic_spectral_weight``).
    """

    needs_pitch = True
    synthesises = True
    loss_name = "harmonic"

    def __init__(self, code_dim: int, speaker_dim: int, harmonics: int, hidden: int = 256, loss_weight: float = 1.0,
                 spectral_weight: float = 0.0):
        super().__init__()
        self.harmonics = harmonics
        self.loss_weight = loss_weight
        self.spectral_weight = spectral_weight
        self.input = nn.Conv1d(code_dim + speaker_dim + 2, hidden, kernel_size=3, padding=1)
        self.hidden = nn.Conv1d(hidden, hidden, kernel_size=3, padding=1)
        self.output = nn.Conv1d(hidden, 2 * harmonics, kernel_size=1)
        with torch.no_grad():
            self.output.weight.mul_(OUTPUT_SCALE)
            self.output.bias.zero_()

    def forward(self, codes: torch.Tensor, speaker: torch.Tensor, pitch_frames: torch.Tensor) -> torch.Tensor:
        frames = codes.shape[2]
        x = torch.cat([codes, speaker.unsqueeze(2).expand(-1, -1, frames).to(codes),
                       pitch_frames[:, :, :frames].to(codes)], dim=1)
        x = torch.relu(self.hidden(torch.relu(self.input(x))))
        return self.output(x)

    def signal(self, inputs: PartInputs) -> torch.Tensor:
        """The harmonic part ``h`` of the utterances: Tensor[B x T] in the decoder's signal domain."""
        frames = inputs.vectors.shape[2]
        amplitudes = self(inputs.vectors, inputs.speaker, frame_pitch(inputs.pitch, inputs.hop, frames))
        return synthesize(amplitudes, inputs.pitch, inputs.hop, inputs.sample_rate)

    def split(self, inputs: PartInputs, signal: torch.Tensor, residual: torch.Tensor) -> Split:
        """``h`` (the first synthesis part: ``residual`` is the signal) and :func:`harmonic_loss` on the voiced
        samples."""
        harmonic = self.signal(inputs)
        voiced = inputs.pitch[:, 2]
        extra = {}
        if self.spectral_weight:
            extra["harmonic_spectral"] = (spectral_loss(harmonic.float(), signal, voiced, inputs.sample_rate),
                                          self.spectral_weight)
        return Split(harmonic.detach().double(), harmonic_loss(harmonic.float(), signal, voiced), extra,
                     output=harmonic)


def synthesize(amplitudes: torch.Tensor, pitch: torch.Tensor, hop: int, sample_rate: int) -> torch.Tensor:
    """The harmonic signal ``h``: Tensor[B x 2K x T'] amplitudes and Tensor[B x 3 x T] pitch rows -> Tensor[B x T].

    Frame j's amplitudes hold at the centre of its ``hop`` samples and are interpolated linearly between
    centres (held beyond the first and last); the harmonics are those of :func:`audio_vqvae.pitch.excitation`,
    so nothing is made at or above 0.45 sr, and nothing where the pitch rows are unvoiced.
    """
    harmonics = amplitudes.shape[1] // 2
    per_sample = frames_to_samples(amplitudes, hop, pitch.shape[2])
    source = excitation(pitch.to(amplitudes), harmonics, sample_rate)[:, :2 * harmonics]  # (B, 2K, T)
    return (per_sample * source).sum(dim=1)


def harmonic_loss(harmonic: torch.Tensor, signal: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
    """Energy of ``signal − harmonic`` on the voiced samples relative to the signal's there (10^(−SNR/10)).

    Args:
        harmonic: Tensor[B x T], :func:`synthesize`'s output.
        signal: Tensor[B x T], what it should explain (the decoder's signal domain).
        voiced: Tensor[B x T] in [0, 1], the pitch rows' voicing: the weight of every sample.
    """
    signal = signal.to(harmonic)
    weight = voiced.to(harmonic)
    error = ((signal - harmonic) ** 2 * weight).sum()
    return error / ((signal ** 2 * weight).sum() + 1e-8)


def spectral_resolutions(sample_rate: int, like: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """``(n_fft, hop, window, mel basis)`` of each of the :data:`SPECTRAL_WINDOWS` resolutions of the spectral losses
    (a Hann window, a hop of a quarter of it), on ``like``'s device and in its dtype."""
    for seconds in SPECTRAL_WINDOWS:
        n_fft = round(seconds * sample_rate)
        window = torch.hann_window(n_fft, device=like.device, dtype=like.dtype)
        yield n_fft, n_fft // 4, window, mel_basis(sample_rate, n_fft).to(like)


def stft_power(audio: torch.Tensor, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Short-time power |STFT|² of Tensor[B x T], centred frames: Tensor[B x (n_fft // 2 + 1) x frames]."""
    return torch.stft(audio, len(window), hop, window=window, center=True, return_complex=True).abs() ** 2


@functools.lru_cache(maxsize=8)
def mel_basis(sample_rate: int, n_fft: int) -> torch.Tensor:
    """The :data:`SPECTRAL_BANDS` mel filters up to sr / 2 for a DFT of ``n_fft``: Tensor[bands x (n_fft // 2 + 1)]."""
    return torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=SPECTRAL_BANDS)).float()


def spectral_loss(harmonic: torch.Tensor, signal: torch.Tensor, voiced: torch.Tensor,
                  sample_rate: int) -> torch.Tensor:
    """Mean absolute difference of the log-mel power of ``harmonic`` and of the voiced samples of ``signal``
    over the frames that are mostly voiced, averaged over the :data:`SPECTRAL_WINDOWS` resolutions.

    The target is ``voiced * signal``, so that the unvoiced samples of a frame at a voicing boundary are not asked
    of ``h`` (which is zero there). The mel bands (:data:`SPECTRAL_BANDS`, up to sr / 2) sum harmonics with what
    lies between them; the power floor :data:`SPECTRAL_FLOOR` (−50 dB of full scale) keeps near-silent bands
    from dominating.

    Args:
        harmonic, signal: Tensor[B x T], as in :func:`harmonic_loss`.
        voiced: Tensor[B x T] in [0, 1].
        sample_rate: Hz.
    """
    signal, voiced = signal.to(harmonic), voiced.to(harmonic)
    target = signal * voiced
    total = harmonic.new_zeros(())
    for n_fft, hop, window, basis in spectral_resolutions(sample_rate, harmonic):
        logs = [torch.log(basis @ stft_power(audio, hop, window) + SPECTRAL_FLOOR) for audio in (harmonic, target)]
        frames = logs[0].shape[2]
        mostly_voiced = F.avg_pool1d(F.pad(voiced.unsqueeze(1), (n_fft // 2, n_fft // 2)), n_fft, hop)[:, 0, :frames]
        mask = (mostly_voiced > 0.5).to(harmonic).unsqueeze(1)
        total = total + ((logs[0] - logs[1]).abs() * mask).sum() / (mask.sum() * SPECTRAL_BANDS + 1e-8)
    return total / len(SPECTRAL_WINDOWS)
