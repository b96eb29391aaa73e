"""The frame-rate part networks' context (decoder.part_context, audio_vqvae.parts.FrameContext): what each part
network sees of the codes, that no context keeps a part's parameters, the option's errors, and a training pass.

The generation guarantees with the option on (greedy = teacher forced, fused = PyTorch, a batch = its
utterances, causality) are tests/test_lpc.py's, whose "harmonic+lpc+noise+context" variant has it."""

from __future__ import annotations

import pytest
import torch
from test_lpc import VARIANTS, lpc_model, pitch_rows

from audio_vqvae.config import ConfigError, WaveNetConfig
from audio_vqvae.harmonic import HarmonicPart
from audio_vqvae.lpc import SourceFilter
from audio_vqvae.noise import NoiseEnvelope
from audio_vqvae.parts import FrameContext

CODE_DIM, SPEAKER_DIM, FRAMES = 6, 3, 60


def part_output(part, codes: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
    """The part network's raw output per frame, (frames, channels), for one utterance."""
    if isinstance(part, HarmonicPart):
        out = part(codes, speaker, torch.ones(1, 2, codes.shape[2]))
    else:
        out = part(codes, speaker)
    if isinstance(part, SourceFilter):  # (B, T', M)
        return out[0]
    return out[0].reshape(-1, codes.shape[2]).T  # (B, C, T') or (B, T') -> (T', C)


def frames_reached(part, frame: int) -> list[int]:
    """The frames whose output changes when code frame ``frame`` changes."""
    torch.manual_seed(1)
    codes, speaker = torch.randn(1, CODE_DIM, FRAMES), torch.randn(1, SPEAKER_DIM)
    changed = codes.clone()
    changed[0, :, frame] += 3.0
    with torch.no_grad():
        difference = (part_output(part, changed, speaker) - part_output(part, codes, speaker)).abs().amax(dim=1)
    return torch.nonzero(difference > 0).flatten().tolist()


@pytest.mark.parametrize("layers", [0, 3])
@pytest.mark.parametrize("kind", ["harmonic", "envelope", "noise"])
def test_each_part_network_sees_exactly_its_context_of_code_frames(kind, layers):
    torch.manual_seed(0)
    part = {"harmonic": lambda: HarmonicPart(CODE_DIM, SPEAKER_DIM, 4, hidden=16, context=layers),
            "envelope": lambda: SourceFilter(CODE_DIM, SPEAKER_DIM, 5, hidden=16, context=layers),
            "noise": lambda: NoiseEnvelope(CODE_DIM, SPEAKER_DIM, hidden=16, context=layers)}[kind]()
    with torch.no_grad():  # make every unit pass something on, so that each frame in reach shows a change
        for module in part.modules():
            if isinstance(module, torch.nn.Conv1d):
                module.bias.fill_(0.5)
    reach = 2 + part.context.context_frames  # the two 3-wide convolutions, then the dilated layers
    assert reach == {0: 2, 3: 16}[layers]
    assert frames_reached(part, 30) == list(range(30 - reach, 30 + reach + 1))
    assert frames_reached(part, 0) == list(range(0, reach + 1))  # zero padded at the ends


def test_no_context_holds_no_parameters_and_is_the_identity():
    context = FrameContext(8, layers=0)
    assert list(context.parameters()) == [] and context.context_frames == 0
    x = torch.randn(2, 8, 5)
    assert context(x) is x
    # A part without context has the parameters it had before the option existed, drawn in the same order.
    torch.manual_seed(0)
    before = HarmonicPart(CODE_DIM, SPEAKER_DIM, 4, hidden=16)
    torch.manual_seed(0)
    without = HarmonicPart(CODE_DIM, SPEAKER_DIM, 4, hidden=16, context=0)
    assert list(without.state_dict()) == ["input.weight", "input.bias", "hidden.weight", "hidden.bias",
                                          "output.weight", "output.bias"]
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), without.state_dict().values()))
    wide = FrameContext(8, layers=4)
    assert [layer.dilation[0] for layer in wide.layers] == [2, 4, 8, 16] and wide(x).shape == x.shape


def test_the_option_needs_a_frame_rate_part_and_a_sane_depth():
    with pytest.raises(ConfigError, match="part_context must be 0"):
        WaveNetConfig(harmonics=4, part_context=-1).validate()
    with pytest.raises(ConfigError, match="part_context must be 0"):
        WaveNetConfig(harmonics=4, part_context=9).validate()
    with pytest.raises(ConfigError, match="needs decoder.harmonics or decoder.lpc_order"):
        WaveNetConfig(part_context=2).validate()
    WaveNetConfig(lpc_order=4, part_context=2).validate()
    assert WaveNetConfig().part_context == 0  # off in the presets: the paper's model is unchanged


def test_every_part_of_a_model_gets_the_context_and_trains_it():
    model = lpc_model(**VARIANTS["harmonic+lpc+noise+context"]).train()
    parts = (model.decoder.harmonic, model.decoder.envelope, model.decoder.noise)
    assert [len(part.context.layers) for part in parts] == [2, 2, 2]
    audio = 0.05 * torch.sin(torch.arange(2 * 480).view(2, 480) * 0.12)
    out = model(audio, torch.tensor([0, 2]), pitch=pitch_rows(2, 480))
    assert set(out.losses) == {"reconstruction", "quantizer", "harmonic", "envelope", "noise"}
    out.loss.backward()
    for part in parts:
        assert all(float(p.grad.abs().sum()) > 0 for p in part.context.parameters()), type(part).__name__
