"""Corpora, preprocessing cache, training segments and the bundled demo corpus.

Example:
    >>> from audio_vqvae.data import make_demo_corpus, prepare_corpus, SegmentDataset, make_loader
    >>> root = make_demo_corpus()                                                   # doctest: +SKIP
    >>> corpus = prepare_corpus("vctk", root, "/tmp/democache")                     # doctest: +SKIP
    >>> loader = make_loader(SegmentDataset(corpus, "train", 16384, hop_length=64), batch_size=8)  # doctest: +SKIP
"""

from audio_vqvae.data.corpora import CORPORA, Corpus, CorpusScan, SourceUtterance, default_corpus_root, scan_corpus
from audio_vqvae.data.corpus import CorpusSplit, PreparedCorpus
from audio_vqvae.data.dataset import EpochRandomSampler, SegmentDataset, make_loader, set_loader_epoch
from audio_vqvae.data.demo import DEMO_VOICES, demo_sentences, make_demo_corpus
from audio_vqvae.data.paths import default_data_dir
from audio_vqvae.data.prepare import ensure_prepared, prepare_corpus
from audio_vqvae.data.settings import default_cache_dir, processing_settings

__all__ = [
    "default_data_dir", "default_corpus_root", "default_cache_dir", "make_demo_corpus", "demo_sentences",
    "DEMO_VOICES", "prepare_corpus", "processing_settings", "ensure_prepared", "PreparedCorpus", "CorpusSplit",
    "SegmentDataset", "make_loader", "set_loader_epoch", "EpochRandomSampler", "scan_corpus", "CorpusScan",
    "SourceUtterance", "CORPORA", "Corpus",
]
