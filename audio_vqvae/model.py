"""The VQ-VAE: encoder, vector quantizer and WaveNet decoder (van den Oord et al. 2017, Sec. 4.3).

Example:
    >>> import torch
    >>> from audio_vqvae.config import ModelConfig
    >>> cfg = ModelConfig.preset("small"); cfg.num_speakers = 4
    >>> model = VQVAE(cfg)
    >>> out = model(torch.rand(2, 1024) * 2 - 1, torch.tensor([0, 3]))
    >>> out.logits.shape, out.codes.shape                  # (B, 256, T), (B, T // hop)
    (torch.Size([2, 256, 1024]), torch.Size([2, 16]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from audio_vqvae.config import ModelConfig
from audio_vqvae.emphasis import deemphasis, preemphasis
from audio_vqvae.encoder import Encoder
from audio_vqvae.lpc import synthesis_rows, synthesise
from audio_vqvae.mulaw import mu_law_decode, mu_law_encode
from audio_vqvae.noise import HEADROOM
from audio_vqvae.parts import PartInputs
from audio_vqvae.quantizer import make_quantizer, time_jitter
from audio_vqvae.rendering import rendering_loss
from audio_vqvae.wavenet import WaveNet


@dataclass
class VQVAEOutput:
    """What :meth:`VQVAE.forward` returns.

    Attributes:
        logits: Tensor[B x 256 x T]; position t predicts sample t from samples < t (teacher forcing).
        codes: LongTensor[B x T // hop].
        loss: total training loss: the sum of :attr:`losses`, each weighted (a part's by its ``loss_weight``:
            ``decoder.lpc_weight``, ``decoder.harmonic_weight``; reconstruction and quantizer terms by 1).
        reconstruction: cross-entropy of the targets in nats per sample.
        quantizer: the quantizer's loss term (codebook and/or β·commitment).
        perplexity: codebook perplexity in this batch.
        codes_used: distinct codes in this batch.
        targets: LongTensor[B x T], the classes the logits score (the excitation's with a synthesis).
        losses: every loss term by name, unweighted: ``reconstruction``, ``quantizer``, and each synthesis
            part's (``harmonic`` with ``harmonics``, ``envelope`` with ``lpc_order``; :mod:`audio_vqvae.parts`),
            ``noise`` with ``noise_envelope``, ``render`` with ``render_weight`` (:mod:`audio_vqvae.rendering`);
            what the trainer and its logs iterate.
        predictions: each synthesis part's prediction by its loss name, DoubleTensor[B x T] (detached): the
            harmonic part's ``h``, the LPC split's ``p`` on the residual ``s − h``.
    """

    logits: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    reconstruction: torch.Tensor
    quantizer: torch.Tensor
    perplexity: torch.Tensor
    codes_used: torch.Tensor
    targets: Optional[torch.Tensor] = None
    losses: dict = field(default_factory=dict)
    predictions: dict = field(default_factory=dict)

    @property
    def envelope(self) -> torch.Tensor:
        """The envelope network's loss (zero without ``lpc_order``), see :mod:`audio_vqvae.lpc`."""
        return self.losses.get("envelope", self.reconstruction.new_zeros(()))

    @property
    def bits_per_sample(self) -> torch.Tensor:
        return self.reconstruction / math.log(2)


class VQVAE(nn.Module):
    """VQ-VAE with a WaveNet decoder conditioned on the codes and on a speaker embedding.

    Args:
        config: the whole model config; ``config.num_speakers`` sizes the speaker embedding.
        speakers: optional speaker table (plain dicts with at least ``"id"`` and ``"name"``),
            stored in checkpoints so that speakers can be addressed by name.
    """

    def __init__(self, config: ModelConfig, speakers: Optional[list[dict]] = None):
        super().__init__()
        config.validate()
        if speakers is not None and len(speakers) != config.num_speakers:
            raise ValueError(f"speaker table has {len(speakers)} entries but num_speakers={config.num_speakers}")
        self.config = config
        self.speakers = list(speakers) if speakers is not None else [
            {"id": i, "name": f"speaker{i}"} for i in range(config.num_speakers)]
        self.hop_length = config.hop_length
        self.encoder = Encoder(config.encoder, config.quantizer.code_dim)
        self.quantizer = make_quantizer(config.quantizer)
        self.decoder = WaveNet(config.decoder, config.num_speakers, config.quantizer.code_dim,
                               config.encoder.strides[::-1])

    # ------------------------------------------------------------------ helpers

    def speaker_id(self, name: str) -> int:
        """Speaker id for a name in the speaker table; ``KeyError`` lists the known names."""
        for entry in self.speakers:
            if entry["name"] == name:
                return int(entry["id"])
        raise KeyError(f"unknown speaker {name!r}; known speakers: {', '.join(e['name'] for e in self.speakers)}")

    def _check_audio(self, audio: torch.Tensor) -> None:
        if audio.dim() != 2:
            raise ValueError(f"audio must have shape (B, T), got {tuple(audio.shape)}")
        if audio.shape[1] < self.hop_length:
            raise ValueError(f"audio needs at least hop_length={self.hop_length} samples, got {audio.shape[1]}")

    @property
    def needs_pitch(self) -> bool:
        """Whether a part of the decoder reads the f0 (the source excitation, the harmonic part), so that every
        call needs the ``pitch`` rows."""
        return any(part.needs_pitch for part in self.decoder.parts)

    def part_inputs(self, vectors: torch.Tensor, speaker: Optional[torch.Tensor], pitch: Optional[torch.Tensor],
                    length: int) -> PartInputs:
        """What the decoder's parts read (:class:`audio_vqvae.parts.PartInputs`): Tensor[B x D x T'] code vectors,
        LongTensor[B] speakers (embedded here; None where only conditioning parts read them) and, when
        :attr:`needs_pitch`, Tensor[B x 3 x length] pitch rows (checked here)."""
        if self.needs_pitch:
            self._check_pitch(pitch, vectors.shape[0], length)
        embedded = None if speaker is None else self.decoder.speaker_embedding(speaker)
        return PartInputs(vectors, embedded, pitch, self.hop_length, self.config.sample_rate, length)

    def conditioning(self, quantized: torch.Tensor, length: int, pitch: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Upsample Tensor[B x D x T'] code vectors to Tensor[B x C x length] at the sample rate.

        When ``length`` is not a multiple of the hop, the last frame's conditioning is held. A model with
        a source excitation adds its projection of ``pitch``, Tensor[B x 3 x length] of sample-rate
        ``(phase, f0, voiced)`` rows (:func:`audio_vqvae.pitch.sample_pitch`).
        """
        upsampled = self.decoder.upsample(quantized)
        if upsampled.shape[2] < length:
            upsampled = F.pad(upsampled, (0, length - upsampled.shape[2]), mode="replicate")
        upsampled = upsampled[:, :, :length]
        if self.decoder.excitation is None:
            return upsampled
        return self.decoder.excitation.condition(upsampled, self.part_inputs(quantized, None, pitch, length))

    def _check_pitch(self, pitch: Optional[torch.Tensor], batch: int, length: int) -> None:
        if pitch is None:
            raise ValueError("this model's decoder takes f0 (a source excitation or a harmonic part): pass the pitch "
                             "rows (phase, f0, voiced)")
        if pitch.dim() != 3 or pitch.shape[0] != batch or pitch.shape[1:] != (3, length):
            raise ValueError(f"pitch must have shape ({batch}, 3, {length}), got {tuple(pitch.shape)}")

    @property
    def synthesises(self) -> bool:
        """Whether generation synthesises the signal around the WaveNet's draws (a synthesis part: the LPC split,
        the harmonic part): the classes it draws are then an excitation, not the signal."""
        return bool(self.decoder.synthesis_parts)

    @property
    def source_filter(self) -> bool:
        """Whether the decoder models an LPC excitation (``decoder.lpc_order``, :mod:`audio_vqvae.lpc`)."""
        return self.decoder.envelope is not None

    def targets(self, audio: torch.Tensor) -> torch.Tensor:
        """The decoder's μ-law input classes for Tensor[B x T] audio: LongTensor[B x T] (after pre-emphasis, if any).

        Without ``lpc_order`` they are also its targets; a source-filter decoder's targets are the excitation's
        classes, which depend on the codes (:attr:`VQVAEOutput.targets`).
        """
        return mu_law_encode(preemphasis(audio, self.config.preemphasis), self.decoder.quantization_channels)

    def waveform(self, classes: torch.Tensor, signal: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Generated classes LongTensor[B x T] (or, for a source-filter decoder, its synthesised ``signal``)
        -> Tensor[B x T] audio in [-1, 1], de-emphasised if the model is pre-emphasised."""
        if signal is not None:
            audio = signal.float()
        elif self.synthesises:
            raise ValueError("this decoder's classes are an excitation (LPC split or harmonic part): pass the "
                             "generated signal")
        else:
            audio = mu_law_decode(classes, self.decoder.quantization_channels)
        if self.config.preemphasis:
            audio = deemphasis(audio, self.config.preemphasis).clamp(-1.0, 1.0)
        return audio

    def _noisy_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        """The decoder's input classes: the targets, plus rounded Gaussian noise while training (``input_noise``)."""
        if not self.training or self.config.input_noise <= 0:
            return targets
        noise = torch.round(torch.randn(targets.shape, device=targets.device) * self.config.input_noise).long()
        return (targets + noise).clamp(0, self.decoder.quantization_channels - 1)

    # ------------------------------------------------------------------ public API

    def forward(self, audio: torch.Tensor, speaker: torch.Tensor, codes: Optional[torch.Tensor] = None,
                pitch: Optional[torch.Tensor] = None) -> VQVAEOutput:
        """Teacher-forced pass.

        Args:
            audio: Tensor[B x T] in [-1, 1].
            speaker: LongTensor[B] of speaker ids.
            codes: optional LongTensor[B x T // hop]; if given the decoder is conditioned on these codes
                instead of the encoding of ``audio`` (no quantizer loss, no codebook update).
            pitch: Tensor[B x 3 x T] ``(phase, f0, voiced)`` rows, required when :attr:`needs_pitch`.

        Returns:
            :class:`VQVAEOutput`.
        """
        self._check_audio(audio)
        if codes is None:
            latents = self.encoder(audio.unsqueeze(1))  # (B, D, T // hop)
            quantized = self.quantizer(latents)
            code_vectors, codes = quantized.quantized, quantized.codes
            quantizer_loss, perplexity, codes_used = quantized.loss, quantized.perplexity, quantized.codes_used
        else:
            code_vectors = self.quantizer.lookup(codes)
            zero = audio.new_zeros(())
            codes_used = torch.unique(codes).numel() * torch.ones((), dtype=torch.long)
            quantizer_loss, perplexity = zero, zero
        if self.training:
            code_vectors = time_jitter(code_vectors, self.config.time_jitter)
        inputs = self.targets(audio)
        targets, prediction = inputs, None
        losses = {"reconstruction": None, "quantizer": quantizer_loss}
        predictions, weights, outputs = {}, {}, {}
        if self.synthesises:
            # The WaveNet models what the synthesis parts leave: each part predicts from the residual of the
            # parts before it (detached: each is trained by its own loss), and the sum of their predictions is
            # the WaveNet's prediction input. Each part gets its own lookup of the speaker vectors.
            signal = preemphasis(audio, self.config.preemphasis)
            residual = signal.double()
            predicted = torch.zeros_like(residual)
            for part in self.decoder.synthesis_parts:
                split = part.split(self.part_inputs(code_vectors, speaker, pitch, audio.shape[1]), signal, residual)
                residual = residual - split.prediction
                predicted = predicted + split.prediction
                losses[part.loss_name], weights[part.loss_name] = split.loss, part.loss_weight
                for name, (value, weight) in split.extra_losses.items():
                    losses[name], weights[name] = value, weight
                predictions[part.loss_name] = split.prediction
                outputs[part.loss_name] = split.output
            predicted = predicted.clamp(-1.0, 1.0)
            quantization = self.decoder.quantization_channels
            excitation = signal.double() - predicted
            noise = self.decoder.noise
            if noise is not None:  # the WaveNet draws the excitation on the scale the envelope predicts
                gain, losses[noise.loss_name], log_sigma = noise.scale(
                    self.part_inputs(code_vectors, speaker, pitch, audio.shape[1]), excitation)
                weights[noise.loss_name] = noise.loss_weight
                excitation = excitation / gain
                if self.config.decoder.render_weight:  # the parts' rendering with white noise (audio_vqvae.rendering)
                    losses["render"] = rendering_loss(outputs.get("harmonic"), outputs.get("envelope"),
                                                      log_sigma.float(), signal.float(), self.hop_length,
                                                      self.config.sample_rate)
                    weights["render"] = self.config.decoder.render_weight
            targets = mu_law_encode(excitation, quantization)
            prediction = mu_law_encode(predicted, quantization)
        conditioning = self.conditioning(code_vectors, audio.shape[1], pitch)
        logits = self.decoder(self._noisy_inputs(inputs), conditioning, speaker, prediction)
        reconstruction = F.cross_entropy(logits.float(), targets)
        losses["reconstruction"] = reconstruction
        loss = reconstruction + quantizer_loss
        for name in sorted(weights):  # the parts' weighted losses, in name order
            loss = loss + weights[name] * losses[name]
        return VQVAEOutput(logits=logits, codes=codes, loss=loss, reconstruction=reconstruction,
                           quantizer=quantizer_loss, perplexity=perplexity, codes_used=codes_used,
                           targets=targets, losses=losses, predictions=predictions)

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Codes of Tensor[B x T] audio -> LongTensor[B x T // hop]; never updates the codebook."""
        self._check_audio(audio)
        return self.quantizer.encode(self.encoder(audio.unsqueeze(1)))

    @torch.no_grad()
    def decoder_inputs(self, codes: torch.Tensor, speaker: torch.Tensor, lengths: Optional[Sequence[int]] = None,
                       pitch: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """What generation needs from LongTensor[B x T'] codes: conditioning Tensor[B x C x T] at the sample rate
        and, for a decoder that synthesises (:attr:`synthesises`), its per-sample synthesis rows
        DoubleTensor[B x T x (2 + M)]: the harmonic part ``h``, the noise envelope's gain and the LPC coefficients
        (:func:`audio_vqvae.lpc.synthesis_rows`; else None).

        ``lengths`` (samples per utterance) lets a batch hold utterances of different lengths: each is
        conditioned on its own ``ceil(length / hop)`` codes, one utterance at a time (so its conditioning,
        and so its samples, do not depend on its batch), and zero-padded after its end, which cannot change
        its samples (generation is causal). Without it the whole batch is conditioned at once on ``T' * hop``.
        """
        batch, frames = codes.shape
        full = frames * self.hop_length
        vectors = self.quantizer.lookup(codes)
        if lengths is None:
            rows = None if pitch is None else pitch[:, :, :full]
            return self.conditioning(vectors, full, rows), self._synthesis(vectors, speaker, rows, full)
        lengths = [int(n) for n in lengths]
        if len(lengths) != batch or any(not 0 < n <= full for n in lengths):
            raise ValueError(f"lengths must be {batch} sample counts in 1..{full}, got {lengths}")
        steps = max(lengths)
        conditioning = vectors.new_zeros(batch, self.config.decoder.conditioning_channels, steps)
        synthesis = (vectors.new_zeros(batch, steps, 2 + self.config.decoder.lpc_order, dtype=torch.float64)
                     if self.synthesises else None)
        for row, length in enumerate(lengths):
            used = vectors[row:row + 1, :, :-(-length // self.hop_length)]
            rows = None if pitch is None else pitch[row:row + 1, :, :length]
            conditioning[row, :, :length] = self.conditioning(used, length, rows)[0]
            if synthesis is not None:
                synthesis[row, :length] = self._synthesis(used, speaker[row:row + 1], rows, length)[0]
        return conditioning, synthesis

    def _synthesis(self, vectors: torch.Tensor, speaker: torch.Tensor, pitch: Optional[torch.Tensor],
                   length: int) -> Optional[torch.Tensor]:
        """:func:`audio_vqvae.lpc.synthesis_rows` of Tensor[B x D x T'] code vectors (None without a synthesis):
        what the parts precompute for generation, the harmonic part's ``h``, the noise envelope's gain and the
        LPC split's coefficients."""
        if not self.synthesises:
            return None
        harmonic, envelope, noise = self.decoder.harmonic, self.decoder.envelope, self.decoder.noise
        inputs = self.part_inputs(vectors, speaker, pitch, length)
        offset = None if harmonic is None else harmonic.signal(inputs)
        coefficients = None if envelope is None else envelope.coefficients(inputs)
        gain = None if noise is None else noise.gain(inputs)
        return synthesis_rows(offset, coefficients, gain)

    @torch.no_grad()
    def deterministic(self, codes: torch.Tensor, speaker: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        """The decoder's deterministic part alone, the WaveNet's draws set to zero: LongTensor[B x T'] codes,
        LongTensor[B] speakers, Tensor[B x 3 x T' * hop] pitch rows -> Tensor[B x T' * hop] audio.

        With a zero excitation the LPC recursion on the residual stays zero, so this is the harmonic part ``h``
        (de-emphasised, if the model is); it shows what the WaveNet adds.
        """
        if self.decoder.harmonic is None:
            raise ValueError("this model has no harmonic part (decoder.harmonics = 0): its output is all WaveNet")
        full = codes.shape[1] * self.hop_length
        inputs = self.part_inputs(self.quantizer.lookup(codes), speaker, pitch[:, :, :full], full)
        return self.waveform(None, self.decoder.harmonic.signal(inputs).clamp(-1.0, 1.0))

    def set_voiced_noise(self, scale: float) -> None:
        """Generate with the noise envelope's gain in voiced samples multiplied by ``scale`` (``decoder.voiced_noise``,
        which the model was made with; a command's ``--voiced-noise``). Raises ConfigError as the config would."""
        replace(self.config.decoder, voiced_noise=scale).validate()
        self.config.decoder.voiced_noise = scale
        self.decoder.noise.voiced_scale = scale

    @torch.no_grad()
    def parts_on_noise(self, codes: torch.Tensor, speaker: torch.Tensor, pitch: Optional[torch.Tensor],
                       seeds: Sequence[int]) -> torch.Tensor:
        """The decoder's parts with white noise in place of the WaveNet's draws: LongTensor[B x T'] codes,
        LongTensor[B] speakers, Tensor[B x 3 x T' * hop] pitch rows (None for a model without f0) and one seed
        per utterance -> Tensor[B x T' * hop] audio.

        Every excitation sample is Gaussian with the RMS the WaveNet's scaled excitation has in training,
        ``1 / HEADROOM``, so the rest is noise of the noise envelope's predicted RMS σ through the LPC split's
        predicted filter, on top of ``h``: ``s = h + p + σ n``, through generation's own synthesis
        (:func:`audio_vqvae.lpc.synthesise`). It is what a harmonic-plus-noise vocoder makes of the parts; beside
        :meth:`decode` it shows what the WaveNet's draws add to noise of the right level and envelope.
        """
        if self.decoder.noise is None:
            raise ValueError("this model has no noise envelope (decoder.noise_envelope): nothing gives the level of "
                             "the noise that would replace the WaveNet's draws")
        full = codes.shape[1] * self.hop_length
        vectors = self.quantizer.lookup(codes)
        # One utterance at a time, as decode with lengths conditions them: each one's audio is that of its own codes.
        rows = torch.cat([self._synthesis(vectors[row:row + 1], speaker[row:row + 1],
                                          None if pitch is None else pitch[row:row + 1, :, :full], full)
                          for row in range(len(codes))])
        noise = torch.stack([torch.randn(full, generator=torch.Generator().manual_seed(int(seed)),
                                         dtype=torch.float64) for seed in seeds]) / HEADROOM
        return self.waveform(None, synthesise(rows, noise.to(rows.device)))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, speaker: torch.Tensor, temperature: float = 1.0,
               generator: Optional[torch.Generator] = None,
               progress: Optional[Callable[[int], None]] = None, method: str = "auto",
               pitch: Optional[torch.Tensor] = None, lengths: Optional[Sequence[int]] = None,
               seeds: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Generate audio autoregressively from codes, on the fastest available path: the one decode path
        of the package (the CLI, training's audio rounds, ``evaluate`` and the benchmark call it).

        Args:
            codes: LongTensor[B x T'].
            speaker: LongTensor[B] of speaker ids (any training speaker: this is how conversion works).
            temperature: sampling temperature; 0 means greedy (argmax).
            generator: random generator for sampling (reproducible output): it draws one seed per utterance.
            progress: called with the number of samples generated so far.
            method: ``"auto"``, ``"fused"``, ``"torch"`` or ``"graph"``; see :func:`audio_vqvae.generation.generate`
                (``"auto"``: :func:`~audio_vqvae.generation.engine.resolve_method`).
            pitch: Tensor[B x 3 x T' * hop] ``(phase, f0, voiced)`` rows, required when :attr:`needs_pitch`
                (:func:`audio_vqvae.pitch.sample_pitch` of the f0 to speak with, phase integrated).
            lengths: samples per utterance (:meth:`decoder_inputs`); the output is zero after each one's end.
            seeds: one sampling seed per utterance (instead of drawing them from ``generator``).

        Returns:
            Tensor[B x max(lengths)] in [-1, 1] (``T' * hop`` samples without ``lengths``).
        """
        from audio_vqvae.generation.engine import generate  # imported here: numba loads only when generating

        conditioning, synthesis = self.decoder_inputs(codes, speaker, lengths, pitch)
        generated = generate(self.decoder, conditioning, speaker, temperature=temperature, generator=generator,
                             seeds=seeds, method=method, progress=progress, synthesis=synthesis)
        audio = self.waveform(generated.samples, generated.signal)
        if lengths is not None:
            for row, length in enumerate(lengths):
                audio[row, int(length):] = 0.0
        return audio
