"""SegmentDataset and make_loader: shapes, the short-utterance rule, deterministic crops and order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audio_vqvae.data import SegmentDataset, make_loader, prepare_corpus, set_loader_epoch

import helpers


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("segments")
    # speakers s0..s2: utterances of 0.25, 0.5, 1.0 and 2.0 s (4000 .. 32000 samples at 16 kHz)
    for s in range(3):
        for k, seconds in enumerate((0.25, 0.5, 1.0, 2.0)):
            helpers.write(root / "corpus" / f"s{s}" / f"u{k}.wav",
                             helpers.speech_like(seconds, 16000, seed=10 * s + k), 16000)
    return prepare_corpus("folders", root / "corpus", root / "cache", trim_silence_db=None,
                          valid_utterances_per_speaker=0, prepare_workers=0, progress=False)


def test_segment_length_must_be_multiple_of_hop(corpus):
    with pytest.raises(ValueError, match="multiple of hop_length"):
        SegmentDataset(corpus, "train", 1000, hop_length=64)


def test_items_and_short_utterance_rule(corpus):
    dataset = SegmentDataset(corpus, "train", 8192, hop_length=64)
    # 0.25 s (4000 samples) < half a segment: skipped; 0.5 s (8000) is padded; 1 s and 2 s are cropped
    assert len(dataset) == 9 and dataset.num_skipped == 3
    lengths = dataset._split.lengths[dataset._items]
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["audio"].shape == (8192,) and item["audio"].dtype == torch.float32
        assert item["speaker"].dtype == torch.long and item["speaker"].ndim == 0
        if lengths[i] < 8192:
            assert dataset.crop_start(i) == 0
            assert torch.all(item["audio"][lengths[i]:] == 0) and item["audio"][: lengths[i]].abs().max() > 0
    everything = SegmentDataset(corpus, "train", 8192, hop_length=64, min_length=1)
    assert len(everything) == 12 and everything.num_skipped == 0
    with pytest.raises(ValueError, match="no train utterance"):
        SegmentDataset(corpus, "train", 65536, hop_length=64)


def test_crops_depend_on_seed_epoch_index_only(corpus):
    a = SegmentDataset(corpus, "train", 4096, hop_length=64, seed=3)
    b = SegmentDataset(corpus, "train", 4096, hop_length=64, seed=3)
    b.set_epoch(1)
    for _ in range(5):  # b's history must not matter
        b[0]
    b.set_epoch(0)
    starts = [a.crop_start(i) for i in range(len(a))]
    assert starts == [b.crop_start(i) for i in range(len(b))]
    assert all(torch.equal(a[i]["audio"], b[i]["audio"]) for i in range(len(a)))
    b.set_epoch(1)
    assert starts != [b.crop_start(i) for i in range(len(b))]
    c = SegmentDataset(corpus, "train", 4096, hop_length=64, seed=4)
    assert starts != [c.crop_start(i) for i in range(len(c))]
    # the crop is the stored audio at that offset
    i = int(np.argmax([a._split.lengths[a._items[j]] for j in range(len(a))]))
    start = a.crop_start(i)
    expected = a._split.samples(int(a._items[i]), start, start + 4096)
    assert np.array_equal(a[i]["audio"].numpy(), expected)


def test_loader_batches_and_reproducible_epochs(corpus):
    dataset = SegmentDataset(corpus, "train", 4096, hop_length=64)
    loader = make_loader(dataset, 4, num_workers=0, seed=7)
    set_loader_epoch(loader, 2)
    epoch2 = [batch for batch in loader]
    assert len(epoch2) == 3  # 12 items (4000 samples is more than half of 4096)
    assert epoch2[0]["audio"].shape == (4, 4096) and epoch2[0]["speaker"].shape == (4,)
    assert epoch2[0]["speaker"].dtype == torch.long

    # a fresh loader (a resumed run) jumping straight to epoch 2 sees the same batches, also with workers
    resumed = make_loader(SegmentDataset(corpus, "train", 4096, hop_length=64), 4, num_workers=2, seed=7)
    set_loader_epoch(resumed, 0)
    list(resumed)
    set_loader_epoch(resumed, 2)
    for ours, theirs in zip(epoch2, resumed):
        assert torch.equal(ours["audio"], theirs["audio"]) and torch.equal(ours["speaker"], theirs["speaker"])
    set_loader_epoch(resumed, 3)
    assert not torch.equal(next(iter(resumed))["audio"], epoch2[0]["audio"])


def test_utterance_api(corpus):
    train = corpus.split("train")
    assert len(train) == 12 and train.total_samples == 3 * (4000 + 8000 + 16000 + 32000)
    item = train.utterance(3)
    assert set(item) >= {"audio", "speaker", "name", "text"}
    assert item["audio"].dtype == np.float32 and item["name"].startswith("s0/")
    assert [s["id"] for s in corpus.speakers] == [0, 1, 2] and corpus.speaker_id("s2") == 2


def test_pitch_rows_come_with_the_crop_only_when_asked(corpus):
    with_pitch = SegmentDataset(corpus, "train", 4096, hop_length=64, seed=3)
    without = SegmentDataset(corpus, "train", 4096, hop_length=64, seed=3, pitch=False)
    for i in range(len(with_pitch)):
        item, plain = with_pitch[i], without[i]
        assert set(plain) == {"audio", "speaker"} and torch.equal(item["audio"], plain["audio"])
        start = with_pitch.crop_start(i)
        rows = torch.from_numpy(corpus.split("train").pitch_rows(int(with_pitch._items[i]), start, start + 4096))
        assert item["pitch"].shape == (3, 4096) and torch.equal(item["pitch"][:, :rows.shape[1]], rows)
        assert torch.all(item["pitch"][2, rows.shape[1]:] == 0)  # padding is unvoiced


@pytest.fixture(scope="module")
def half_voiced(tmp_path_factory):
    """Utterances of 1.5 s: 0.75 s of breathy noise (unvoiced), then 0.75 s of a harmonic tone (voiced)."""
    root = tmp_path_factory.mktemp("voiced")
    rate = 16000
    for s in range(2):
        for k in range(3):
            rng = np.random.default_rng(100 * s + k)
            noise = (0.05 * rng.standard_normal(int(0.75 * rate))).astype(np.float32)
            helpers.write(root / "corpus" / f"s{s}" / f"u{k}.wav",
                          np.concatenate([noise, helpers.speech_like(0.75, rate, seed=s + k)]), rate)
    return prepare_corpus("folders", root / "corpus", root / "cache", trim_silence_db=None,
                          valid_utterances_per_speaker=1, prepare_workers=0, progress=False)


def test_voiced_crops_keep_the_most_voiced_of_their_candidates(half_voiced):
    uniform = SegmentDataset(half_voiced, "train", 4096, hop_length=64, seed=5, pitch=False)
    one = SegmentDataset(half_voiced, "train", 4096, hop_length=64, seed=5, pitch=False, candidates=1)
    voiced = SegmentDataset(half_voiced, "train", 4096, hop_length=64, seed=5, pitch=False, candidates=8)
    shares = {1: [], 8: []}
    for epoch in range(4):
        for d in (uniform, one, voiced):
            d.set_epoch(epoch)
        for i in range(len(voiced)):
            # candidates=1 is the uniform crop, drawn exactly as before the option existed
            room = int(uniform._split.lengths[uniform._items[i]]) - 4096
            rng = np.random.default_rng([5, epoch, i])
            assert one.crop_start(i) == uniform.crop_start(i) == int(rng.integers(0, room + 1))
            # candidates=8: the same generator's 8 draws, the most voiced kept (the first on a tie)
            starts = np.random.default_rng([5, epoch, i]).integers(0, room + 1, size=8)
            fractions = [voiced.voiced_fraction(i, int(s)) for s in starts]
            assert voiced.crop_start(i) == int(starts[int(np.argmax(fractions))])
            assert voiced.voiced_fraction(i, voiced.crop_start(i)) == max(fractions)
            shares[1].append(uniform.voiced_fraction(i, uniform.crop_start(i)))
            shares[8].append(max(fractions))
    # the tone is voiced and the noise is not, so the crop's voiced share tracks its overlap with the tone
    tone = SegmentDataset(half_voiced, "train", 4096, hop_length=64, pitch=False)
    assert tone.voiced_fraction(0, 24000 - 4096) > 0.9 and tone.voiced_fraction(0, 0) < 0.1
    assert np.mean(shares[8]) > np.mean(shares[1]) + 0.2
    with pytest.raises(ValueError, match="candidates must be 1 or more"):
        SegmentDataset(half_voiced, "train", 4096, hop_length=64, candidates=0)


def test_validation_crops_stay_uniform_when_training_crops_are_voiced(half_voiced, tmp_path):
    from audio_vqvae.config import ExperimentConfig, apply_overrides
    from audio_vqvae.training.batches import make_loaders
    from audio_vqvae.training.distributed import DistributedContext

    config = apply_overrides(ExperimentConfig(), ["data.crop_candidates=4", "data.segment_length=4096",
                                                  "data.batch_size=1", "data.loader_workers=0",
                                                  "data.prepare_workers=0"])
    loaders = make_loaders(half_voiced, config, DistributedContext(), hop_length=64, pitch=False, log=print)
    assert loaders.train.dataset.candidates == 4 and loaders.valid.dataset.candidates == 1
    with pytest.raises(Exception, match="crop_candidates"):
        apply_overrides(ExperimentConfig(), ["data.crop_candidates=0"]).validate()
