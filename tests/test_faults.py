"""Faults an operator meets, injected for real into the real entry points (the recipe, ``audio-vqvae prepare``,
``encode``, ``convert``) run as subprocesses: two runs in one folder, a full disk (a small tmpfs), a damaged
cache (bytes overwritten, files cut short), a ``kill -9``, unwritable outputs, non-finite audio, and one
recording at three levels. Each checks the exit status, the one line, that nothing earlier is lost and that
nothing partial is left (issue 29)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from audio_vqvae.checkpoint import load_model
from audio_vqvae.config import ExperimentConfig
from audio_vqvae.data.audio import process_file
from audio_vqvae.data.corpus import PreparedCorpus
from audio_vqvae.errors import InputError
from audio_vqvae.generation.audio_io import load_audio
from audio_vqvae.training.logs import read_metrics

from helpers import REPO, make_tiny_corpus, recipe_command, speech_like, subprocess_env, tiny_overrides

CLI = Path(sys.executable).with_name("audio-vqvae")


def cli(*argv, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "audio_vqvae.commands.main"]
    return subprocess.run([*command, *map(str, argv)], capture_output=True, text=True, env=subprocess_env(),
                          timeout=timeout, cwd=str(REPO))


def recipe(out: Path, overrides: list[str], *extra: str, config="small", timeout: float = 120):
    return subprocess.run(recipe_command(out, overrides, *extra, config=config), capture_output=True, text=True,
                          env=subprocess_env(), timeout=timeout, cwd=str(REPO))


def start_recipe(out: Path, overrides: list[str], *extra: str, config="small") -> subprocess.Popen:
    return subprocess.Popen(recipe_command(out, overrides, *extra, config=config), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=str(REPO))


def one_line(stderr: str) -> str:
    """The error line; asserts it is the only line of standard error that is not a log line before it."""
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.strip().splitlines()[-1]


def wait_for(condition, timeout: float = 60, process: subprocess.Popen = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process ended early: {process.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def train_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    return [r["step"] for r in read_metrics(path, "train")] if path.exists() else []


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def small_filesystem(tmp_path):
    """Mount a tmpfs of a given size (root only); skipped where mounting is impossible (no privilege)."""
    mounted = []

    def mount(size: str, *options: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs",
                                 str(point)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small filesystem here ({result.stderr.strip() or 'mount failed'}): "
                        "run as root to test a full disk for real")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the filesystem of ``folder`` to the last byte."""
    descriptor = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(descriptor)


# ------------------------------------------------------------------ 1. two runs in one run directory


@pytest.mark.slow
def test_a_second_run_into_a_busy_run_directory_stops_naming_the_holder(corpus, tmp_path):
    out = tmp_path / "run"
    overrides = tiny_overrides(*corpus, max_steps=100000, audio_every=100000, checkpoint_every=4)
    first = start_recipe(out, overrides)
    try:
        wait_for(lambda: len(train_steps(out)) >= 2, process=first)
        for extra in ((), ("--resume",)):  # a second run, and a --resume into the running run
            second = recipe(out, [*overrides[:-1], "train.seed=7"], *extra)
            assert second.returncode == 2, second.stderr[-3000:]
            line = one_line(second.stderr)
            assert f"{out} is in use by another training run (pid {first.pid}" in line
        assert first.poll() is None  # the first run went on
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 0
    finally:
        first.kill()
    steps = train_steps(out)
    assert steps == list(range(1, len(steps) + 1))  # one run's history, not two interleaved
    assert not (out / ".lock").exists()

    # kill -9 leaves the lock file with a dead pid: the next run takes it over, and owns what was left
    resumed = start_recipe(out, [], "--resume", config=None)
    # Killed one step after a checkpoint (every 4), three short of the next: the next run has records to drop.
    wait_for(lambda: len(train_steps(out)) >= len(steps) + 6 and train_steps(out)[-1] % 4 == 1, process=resumed)
    resumed.kill()
    resumed.wait()
    assert (out / ".lock").exists()
    (out / "checkpoints" / ".step-99999999.pt.abcdef.tmp").write_bytes(b"\0" * 1000)  # a checkpoint being written
    newest = max(int(p.stem.split("-")[1]) for p in (out / "checkpoints").glob("step-*.pt"))
    final = recipe(out, ["train.max_steps=" + str(newest + 3)], "--resume", config=None)
    assert final.returncode == 0, final.stderr[-3000:]
    assert train_steps(out) == list(range(1, newest + 4))  # the steps lost with the kill are not there twice
    assert temporaries(out) == [] and not (out / ".lock").exists()
    log = (out / "train.log").read_text()
    assert "left by an interrupted run" in log and "dropped" in log


# ------------------------------------------------------------------ 2. a full disk


@pytest.mark.slow
def test_prepare_on_a_full_disk_says_so_in_one_line_and_leaves_no_temporary_files(small_filesystem, corpus):
    place = small_filesystem("160k")
    result = cli("prepare", "--corpus", "folders", "--data-root", corpus[0], "--out", place / "cache",
                 "--sample-rate", "8000", "--prepare-workers", "0", "--quiet")
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_line(result.stderr)
    assert line.startswith(f"audio-vqvae prepare: error: disk full: cannot write {place / 'cache'}")
    assert "needed" in line and f"free on {place}" in line
    assert temporaries(place) == [] and not (place / "cache" / "manifest.json").exists()


@pytest.mark.slow
def test_training_and_its_resume_on_a_full_disk_stop_in_one_line_keeping_the_checkpoints(small_filesystem, corpus):
    place = small_filesystem("20m")
    out = place / "run"
    overrides = tiny_overrides(*corpus, max_steps=100000, audio_every=100000, checkpoint_every=4)
    process = start_recipe(out, overrides)
    try:
        wait_for(lambda: (out / "checkpoints" / "step-00000004.pt").exists(), process=process)
        fill(place)
        assert process.wait(timeout=60) == 2
    finally:
        process.kill()
    line = one_line(process.stderr.read())
    assert "error: disk full: cannot write" in line and f"free on {place}" in line
    for checkpoint in (out / "checkpoints").glob("step-*.pt"):
        load_model(checkpoint)  # every checkpoint written before is whole
    assert temporaries(out) == []

    resumed = recipe(out, [], "--resume", config=None)
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert "disk full: cannot write" in one_line(resumed.stderr)
    (place / "filler").unlink()
    again = recipe(out, ["train.max_steps=10"], "--resume", config=None)  # space freed: it goes on
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_convert_to_a_full_disk_says_how_much_it_needed(small_filesystem, checkpoint, speech):
    place = small_filesystem("64k")
    fill(place)
    result = cli("convert", "--checkpoint", checkpoint, "--input", speech, "--speaker", "p226",
                 "--output", place / "out.wav", "--no-progress", "--device", "cpu")
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_line(result.stderr)
    assert line.startswith(f"audio-vqvae convert: error: disk full: cannot write {place / 'out.wav'} (")
    assert " needed, 0 bytes free on " in line and temporaries(place) == [] and not (place / "out.wav").exists()


# ------------------------------------------------------------------ 3. a damaged cache


@pytest.fixture
def cache(corpus, tmp_path):
    out = tmp_path / "cache"
    result = cli("prepare", "--corpus", "folders", "--data-root", corpus[0], "--out", out, "--sample-rate", "8000",
                 "--prepare-workers", "0", "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def _prepare_again(cache: Path, corpus_root: Path) -> subprocess.CompletedProcess:
    result = cli("prepare", "--corpus", "folders", "--data-root", corpus_root, "--out", cache, "--sample-rate",
                 "8000", "--prepare-workers", "0", "--quiet")
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_overwritten_audio_is_found_by_prepare_and_rebuilt(cache, corpus):
    intact = (cache / "audio.npy").read_bytes()
    with open(cache / "audio.npy", "r+b") as handle:
        handle.seek(len(intact) // 2)
        handle.write(os.urandom(2000))
    result = _prepare_again(cache, corpus[0])
    assert f"{cache / 'audio.npy'}: damaged cache file: contents differ from the CRC-32" in result.stderr
    assert (cache / "audio.npy").read_bytes() == intact
    assert temporaries(cache) == [] and not (cache / ".work").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate pitch.npy", "truncate audio.npy", "empty audio.npy", "header audio.npy",
                                    "truncate utterances.json", "offsets utterances.json"])
def test_a_damaged_cache_is_refused_naming_the_file_and_prepare_repairs_it(cache, corpus, damage):
    action, name = damage.split()
    path = cache / name
    intact = path.read_bytes()
    if action == "truncate":
        path.write_bytes(intact[:len(intact) // 3])
    elif action == "empty":
        path.write_bytes(b"")
    elif action == "header":
        path.write_bytes(b"garbage!" + intact[8:])
    else:
        records = json.loads(intact)
        records[1]["offset"] += 5
        path.write_text(json.dumps(records, ensure_ascii=False, indent=1))
    with pytest.raises(InputError) as caught:
        PreparedCorpus.open(cache)
    message = str(caught.value)
    assert message.startswith(str(path)) and "prepare" in message
    _prepare_again(cache, corpus[0])
    assert path.read_bytes() == intact
    PreparedCorpus.open(cache)


# ------------------------------------------------------------------ 4. a killed prepare


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.slow
def test_a_killed_prepare_takes_its_workers_along_and_the_next_one_cleans_up(tmp_path):
    corpus_root = make_tiny_corpus(tmp_path / "corpus", speakers=6, utterances=48, seconds=0.8)
    out = tmp_path / "cache"
    command = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "audio_vqvae.commands.main"]
    argv = [*command, "prepare", "--corpus", "folders", "--data-root", str(corpus_root), "--out", str(out),
            "--sample-rate", "8000", "--prepare-workers", "2", "--quiet"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
    wait_for(lambda: len(list((out / ".work").glob("*.npz"))) >= 1 if (out / ".work").exists() else False,
             process=process)
    workers = _children(process.pid)
    assert workers
    process.kill()
    process.wait()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() and
                             "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2] for pid in workers),
             timeout=10)
    assert not (out / "manifest.json").exists()  # never mistaken for a finished cache
    result = subprocess.run(argv, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "resuming:" in result.stderr
    assert not (out / ".work").exists() and temporaries(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"audio.npy", "pitch.npy", "utterances.json", "splits.json"}


# ------------------------------------------------------------------ 5. config.yaml and named caches


@pytest.mark.slow
def test_resume_reads_its_config_from_the_checkpoint_and_never_rebuilds_a_named_cache(corpus, tmp_path):
    out = tmp_path / "run"
    first = recipe(out, tiny_overrides(*corpus, max_steps=4, checkpoint_every=4))
    assert first.returncode == 0, first.stderr[-3000:]
    (out / "config.yaml").write_text("model:\n  sample_")  # cut short, as a crash mid-write leaves it
    manifest = (corpus[1] / "manifest.json").read_bytes()
    resumed = recipe(out, ["train.max_steps=6"], "--resume", config=None)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert train_steps(out) == list(range(1, 7))
    assert ExperimentConfig.from_yaml(out / "config.yaml").train.max_steps == 6  # written whole again

    other = recipe(out, ["train.max_steps=8", "data.trim_silence_db=20"], "--resume", config=None)
    assert other.returncode == 2
    line = one_line(other.stderr)
    assert f"{corpus[1]}: this cache was prepared with other settings (trim_silence_db 40.0 -> 20.0)" in line
    assert (corpus[1] / "manifest.json").read_bytes() == manifest


# ------------------------------------------------------------------ 7. outputs that cannot be written


@pytest.mark.slow
def test_outputs_that_cannot_be_written_fail_in_one_line_before_any_work(tmp_path, corpus, checkpoint, speech):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    converted = cli("convert", "--checkpoint", checkpoint, "--input", speech, "--speaker", "p226",
                    "--output", blocker / "out.wav", "--no-progress", "--device", "cpu")
    assert converted.returncode == 2
    assert one_line(converted.stderr) == (f"audio-vqvae convert: error: {blocker / 'out.wav'}: cannot write there: "
                                          f"{blocker} is a file, not a folder")
    prepared = cli("prepare", "--corpus", "folders", "--data-root", corpus[0], "--out", blocker / "cache")
    assert prepared.returncode == 2 and "is a file, not a folder" in one_line(prepared.stderr)
    trained = recipe(blocker / "run", tiny_overrides(*corpus))
    assert trained.returncode == 2 and "is a file, not a folder" in one_line(trained.stderr)


@pytest.mark.slow
def test_a_read_only_filesystem_is_named_before_any_work(small_filesystem, checkpoint, speech):
    place = small_filesystem("1m", "ro")
    result = cli("encode", "--checkpoint", checkpoint, "--input", speech, "--output", place / "codes.npy")
    assert result.returncode == 2
    assert one_line(result.stderr) == (f"audio-vqvae encode: error: {place / 'codes.npy'}: cannot write there: "
                                       f"{place} is on a read-only filesystem")


# ------------------------------------------------------------------ 8. non-finite audio


@pytest.mark.slow
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_audio_is_one_line_and_status_2(tmp_path, checkpoint, value):
    audio = speech_like(0.3, 8000, seed=0).astype(np.float32)
    audio[100:110] = value
    path = tmp_path / "p225_bad.wav"
    soundfile.write(path, audio, 8000, subtype="FLOAT")
    result = cli("encode", "--checkpoint", checkpoint, "--input", path, "--output", tmp_path / "codes.npy")
    assert result.returncode == 2
    assert one_line(result.stderr) == (f"audio-vqvae encode: error: {path}: 10 of {audio.size:,} samples are NaN "
                                       "or infinite; expected finite audio")
    assert not (tmp_path / "codes.npy").exists()


# ------------------------------------------------------------------ 9. recordings at any level


@pytest.mark.slow
def test_a_recording_at_any_level_reaches_the_encoder_as_prepare_stores_it(tmp_path, checkpoint):
    clip = speech_like(0.6, 8000, seed=3)
    clip = clip / np.sqrt(np.mean(clip ** 2))  # 0 dBFS RMS
    files = {}
    for level in (-40, -24, -10):
        files[level] = tmp_path / f"p225_{-level}.wav"
        soundfile.write(files[level], (clip * 10 ** (level / 20)).astype(np.float32), 8000, subtype="FLOAT")
    inputs = {level: load_audio(path, 8000, level_db=-24.0) for level, path in files.items()}
    stored = process_file(files[-40], sample_rate=8000, trim_silence_db=None, level_db=-24.0)
    assert torch.equal(inputs[-40], torch.from_numpy(stored.audio.astype(np.float32) / 32768))  # one function
    for level in (-40, -10):
        assert (inputs[level] - inputs[-24]).abs().max() <= 1 / 32768  # at most the last bit of a 16-bit sample
        raw = load_audio(files[level], 8000)  # as recorded: what the encoder used to get
        assert (raw - inputs[-24]).abs().max() > 0.01

    codes = {}
    for level, path in files.items():  # the console script, as a user runs it
        result = cli("encode", "--checkpoint", checkpoint, "--input", path, "--output", tmp_path / f"{-level}.npy")
        assert result.returncode == 0, result.stderr
        codes[level] = np.load(tmp_path / f"{-level}.npy")
    assert np.array_equal(codes[-40], codes[-24]) and np.array_equal(codes[-10], codes[-24])


def test_speech_at_another_level_changes_the_codes_without_the_normalisation(checkpoint, tmp_path):
    """The test above can fail: read as recorded, the same clip at -40 dBFS encodes differently."""
    model = load_model(checkpoint)
    clip = speech_like(0.6, 8000, seed=3)
    clip = clip / np.sqrt(np.mean(clip ** 2))
    with torch.no_grad():
        quiet = model.encode(torch.from_numpy((clip * 0.01).astype(np.float32))[None])
        normal = model.encode(torch.from_numpy((clip * 10 ** (-24 / 20)).astype(np.float32))[None])
    assert not torch.equal(quiet, normal)


@pytest.mark.slow
def test_the_recipes_leave_no_lock_behind_after_bad_input(corpus, tmp_path):
    out = tmp_path / "run"
    result = recipe(out, [*tiny_overrides(*corpus), "data.batch_size=1000"])
    assert result.returncode == 2
    assert not out.exists() or not (out / ".lock").exists()
    shutil.rmtree(out, ignore_errors=True)
