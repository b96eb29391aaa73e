"""Fixtures shared by several test modules, and the ``cuda`` marker's skip. Builders are in helpers.py."""

import numpy as np
import pytest
import soundfile
import torch

from audio_vqvae.checkpoint import save_checkpoint
from audio_vqvae.data import make_demo_corpus
from audio_vqvae.model import VQVAE

from helpers import SPEAKERS, make_tiny_corpus, tiny_config


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, not failed, where no CUDA GPU is visible (CPU CI)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on one with: pytest -m cuda)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """A tiny model gains nothing from two threads, which crawl when the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """The tiny model (helpers.tiny_config) with speakers p225, p226, p231, untrained."""
    torch.manual_seed(0)
    model = VQVAE(tiny_config(), speakers=[{"id": i, "name": name, "gender": "F"} for i, name in enumerate(SPEAKERS)])
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, model)
    return path


@pytest.fixture(scope="session")
def pitch_checkpoint(tmp_path_factory):
    """The tiny model with a source excitation; its speaker table holds ln-f0 statistics."""
    torch.manual_seed(0)
    table = [{"id": i, "name": name, "log_f0_mean": mean, "log_f0_std": 0.1}
             for i, (name, mean) in enumerate(zip(SPEAKERS, (4.6, 5.3, 5.0)))]
    path = tmp_path_factory.mktemp("pitch-model") / "pitch.pt"
    save_checkpoint(path, VQVAE(tiny_config(excitation_harmonics=2), speakers=table))
    return path


@pytest.fixture
def speech(tmp_path):
    """A stereo 22.05 kHz FLAC named after a training speaker: 0.3 s of noisy tones."""
    t = np.arange(int(0.3 * 22050)) / 22050
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    path = tmp_path / "p225_001.flac"
    soundfile.write(path, np.stack([left, 0.5 * left], axis=1), 22050)
    return path


@pytest.fixture(scope="session")
def tiny_corpus_root(tmp_path_factory):
    """helpers.make_tiny_corpus, written once per session: 4 speakers x 4 utterances of gliding tones.
    Tests read it and never write into it."""
    return make_tiny_corpus(tmp_path_factory.mktemp("tiny") / "corpus")


@pytest.fixture(scope="module")
def corpus(tiny_corpus_root, tmp_path_factory):
    """(corpus root, cache folder): the tiny corpus and a cache folder that the tests of one module share
    (a module's later tests may find the cache its earlier ones prepared; another module starts empty)."""
    return tiny_corpus_root, tmp_path_factory.mktemp("cache") / "cache"


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The real demo corpus, reduced (2 shared sentences and 1 own each: 24 utterances), synthesised with
    eSpeak once per session; returns its ``VCTK-Corpus-0.92`` folder. Tests read it and never write into it."""
    return make_demo_corpus(tmp_path_factory.mktemp("demo"), shared_sentences=2, own_sentences=1, num_workers=2)
