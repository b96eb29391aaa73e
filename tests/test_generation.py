"""The generation engine: fused kernels ≡ PyTorch path ≡ teacher-forced network, and batching changes nothing;
many utterances in batches (decode_rows) and codes files."""

import numba
import numpy as np
import pytest
import torch

from audio_vqvae.config import ModelConfig
from audio_vqvae.errors import InputError
from audio_vqvae.generation import DecodeRow, decode_rows, engine, generate, sample_inverse_cdf
from audio_vqvae.generation.codes_file import Encoded, check_codes_path, read_codes_file, write_codes_file
from audio_vqvae.model import VQVAE
from audio_vqvae.pitch import generation_pitch

from helpers import EVEN, RATE, SPEAKERS, TINY, inputs, make_net, tiny_config


@pytest.mark.parametrize("config", [TINY, EVEN], ids=["odd-padding", "even"])
@pytest.mark.parametrize("method", ["fused", "torch"])
def test_teacher_forced_logits_match_the_parallel_network(config, method):
    net = make_net(config)
    conditioning, speaker = inputs(config)
    teacher = torch.randint(0, 256, (3, 300), generator=torch.Generator().manual_seed(2))
    parallel = net(teacher, conditioning, speaker)
    out = generate(net, conditioning, speaker, seeds=[0, 1, 2], teacher=teacher, return_logits=True, method=method)
    assert (out.logits - parallel).abs().max().item() <= 1e-4


@pytest.mark.parametrize("method", ["fused", "torch"])
def test_greedy_generation_is_the_argmax_of_the_teacher_forced_logits_over_its_own_output(method):
    net = make_net()
    conditioning, speaker = inputs(TINY, steps=400)
    generated = generate(net, conditioning, speaker, temperature=0.0, method=method).samples
    assert torch.equal(net(generated, conditioning, speaker).argmax(1), generated)
    assert generated.unique().numel() > 5  # not stuck on one class: the check has something to check


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_fused_and_pytorch_paths_give_the_same_samples_with_the_same_seeds(temperature):
    net = make_net(EVEN)
    conditioning, speaker = inputs(EVEN, steps=400)
    fused = generate(net, conditioning, speaker, temperature=temperature, seeds=[5, 6, 7], method="fused",
                     return_logits=True)
    reference = generate(net, conditioning, speaker, temperature=temperature, seeds=[5, 6, 7], method="torch",
                         return_logits=True)
    assert torch.equal(fused.samples, reference.samples)
    assert (fused.logits - reference.logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("batch", [5, 19], ids=["one-block", "three-blocks"])
def test_a_batch_gives_the_same_samples_as_its_utterances_one_by_one(batch):
    net = make_net()
    conditioning, speaker = inputs(TINY, batch=batch, steps=500 if batch < 8 else 150)
    seeds = [11 + b for b in range(batch)]
    batched = generate(net, conditioning, speaker, seeds=seeds, method="fused").samples
    for b in range(batch):  # batch 1 runs the one-utterance kernel, a batch the 8-utterance block kernel
        alone = generate(net, conditioning[b:b + 1], speaker[b:b + 1], seeds=[seeds[b]], method="fused").samples
        assert torch.equal(alone[0], batched[b]), f"utterance {b}"
    reference = generate(net, conditioning[:2], speaker[:2], seeds=seeds[:2], method="torch").samples
    assert torch.equal(reference, batched[:2])


def test_batch_of_one_on_one_thread_equals_two_threads():
    if numba.config.NUMBA_NUM_THREADS < 2:  # the "two threads" run would be the one-thread kernel again
        pytest.skip("numba has one thread here (NUMBA_NUM_THREADS=1): nothing to compare")
    net = make_net(EVEN)
    conditioning, speaker = inputs(EVEN, batch=1, steps=300)
    two = generate(net, conditioning, speaker, seeds=[3], method="fused").samples
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one = generate(net, conditioning, speaker, seeds=[3], method="fused").samples
    finally:
        numba.set_num_threads(previous)
    assert torch.equal(one, two)


def test_chunking_and_progress_do_not_change_the_samples():
    net = make_net()
    conditioning, speaker = inputs(TINY, batch=2, steps=333)
    whole = generate(net, conditioning, speaker, seeds=[1, 2], method="fused").samples
    reports = []
    chunked = generate(net, conditioning, speaker, seeds=[1, 2], method="fused", chunk_steps=100,
                       progress=reports.append).samples
    assert torch.equal(whole, chunked)
    assert reports == [100, 200, 300, 333]


def test_seeds_make_sampling_reproducible_and_different_seeds_differ():
    net = make_net()
    conditioning, speaker = inputs(TINY, batch=1, steps=200)
    a = generate(net, conditioning, speaker, seeds=[1]).samples
    assert torch.equal(a, generate(net, conditioning, speaker, seeds=[1]).samples)
    assert not torch.equal(a, generate(net, conditioning, speaker, seeds=[2]).samples)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(generate(net, conditioning, speaker, generator=g1).samples,
                       generate(net, conditioning, speaker, generator=g2).samples)


def test_inverse_cdf_sampling_follows_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    uniforms = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    drawn = sample_inverse_cdf(logits.expand(20000, -1), uniforms, temperature=1.0)
    frequencies = torch.bincount(drawn, minlength=4).double() / 20000
    assert torch.allclose(frequencies, torch.softmax(logits.double(), 1)[0], atol=0.01)
    assert sample_inverse_cdf(logits, torch.tensor([0.5]), temperature=0.0).item() == 2
    # Near-zero temperature concentrates on the argmax.
    assert sample_inverse_cdf(logits, torch.tensor([0.999]), temperature=1e-3).item() == 2


@pytest.mark.parametrize("scale", [0.5, 6.0, 400.0], ids=["flat", "peaked", "underflowing"])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_fused_sampler_draws_the_class_torchs_inverse_cdf_draws(scale, temperature):
    """The kernels' vectorised float64 exp and binary search pick torch's class for the same uniform."""
    numerics = pytest.importorskip("audio_vqvae.generation.fused.numerics")

    @numba.njit
    def draw_all(logits, uniforms, inv_temperature, greedy, out):
        cdf = np.empty(logits.shape[1])
        work = np.empty(logits.shape[1])
        for i in range(logits.shape[0]):
            out[i] = numerics.sample_class(logits[i], cdf, work, uniforms[i], inv_temperature, greedy)

    generator = torch.Generator().manual_seed(int(scale * 10))
    logits = torch.randn(4000, 256, generator=generator) * scale
    logits[:5, 100:] = -1e4  # classes far below the top: their share underflows to exactly 0
    uniforms = torch.rand(4000, generator=generator, dtype=torch.float64)
    uniforms[:3] = torch.tensor([0.0, 1.0 - 2 ** -53, 0.5])
    drawn = np.empty(4000, np.int64)
    draw_all(logits.numpy(), uniforms.numpy(), 1.0 / temperature, False, drawn)
    assert torch.equal(torch.from_numpy(drawn), sample_inverse_cdf(logits, uniforms, temperature))
    draw_all(logits.numpy(), uniforms.numpy(), 1.0, True, drawn)
    assert torch.equal(torch.from_numpy(drawn), logits.argmax(dim=1))


def test_model_decode_uses_the_fastest_path_and_matches_the_reference_path():
    config = ModelConfig.preset("small")
    config.encoder.strides = (2, 2)
    config.decoder = EVEN
    config.num_speakers = 3
    torch.manual_seed(0)
    model = VQVAE(config).eval()
    codes = torch.randint(0, config.quantizer.num_codes, (2, 30))
    speaker = torch.tensor([0, 2])
    fast = model.decode(codes, speaker, generator=torch.Generator().manual_seed(1))
    slow = model.decode(codes, speaker, generator=torch.Generator().manual_seed(1), method="torch")
    assert fast.shape == (2, 120)
    assert torch.equal(fast, slow)
    assert engine.resolve_method("auto", torch.device("cpu")) == "fused"


def test_inputs_on_another_device_than_the_decoder_are_a_clear_error():
    net = make_net()
    conditioning, speaker = inputs(TINY, batch=1, steps=10)
    with pytest.raises(ValueError, match="the decoder is on cpu but the conditioning is on meta"):
        generate(net, conditioning.to("meta"), speaker, seeds=[0], method="torch")


# ------------------------------------------------------------------ many utterances: decode_rows, codes files


def _tiny_model(excitation_harmonics: int = 0) -> VQVAE:
    torch.manual_seed(0)
    table = [{"id": i, "name": name, "log_f0_mean": 4.6, "log_f0_std": 0.1} for i, name in enumerate(SPEAKERS)]
    return VQVAE(tiny_config(excitation_harmonics), speakers=table).eval()


def test_decode_rows_batches_clips_of_one_length_with_the_seeds_decode_draws_from_a_generator():
    model = _tiny_model()
    clips = [torch.randn(48, generator=torch.Generator().manual_seed(k)) * 0.3 for k in range(3)] + [torch.zeros(64)]
    rows = [DecodeRow(0, clip=0), DecodeRow(1, clip=3), DecodeRow(2, clip=1), DecodeRow(1, clip=2)]
    reported = []
    out = dict(decode_rows(model, rows, batch_size=2, clips=clips, seed=7, progress=reported.append))
    assert sum(reported) == 3 * 48 + 64
    # Batches: rows 0 and 2 (clips 0 and 1, encoded together), row 3 (clip 2), row 1 (the longer clip 3).
    for batch, (members, sources) in enumerate([([0, 2], [0, 1]), ([3], [2]), ([1], [3])]):
        codes = model.encode(torch.stack([clips[clip] for clip in sources]))
        expected = model.decode(codes, torch.tensor([rows[row].speaker for row in members]),
                                generator=torch.Generator().manual_seed(7 + batch))
        for position, row in enumerate(members):
            assert torch.equal(out[row], expected[position])


def test_decode_rows_of_mixed_lengths_give_each_row_what_it_gives_alone():
    model = _tiny_model(excitation_harmonics=2)
    codes = [torch.randint(0, 16, (frames,), generator=torch.Generator().manual_seed(frames)) for frames in (5, 9, 3)]
    pitch = [generation_pitch(np.full(4, 150.0 + 20 * k, np.float32), RATE, len(c) * 8, RATE // 100)
             for k, c in enumerate(codes)]
    rows = [DecodeRow(k % 3, codes=c, seed=10 + k) for k, c in enumerate(codes)]
    together = dict(decode_rows(model, rows, batch_size=3, pitch=pitch.__getitem__, mixed_lengths=True,
                                temperature=0.8))
    for k in range(3):
        alone = dict(decode_rows(model, [rows[k]], batch_size=1, pitch=lambda _, k=k: pitch[k], mixed_lengths=True,
                                 temperature=0.8))
        assert together[k].shape == (codes[k].shape[0] * 8,) and torch.equal(together[k], alone[0])
    with pytest.raises(ValueError, match="mixed_lengths=False"):
        next(decode_rows(model, rows, batch_size=3, pitch=pitch.__getitem__, mixed_lengths=True, part="deterministic"))
    with pytest.raises(ValueError, match="mixed_lengths=False"):
        next(decode_rows(model, rows, batch_size=3, pitch=pitch.__getitem__, mixed_lengths=True, part="noise"))
    with pytest.raises(ValueError, match="part must be"):
        next(decode_rows(model, rows, batch_size=3, pitch=pitch.__getitem__, part="wavenet"))
    with pytest.raises(ValueError, match="exactly one"):
        next(decode_rows(model, [DecodeRow(0)], batch_size=1, pitch=pitch.__getitem__))
    with pytest.raises(ValueError, match="pass pitch="):
        next(decode_rows(model, rows, batch_size=3, mixed_lengths=True))


def test_a_codes_file_round_trips_and_out_of_range_codes_are_refused(tmp_path):
    model = _tiny_model(excitation_harmonics=2)
    path = tmp_path / "codes.npz"
    check_codes_path(model, path)
    with pytest.raises(InputError, match=r"this model's codes file is \.npz"):
        check_codes_path(model, tmp_path / "codes.npy")
    encoded = Encoded(torch.tensor([3, 0, 15]), np.array([0.0, 120.5, 130.0], np.float32), (4.8, 0.15))
    write_codes_file(model, path, encoded)
    read = read_codes_file(model, path)
    assert torch.equal(read.codes, encoded.codes) and np.array_equal(read.f0, encoded.f0)
    assert read.log_f0 == encoded.log_f0
    np.savez(path, codes=np.array([3, 16]), f0=encoded.f0, log_f0=np.array([4.8, 0.15]), sample_rate=np.array(RATE))
    with pytest.raises(InputError, match=r"codes must lie in \[0, 16\), got 3..16"):
        read_codes_file(model, path)
