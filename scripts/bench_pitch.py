"""Accuracy and speed of the f0 (pitch) trackers that install here, on synthetic speech-like signals of known f0.

The test signal alternates voiced stretches (harmonic tones, 10-20 harmonics with a 1/k or a formant-like
spectral tilt and random phases, f0 gliding log-linearly over 70-400 Hz with vibrato) and unvoiced stretches
(pure noise, white or high-passed), all in white background noise 30 dB below the voiced level; it is
rendered from one fixed-seed plan at 16 kHz and at 8 kHz. Each tracker runs with a 10 ms hop and the range
60-500 Hz, and is scored against the true f0 at its own frame times. Frames within ``--guard-ms`` of a
voicing boundary are not scored. Per tracker and sample rate it reports:

* median and 90th-percentile absolute f0 error (%) and gross error rate (> 20 % off), on frames that are
  truly voiced and that the tracker calls voiced;
* voicing decision errors: voiced frames called unvoiced (V->UV), unvoiced frames called voiced (UV->V),
  and all wrong decisions over all scored frames (VDE);
* speed: seconds per hour of audio, wall (time.perf_counter around the one call on the whole signal, after a
  warm-up call) and CPU (time.process_time: the same on an idle core, less when the core is shared), and the
  minutes of wall time a 44 h (VCTK-sized) job would take on one core at the measured rate.

The row ``audio_vqvae.pitch`` is the library's :func:`~audio_vqvae.pitch.track_pitch` (Praat's
autocorrelation frames moved onto the project's grid, frame i centred on sample ``i * hop``), scored at the
grid times.

Run it on one core, single-threaded (the script also defaults the thread variables to 1 itself)::

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 taskset -c 0 .venv/bin/python scripts/bench_pitch.py [--json PATH]

Options: ``--seconds 60`` (audio per sample rate), ``--rates 16000 8000``, ``--trackers NAME ...``,
``--seed 0``, ``--snr-db 30``, ``--guard-ms 40``. Needs librosa, praat-parselmouth and (optionally) pyworld;
trackers whose package is missing are skipped. About 1 minute with the defaults on an idle core.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # before numpy/numba are imported: one thread, as in the brief

import argparse  # noqa: E402
import glob  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Callable, Optional  # noqa: E402

import numpy as np  # noqa: E402

F0_MIN, F0_MAX = 60.0, 500.0  # Hz: the search range given to every tracker
SIGNAL_F0_MIN, SIGNAL_F0_MAX = 70.0, 400.0  # Hz: the range the true f0 spans
HOP_SECONDS = 0.01
DEFAULT_SNR_DB = 30.0  # background white noise, relative to the voiced level
VOICED_RMS = 0.1
GROSS_ERROR_PERCENT = 20.0
JOB_HOURS = 44.0  # VCTK-sized

# (times in s, f0 in Hz with 0 where unvoiced, voiced flags) from (float32 audio, sample rate)
Tracker = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------------------------- signals


@dataclass(frozen=True)
class VoicedPlan:
    """One voiced stretch: f0 glides log-linearly from ``f0_start`` to ``f0_end`` with sinusoidal vibrato."""

    start: float  # s
    duration: float  # s
    f0_start: float  # Hz
    f0_end: float  # Hz
    vibrato_depth: float  # relative, e.g. 0.02 = +-2 %
    vibrato_rate: float  # Hz
    vibrato_phase: float  # rad
    harmonics: int
    tilt: str  # "1/k" or "formant"
    formants: tuple[tuple[float, float], ...]  # (centre Hz, bandwidth Hz) for the "formant" tilt
    phases: tuple[float, ...]  # per harmonic, rad


@dataclass(frozen=True)
class UnvoicedPlan:
    """One unvoiced stretch: noise ``level_db`` relative to the voiced level, white or high-passed."""

    start: float
    duration: float
    level_db: float
    colour: str  # "white" or "highpass"


@dataclass(frozen=True)
class TestSignal:
    """Rendered test signal: float32 audio, per-sample true f0 (0 where unvoiced), and the guard mask."""

    audio: np.ndarray
    sample_rate: int
    f0: np.ndarray  # float64[T]
    guard: np.ndarray  # bool[T]: within guard of a voicing boundary (or the signal's edges): not scored


def make_plan(seconds: float, rng: np.random.Generator) -> list[VoicedPlan | UnvoicedPlan]:
    """Alternate unvoiced (0.1-0.5 s) and voiced (0.3-1.5 s) stretches, starting and ending unvoiced."""
    plan: list[VoicedPlan | UnvoicedPlan] = []
    time_s = 0.0
    while True:
        duration = float(rng.uniform(0.1, 0.5))
        plan.append(UnvoicedPlan(start=time_s, duration=duration, level_db=float(rng.uniform(-30.0, -6.0)),
                                 colour=str(rng.choice(["white", "highpass"]))))
        time_s += duration
        duration = float(rng.uniform(0.3, 1.5))
        if time_s + duration + 0.3 > seconds:
            break
        depth = float(rng.uniform(0.0, 0.03))
        low, high = SIGNAL_F0_MIN * (1 + depth), SIGNAL_F0_MAX / (1 + depth)
        f0_start = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        f0_end = float(np.clip(f0_start * 2.0 ** rng.uniform(-1.0, 1.0), low, high))
        harmonics = int(rng.integers(10, 21))
        formants = ((float(rng.uniform(300, 800)), float(rng.uniform(60, 120))),
                    (float(rng.uniform(900, 2200)), float(rng.uniform(80, 150))),
                    (float(rng.uniform(2300, 3200)), float(rng.uniform(100, 200))))
        plan.append(VoicedPlan(start=time_s, duration=duration, f0_start=f0_start, f0_end=f0_end,
                               vibrato_depth=depth, vibrato_rate=float(rng.uniform(4.0, 7.0)),
                               vibrato_phase=float(rng.uniform(0, 2 * np.pi)), harmonics=harmonics,
                               tilt=str(rng.choice(["1/k", "formant"])), formants=formants,
                               phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, harmonics))))
        time_s += duration
    last = plan[-1]
    plan[-1] = UnvoicedPlan(start=last.start, duration=seconds - last.start, level_db=last.level_db,
                            colour=last.colour)
    return plan


def resonance_gain(frequency: np.ndarray, centre: float, bandwidth: float) -> np.ndarray:
    """Magnitude of a two-pole resonator (a formant), 1 at 0 Hz."""
    half = bandwidth / 2
    below, above = (frequency - centre) ** 2 + half**2, (frequency + centre) ** 2 + half**2
    return (centre**2 + half**2) / np.sqrt(below * above)


def render_voiced(stretch: VoicedPlan, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(audio float64[N] at ``VOICED_RMS``, f0 float64[N]) of one voiced stretch."""
    length = round(stretch.duration * sample_rate)
    t = np.arange(length) / sample_rate
    glide = stretch.f0_start * (stretch.f0_end / stretch.f0_start) ** (t / stretch.duration)
    f0 = glide * (1 + stretch.vibrato_depth * np.sin(2 * np.pi * stretch.vibrato_rate * t + stretch.vibrato_phase))
    phase = 2 * np.pi * np.concatenate([[0.0], np.cumsum(f0[:-1])]) / sample_rate
    nyquist = sample_rate / 2
    audio = np.zeros(length)
    for k in range(1, stretch.harmonics + 1):
        frequency = k * f0
        gain = np.full(length, 1.0 / k)
        if stretch.tilt == "formant":
            for centre, bandwidth in stretch.formants:
                gain *= resonance_gain(frequency, centre, bandwidth)
        gain *= np.clip((0.9 * nyquist - frequency) / (0.1 * nyquist), 0.0, 1.0)  # fade out below Nyquist
        audio += gain * np.cos(k * phase + stretch.phases[k - 1])
    audio *= VOICED_RMS / max(float(np.sqrt(np.mean(audio**2))), 1e-12)
    ramp = min(round(0.01 * sample_rate), length // 2)  # 10 ms raised-cosine onset and offset
    fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    audio[:ramp] *= fade
    audio[length - ramp:] *= fade[::-1]
    return audio, f0


def render(plan: list[VoicedPlan | UnvoicedPlan], sample_rate: int, guard_seconds: float, snr_db: float,
           rng: np.random.Generator) -> TestSignal:
    """Render the plan at ``sample_rate``: voiced tones, unvoiced noise, white background noise at ``snr_db``."""
    last = plan[-1]
    total = round((last.start + last.duration) * sample_rate)
    audio = rng.normal(0.0, VOICED_RMS * 10 ** (-snr_db / 20), total)
    f0 = np.zeros(total)
    guard = np.zeros(total, dtype=bool)
    guard_samples = round(guard_seconds * sample_rate)
    for stretch in plan:
        begin = round(stretch.start * sample_rate)
        if isinstance(stretch, VoicedPlan):
            tone, contour = render_voiced(stretch, sample_rate)
            end = min(begin + len(tone), total)
            audio[begin:end] += tone[: end - begin]
            f0[begin:end] = contour[: end - begin]
            for boundary in (begin, end):
                guard[max(0, boundary - guard_samples): boundary + guard_samples] = True
        else:
            end = min(round((stretch.start + stretch.duration) * sample_rate), total)
            noise = rng.normal(0.0, 1.0, end - begin + 1)
            noise = np.diff(noise) / np.sqrt(2) if stretch.colour == "highpass" else noise[1:]
            audio[begin:end] += VOICED_RMS * 10 ** (stretch.level_db / 20) * noise
    guard[:guard_samples] = True
    guard[total - guard_samples:] = True
    return TestSignal(audio=audio.astype(np.float32), sample_rate=sample_rate, f0=f0, guard=guard)


# -------------------------------------------------------------------------------------------- trackers


def hop_length(sample_rate: int) -> int:
    """Samples per 10 ms frame."""
    return round(HOP_SECONDS * sample_rate)


def librosa_frame_length(sample_rate: int) -> int:
    """64 ms frames (1024 at 16 kHz, 512 at 8 kHz): two periods of 60 Hz fit, as librosa asks."""
    return 1 << math.ceil(math.log2(2 * sample_rate / F0_MIN + 1))


def track_librosa_yin(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """librosa.yin: no voicing decision, every frame is called voiced."""
    import librosa

    hop = hop_length(sample_rate)
    f0 = librosa.yin(audio, fmin=F0_MIN, fmax=F0_MAX, sr=sample_rate, frame_length=librosa_frame_length(sample_rate),
                     hop_length=hop)
    return np.arange(len(f0)) * hop / sample_rate, f0, np.ones(len(f0), dtype=bool)


def track_librosa_pyin(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """librosa.pyin with its own voicing flags."""
    import librosa

    hop = hop_length(sample_rate)
    f0, voiced, _ = librosa.pyin(audio, fmin=F0_MIN, fmax=F0_MAX, sr=sample_rate,
                                 frame_length=librosa_frame_length(sample_rate), hop_length=hop, fill_na=0.0)
    return np.arange(len(f0)) * hop / sample_rate, np.where(voiced, f0, 0.0), voiced


def _praat_pitch(audio: np.ndarray, sample_rate: int, method: str):  # -> parselmouth.Pitch
    import parselmouth

    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=float(sample_rate))
    to_pitch = sound.to_pitch_ac if method == "ac" else sound.to_pitch_cc
    return to_pitch(time_step=hop_length(sample_rate) / sample_rate, pitch_floor=F0_MIN, pitch_ceiling=F0_MAX)


def track_praat_ac(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Praat "To Pitch (ac)" (autocorrelation, Boersma 1993), default settings, at Praat's own frame times."""
    pitch = _praat_pitch(audio, sample_rate, "ac")
    f0 = pitch.selected_array["frequency"]
    return pitch.xs(), f0, f0 > 0


def track_praat_cc(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Praat "To Pitch (cc)" (cross-correlation), default settings."""
    pitch = _praat_pitch(audio, sample_rate, "cc")
    f0 = pitch.selected_array["frequency"]
    return pitch.xs(), f0, f0 > 0


def track_library(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The library's own tracker (:func:`audio_vqvae.pitch.track_pitch`) at the project's grid times."""
    from audio_vqvae.pitch import track_pitch

    track = track_pitch(audio, sample_rate)
    return np.arange(len(track.f0)) * track.hop_length / sample_rate, track.f0, track.voiced


def import_pyworld() -> tuple[Optional[ModuleType], str]:
    """pyworld's module and a note, or (None, why not).

    pyworld 0.3.5's ``__init__`` imports ``pkg_resources``, which setuptools >= 81 no longer ships; its compiled
    extension works without it, so it is then loaded directly.
    """
    try:
        import pyworld

        return pyworld, ""
    except ModuleNotFoundError as error:
        if error.name != "pkg_resources":
            return None, f"not installed ({error})"
    spec = importlib.util.find_spec("pyworld")  # finding the package does not run its __init__
    locations = list(spec.submodule_search_locations or []) if spec else []
    paths = [path for location in locations for path in glob.glob(os.path.join(location, "pyworld*.so"))]
    if not paths:
        return None, "pyworld's extension module not found"
    extension_spec = importlib.util.spec_from_file_location("pyworld.pyworld", paths[0])
    module = importlib.util.module_from_spec(extension_spec)
    extension_spec.loader.exec_module(module)
    return module, "import pyworld fails (no pkg_resources); its extension module was loaded directly"


def pyworld_trackers(pyworld: ModuleType) -> dict[str, Tracker]:
    """WORLD's DIO refined by StoneMask, and Harvest, at a 10 ms frame period."""

    def dio_stonemask(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        signal = np.ascontiguousarray(audio, dtype=np.float64)
        f0, times = pyworld.dio(signal, sample_rate, f0_floor=F0_MIN, f0_ceil=F0_MAX, frame_period=HOP_SECONDS * 1000)
        f0 = pyworld.stonemask(signal, f0, times, sample_rate)
        return times, f0, f0 > 0

    def harvest(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        signal = np.ascontiguousarray(audio, dtype=np.float64)
        f0, times = pyworld.harvest(signal, sample_rate, f0_floor=F0_MIN, f0_ceil=F0_MAX,
                                    frame_period=HOP_SECONDS * 1000)
        return times, f0, f0 > 0

    return {"world-dio+stonemask": dio_stonemask, "world-harvest": harvest}


def available_trackers() -> tuple[dict[str, Tracker], list[str]]:
    """Every tracker whose package imports, and notes on the ones that needed care or are missing."""
    trackers: dict[str, Tracker] = {}
    notes: list[str] = []
    try:
        import librosa  # noqa: F401

        trackers.update({"librosa-yin": track_librosa_yin, "librosa-pyin": track_librosa_pyin})
    except ImportError as error:
        notes.append(f"librosa: {error}")
    try:
        import parselmouth  # noqa: F401

        trackers.update({"praat-ac": track_praat_ac, "praat-cc": track_praat_cc, "audio_vqvae.pitch": track_library})
    except ImportError as error:
        notes.append(f"parselmouth: {error}")
    pyworld, note = import_pyworld()
    if pyworld is not None:
        trackers.update(pyworld_trackers(pyworld))
    if note:
        notes.append(f"pyworld: {note}")
    return trackers, notes


# ------------------------------------------------------------------------------------------- scoring


@dataclass
class Result:
    """Scores of one tracker at one sample rate (errors in percent)."""

    tracker: str
    sample_rate: int
    median_error: float
    p90_error: float
    gross_error: float
    voiced_to_unvoiced: float
    unvoiced_to_voiced: float
    voicing_error: float
    pitched_frames: int  # truly voiced, called voiced: where the f0 errors are measured
    scored_frames: int
    seconds_per_hour: float  # wall (perf_counter)
    cpu_seconds_per_hour: float  # process_time: ~ equal to the wall time when single-threaded


def score(name: str, signal: TestSignal, times: np.ndarray, f0: np.ndarray, voiced: np.ndarray,
          seconds: float, cpu_seconds: float) -> Result:
    """Compare a tracker's frames with the truth at the same times."""
    times, f0 = np.asarray(times, dtype=np.float64), np.nan_to_num(np.asarray(f0, dtype=np.float64))
    called = np.asarray(voiced, dtype=bool) & (f0 > 0)
    index = np.rint(times * signal.sample_rate).astype(int)
    kept = (index >= 0) & (index < len(signal.f0))
    index, f0, called = index[kept], f0[kept], called[kept]
    scored = ~signal.guard[index]
    truth, f0, called = signal.f0[index][scored], f0[scored], called[scored]
    truly = truth > 0
    both = truly & called
    error = 100 * np.abs(f0[both] - truth[both]) / truth[both]
    hours = len(signal.audio) / signal.sample_rate / 3600

    def percent(mask: np.ndarray) -> float:
        return 100 * float(np.mean(mask)) if mask.size else float("nan")

    return Result(tracker=name, sample_rate=signal.sample_rate,
                  median_error=float(np.median(error)) if error.size else float("nan"),
                  p90_error=float(np.percentile(error, 90)) if error.size else float("nan"),
                  gross_error=percent(error > GROSS_ERROR_PERCENT),
                  voiced_to_unvoiced=percent(~called[truly]), unvoiced_to_voiced=percent(called[~truly]),
                  voicing_error=percent(called != truly), pitched_frames=int(both.sum()),
                  scored_frames=int(scored.sum()), seconds_per_hour=seconds / hours,
                  cpu_seconds_per_hour=cpu_seconds / hours)


def run_tracker(name: str, tracker: Tracker, signal: TestSignal) -> Result:
    """Warm up on the first 2 s (numba compiles librosa's kernels on first use), then time one call on all."""
    tracker(signal.audio[: 2 * signal.sample_rate], signal.sample_rate)
    start_cpu, start = time.process_time(), time.perf_counter()
    times, f0, voiced = tracker(signal.audio, signal.sample_rate)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    return score(name, signal, times, f0, voiced, seconds, cpu_seconds)


def markdown_table(results: list[Result]) -> str:
    """One row per tracker and sample rate."""
    header = ("| tracker | sr (Hz) | median f0 err (%) | p90 f0 err (%) | gross err >20% (%) | V→UV (%) | UV→V (%) "
              "| VDE (%) | wall s / h audio | CPU s / h audio | 44 h job (min) |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for result in results:
        lines.append(f"| {result.tracker} | {result.sample_rate} | {result.median_error:.3f} | {result.p90_error:.3f} "
                     f"| {result.gross_error:.2f} | {result.voiced_to_unvoiced:.2f} | {result.unvoiced_to_voiced:.2f} "
                     f"| {result.voicing_error:.2f} | {result.seconds_per_hour:.1f} "
                     f"| {result.cpu_seconds_per_hour:.1f} | {result.seconds_per_hour * JOB_HOURS / 60:.1f} |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    """Versions of the packages measured."""
    from importlib import metadata

    found = {"python": sys.version.split()[0]}
    for package in ("numpy", "librosa", "numba", "praat-parselmouth", "pyworld"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per sample rate")
    parser.add_argument("--rates", type=int, nargs="+", default=[16000, 8000])
    parser.add_argument("--trackers", nargs="+", default=None, help="a subset of the trackers, by name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snr-db", type=float, default=DEFAULT_SNR_DB, help="background noise below the voiced level")
    parser.add_argument("--guard-ms", type=float, default=40.0,
                        help="frames this close to a voicing boundary are not scored")
    parser.add_argument("--json", type=str, default=None, help="also write the results and settings here")
    args = parser.parse_args()

    trackers, notes = available_trackers()
    if args.trackers:
        unknown = sorted(set(args.trackers) - set(trackers))
        if unknown:
            parser.error(f"unknown or unavailable trackers {unknown}; available: {sorted(trackers)}")
        trackers = {name: trackers[name] for name in args.trackers}
    plan = make_plan(args.seconds, np.random.default_rng(args.seed))
    voiced_seconds = sum(stretch.duration for stretch in plan if isinstance(stretch, VoicedPlan))
    print(f"signal: {args.seconds:g} s per rate, {sum(isinstance(s, VoicedPlan) for s in plan)} voiced stretches "
          f"({voiced_seconds:.1f} s), true f0 {SIGNAL_F0_MIN:g}-{SIGNAL_F0_MAX:g} Hz, SNR {args.snr_db:g} dB, "
          f"seed {args.seed}, guard {args.guard_ms:g} ms; trackers: {F0_MIN:g}-{F0_MAX:g} Hz, 10 ms hop")
    threads = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print(f"versions: {versions()}; threads: {threads}; cpu affinity: {affinity}")
    for note in notes:
        print(f"note: {note}")

    results: list[Result] = []
    for rate in args.rates:
        signal = render(plan, rate, args.guard_ms / 1000, args.snr_db, np.random.default_rng([args.seed, rate]))
        for name, tracker in trackers.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # librosa warns about frames with no trough; not our concern here
                results.append(run_tracker(name, tracker, signal))
            print(f"  {name} @ {rate} Hz: {results[-1].seconds_per_hour:.1f} s/h", file=sys.stderr, flush=True)
    print()
    print(markdown_table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"settings": vars(args), "versions": versions(), "threads": threads, "cpu_affinity": affinity,
                       "notes": notes, "results": [asdict(result) for result in results]}, handle, indent=2)


if __name__ == "__main__":
    main()
