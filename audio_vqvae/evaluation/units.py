"""The codes as speech units, measured against phone alignments (no generation: cheap on a CPU).

* :func:`code_phone_accuracy`: the test of van den Oord et al. 2017 (§4.3): every code is labelled with
  the phone it most often co-occurs with on the training split; frame accuracy on held-out frames, next
  to the majority-phone baseline and chance (1 / phones);
* :func:`probe_accuracy`: a linear probe (multinomial logistic regression) of the phone from the
  encoder output before quantization (z_e) and after (z_q): how much phone information the quantizer drops;
* :func:`abx_errors`: ZeroSpeech's ABX error within and across speakers on phone triplets (frame-wise
  cosine distance of the code vectors, averaged along a DTW path), computed by the ZeroSpeech package
  ``zerospeech-libriabx2`` (``zrc_abx2``);
* :func:`speaker_from_codes`: how well an independent classifier names the speaker from a second of codes
  (a bag of codes, logistic regression): lower is better, chance 1 / speakers.

A frame's phone is the phone at its centre sample (:func:`audio_vqvae.data.alignments.frame_labels`).

Example:
    >>> units = encode_units(model, corpus, corpus.split("valid").indices)       # doctest: +SKIP
    >>> units[0].codes.shape, units[0].z_q.shape, units[0].phones.shape          # doctest: +SKIP
    ((300,), (300, 64), (300,))
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from audio_vqvae.data.alignments import SILENCE
from audio_vqvae.data.corpus import PreparedCorpus
from audio_vqvae.model import VQVAE

PROBE_FRAMES = 20000       # training frames a linear probe learns from (drawn at random beyond that)
# L-BFGS steps a linear probe may take: on a trained model's 20,000 frames (64 dimensions, 40 phones) it
# converges after about 600; 300 stopped it short (held-out accuracy within 0.1 point of the converged one).
PROBE_ITERATIONS = 1000
SPEAKER_WINDOW_SECONDS = 1.0


@dataclass
class UtteranceUnits:
    """One utterance's frames: its encoder output, code vectors, codes and phone labels.

    Attributes:
        index: index into ``corpus.utterances``.
        name, speaker: the utterance's name and speaker name.
        z_e: float32[F x D], encoder output (before quantization).
        z_q: float32[F x D], the chosen code vectors.
        codes: int64[F].
        phones: int64[F] phone id at each frame's centre (-1 where the alignment has none).
        segments: int32[N x 3] ``(start, stop, phone id)`` rows in samples (the alignment).
    """

    index: int
    name: str
    speaker: str
    z_e: np.ndarray
    z_q: np.ndarray
    codes: np.ndarray
    phones: np.ndarray
    segments: np.ndarray


@torch.no_grad()
def encode_units(model: VQVAE, corpus: PreparedCorpus, indices: Sequence[int]) -> list[UtteranceUnits]:
    """Encode whole utterances (whole frames) and attach the phone of every frame.

    Args:
        model: the VQ-VAE (only its encoder and quantizer run).
        corpus: a prepared corpus with alignments (unaligned utterances get all -1 labels).
        indices: indices into ``corpus.utterances``; those shorter than one frame are left out.
    """
    device = next(model.parameters()).device
    hop = model.hop_length
    out = []
    for index in indices:
        frames = int(corpus.utterances[index]["length"]) // hop
        if frames == 0:
            continue
        audio = torch.from_numpy(corpus.samples(int(index), 0, frames * hop)).to(device)
        z_e = model.encoder(audio.view(1, 1, -1))  # (1, D, F)
        codes = model.quantizer.encode(z_e)  # (1, F)
        z_q = model.quantizer.lookup(codes)  # (1, D, F)
        frames = z_e.shape[2]  # the encoder's own count (equal to length // hop for a strided encoder)
        record = corpus.utterances[index]
        out.append(UtteranceUnits(
            index=int(index), name=record["name"], speaker=record["speaker"],
            z_e=z_e[0].T.float().cpu().numpy(), z_q=z_q[0].T.float().cpu().numpy(),
            codes=codes[0].cpu().numpy().astype(np.int64),
            phones=corpus.frame_phones(int(index), hop, frames), segments=corpus.phone_segments(int(index))))
    return out


def code_phone_accuracy(train_codes: np.ndarray, train_phones: np.ndarray, test_codes: np.ndarray,
                        test_phones: np.ndarray, *, num_codes: int, phones: Sequence[str]) -> dict:
    """The paper's measure: each code predicts the phone it most often co-occurs with in training.

    Args:
        train_codes, train_phones: int[N] codes and phone ids of training frames (phone -1: unlabelled, ignored).
        test_codes, test_phones: int[M] the same for held-out frames.
        num_codes: codebook size.
        phones: label of each phone id.

    Returns:
        ``accuracy`` on held-out frames; ``majority_baseline`` (always the most frequent training phone);
        ``chance`` (1 / phones seen in training); ``per_phone`` (label -> ``{"accuracy", "frames"}`` on
        held-out frames); ``codes_mapped`` (codes seen in training), ``phones``, ``train_frames``, ``frames``.
        A code never seen in training predicts the majority phone.
    """
    keep, test_keep = train_phones >= 0, test_phones >= 0
    train_codes, train_phones = train_codes[keep], train_phones[keep]
    test_codes, test_phones = test_codes[test_keep], test_phones[test_keep]
    if not len(train_phones) or not len(test_phones):
        return {"available": False, "reason": "no aligned frames in the training or held-out split"}
    counts = np.zeros((num_codes, len(phones)), dtype=np.int64)
    np.add.at(counts, (train_codes, train_phones), 1)
    majority = int(np.bincount(train_phones, minlength=len(phones)).argmax())
    mapping = np.where(counts.sum(1) > 0, counts.argmax(1), majority)
    correct = mapping[test_codes] == test_phones
    per_phone = {}
    for phone in np.unique(test_phones):
        mask = test_phones == phone
        per_phone[phones[phone]] = {"accuracy": float(correct[mask].mean()), "frames": int(mask.sum())}
    seen = int(np.count_nonzero(np.bincount(train_phones, minlength=len(phones))))
    return {"available": True, "accuracy": float(correct.mean()),
            "majority_baseline": float(np.mean(test_phones == majority)),
            "majority_phone": phones[majority], "chance": 1.0 / seen, "phones": seen,
            "codes_mapped": int(np.count_nonzero(counts.sum(1))), "train_frames": int(len(train_phones)),
            "frames": int(len(test_phones)), "per_phone": per_phone}


@dataclass(frozen=True)
class ProbeAccuracy:
    """A linear probe's share of held-out frames labelled right, and whether its L-BFGS fit converged
    (False: it stopped at ``PROBE_ITERATIONS`` steps, short of sklearn's tolerance)."""

    accuracy: float
    converged: bool


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                   max_frames: int = PROBE_FRAMES, seed: int = 0) -> Optional[ProbeAccuracy]:
    """Held-out accuracy of a linear probe (standardised features, multinomial logistic regression).

    Args:
        train_x: float[N x D] training features; train_y: int[N] labels (-1: ignored).
        test_x: float[M x D]; test_y: int[M] (-1: ignored).
        max_frames: training frames used at most (a random subset beyond that).
        seed: seed of that subset.

    Returns:
        The accuracy and convergence, or None without two classes to learn. A fit that does not converge is
        reported here, not printed as scikit-learn's ConvergenceWarning.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    keep = train_y >= 0
    train_x, train_y = train_x[keep], train_y[keep]
    test_keep = test_y >= 0
    test_x, test_y = test_x[test_keep], test_y[test_keep]
    if len(np.unique(train_y)) < 2 or not len(test_y):
        return None
    if len(train_y) > max_frames:
        chosen = np.random.default_rng(seed).choice(len(train_y), max_frames, replace=False)
        train_x, train_y = train_x[chosen], train_y[chosen]
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=PROBE_ITERATIONS))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(train_x, train_y)
    converged = True
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            converged = False
        else:  # not ours to judge: shown as if never caught
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return ProbeAccuracy(accuracy=float(np.mean(probe.predict(test_x) == test_y)), converged=converged)


def item_lines(units: Sequence[UtteranceUnits], phones: Sequence[str], sample_rate: int) -> list[str]:
    """A ZeroSpeech ``.item`` file (header first) of every non-silent phone of ``units`` with its neighbours.

    The file id is ``u<index>``; onset and offset are seconds of the stored audio.
    """
    lines = ["#file onset offset #phone prev-phone next-phone speaker"]
    for unit in units:
        rows = unit.segments
        for k, (start, stop, phone) in enumerate(rows):
            if phones[phone] == SILENCE:
                continue
            before = phones[rows[k - 1][2]] if k > 0 else SILENCE
            after = phones[rows[k + 1][2]] if k + 1 < len(rows) else SILENCE
            lines.append(f"u{unit.index} {start / sample_rate:.4f} {stop / sample_rate:.4f} {phones[phone]} "
                         f"{before} {after} {unit.speaker.replace(' ', '_')}")
    return lines


def abx_errors(features: dict[str, np.ndarray], item: Sequence[str], frame_seconds: float, *,
               seed: int = 3459) -> dict:
    """ABX error rates of ``features`` on the triplets of an ``.item`` file, with ``zrc_abx2``.

    For each pair of phones A ≠ B sharing a context (``within`` context: the same previous and next phone,
    the ZeroSpeech 2017-2021 protocol; ``any`` context: the libri-light ABX 2 variant), a token X of A's
    phone is closer to A than to B when the DTW-averaged frame-wise cosine distance says so; the error is
    the share of wrong decisions, averaged over contexts, then phone pairs, then speakers. ``within`` speaker:
    A, B and X of one speaker; ``across``: A and B of one speaker, X of another.

    Args:
        features: file id -> float32[F x D] frames (frame i centred at ``(i + 0.5) * frame_seconds``, as
            ``zrc_abx2`` assumes).
        item: the lines of the ``.item`` file (header first), times in seconds.
        frame_seconds: seconds per frame.
        seed: seed of the package's subsampling of large groups.

    Returns:
        ``within_speaker``, ``across_speaker`` (within context), ``within_speaker_any_context``,
        ``across_speaker_any_context``: error rates in [0, 1] (None where no triplet exists), ``tokens``.
    """
    speakers = {line.split()[6] for line in item[1:]}
    tokens = len(item) - 1
    if tokens < 3:
        return {"available": False, "reason": f"{tokens} phone tokens; ABX needs triplets"}
    with tempfile.TemporaryDirectory(prefix="abx-") as folder:
        root = Path(folder)
        (root / "features").mkdir()
        for name, frames in features.items():
            np.save(root / "features" / f"{name}.npy", np.asarray(frames, dtype=np.float32))
        (root / "triplets.item").write_text("\n".join(item) + "\n")
        scores: dict[tuple[str, str], Optional[float]] = {}
        threads = torch.get_num_threads()
        # zrc_abx2 runs thousands of tiny torch ops (one DTW per group): more threads only add synchronisation,
        # which costs 30x on a loaded machine.
        torch.set_num_threads(1)
        try:
            _score_conditions(scores, root, frame_seconds, len(speakers) > 1, seed)
        finally:
            torch.set_num_threads(threads)

    def score(speaker: str, context: str) -> Optional[float]:
        value = scores.get((speaker, context))
        return None if value is None or not np.isfinite(value) else float(value)

    return {"available": True, "within_speaker": score("within", "within"), "across_speaker": score("across", "within"),
            "within_speaker_any_context": score("within", "any"), "across_speaker_any_context": score("across", "any"),
            "tokens": tokens, "speakers": len(speakers), "distance": "cosine, DTW-averaged (zrc_abx2)"}


def _score_conditions(scores: dict, root: Path, frame_seconds: float, across: bool, seed: int) -> None:
    """Run zrc_abx2 once per (speaker, context) condition on ``root``'s features and item file into ``scores``;
    None where no triplet exists."""
    from zrc_abx2.eval_ABX import EvalABX, EvalArgs

    for speaker_mode in ("within", "across") if across else ("within",):
        for context_mode in ("within", "any"):
            args = EvalArgs(path_data=str(root / "features"), path_item_file=str(root / "triplets.item"),
                            file_extension=".npy", feature_size=frame_seconds, distance_mode="cosine",
                            speaker_mode=speaker_mode, context_mode=context_mode, seed=seed)
            # The package prints its progress and warns about torch.sparse constructors and item-file names.
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    results = EvalABX().eval_abx(args)
                except RuntimeError:
                    # zrc_abx2 cannot build its sparse score board from an empty list: no triplet exists under
                    # this condition (e.g. no two phones share a context within one speaker)
                    results = []
            scores[(speaker_mode, context_mode)] = results[0]["score"] if results else None


def code_windows(codes: np.ndarray, num_codes: int, window: int) -> np.ndarray:
    """Bags of codes of half-overlapping windows of ``window`` frames: float[W x num_codes], rows summing to 1.

    An utterance shorter than a window gives one bag of all its frames.
    """
    starts = range(0, max(1, len(codes) - window + 1), max(1, window // 2))
    bags = np.stack([np.bincount(codes[s:s + window], minlength=num_codes) for s in starts]).astype(np.float64)
    return bags / np.maximum(bags.sum(1, keepdims=True), 1)


def speaker_from_codes(train: Sequence[UtteranceUnits], test: Sequence[UtteranceUnits], *, num_codes: int,
                       window: int) -> dict:
    """Speaker accuracy of an independent classifier on bags of codes (lower is better: the codes carry less
    speaker); trained on windows of ``train`` utterances, tested on windows of ``test`` utterances.

    Returns:
        ``accuracy``, ``chance`` (1 / training speakers), ``speakers``, ``windows`` (held-out).
    """
    from sklearn.linear_model import LogisticRegression

    speakers = sorted({u.speaker for u in train})
    test = [u for u in test if u.speaker in speakers]
    if len(speakers) < 2 or not test:
        return {"available": False, "reason": f"{len(speakers)} training speaker(s) with aligned held-out audio"}
    x = [code_windows(u.codes, num_codes, window) for u in train]
    y = np.concatenate([[u.speaker] * len(bags) for u, bags in zip(train, x)])
    classifier = LogisticRegression(max_iter=500).fit(np.concatenate(x), y)
    test_x = [code_windows(u.codes, num_codes, window) for u in test]
    test_y = np.concatenate([[u.speaker] * len(bags) for u, bags in zip(test, test_x)])
    predicted = classifier.predict(np.concatenate(test_x))
    return {"available": True, "accuracy": float(np.mean(predicted == test_y)), "chance": 1.0 / len(speakers),
            "speakers": len(speakers), "windows": int(len(test_y)), "window_seconds": None}


def aligned(corpus: PreparedCorpus, indices: Sequence[int]) -> list[int]:
    """The ``indices`` whose utterance has an alignment."""
    return [int(i) for i in indices if corpus.is_aligned(int(i))]


def spread(indices: Sequence[int], corpus: PreparedCorpus, count: int) -> list[int]:
    """Up to ``count`` of ``indices``, taken round-robin over speakers so every voice is represented."""
    by_speaker: dict[str, list[int]] = {}
    for index in indices:
        by_speaker.setdefault(corpus.utterances[index]["speaker"], []).append(int(index))
    order = [group[k] for k in range(max(map(len, by_speaker.values()), default=0))
             for _, group in sorted(by_speaker.items()) if k < len(group)]
    return sorted(order[:count])


def unit_report(model: VQVAE, corpus: PreparedCorpus, train_indices: Sequence[int], heldout_indices: Sequence[int],
                *, train_utterances: int = 256, seed: int = 0) -> dict:
    """Every measure of this module on the model's codes: the ``units`` section of an evaluation report.

    Args:
        model: the VQ-VAE.
        corpus: a prepared corpus.
        train_indices, heldout_indices: utterances of the training and held-out split (of known speakers).
        train_utterances: training utterances encoded at most (round-robin over speakers).
        seed: seed of the probes' subsampling and of the ABX package.

    Returns:
        ``{"available": False, "reason": ...}`` without alignments, else ``phone_accuracy``
        (:func:`code_phone_accuracy`), ``probe_z_e_accuracy``, ``probe_z_q_accuracy``, ``abx``
        (:func:`abx_errors`), ``speaker`` (:func:`speaker_from_codes`), and the utterance counts; ``notes``
        only when a probe did not converge.
    """
    train_ids = spread(aligned(corpus, train_indices), corpus, train_utterances)
    heldout_ids = aligned(corpus, heldout_indices)
    if not corpus.has_alignments or not train_ids or not heldout_ids:
        return {"available": False, "reason": "the corpus has no phone alignments for its training and held-out "
                                              "utterances (prepare --alignments DIR)"}
    train, heldout = encode_units(model, corpus, train_ids), encode_units(model, corpus, heldout_ids)
    num_codes = model.config.quantizer.num_codes

    def stack(units: Sequence[UtteranceUnits], field_name: str) -> np.ndarray:
        return np.concatenate([getattr(u, field_name) for u in units])

    phones = corpus.phones
    accuracy = code_phone_accuracy(stack(train, "codes"), stack(train, "phones"), stack(heldout, "codes"),
                                   stack(heldout, "phones"), num_codes=num_codes, phones=phones)
    frame_seconds = model.hop_length / corpus.sample_rate
    abx = abx_errors({f"u{u.index}": u.z_q for u in heldout}, item_lines(heldout, phones, corpus.sample_rate),
                     frame_seconds, seed=3459 + seed)
    window = max(1, round(SPEAKER_WINDOW_SECONDS / frame_seconds))
    speaker = speaker_from_codes(train, heldout, num_codes=num_codes, window=window)
    if speaker.get("available"):
        speaker["window_seconds"] = window * frame_seconds
    train_y, test_y = stack(train, "phones"), stack(heldout, "phones")
    probes = {name: probe_accuracy(stack(train, name), train_y, stack(heldout, name), test_y, seed=seed)
              for name in ("z_e", "z_q")}
    section = {
        "available": True,
        "phone_accuracy": accuracy,
        "probe_z_e_accuracy": probes["z_e"].accuracy if probes["z_e"] else None,
        "probe_z_q_accuracy": probes["z_q"].accuracy if probes["z_q"] else None,
        "abx": abx,
        "speaker": speaker,
        "train_utterances": len(train),
        "heldout_utterances": len(heldout),
    }
    unconverged = [name for name, probe in probes.items() if probe is not None and not probe.converged]
    if unconverged:
        section["notes"] = [f"the linear probe of {' and '.join(unconverged)} stopped at {PROBE_ITERATIONS} L-BFGS "
                            "iterations before converging: its accuracy may be a little low"]
    return section


def unit_scalars(units: dict) -> dict[str, float]:
    """The ``units`` section's figures as ``units/<name>`` -> value (TensorBoard's ``eval/units/*``)."""
    if not units.get("available"):
        return {}
    accuracy, abx, speaker = units["phone_accuracy"], units["abx"], units["speaker"]
    values = {"phone_accuracy": accuracy.get("accuracy"), "majority_baseline": accuracy.get("majority_baseline"),
              "chance": accuracy.get("chance"), "probe_z_e_accuracy": units["probe_z_e_accuracy"],
              "probe_z_q_accuracy": units["probe_z_q_accuracy"]}
    for name in ("within_speaker", "across_speaker", "within_speaker_any_context", "across_speaker_any_context"):
        values[f"abx_{name}"] = abx.get(name)
    values["speaker_accuracy"] = speaker.get("accuracy")
    values["speaker_chance"] = speaker.get("chance")
    return {f"units/{name}": float(value) for name, value in values.items() if value is not None}


def validation_phone_accuracy(model: VQVAE, corpus: PreparedCorpus, *, train_utterances: int = 64) -> Optional[float]:
    """The paper's phone accuracy on the held-out split (codes labelled on up to ``train_utterances``
    training utterances), for the training log; None without alignments."""
    if not getattr(corpus, "has_alignments", False):
        return None
    train_ids = spread(aligned(corpus, corpus.split("train").indices), corpus, train_utterances)
    heldout_ids = aligned(corpus, corpus.split("valid").indices)
    if not train_ids or not heldout_ids:
        return None
    train, heldout = encode_units(model, corpus, train_ids), encode_units(model, corpus, heldout_ids)
    result = code_phone_accuracy(np.concatenate([u.codes for u in train]), np.concatenate([u.phones for u in train]),
                                 np.concatenate([u.codes for u in heldout]),
                                 np.concatenate([u.phones for u in heldout]),
                                 num_codes=model.config.quantizer.num_codes, phones=corpus.phones)
    return result["accuracy"] if result["available"] else None
