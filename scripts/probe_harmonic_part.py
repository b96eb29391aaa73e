"""Probe: what limits a trained harmonic part (``decoder.harmonics``), per harmonic and by its network.

``harmonics``: on the held-out utterances, the per-frame least-squares amplitudes of each harmonic on the
measured phase (the oracle of ``shared/probes/harmonic_oracle.py``, over a Hann window of ±2 pitch frames)
against the model's, per harmonic number k: the oracle's share of the voiced energy, the model's energy
relative to it, the share of it the model explains (1 − error / oracle), and the cosine of their phase
difference (energy-weighted). Also the frame-to-frame drift of the measured phase: the energy-weighted
slope over k of the change of the oracle's relative phases between neighbouring frames (a drift δ rotates
harmonic k by kδ, which no prediction from the codes can follow).

``head``: the trained model's encoder, codebook and speaker table frozen, a harmonic network trained alone
for ``--minutes`` on the training utterances (``fresh``: the model's architecture from scratch; ``deep``:
a 384-channel, 5-block dilated residual network with a 63-frame receptive field; ``finetune``: the model's
own), printing the share of the voiced energy it explains on the training and held-out utterances. If a
larger network on the same codes does no better, the codes, not the network, bound ``h``.

    .venv/bin/python scripts/probe_harmonic_part.py harmonics runs/X/checkpoints/step-00010000.pt data/cache/demo-<hash>
    .venv/bin/python scripts/probe_harmonic_part.py head runs/X/checkpoints/step-00010000.pt data/cache/demo-<hash> \\
        --variant deep --minutes 6
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from audio_vqvae.checkpoint import load_model
from audio_vqvae.data import PreparedCorpus
from audio_vqvae.harmonic import OUTPUT_SCALE, HarmonicPart, frame_pitch, harmonic_loss, synthesize


def oracle_amplitudes(x: np.ndarray, rows: np.ndarray, rate: int, hop: int, kmax: int):
    """Per pitch frame, least-squares ``a_k, b_k`` on the measured phase over a Hann window of ±2 frames, for the
    fully voiced frames: float[F x kmax] twice, bool[F] (fitted), int[F] (harmonics below 0.45 sr)."""
    phase, f0, voiced = rows
    length, frames, span = len(x), len(x) // hop + 1, 2 * hop
    window = np.hanning(2 * span + 1)
    a, b = np.zeros((frames, kmax)), np.zeros((frames, kmax))
    fitted, count = np.zeros(frames, bool), np.zeros(frames, int)
    for i in range(frames):
        centre = i * hop
        lo, hi = max(0, centre - span), min(length, centre + span + 1)
        if voiced[lo:hi].mean() < 0.99:
            continue
        k_count = min(kmax, int(0.45 * rate / np.median(f0[lo:hi])))
        angles = phase[lo:hi, None] * np.arange(1, k_count + 1)[None]
        basis = np.concatenate([np.cos(angles), np.sin(angles)], axis=1)
        weight = window[lo - centre + span:hi - centre + span]
        solution, *_ = np.linalg.lstsq(basis * weight[:, None], x[lo:hi] * weight, rcond=None)
        a[i, :k_count], b[i, :k_count] = solution[:k_count], solution[k_count:]
        fitted[i], count[i] = True, k_count
    return a, b, fitted, count


def load_utterances(model, split):
    """Per utterance: audio (1, T), pitch rows (1, 3, T), code vectors, speaker vector, frame pitch."""
    hop, out = model.hop_length, []
    for i in range(len(split)):
        x = split.samples(i).astype(np.float32)
        n = len(x) // hop * hop
        audio = torch.from_numpy(x[:n])[None]
        rows = torch.from_numpy(split.pitch_rows(i, 0, n))[None]
        with torch.no_grad():
            vectors = model.quantizer.lookup(model.encode(audio))
            speaker = model.decoder.speaker_embedding(torch.tensor([int(split.speaker_ids[i])]))
        out.append((audio, rows, vectors, speaker, frame_pitch(rows, hop, vectors.shape[2])))
    return out


def per_harmonic(model, corpus, kmax: int = 30) -> None:
    part, hop, rate, pitch_hop = model.decoder.harmonic, model.hop_length, corpus.sample_rate, corpus.pitch_hop
    oracle_energy, model_energy, cross, error = (np.zeros(kmax) for _ in range(4))
    explained, slopes = [], []
    for audio, rows, vectors, speaker, pitch_frames in load_utterances(model, corpus.split("valid")):
        with torch.no_grad():
            amplitudes = part(vectors, speaker, pitch_frames)[0].double().numpy()
            h = synthesize(torch.from_numpy(amplitudes)[None], rows.double(), hop, rate)[0].numpy()
        x, r = audio[0].double().numpy(), rows[0].double().numpy()
        explained.append(1 - np.sum((x - h) ** 2 * r[2]) / np.sum(x ** 2 * r[2]))
        a, b, fitted, count = oracle_amplitudes(x, r, rate, pitch_hop, kmax)
        centres = np.arange(len(fitted)) * pitch_hop
        code_centres = (np.arange(amplitudes.shape[1]) + 0.5) * hop - 0.5
        harmonics = amplitudes.shape[0] // 2
        k_used = min(kmax, harmonics)
        model_a = np.stack([np.interp(centres, code_centres, amplitudes[k]) for k in range(k_used)], 1)
        model_b = np.stack([np.interp(centres, code_centres, amplitudes[harmonics + k]) for k in range(k_used)], 1)
        alive = fitted[:, None] & (np.arange(1, k_used + 1)[None] <= count[:, None])  # synthesised harmonics only
        oracle = np.where(alive, a[:, :k_used] - 1j * b[:, :k_used], 0)
        predicted = np.where(alive, model_a - 1j * model_b, 0)
        oracle_energy[:k_used] += np.sum(np.abs(oracle) ** 2, 0)
        model_energy[:k_used] += np.sum(np.abs(predicted) ** 2, 0)
        cross[:k_used] += np.real(np.sum(oracle * np.conj(predicted), 0))
        error[:k_used] += np.sum(np.abs(oracle - predicted) ** 2, 0)
        complex_amplitudes = a[:, :8] - 1j * b[:, :8]
        for j in np.where(fitted[:-1] & fitted[1:])[0]:
            weight = np.abs(complex_amplitudes[j]) * np.abs(complex_amplitudes[j + 1])
            if weight.sum() > 0:
                change = np.angle(complex_amplitudes[j + 1] * np.conj(complex_amplitudes[j]))
                k = np.arange(1, 9)
                slopes.append(np.sum(weight * k * change) / np.sum(weight * k * k))
    print(f"h explains {np.median(explained):.3f} of the voiced energy (median over {len(explained)} utterances)")
    print(" k  oracle share  model / oracle energy  explained  cos(phase difference)")
    total = oracle_energy.sum()
    for k in range(kmax):
        if oracle_energy[k] > 0:
            print(f"{k + 1:2d}  {oracle_energy[k] / total:12.3f}  {model_energy[k] / oracle_energy[k]:21.2f}  "
                  f"{1 - error[k] / oracle_energy[k]:9.2f}  "
                  f"{cross[k] / np.sqrt(oracle_energy[k] * model_energy[k] + 1e-30):21.2f}")
    slopes = np.abs(np.array(slopes))
    print(f"measured-phase drift between neighbouring frames: median {np.median(slopes):.3f} rad per harmonic, "
          f"90th percentile {np.percentile(slopes, 90):.3f}")


class DeepHead(nn.Module):
    """A larger harmonic network for the probe: 384 channels, 5 dilated residual blocks (63-frame field)."""

    def __init__(self, code_dim: int, speaker_dim: int, harmonics: int, hidden: int = 384, blocks: int = 5):
        super().__init__()
        self.input = nn.Conv1d(code_dim + speaker_dim + 2, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv1d(hidden, hidden, 3, padding=2 ** i, dilation=2 ** i)
                                    for i in range(blocks))
        self.output = nn.Conv1d(hidden, 2 * harmonics, 1)
        with torch.no_grad():
            self.output.weight.mul_(OUTPUT_SCALE)
            self.output.bias.zero_()

    def forward(self, codes, speaker, pitch_frames):
        x = torch.cat([codes, speaker.unsqueeze(2).expand(-1, -1, codes.shape[2]), pitch_frames], 1)
        x = torch.relu(self.input(x))
        for block in self.blocks:
            x = x + torch.relu(block(x))
        return self.output(x)


def train_head(model, corpus, variant: str, minutes: float, learning_rate: float, batch: int = 8) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    hop, rate = model.hop_length, corpus.sample_rate
    train, valid = load_utterances(model, corpus.split("train")), load_utterances(model, corpus.split("valid"))
    code_dim, speaker_dim = train[0][2].shape[1], train[0][3].shape[1]
    harmonics = model.decoder.harmonic.harmonics
    head = {"finetune": lambda: model.decoder.harmonic, "fresh": lambda: HarmonicPart(code_dim, speaker_dim, harmonics),
            "deep": lambda: DeepHead(code_dim, speaker_dim, harmonics)}[variant]()
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)

    def explained(data) -> float:
        error = energy = 0.0
        with torch.no_grad():
            for audio, rows, vectors, speaker, pitch_frames in data:
                h = synthesize(head(vectors, speaker, pitch_frames), rows, hop, rate)
                error += float(((audio - h) ** 2 * rows[:, 2]).sum())
                energy += float((audio ** 2 * rows[:, 2]).sum())
        return 1 - error / energy

    frames = 4096 // hop
    began, step = time.time(), 0
    print(f"{variant}: step 0, explained on train {explained(train):.3f}, held out {explained(valid):.3f}", flush=True)
    while time.time() - began < minutes * 60:
        loss = 0.0
        for j in rng.integers(0, len(train), batch):
            audio, rows, vectors, speaker, pitch_frames = train[j]
            first = int(rng.integers(0, max(1, vectors.shape[2] - frames)))
            crop = slice(first * hop, (first + frames) * hop)
            h = synthesize(head(vectors[:, :, first:first + frames], speaker, pitch_frames[:, :, first:first + frames]),
                           rows[:, :, crop], hop, rate)
            loss = loss + harmonic_loss(h, audio[:, crop], rows[:, 2, crop])
        optimizer.zero_grad()
        (loss / batch).backward()
        optimizer.step()
        step += 1
        if step % 200 == 0:
            print(f"{variant}: step {step} ({time.time() - began:.0f} s), explained on train {explained(train):.3f}, "
                  f"held out {explained(valid):.3f}", flush=True)
    print(f"{variant}: end at step {step}, explained on train {explained(train):.3f}, held out {explained(valid):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=("harmonics", "head"))
    parser.add_argument("checkpoint")
    parser.add_argument("cache")
    parser.add_argument("--variant", choices=("fresh", "deep", "finetune"), default="deep")
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.checkpoint).eval()
    if model.decoder.harmonic is None:
        parser.error(f"{args.checkpoint}: this model has no harmonic part (decoder.harmonics = 0)")
    corpus = PreparedCorpus.open(args.cache)
    if args.probe == "harmonics":
        per_harmonic(model, corpus)
    else:
        train_head(model, corpus, args.variant, args.minutes, args.learning_rate)


if __name__ == "__main__":
    main()
