"""The quantizer's math: nearest codes, straight-through gradients, the paper's EMA formulas, restarts."""

import math
import re
from pathlib import Path

import pytest
import torch

import audio_vqvae.quantizer as quantizer_module
from audio_vqvae.config import ConfigError, ModelConfig, QuantizerConfig, apply_overrides
from audio_vqvae.model import VQVAE
from audio_vqvae.quantizer import QUANTIZERS, VectorQuantizer, make_quantizer, register_quantizer, time_jitter

EXTENDING = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def make(update="ema", **kwargs):
    torch.manual_seed(0)
    return VectorQuantizer(num_codes=kwargs.pop("num_codes", 16), code_dim=4, update=update, **kwargs)


@pytest.mark.parametrize("update", ["ema", "grad"])
def test_nearest_code_matches_brute_force(update):
    vq = make(update, data_init=False).eval()
    latents = torch.randn(3, 4, 40)
    out = vq(latents)
    flat = latents.transpose(1, 2).reshape(-1, 4)
    codebook = vq.codebook.detach()
    brute = torch.tensor([min(range(16), key=lambda k: float(((z - codebook[k]) ** 2).sum())) for z in flat])
    assert torch.equal(out.codes.reshape(-1), brute)
    assert torch.allclose(out.quantized.transpose(1, 2).reshape(-1, 4), codebook[brute])


@pytest.mark.parametrize("update", ["ema", "grad"])
def test_straight_through_gradient_reaches_the_input(update):
    vq = make(update, data_init=False)
    latents = torch.randn(2, 4, 10, requires_grad=True)
    out = vq(latents)
    weights = torch.randn_like(out.quantized)
    (out.quantized * weights).sum().backward()
    # d(quantized)/d(latents) is the identity: the decoder's gradient is copied to the encoder output.
    assert torch.allclose(latents.grad, weights)


def test_grad_mode_codebook_gets_gradient_only_from_codebook_term():
    vq = make("grad", data_init=False)
    latents = torch.randn(2, 4, 10, requires_grad=True)
    out = vq(latents)
    out.quantized.sum().backward()  # decoder-side gradient must not reach the codebook
    assert vq.codebook.grad is None or torch.count_nonzero(vq.codebook.grad) == 0

    vq.codebook.grad = None
    latents.grad = None
    out = vq(latents)
    out.commitment_loss.backward()  # commitment term moves the encoder only
    assert vq.codebook.grad is None or torch.count_nonzero(vq.codebook.grad) == 0
    assert torch.count_nonzero(latents.grad) > 0

    out = vq(latents)
    out.codebook_loss.backward()
    used = out.codes.unique()
    flat = latents.detach().transpose(1, 2).reshape(-1, 4)
    codes = out.codes.reshape(-1)
    expected = torch.zeros_like(vq.codebook)
    for k in used:  # d/de_k mean((e_k - sg[z])^2) over all N*D elements
        expected[k] = 2 * (vq.codebook[k].detach() - flat[codes == k]).sum(0) / flat.numel()
    assert torch.allclose(vq.codebook.grad, expected, atol=1e-6)


def test_grad_mode_loss_is_codebook_plus_beta_commitment():
    vq = make("grad", data_init=False, commitment=0.25)
    out = vq(torch.randn(2, 4, 10))
    assert torch.allclose(out.loss, out.codebook_loss + 0.25 * out.commitment_loss)
    assert torch.allclose(out.codebook_loss, out.commitment_loss)  # same value, different gradients


def test_one_ema_step_equals_the_appendix_formulas():
    decay, epsilon, num_codes = 0.99, 1e-5, 16
    vq = make("ema", data_init=False, decay=decay, epsilon=epsilon, dead_code_steps=0)
    codebook, count, total_sum = vq.codebook.clone(), vq.ema_count.clone(), vq.ema_sum.clone()
    latents = torch.randn(2, 4, 30)
    vq.train()
    out = vq(latents)

    flat = latents.transpose(1, 2).reshape(-1, 4)
    distances = ((flat[:, None, :] - codebook[None]) ** 2).sum(-1)
    codes = distances.argmin(1)
    assert torch.equal(out.codes.reshape(-1), codes)
    n = torch.stack([(codes == i).sum() for i in range(num_codes)]).float()
    sums = torch.stack([flat[codes == i].sum(0) for i in range(num_codes)])
    new_count = decay * count + (1 - decay) * n                    # N_i <- γ N_i + (1-γ) n_i
    new_sum = decay * total_sum + (1 - decay) * sums               # m_i <- γ m_i + (1-γ) Σ_j z_{i,j}
    total = new_count.sum()
    smoothed = (new_count + epsilon) / (total + num_codes * epsilon) * total  # Laplace smoothing
    assert torch.allclose(vq.ema_count, new_count)
    assert torch.allclose(vq.ema_sum, new_sum, atol=1e-6)
    assert torch.allclose(vq.codebook, new_sum / smoothed[:, None], atol=1e-6)  # e_i = m_i / N_i
    assert torch.allclose(out.loss, 0.25 * ((flat - codebook[codes]) ** 2).mean())


def test_eval_mode_leaves_every_buffer_unchanged():
    vq = make("ema").eval()  # data_init on, but eval must not initialise either
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(2, 4, 30))
    vq.encode(torch.randn(2, 4, 30))
    for key, value in vq.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("update", ["ema", "grad"])
def test_data_dependent_initialisation_uses_encoder_outputs(update):
    vq = make(update, num_codes=8).train()
    assert not bool(vq.initialized)
    latents = torch.randn(1, 4, 100) * 10 + 50
    vq(latents)
    flat = latents.transpose(1, 2).reshape(-1, 4)
    assert bool(vq.initialized)
    if update == "grad":  # no EMA step afterwards: every code is one of this batch's vectors
        for code in vq.codebook.detach():
            assert torch.isclose(((flat - code) ** 2).sum(1).min(), torch.tensor(0.0), atol=1e-4)
    else:  # one EMA step after the initialisation keeps the codes among the data
        assert ((vq.codebook - 50).abs() < 40).all()
    first = vq.codebook.detach().clone()
    vq(torch.randn(1, 4, 100))
    if update == "grad":
        assert torch.equal(vq.codebook.detach(), first)  # initialised once only


@pytest.mark.parametrize("update", ["ema", "grad"])
def test_dead_codes_are_restarted_from_recent_outputs(update):
    vq = make(update, num_codes=8, data_init=False, dead_code_steps=3).train()
    with torch.no_grad():
        vq.codebook[1:] = 1000.0  # codes 1..7 can never win: only code 0 is used
        if update == "ema":
            vq.ema_sum.copy_(vq.codebook)
    latents = torch.randn(2, 4, 50)
    flat = latents.transpose(1, 2).reshape(-1, 4)
    for step in range(2):
        vq(latents)
        assert (vq.codebook[1:] > 900).all()
        assert (vq.steps_unused[1:] == step + 1).all() and vq.steps_unused[0] == 0
    vq(latents)  # third unused step: restart
    for code in vq.codebook[1:].detach():
        assert torch.isclose(((flat - code) ** 2).sum(1).min(), torch.tensor(0.0), atol=1e-5)
    assert (vq.steps_unused[1:] == 0).all()
    out = vq(latents)
    assert out.codes_used > 1


def test_perplexity_and_codes_used():
    vq = make("grad", num_codes=4, data_init=False).eval()
    with torch.no_grad():
        vq.codebook.copy_(torch.eye(4))
    latents = torch.eye(4).repeat(1, 3).unsqueeze(0)  # (1, 4, 12): every code 3 times
    out = vq(latents)
    assert math.isclose(out.perplexity.item(), 4.0, rel_tol=1e-5)
    assert out.codes_used.item() == 4


def test_from_config_and_bad_update():
    vq = VectorQuantizer.from_config(QuantizerConfig(num_codes=32, code_dim=8, update="grad"))
    assert isinstance(vq.codebook, torch.nn.Parameter) and vq.codebook.shape == (32, 8)
    with pytest.raises(ValueError, match="update"):
        VectorQuantizer(4, 2, update="kmeans")
    with pytest.raises(ValueError, match=r"\(B, 2, T\)"):
        VectorQuantizer(4, 2)(torch.randn(1, 3, 5))


def test_the_config_kind_picks_the_class_through_one_factory():
    config = QuantizerConfig(num_codes=32, code_dim=8)
    assert config.kind == "vq" and QUANTIZERS["vq"] is VectorQuantizer
    torch.manual_seed(0)
    built = make_quantizer(config)
    torch.manual_seed(0)
    direct = VectorQuantizer.from_config(config)  # what the model built before the factory: the same, bit for bit
    assert type(built) is VectorQuantizer and built.state_dict().keys() == direct.state_dict().keys()
    assert all(torch.equal(tensor, direct.state_dict()[name]) for name, tensor in built.state_dict().items())
    with pytest.raises(ConfigError, match="quantizer.kind must be one of 'vq', got 'fsq'"):
        make_quantizer(QuantizerConfig(kind="fsq"))
    with pytest.raises(ConfigError, match="kind: expected a string"):
        QuantizerConfig.from_dict({"kind": 3})
    with pytest.raises(ValueError, match="'vq' is already registered"):
        register_quantizer("vq")(VectorQuantizer)


def test_the_worked_example_in_docs_extending_adds_a_quantizer(monkeypatch, one_thread):
    """docs/extending.md's quantizer and its test, run as written: the class registered in quantizer.py is what
    ``quantizer.kind`` builds, through the config check and the model, and its test passes."""
    text = EXTENDING.read_text()
    section = text[text.index("\n## Adding a quantizer\n"):]
    following = section.find("\n## ", 1)
    quantizer, test = re.findall(r"```python\n(.*?)```", section[:following] if following > 0 else section, flags=re.S)
    monkeypatch.setattr(quantizer_module, "QUANTIZERS", dict(QUANTIZERS))  # registered for this test only
    library = dict(vars(quantizer_module))  # the class runs as if written in audio_vqvae/quantizer.py
    exec(quantizer, library)
    (kind,) = set(quantizer_module.QUANTIZERS) - set(QUANTIZERS)
    cls = quantizer_module.QUANTIZERS[kind]
    QuantizerConfig(kind=kind).validate()
    assert type(make_quantizer(QuantizerConfig(kind=kind, num_codes=8, code_dim=4))) is cls
    checks = {"torch": torch, "ModelConfig": ModelConfig, "VQVAE": VQVAE, "apply_overrides": apply_overrides,
              cls.__name__: cls}
    exec(test, checks)
    checks[next(name for name in checks if name.startswith("test_"))]()


def test_time_jitter_replaces_frames_by_neighbours():
    torch.manual_seed(0)
    latents = torch.arange(1000.0).view(1, 1, 1000).repeat(2, 3, 1)
    jittered = time_jitter(latents, 0.12)
    offset = jittered[:, 0] - latents[:, 0]
    assert set(offset.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(jittered[:, 0], jittered[:, 2])  # the whole vector moves together
    changed = (offset != 0).float().mean().item()
    assert 0.08 < changed < 0.16
    assert torch.equal(time_jitter(latents, 0.0), latents)
