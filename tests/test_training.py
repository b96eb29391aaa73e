"""The training loop in-process on a tiny model: schedule, checkpoints, RNG state, NaN handling, images."""

import math

import numpy as np
import pytest
import torch

from audio_vqvae.checkpoint import get_rng_state, list_checkpoints, load_checkpoint, set_rng_state
from audio_vqvae.config import ExperimentConfig, TrainConfig, apply_overrides
from audio_vqvae.model import VQVAE
from audio_vqvae.training import NonFiniteLossError, train
from audio_vqvae.training.distributed import select_device
from audio_vqvae.training.logs import colorize, mel_image, read_metrics, usage_image
from audio_vqvae.training.recipe import qualify_overrides
from audio_vqvae.training.schedule import make_scheduler, warmup_cosine

from helpers import REPO, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _config(corpus, **train) -> ExperimentConfig:
    return apply_overrides(ExperimentConfig.from_yaml(REPO / "recipes/vctk/conf/small.yaml"),
                           qualify_overrides(tiny_overrides(*corpus, **train)))


def test_schedule_warms_up_linearly_then_decays_to_the_floor():
    multiplier = warmup_cosine(warmup_steps=100, max_steps=1100, min_ratio=0.05)
    assert multiplier(0) == pytest.approx(0.01) and multiplier(49) == pytest.approx(0.5)
    assert multiplier(100) == pytest.approx(1.0)
    assert multiplier(600) == pytest.approx(0.05 + 0.95 * 0.5)
    values = [multiplier(s) for s in range(100, 1100)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay
    assert multiplier(1100) == pytest.approx(0.05) and multiplier(5000) == pytest.approx(0.05)

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=2e-4)
    scheduler = make_scheduler(optimizer, TrainConfig(learning_rate=2e-4, min_learning_rate=1e-5, warmup_steps=10,
                                                      max_steps=20))
    rates = []
    for _ in range(25):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[9] == pytest.approx(2e-4) and rates[20] == pytest.approx(1e-5) and rates[24] == pytest.approx(1e-5)
    assert all(isinstance(v, (int, float, list, bool, type(None))) for v in scheduler.state_dict().values())


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    torch.save(get_rng_state(torch.device("cpu")), tmp_path / "rng.pt")
    expected = (torch.rand(4), np.random.rand(3))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    assert torch.equal(torch.rand(4), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


def test_train_writes_validation_metrics_and_self_describing_checkpoints(corpus, tmp_path):
    config = _config(corpus, max_steps=6, valid_every=3, audio_every=100, checkpoint_every=3)
    result = train(config, tmp_path / "run", progress=False)
    assert result.status == "finished" and result.step == 6
    assert result.checkpoint == tmp_path / "run" / "checkpoints" / "step-00000006.pt"
    assert set(result.valid) == {"bits_per_sample", "perplexity", "codes_used", "bitrate", "bitrate_max"}
    assert 0 < result.valid["bits_per_sample"] < 9 and 1 <= result.valid["perplexity"] <= 16
    # hop 4 at 16 kHz = 4000 frames/s; bitrate = frames/s x entropy of code use in bits
    assert result.valid["bitrate_max"] == pytest.approx(4000 * math.log2(16))
    assert result.valid["bitrate"] == pytest.approx(4000 * math.log2(result.valid["perplexity"]))
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "valid")] == [3, 6]

    payload = load_checkpoint(result.checkpoint)
    assert payload["experiment"]["train"]["max_steps"] == 6
    assert [s["name"] for s in payload["speakers"]] == ["spk0", "spk1", "spk2", "spk3"]
    assert len(payload["optimizer"]["state"]) > 0 and payload["scheduler"]["last_epoch"] == 6
    assert ExperimentConfig.from_yaml(tmp_path / "run" / "config.yaml").model.num_speakers == 4


def test_resume_extends_a_finished_run(corpus, tmp_path):
    train(_config(corpus, max_steps=4, audio_every=100), tmp_path / "run", progress=False)
    with pytest.raises(Exception, match="--resume"):
        train(_config(corpus, max_steps=4, audio_every=100), tmp_path / "run", progress=False)
    # A checkpoint written before a model option existed resumes with the option's default...
    newest = list_checkpoints(tmp_path / "run")[-1]
    payload = torch.load(newest, weights_only=False)
    del payload["experiment"]["model"]["input_noise"], payload["experiment"]["model"]["preemphasis"]
    torch.save(payload, newest)
    # ...but a different model is refused, naming what differs.
    changed = _config(corpus, max_steps=8, audio_every=100)
    changed.model.input_noise = 1.0
    with pytest.raises(Exception, match=r"differs from this run's \(input_noise\)"):
        train(changed, tmp_path / "run", resume=True, progress=False)
    result = train(_config(corpus, max_steps=8, audio_every=100), tmp_path / "run", resume=True, progress=False)
    assert result.step == 8
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "train")] == list(range(1, 9))


def test_non_finite_loss_stops_and_leaves_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    calls = {"n": 0}
    forward = VQVAE.forward

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 5:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(VQVAE, "forward", poisoned)
    run = tmp_path / "run"
    config = _config(corpus, max_steps=10, checkpoint_every=2, valid_every=100, audio_every=100)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 5.*step-00000004\.pt"):
        train(config, run, progress=False)
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002.pt", "step-00000004.pt"]
    assert load_checkpoint(run / "checkpoints" / "step-00000004.pt")["step"] == 4
    assert not list((run / "checkpoints").glob("*.tmp"))
    assert "non-finite loss" in (run / "train.log").read_text()


def test_images_are_rgb_uint8():
    image = mel_image(np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1, 16000)
    assert image.dtype == np.uint8 and image.shape[0] == 3 and image.shape[1] == 160
    assert colorize(np.array([[0.0, 1.0]]))[:, 0, 0].tolist() == [68, 1, 84]  # viridis' dark end
    chart = usage_image(np.array([0, 10, 3, 0]))
    assert chart.dtype == np.uint8 and chart.shape == (3, 120, 256)
    assert (chart[:, :, :64] != 30).any() and (chart[:, :, -64:] == 30).all()  # bars sorted, unused codes empty


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert select_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")
