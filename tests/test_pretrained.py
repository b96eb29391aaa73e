"""Shipped models: export to a small file, load back, and address by name."""

import pytest
import torch

from audio_vqvae.checkpoint import load_checkpoint, load_model, save_checkpoint
from audio_vqvae.errors import CheckpointError
from audio_vqvae.model import VQVAE
from audio_vqvae.pretrained import export_model, shipped_path

from helpers import tiny_config


def tiny_model() -> VQVAE:
    config = tiny_config(2, num_speakers=2, layers_per_stack=3)
    torch.manual_seed(0)
    return VQVAE(config, speakers=[{"id": 0, "name": "a", "log_f0_mean": 4.7, "log_f0_std": 0.1},
                                   {"id": 1, "name": "b", "log_f0_mean": 5.3, "log_f0_std": 0.1}])


def test_export_keeps_what_generation_needs_in_half_the_bytes(tmp_path):
    model = tiny_model()
    full = tmp_path / "full.pt"
    save_checkpoint(full, model, extra={"step": 7, "optimizer": {"state": torch.zeros(1000)}})
    small = tmp_path / "small.pt"
    export_model(full, small)
    payload = load_checkpoint(small)
    assert "optimizer" not in payload and payload["step"] == 7 and payload["speakers"] == model.speakers
    assert all(t.dtype == torch.float16 for t in payload["model"].values() if t.is_floating_point())
    loaded = load_model(small)
    assert next(loaded.parameters()).dtype == torch.float32 and loaded.needs_pitch
    for name, tensor in model.state_dict().items():  # float16 rounding only
        assert torch.allclose(loaded.state_dict()[name].float(), tensor.float(), rtol=1e-3, atol=1e-4), name


def test_a_shipped_name_without_its_file_is_one_clear_error(tmp_path, monkeypatch):
    import audio_vqvae.pretrained as pretrained

    monkeypatch.setattr(pretrained, "MODEL_DIR", tmp_path / "nothing")
    monkeypatch.chdir(tmp_path)
    assert shipped_path("demo") is None
    with pytest.raises(CheckpointError, match="no shipped demo model"):
        load_model("demo")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model("nonexistent.pt")


def test_a_checkpoint_written_before_quantizer_kind_and_presets_loads_as_the_same_model(tmp_path):
    """Checkpoint configs are resolved plain data: one without ``quantizer.kind`` (older than the quantizer
    factory) and without ``preset`` (never written) loads, with the default kind, to the same weights."""
    model = tiny_model()
    path = tmp_path / "old.pt"
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["quantizer"].pop("kind") == "vq" and "preset" not in payload["config"]
    torch.save(payload, path)
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.config.quantizer.kind == "vq"
    assert type(loaded.quantizer) is type(model.quantizer)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
