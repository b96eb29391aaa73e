"""experiments/mel_ceiling.py (issue 18, lever a): the log-mel front end's framing and the frame table's round trip."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from audio_vqvae.config import ModelConfig
from audio_vqvae.quantizer import QUANTIZERS

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "mel_ceiling.py"


@pytest.fixture(scope="module")
def mel():
    spec = importlib.util.spec_from_file_location("mel_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    # The script patches VQVAE.__init__ and registers a quantizer on import; undo both for the other tests.
    import audio_vqvae.model as model_module

    model_module.VQVAE.__init__ = module._original_init
    QUANTIZERS.pop("frames", None)


def test_mel_frames_centre_on_their_hop(mel):
    front = mel.MelFrontEnd(8000, 64, 16)
    assert front.n_fft == 256
    audio = torch.zeros(1, 1, 64 * 20)
    audio[0, 0, 64 * 10 + 32] = 1.0  # an impulse in the middle of hop 10
    log_mel = front.log_mel(audio)[0]
    assert log_mel.shape == (mel.MEL_BANDS, 20)
    energy = log_mel.exp().sum(0).numpy()
    # Windows are 4 hops wide and centred on their hop: frames 8..12 see the impulse, symmetric about 10.
    assert np.argmax(energy) == 10 and energy[9] == pytest.approx(energy[11], rel=1e-4)
    assert energy[6] < 1e-3 and energy[14] < 1e-3


def test_frame_table_round_trips_and_wraps(mel):
    table = mel.FrameTable(num_codes=10, code_dim=3)
    first = torch.randn(2, 3, 4)
    codes = table.encode(first)
    assert codes.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert torch.equal(table.lookup(codes), first)
    second = torch.randn(1, 3, 4)
    wrapped = table.encode(second)
    assert wrapped.tolist() == [[8, 9, 0, 1]]
    assert torch.equal(table.lookup(wrapped), second)
    with pytest.raises(ValueError, match="holds 10 frames"):
        table.encode(torch.randn(1, 3, 11))
    out = table(first)
    assert out.quantized is first and float(out.loss) == 0.0


def test_patched_model_decodes_true_mel(mel):
    from audio_vqvae.model import VQVAE

    config = ModelConfig.preset("small")
    config.sample_rate, config.num_speakers = 8000, 2
    config.quantizer.kind, config.quantizer.num_codes = "frames", 1000
    config.decoder.stacks, config.decoder.layers_per_stack = 1, 3
    model = VQVAE(config).eval()
    assert isinstance(model.encoder, mel.MelFrontEnd)
    audio = torch.randn(1, 64 * 8) * 0.1
    out = model(audio, torch.tensor([1]))
    assert out.logits.shape == (1, 256, 64 * 8) and float(out.quantizer) == 0.0
    codes = model.encode(audio)
    # Conditioning on the looked-up frames is conditioning on the front end's output itself.
    assert torch.equal(model.quantizer.lookup(codes), model.encoder(audio.view(1, 1, -1)))
    assert model.decode(codes, torch.tensor([0]), method="torch").shape == (1, 64 * 8)
