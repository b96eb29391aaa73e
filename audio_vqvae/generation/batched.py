"""Many utterances at once: :func:`decode_rows` generates a list of rows (codes or a clip to encode, the
target speaker, a seed, and pitch rows for a model that needs them) in batches, reporting progress in samples.

It is the one batching loop of the package: the CLI's ``reconstruct``, ``convert`` and ``decode``
(:func:`audio_vqvae.generation.jobs.run_jobs`), training's audio rounds and ``evaluate`` call it, each with
the batching and the random numbers it has always used, so their outputs do not change:

* ``mixed_lengths=True`` (the CLI): rows sorted by length share batches of ``batch_size`` whatever their
  lengths; each row is conditioned on its own codes (:meth:`~audio_vqvae.model.VQVAE.decoder_inputs` with
  ``lengths``), so its samples do not depend on its batch.
* ``mixed_lengths=False`` (audio rounds, ``evaluate``): a batch holds rows of one length only, conditioned
  at once, and clips are encoded together with the other clips of their batch.

A row's seed is its own (the CLI: one per output file) or, without one, drawn for its batch: batch ``b``
draws its rows' seeds from a ``torch.Generator`` seeded with ``seed + b``, exactly the draw
``VQVAE.decode(generator=...)`` makes (:func:`~audio_vqvae.generation.engine.seeds_from`).

Example:
    >>> import torch
    >>> from audio_vqvae.config import EncoderConfig, ModelConfig, QuantizerConfig, WaveNetConfig
    >>> from audio_vqvae.model import VQVAE
    >>> model = VQVAE(ModelConfig(sample_rate=8000, num_speakers=2,
    ...     encoder=EncoderConfig(hidden_channels=8, strides=(2, 4), residual_layers=1),
    ...     quantizer=QuantizerConfig(num_codes=16, code_dim=4, data_init=False),
    ...     decoder=WaveNetConfig(stacks=1, layers_per_stack=2, residual_channels=8, gate_channels=8,
    ...                           skip_channels=8, conditioning_channels=4, speaker_dim=4))).eval()
    >>> rows = [DecodeRow(speaker=1, codes=torch.zeros(5, dtype=torch.long), seed=0),
    ...         DecodeRow(speaker=0, codes=torch.ones(3, dtype=torch.long), seed=1)]
    >>> [(index, audio.shape) for index, audio in decode_rows(model, rows, batch_size=2, mixed_lengths=True)]
    [(1, torch.Size([24])), (0, torch.Size([40]))]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from audio_vqvae.generation.engine import seeds_from


@dataclass
class DecodeRow:
    """One utterance to generate.

    Attributes:
        speaker: id of the speaker to generate with (any training speaker: this is how conversion works).
        codes: LongTensor[T'] to generate ``T' * hop`` samples from; or None, with ``clip``.
        clip: index into :func:`decode_rows`'s ``clips`` of the audio whose codes to generate from (its
            length a multiple of the hop); or None, with ``codes``.
        seed: the sampling seed; None: drawn for the row's batch (see the module docstring).
    """

    speaker: int
    codes: Optional[torch.Tensor] = None
    clip: Optional[int] = None
    seed: Optional[int] = None


@torch.no_grad()
def decode_rows(model: Any, rows: Sequence[DecodeRow], *, batch_size: int,
                clips: Sequence[Union[np.ndarray, torch.Tensor]] = (),
                pitch: Optional[Callable[[int], np.ndarray]] = None, mixed_lengths: bool = False,
                temperature: float = 1.0, method: str = "auto", seed: int = 0, part: str = "all",
                progress: Optional[Callable[[int], None]] = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Generate every row, batched, yielding each row's audio as soon as its batch is done.

    Args:
        model: the :class:`~audio_vqvae.model.VQVAE` (eval mode); every tensor goes to its device.
        rows: what to generate.
        batch_size: rows generated at once (at most).
        clips: Tensor[T] or float32[T] audio that rows name by ``clip``: a batch encodes its clips together
            (in index order), so only with ``mixed_lengths=False``.
        pitch: for a model that needs pitch, row i's ``(phase, f0, voiced)`` rows float32[3 x samples]
            (:func:`audio_vqvae.pitch.generation_pitch`), asked for when its batch is generated.
        mixed_lengths: let a batch hold rows of different lengths, each conditioned on its own codes;
            otherwise batches hold rows of one length, conditioned at once.
        temperature: sampling temperature; 0 is greedy.
        method: generation path (:func:`audio_vqvae.generation.generate`).
        seed: rows without a seed, in batch ``b``, draw theirs from a generator seeded with ``seed + b``.
        part: what generates: ``"all"``, the whole decoder; ``"deterministic"``, its deterministic part alone
            (:meth:`~audio_vqvae.model.VQVAE.deterministic`: no sampling, no seeds); ``"noise"``, its parts with
            white noise in place of the WaveNet's draws (:meth:`~audio_vqvae.model.VQVAE.parts_on_noise`, seeded
            like sampling). The two parts-only ones need ``mixed_lengths=False``.
        progress: called with the number of samples generated since its last call, summed over the rows.

    Yields:
        ``(index of the row in rows, Tensor[samples])``: float32 on the CPU, ``samples`` the row's length
        (``T' * hop`` of its codes, or its clip's length); in batch order, rows of a batch in their order.
    """
    if part not in ("all", "deterministic", "noise"):
        raise ValueError(f"part must be 'all', 'deterministic' or 'noise', got {part!r}")
    if part != "all" and mixed_lengths:
        raise ValueError(f"the decoder's {part} part is generated for batches of one length (mixed_lengths=False)")
    if model.needs_pitch and pitch is None:
        raise ValueError("this model speaks with pitch rows: pass pitch=")
    for row in rows:
        if (row.codes is None) == (row.clip is None):
            raise ValueError("a row generates from its codes or from a clip: give exactly one of them")
        if row.clip is not None and mixed_lengths:
            raise ValueError("clips are encoded together with their batch, so only in batches of one length "
                             "(mixed_lengths=False)")
    device = next(model.parameters()).device
    hop = model.hop_length

    def samples(row: DecodeRow) -> int:
        return len(clips[row.clip]) if row.codes is None else row.codes.shape[0] * hop

    for number, members in enumerate(_batches([samples(row) for row in rows], batch_size, mixed_lengths)):
        batch = [rows[index] for index in members]
        lengths = [samples(row) for row in batch]
        sources = sorted({row.clip for row in batch if row.clip is not None})
        encoded = {}
        if sources:
            audio = torch.stack([torch.as_tensor(clips[clip]) for clip in sources]).to(device)
            encoded = dict(zip(sources, model.encode(audio)))  # (clips, frames): encoded together
        row_codes = [encoded[row.clip] if row.codes is None else row.codes for row in batch]
        codes = torch.zeros(len(batch), max(c.shape[0] for c in row_codes), dtype=torch.long, device=device)
        for position, used in enumerate(row_codes):
            codes[position, :used.shape[0]] = used
        rows_pitch = None
        if model.needs_pitch:
            rows_pitch = torch.zeros(len(batch), 3, max(lengths))
            for position, index in enumerate(members):
                rows_pitch[position, :, :lengths[position]] = torch.from_numpy(pitch(index))
            rows_pitch = rows_pitch.to(device)
        speakers = torch.tensor([row.speaker for row in batch], device=device)
        reported = [0]

        def advance(steps: int) -> None:
            if progress is not None:
                done = sum(min(steps, length) for length in lengths)
                progress(done - reported[0])
                reported[0] = done

        if part == "deterministic":
            audio = model.deterministic(codes, speakers, rows_pitch)
            advance(audio.shape[1])
        else:
            drawn = seeds_from(torch.Generator().manual_seed(seed + number), len(batch))
            seeds = [drawn[position] if row.seed is None else row.seed for position, row in enumerate(batch)]
            if part == "noise":
                audio = model.parts_on_noise(codes, speakers, rows_pitch, seeds)
                advance(audio.shape[1])
            else:
                audio = model.decode(codes, speakers, temperature=temperature, seeds=seeds, method=method,
                                     progress=advance, pitch=rows_pitch,
                                     lengths=lengths if mixed_lengths else None)
        audio = audio.float().cpu()
        for position, index in enumerate(members):
            yield index, audio[position, :lengths[position]]


def _batches(lengths: Sequence[int], batch_size: int, mixed_lengths: bool) -> list[list[int]]:
    """Row indices in batches: sorted by length (stable), ``batch_size`` at most, and of one length each
    unless ``mixed_lengths``.

    Example:
        >>> _batches([3, 1, 3, 1, 2], 2, mixed_lengths=True)
        [[1, 3], [4, 0], [2]]
        >>> _batches([3, 1, 3, 1, 2], 2, mixed_lengths=False)
        [[1, 3], [4], [0, 2]]
    """
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    groups = [order] if mixed_lengths else [[i for i in order if lengths[i] == n] for n in sorted(set(lengths))]
    return [group[start:start + batch_size] for group in groups for start in range(0, len(group), batch_size)]
