"""The GPU path: its logic checked on the CPU, and tests marked ``cuda`` that need a GPU.

On the CPU: the CUDA-graph generation step run eagerly equals the PyTorch path sample for sample,
``--device auto|cpu|cuda`` on every command, the time-boxed training mode, and the quantizer's float32
statistics under bf16 autocast (CPU autocast lowers matmuls to bf16 exactly as CUDA autocast does).
With a GPU (``pytest -m cuda``, run by ``scripts/gpu_check.sh``): the captured graph against the eager
path and the fused CPU kernels, greedy against teacher forcing, bf16 steps against fp32, NCCL under
``torchrun``, and every generation command with ``--device cuda``.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from audio_vqvae.config import ConfigError, ModelConfig
from audio_vqvae.generation import engine, generate
from audio_vqvae.generation.cuda_graph import GraphStep, generate_graph
from audio_vqvae.model import VQVAE
from audio_vqvae.options import device as device_option
from audio_vqvae.quantizer import VectorQuantizer
from audio_vqvae.training import train

from helpers import EVEN, REPO, TINY, inputs, make_net, make_tiny_corpus, run, subprocess_env, tiny_overrides

CUDA = torch.cuda.is_available()


@pytest.fixture
def exact_cuda_matmuls():
    """TF32 off while comparing CUDA with the CPU (the trainer turns it on for training)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ------------------------------------------------------------------ the graph step, eagerly on the CPU


@pytest.mark.parametrize("config", [TINY, EVEN], ids=["odd-padding", "even"])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_graph_step_run_eagerly_equals_the_pytorch_path(one_thread, config, temperature):
    """Same uniforms, same samples and bit-identical logits; 300 steps in chunks of 128 (a partial last one)."""
    net = make_net(config)
    conditioning, speaker = inputs(config, steps=300)
    options = dict(temperature=temperature, seeds=[5, 6, 7], return_logits=True, chunk_steps=128)
    graph = generate(net, conditioning, speaker, method="graph", **options)
    reference = generate(net, conditioning, speaker, method="torch", **options)
    assert torch.equal(graph.samples, reference.samples)
    assert torch.equal(graph.logits, reference.logits)
    assert graph.samples.unique().numel() > 5  # the samples carry signal: the comparison has teeth


def test_graph_step_feeds_the_teacher_and_matches_the_parallel_network(one_thread):
    net = make_net(TINY)
    conditioning, speaker = inputs(TINY, steps=200)
    teacher = torch.randint(0, 256, (3, 200), generator=torch.Generator().manual_seed(2))
    uniforms = engine.draw_uniforms([0, 1, 2], 200)
    out = generate_graph(net, conditioning, speaker, 1.0, uniforms, teacher, True, None, 64, capture=False)
    reference = engine._generate_torch(net, conditioning, speaker, 1.0, uniforms, teacher, True, None, 64)
    assert torch.equal(out.samples, reference.samples) and torch.equal(out.logits, reference.logits)
    assert (out.logits - net(teacher, conditioning, speaker)).abs().max().item() <= 1e-4


def test_graph_state_resets_to_the_start():
    net = make_net(TINY)
    state = GraphStep(net, 2, 4, 1.0, teacher=False, return_logits=False, device=torch.device("cpu"))
    for _ in range(3):
        state.step()
    assert int(state.position) == 3 and any(queue.abs().sum() > 0 for queue in state.queues)
    state.reset()
    assert int(state.position) == 0 and int(state.index) == 0
    assert all(queue.abs().sum() == 0 for queue in state.queues)
    assert torch.equal(state.previous, torch.full((2,), net.silence))


def test_auto_picks_fused_on_cpu_and_the_graph_on_cuda():
    assert engine.resolve_method("auto", torch.device("cpu")) == ("fused" if engine.fused_available() else "torch")
    assert engine.resolve_method("auto", torch.device("cuda")) == "graph"
    assert engine.resolve_method("auto", torch.device("meta")) == "torch"
    with pytest.raises(ValueError, match="graph"):
        engine.resolve_method("fast", torch.device("cpu"))


# ------------------------------------------------------------------ --device


def test_device_auto_is_cuda_when_available_else_cpu():
    assert device_option("auto") == ("cuda" if CUDA else "cpu")
    assert device_option("cpu") == "cpu"


@pytest.mark.skipif(CUDA, reason="checks the message shown where CUDA is absent")
@pytest.mark.parametrize("command", ["reconstruct", "convert", "encode", "decode", "bench", "evaluate"])
def test_device_cuda_without_cuda_is_one_line_on_every_command(command, checkpoint, tmp_path, capsys):
    argv = {"reconstruct": ["--input", "x.wav", "--output", "y.wav"],
            "convert": ["--input", "x.wav", "--speaker", "p226", "--output", "y.wav"],
            "encode": ["--input", "x.wav", "--output", "y.npy"],
            "decode": ["--input", "x.npy", "--speaker", "p226", "--output", "y.wav"],
            "bench": [], "evaluate": ["--out", str(tmp_path / "r.json")]}[command]
    with pytest.raises(SystemExit) as stop:  # argparse's exit, before any checkpoint is read
        run(command, "--checkpoint", checkpoint, *argv, "--device", "cuda")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA is not available" in err and "--device cpu" in err


def test_method_fused_with_a_gpu_device_is_one_line_asking_for_device_cpu():
    """``--device`` defaults to the GPU where one is visible, so ``--method fused`` alone must say what to add."""
    import argparse

    from audio_vqvae.commands.generation import _check_method
    from audio_vqvae.errors import InputError

    with pytest.raises(InputError, match="add --device cpu"):
        _check_method(argparse.Namespace(method="fused", device="cuda"))
    _check_method(argparse.Namespace(method="fused", device="cpu"))
    _check_method(argparse.Namespace(method="auto", device="cuda"))


def test_device_auto_on_this_machine_gives_the_audio_of_its_device(pitch_checkpoint, speech, tmp_path):
    auto, chosen = tmp_path / "auto.wav", tmp_path / "chosen.wav"
    base = ["reconstruct", "--checkpoint", pitch_checkpoint, "--input", speech, "--no-progress"]
    assert run(*base, "--output", auto, "--device", "auto") == 0
    assert run(*base, "--output", chosen, "--device", "cuda" if CUDA else "cpu") == 0
    assert np.array_equal(soundfile.read(auto)[0], soundfile.read(chosen)[0])
    assert run("encode", "--checkpoint", pitch_checkpoint, "--input", speech, "--output", tmp_path / "c.npz",
               "--device", "auto") == 0


# ------------------------------------------------------------------ train.max_minutes


TINY_LIMIT = "0.00000001"  # minutes (0.6 ms, less than any step); as text: YAML reads 1e-8 as a string


def _config(corpus, **train_settings):
    from audio_vqvae.config import ExperimentConfig, apply_overrides
    from audio_vqvae.training.recipe import qualify_overrides

    return apply_overrides(ExperimentConfig.from_yaml(REPO / "recipes/vctk/conf/small.yaml"),
                           qualify_overrides(tiny_overrides(*corpus, **train_settings)))


def test_max_minutes_stops_after_the_first_step_past_the_limit_with_a_checkpoint(one_thread, corpus, tmp_path):
    result = train(_config(corpus, max_steps=50, audio_every=100, max_minutes=TINY_LIMIT), tmp_path / "run",
                   progress=False)
    assert result.status == "time-limited" and result.step == 1
    assert result.checkpoint == tmp_path / "run" / "checkpoints" / "step-00000001.pt" and result.checkpoint.exists()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "time limit train.max_minutes=1e-08 reached" in log and "continue with --resume" in log
    # The stopping step is validated (valid_every is 4), like the last step of a finished run.
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "valid"] == [1]
    assert result.valid["bits_per_sample"] > 0 and "valid step 1:" in log
    # It resumes like any other checkpoint, and a generous limit lets the run finish.
    # (No audio round: the fused kernels' numba threads were started by other tests of this process.)
    again = train(_config(corpus, max_steps=3, audio_clips=0, max_minutes=60), tmp_path / "run", resume=True,
                  progress=False)
    assert again.status == "finished" and again.step == 3


def test_the_recipe_exits_0_at_the_time_limit(one_thread, corpus, tmp_path, capsys):
    from audio_vqvae.training.recipe import main

    argv = ["--config", str(REPO / "recipes/vctk/conf/small.yaml"), "--out", str(tmp_path / "run"), "--no-progress",
            *tiny_overrides(*corpus, max_steps=50, audio_every=100, max_minutes=TINY_LIMIT)]
    assert main("vctk", REPO / "recipes" / "vctk", argv) == 0
    assert "time-limited at step 1" in capsys.readouterr().out


def test_cpu_bf16_autocasts_the_cpu_step_only_when_asked_and_validates_in_float32(one_thread, corpus, tmp_path,
                                                                                  monkeypatch):
    # train.bf16 (the default, on) is CUDA's; a CPU run stays float32 unless train.cpu_bf16 asks for it, and even
    # then its validation is float32, so that its curve is comparable with a float32 twin's.
    from audio_vqvae.training import trainer as trainer_module

    precisions = []
    measure = trainer_module.validation_round

    def recording(*args, bf16, **kwargs):
        precisions.append(bf16)
        return measure(*args, bf16=bf16, **kwargs)

    monkeypatch.setattr(trainer_module, "validation_round", recording)
    plain = train(_config(corpus, max_steps=2, audio_clips=0, valid_every=2, device="cpu"), tmp_path / "fp32",
                  progress=False)
    bf16 = train(_config(corpus, max_steps=2, audio_clips=0, valid_every=2, device="cpu", cpu_bf16=True),
                 tmp_path / "bf16", progress=False)
    assert plain.status == bf16.status == "finished"
    assert "(bf16 autocast)" not in (tmp_path / "fp32" / "train.log").read_text()
    assert "device cpu (bf16 autocast)" in (tmp_path / "bf16" / "train.log").read_text()
    records = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
               for run in ("fp32", "bf16")]
    first = [next(r["loss"] for r in rows if "loss" in r) for rows in records]
    # the same start and data: bf16 rounding moves the first loss a little, not a lot, and not to zero
    assert first[0] != first[1] and abs(first[0] - first[1]) < 0.02 * first[0]
    assert precisions == [False, False]  # one validation per run (step 2), both in float32


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_max_minutes_must_be_finite_and_not_negative(value):
    from audio_vqvae.config import TrainConfig

    with pytest.raises(ConfigError, match="train.max_minutes"):
        TrainConfig(max_minutes=value).validate()
    TrainConfig(max_minutes=0.0).validate()


# ------------------------------------------------------------------ bf16: loss and codebook statistics in fp32


def test_nearest_codes_and_ema_statistics_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    latents = torch.randn(4, 64, 200)  # (B, D, T)
    quantizers = [VectorQuantizer(512, 64, data_init=False).train() for _ in range(2)]
    quantizers[1].load_state_dict(quantizers[0].state_dict())
    plain = quantizers[0](latents)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = quantizers[1](latents)
    assert torch.equal(plain.codes, mixed.codes)
    assert mixed.loss.dtype == torch.float32 and mixed.commitment_loss.dtype == torch.float32
    for name in ("codebook", "ema_count", "ema_sum"):
        assert getattr(quantizers[1], name).dtype == torch.float32
        assert torch.equal(getattr(quantizers[0], name), getattr(quantizers[1], name)), name
    # The check has teeth: the same distances with a bf16 product pick other codes for some frames.
    flat = latents.transpose(1, 2).reshape(-1, 64)
    codebook = quantizers[0].codebook
    rough = (codebook.pow(2).sum(1) - 2 * (flat.bfloat16() @ codebook.t().bfloat16()).float()).argmin(1)
    assert (rough != quantizers[0].nearest(flat)).any()


def _steps(device: torch.device, bf16: bool, steps: int = 5) -> list[float]:
    """Losses of ``steps`` Adam steps of a small model from one initialisation on one batch."""
    config = ModelConfig.from_dict({**ModelConfig.preset("small").to_dict(), "num_speakers": 2})
    config.decoder.stacks, config.decoder.layers_per_stack = 1, 6
    torch.manual_seed(0)
    model = VQVAE(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    audio = (0.5 * torch.sin(torch.arange(2 * 4096).view(2, 4096) * 0.05)
             + 0.05 * torch.randn(2, 4096, generator=generator)).to(device)
    speaker = torch.tensor([0, 1], device=device)
    losses = []
    for _ in range(steps):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):  # as Trainer._autocast
            out = model(audio, speaker)
        assert out.loss.dtype == torch.float32 and out.reconstruction.dtype == torch.float32
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(out.loss.detach()))
    for name in ("codebook", "ema_count", "ema_sum"):
        assert getattr(model.quantizer, name).dtype == torch.float32
    return losses


BF16_TOLERANCE = 0.02  # relative, per step; measured with CPU bf16 autocast: at most 0.3 % over these 5 steps


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.slow),
                                    pytest.param("cuda", marks=pytest.mark.cuda)])
def test_bf16_steps_track_fp32(one_thread, device):
    full, mixed = _steps(torch.device(device), False), _steps(torch.device(device), True)
    assert full[-1] < full[0]  # it learns, so the comparison is between training trajectories
    for step, (a, b) in enumerate(zip(full, mixed)):
        assert abs(a - b) <= BF16_TOLERANCE * a, (step, full, mixed)


# ------------------------------------------------------------------ torchrun: one process joins a group


def _torchrun(tmp_path, device: str) -> subprocess.CompletedProcess:
    corpus = make_tiny_corpus(tmp_path / "corpus")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               str(REPO / "recipes/vctk/train.py"), "--config", str(REPO / "recipes/vctk/conf/small.yaml"),
               "--out", str(tmp_path / "run"), "--no-progress",
               *tiny_overrides(corpus, tmp_path / "cache", max_steps=4, valid_every=2, audio_every=4,
                               checkpoint_every=2),
               # A source excitation, so that the audio round also moves the f0 rows to the device.
               "decoder.excitation_harmonics=2", f"train.device={device}"]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=240, cwd=str(REPO))


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.slow),
                                    pytest.param("cuda", marks=pytest.mark.cuda)])
def test_torchrun_with_one_process_runs_the_distributed_path(tmp_path, device):
    """gloo on the CPU, NCCL on a GPU: DDP, the collectives, the audio round and the teardown, a group of one."""
    result = _torchrun(tmp_path, device)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished at step 4" in result.stdout
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"device {device}" in log and "1 process(es)" in log and "audio step 4" in log
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000002.pt",
                                                                                   "step-00000004.pt"]


# ------------------------------------------------------------------ CUDA only


@pytest.mark.cuda
@pytest.mark.parametrize("config", [TINY, EVEN], ids=["odd-padding", "even"])
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_cuda_graph_equals_eager_torch_and_fused_cpu(exact_cuda_matmuls, config, temperature):
    net = make_net(config)
    conditioning, speaker = inputs(config, steps=400)
    options = dict(temperature=temperature, seeds=[5, 6, 7], return_logits=True, chunk_steps=128)
    fused = generate(net, conditioning, speaker, method="fused", **options)
    gpu = make_net(config).cuda()
    conditioning, speaker = conditioning.cuda(), speaker.cuda()
    graph = generate(gpu, conditioning, speaker, method="graph", **options)
    eager = generate(gpu, conditioning, speaker, method="torch", **options)
    auto = generate(gpu, conditioning, speaker, **options)
    # The same ops in the same order; logits to 1e-5 rather than bit for bit, in case cuBLAS picks another
    # kernel for a captured stream (the CPU test checks bit equality of the step's arithmetic).
    assert torch.equal(graph.samples, eager.samples)
    assert (graph.logits - eager.logits).abs().max().item() <= 1e-5
    assert torch.equal(auto.samples, graph.samples)
    assert torch.equal(graph.samples.cpu(), fused.samples)
    assert (graph.logits.cpu() - fused.logits).abs().max().item() <= 1e-4


@pytest.mark.cuda
def test_cuda_greedy_generation_is_the_argmax_of_the_teacher_forced_logits(exact_cuda_matmuls):
    net = make_net().cuda()
    conditioning, speaker = (t.cuda() for t in inputs(TINY, steps=400))
    for method in ("graph", "torch"):
        generated = generate(net, conditioning, speaker, temperature=0.0, method=method).samples
        assert torch.equal(net(generated, conditioning, speaker).argmax(1), generated), method
        assert generated.unique().numel() > 5


@pytest.mark.cuda
def test_every_command_runs_with_device_cuda(checkpoint, pitch_checkpoint, speech, tmp_path):
    for name, model in (("plain", checkpoint), ("pitch", pitch_checkpoint)):
        out = tmp_path / name
        codes = out / ("codes.npz" if name == "pitch" else "codes.npy")
        gpu = ["--device", "cuda", "--no-progress"]
        assert run("reconstruct", "--checkpoint", model, "--input", speech, "--output", out / "rec.wav", *gpu) == 0
        assert run("convert", "--checkpoint", model, "--input", speech, "--speaker", "p226,p231",
                   "--output", out / "converted", *gpu) == 0
        assert run("encode", "--checkpoint", model, "--input", speech, "--output", codes, "--device", "cuda") == 0
        assert run("decode", "--checkpoint", model, "--input", codes, "--speaker", "p231",
                   "--output", out / "dec.wav", *gpu) == 0
        assert run("reconstruct", "--checkpoint", model, "--input", speech, "--output", out / "eager.wav",
                   "--method", "torch", *gpu) == 0
        assert np.array_equal(soundfile.read(out / "rec.wav")[0], soundfile.read(out / "eager.wav")[0])
        assert sorted(p.name for p in (out / "converted").iterdir()) == ["p225_001_to_p226.wav",
                                                                         "p225_001_to_p231.wav"]
    assert run("bench", "--checkpoint", checkpoint, "--batches", "1,2", "--seconds", "0.05",
               "--reference-seconds", "0.01", "--repeats", "1", "--device", "cuda") == 0
