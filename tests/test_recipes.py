"""Recipe smoke runs on a tiny generated corpus: the run directory, the TensorBoard event file, and a
run interrupted by a real SIGINT that resumes with exactly the losses of an uninterrupted run."""

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from audio_vqvae.checkpoint import load_model
from audio_vqvae.training.logs import read_metrics
from audio_vqvae.training.recipe import main as recipe_main

from helpers import REPO, recipe_command, run_recipe, subprocess_env, tiny_overrides

STEPS = 30  # 5 batches per epoch: the runs cross several epoch boundaries


@pytest.fixture(scope="module")
def reference_run(corpus, tmp_path_factory):
    """An uninterrupted run of STEPS steps."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    result = run_recipe(out, tiny_overrides(*corpus, max_steps=STEPS, audio_every=10, checkpoint_every=10))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _losses(run_dir: Path) -> dict[int, float]:
    return {record["step"]: record["loss"] for record in read_metrics(run_dir / "metrics.jsonl", "train")}


@pytest.mark.slow
def test_run_directory_holds_config_log_metrics_events_and_checkpoints(reference_run):
    names = {p.name for p in reference_run.iterdir()}
    assert {"config.yaml", "speakers.json", "train.log", "metrics.jsonl", "checkpoints"} <= names
    assert len([n for n in names if n.startswith("events.out.tfevents")]) == 1
    checkpoints = sorted(p.name for p in (reference_run / "checkpoints").iterdir())
    assert checkpoints == ["step-00000020.pt", "step-00000030.pt"]  # keep_checkpoints=2, no temporary files left
    log = (reference_run / "train.log").read_text()
    assert "samples/s" in log and "data" in log and "compute" in log and "valid step 30" in log
    assert sorted(_losses(reference_run)) == list(range(1, STEPS + 1))

    model = load_model(reference_run / "checkpoints" / "step-00000030.pt")  # self-describing, weights_only
    assert model.config.num_speakers == 4 and model.speaker_id("spk3") == 3
    payload = torch.load(reference_run / "checkpoints" / "step-00000030.pt", weights_only=True)
    assert payload["step"] == STEPS
    assert {"experiment", "optimizer", "scheduler", "rng", "epoch", "batch_in_epoch", "speakers"} <= set(payload)
    assert "quantizer.ema_count" in payload["model"] and "quantizer.codebook" in payload["model"]
    assert payload["experiment"]["model"]["num_speakers"] == 4


@pytest.mark.slow
def test_event_file_has_scalars_audio_and_images(reference_run):
    events = EventAccumulator(str(reference_run), size_guidance={"audio": 0, "images": 0, "scalars": 0,
                                                                 "histograms": 0})
    events.Reload()
    tags = events.Tags()
    for scalar in ("train/loss", "train/reconstruction", "train/quantizer", "train/bits_per_sample",
                   "train/perplexity", "train/codes_used", "train/learning_rate", "train/grad_norm",
                   "time/samples_per_second", "time/data_seconds_per_step", "time/compute_seconds_per_step",
                   "valid/bits_per_sample", "valid/perplexity", "valid/codes_used", "valid/bitrate"):
        assert scalar in tags["scalars"], scalar
    assert [e.step for e in events.Scalars("valid/bits_per_sample")] == [4, 8, 12, 16, 20, 24, 28, 30]

    audio = tags["audio"]
    clips = sorted({tag.split("/")[1] for tag in audio})
    assert len(clips) == 2 and clips[0].startswith("clip0_spk") and clips[1].startswith("clip1_spk")
    for clip in clips:
        kinds = sorted(tag.split("/")[2] for tag in audio if tag.split("/")[1] == clip)
        assert kinds[0] == "0_truth" and kinds[1] == "1_reconstruction"
        assert [k[:5] for k in kinds[2:]] == ["2_as_", "3_as_"] and clip.split("_")[1] not in kinds[2] + kinds[3]
        assert [e.step for e in events.Audio(f"audio/{clip}/0_truth")] == [0]  # ground truth once
        assert [e.step for e in events.Audio(f"audio/{clip}/1_reconstruction")] == [10, 20, 30]
        for kind in kinds:
            assert f"mel/{clip}/{kind}" in tags["images"]
    assert "codebook/usage_sorted" in tags["images"]
    assert "valid/code_usage" in tags["histograms"]


@pytest.mark.slow
def test_sigint_then_resume_matches_an_uninterrupted_run(corpus, reference_run, tmp_path):
    out = tmp_path / "interrupted"
    overrides = tiny_overrides(*corpus, max_steps=STEPS, audio_every=10, checkpoint_every=10)
    process = subprocess.Popen(recipe_command(out, overrides), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=subprocess_env(), cwd=str(REPO))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count('"kind": "train"') >= 3:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-3000:]
    stopped = max(_losses(out))
    assert stopped < STEPS, "the run finished before the signal arrived"
    assert "SIGINT received: stopping after step" in (out / "train.log").read_text()
    assert (out / "checkpoints" / f"step-{stopped:08d}.pt").exists()
    assert "Traceback" not in stderr

    result = run_recipe(out, [], "--resume", config=None)  # the run's own config.yaml
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in (out / "train.log").read_text()
    reference, resumed = _losses(reference_run), _losses(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    # Same batches, same random numbers (time-jitter, code restarts), same optimizer state: bit-identical.
    assert resumed[stopped + 1] == reference[stopped + 1]
    assert resumed == reference
    final_reference = torch.load(reference_run / "checkpoints" / f"step-{STEPS:08d}.pt", weights_only=True)["model"]
    final_resumed = torch.load(out / "checkpoints" / f"step-{STEPS:08d}.pt", weights_only=True)["model"]
    for name, tensor in final_reference.items():
        assert torch.equal(tensor, final_resumed[name]), name


@pytest.mark.slow
def test_existing_run_is_not_overwritten_without_resume(reference_run, corpus, capsys):
    status = recipe_main("vctk", REPO / "recipes" / "vctk",
                         ["--out", str(reference_run), "--no-progress", *tiny_overrides(*corpus)])
    assert status == 2
    assert "--resume" in capsys.readouterr().err


def test_missing_corpus_says_where_to_get_it_and_how_to_run_the_demo(tmp_path, capsys):
    status = recipe_main("vctk", REPO / "recipes" / "vctk",
                         ["--out", str(tmp_path / "run"), "--data-root", str(tmp_path / "no-such-corpus"),
                          "--no-progress"])
    assert status == 2
    err = capsys.readouterr().err
    assert "--demo" in err and "datashare.ed.ac.uk" in err


def test_overrides_are_type_checked_and_model_keys_need_no_prefix(tmp_path, capsys):
    status = recipe_main("librispeech", REPO / "recipes" / "librispeech",
                         ["--out", str(tmp_path / "run"), "quantizer.num_codes=many"])
    assert status == 2
    assert "model.quantizer.num_codes: expected an integer" in capsys.readouterr().err


RECIPE_CONFIGS = sorted(f"{recipe}/{name}" for recipe in ("vctk", "librispeech") for name in ("paper", "small", "demo"))


@pytest.mark.parametrize("key", RECIPE_CONFIGS)
def test_recipe_configs_resolve_to_what_they_resolved_to_as_whole_files(key):
    """Each recipe YAML names a model preset and holds only its differences, and still resolves to the config it
    resolved to when it copied the whole preset (tests/fixtures/recipe_configs.yaml)."""
    import yaml

    from audio_vqvae.config import ExperimentConfig, ModelConfig, read_yaml

    recipe, name = key.split("/")
    path = REPO / "recipes" / recipe / "conf" / f"{name}.yaml"
    before = yaml.safe_load((REPO / "tests" / "fixtures" / "recipe_configs.yaml").read_text())[key]
    # Through the dataclass, as a checkpoint's config is read: a field added since gets its default.
    assert ExperimentConfig.from_yaml(path).to_dict() == ExperimentConfig.from_dict(before).to_dict()

    written = read_yaml(path)  # its base chain resolved: the LibriSpeech configs hold only their data keys
    assert set(written) == {"model", "data", "train"}
    if recipe == "librispeech":  # a delta over the VCTK recipe's config of the same name
        assert yaml.safe_load(path.read_text())["base"] == f"../../vctk/conf/{name}.yaml"
    else:  # no LibriSpeech-only keys in a VCTK config
        assert not {"train_subsets", "valid_subsets"} & set(written["data"])
    model = dict(written["model"])
    preset = ModelConfig.preset(model.pop("preset")).to_dict()
    for section, values in model.items():  # every key it holds differs from the preset
        pairs = values.items() if isinstance(values, dict) else [(None, values)]
        for field, value in pairs:
            assert value != (preset[section][field] if field else preset[section]), f"{section}.{field}"
    assert ExperimentConfig.from_yaml(path).data.corpus == ("demo" if name == "demo" else recipe)


def test_a_model_preset_is_overlaid_key_by_key_and_checked_like_a_whole_config(tmp_path):
    from audio_vqvae.config import ConfigError, ExperimentConfig, ModelConfig

    config = ModelConfig.from_dict({"preset": "small", "sample_rate": 8000, "decoder": {"lpc_order": 12}})
    expected = ModelConfig.preset("small")
    expected.sample_rate, expected.decoder.lpc_order = 8000, 12
    assert config == expected and "preset" not in config.to_dict()  # run directories and checkpoints: resolved
    assert ModelConfig.from_dict(config.to_dict()) == config  # a checkpoint's config, which names no preset
    path = tmp_path / "typo.yaml"
    path.write_text("model: {preset: small, decoder: {lpc_ordr: 12}}\n")
    with pytest.raises(ConfigError, match=r"typo.yaml.model.decoder: unknown key\(s\) lpc_ordr"):
        ExperimentConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="model.preset: unknown model preset 'tiny'; known presets: paper, small"):
        ExperimentConfig.from_dict({"model": {"preset": "tiny"}})
    with pytest.raises(ConfigError, match="preset: expected a preset name"):
        ModelConfig.from_dict({"preset": 3})


def test_a_config_file_overlays_the_file_it_names_as_base(tmp_path):
    from audio_vqvae.config import ConfigError, ExperimentConfig

    (tmp_path / "base.yaml").write_text("model: {preset: small, sample_rate: 8000}\ntrain: {max_steps: 10, seed: 3}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain: {max_steps: 20}\n")
    config = ExperimentConfig.from_yaml(tmp_path / "child.yaml")
    assert (config.model.sample_rate, config.train.max_steps, config.train.seed) == (8000, 20, 3)
    (tmp_path / "loop.yaml").write_text("base: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        ExperimentConfig.from_yaml(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml: config file not found"):
        ExperimentConfig.from_yaml(tmp_path / "missing.yaml")


def test_a_config_or_checkpoint_with_the_former_num_workers_sets_both_kinds_of_workers(tmp_path):
    """``data.num_workers`` meant the loader's workers and prepare's decoding processes; it now sets both, from a
    checkpoint's stored config, a YAML file (over a base's new keys) and an override."""
    from audio_vqvae.config import ConfigError, DataConfig, ExperimentConfig, apply_overrides

    stored = ExperimentConfig().to_dict()
    del stored["data"]["loader_workers"], stored["data"]["prepare_workers"]
    stored["data"]["num_workers"] = 3  # as a checkpoint written before the split stores it
    config = ExperimentConfig.from_dict(stored)
    assert (config.data.loader_workers, config.data.prepare_workers) == (3, 3)
    assert "num_workers" not in config.to_dict()["data"]
    assert DataConfig.from_dict({"num_workers": 0, "prepare_workers": 5}).loader_workers == 0  # a new key wins
    assert DataConfig.from_dict({"num_workers": 0, "prepare_workers": 5}).prepare_workers == 5

    (tmp_path / "old.yaml").write_text(f"base: {REPO / 'recipes/vctk/conf/small.yaml'}\ndata: {{num_workers: 0}}\n")
    config = ExperimentConfig.from_yaml(tmp_path / "old.yaml")  # the file's own old key beats its base's new ones
    assert (config.data.loader_workers, config.data.prepare_workers, config.data.batch_size) == (0, 0, 8)

    config = apply_overrides(ExperimentConfig(), ["data.num_workers=1"])
    assert (config.data.loader_workers, config.data.prepare_workers) == (1, 1)
    with pytest.raises(ConfigError, match="data.num_workers: expected an integer"):
        apply_overrides(ExperimentConfig(), ["data.num_workers=x"])
