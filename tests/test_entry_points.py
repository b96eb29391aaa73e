"""The front door, through the real entry points in subprocesses: ``make demo``, the ``audio-vqvae`` console
script and ``recipes/vctk/train.py``. Bad input stops with one line and exit status 2 before any work and
leaves nothing behind; a Ctrl-C from a terminal stops ``make demo`` quietly with status 0 (issue 14)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from audio_vqvae.commands.main import main as cli_main
from audio_vqvae.config import ExperimentConfig

from helpers import REPO, recipe_command, subprocess_env, tiny_overrides

BIN = Path(sys.executable).parent
CONSOLE_SCRIPT = BIN / "audio-vqvae"
VENV = BIN.parent
MAKE_ERROR = re.compile(r"^make: \*\*\* \[Makefile:\d+: demo\] Error 2$")


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def console(*argv, timeout: float = 120) -> subprocess.CompletedProcess:
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no console script at {CONSOLE_SCRIPT} (package not installed in this environment)")
    return subprocess.run([str(CONSOLE_SCRIPT), *map(str, argv)], capture_output=True, text=True,
                          env=subprocess_env(), timeout=timeout, cwd=str(REPO))


def make_env() -> dict:
    """The environment of a ``make`` typed in a shell: not a sub-make of ``make test`` (which would print
    ``make[1]:`` and pass its flags down)."""
    env = subprocess_env()
    for name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"):
        env.pop(name, None)
    return env


def make_demo(processes: int, demo_args: list[str]) -> list[str]:
    """``make demo`` with our environment; ``-o`` keeps make from reinstalling it when setup.cfg is newer."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return ["make", "-o", f"{VENV}/.installed", f"VENV={VENV}", "demo",
            f"DEMO_PROCS={processes}", "DEMO_ARGS=" + " ".join(demo_args)]


# ------------------------------------------------------------------ 1. make demo


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_make_demo_typo_is_our_one_line(processes, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(make_demo(processes, ["--out", str(out), "train.max_stepz=5"]), capture_output=True,
                            text=True, env=make_env(), timeout=300, cwd=str(REPO))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr
    ours, *rest = result.stderr.strip().splitlines()
    assert ours.startswith("recipes/vctk/train.py: error: override 'train.max_stepz=5': unknown key 'max_stepz'")
    assert len(rest) == 1 and MAKE_ERROR.match(rest[0]), result.stderr  # make's own status line, nothing else
    assert result.stdout == "" and not out.exists()


def _run_in_terminal(command: list[str], *, ready, timeout: float) -> tuple[int, str]:
    """Run ``command`` as a shell runs a job in a terminal (a session whose controlling terminal is a pty),
    press Ctrl-C once ``ready()`` is true, and return its exit status and everything it printed."""
    master, slave = os.openpty()

    def take_terminal() -> None:  # in the child, after setsid(): the pty becomes its controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                               preexec_fn=take_terminal, env=make_env(), cwd=str(REPO))
    os.close(slave)
    output = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has gone
                return
            if not chunk:
                return
            output.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None and not ready():
            time.sleep(0.05)
        assert process.poll() is None, output.decode(errors="replace")
        os.write(master, b"\x03")  # the terminal turns it into SIGINT for its foreground process group
        status = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
        reader.join(timeout=10)
        os.close(master)
    return status, output.decode(errors="replace").replace("\r\n", "\n")


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_make_demo_ctrl_c_checkpoints_and_exits_quietly(processes, corpus, tmp_path):
    out = tmp_path / "run"
    overrides = [*tiny_overrides(*corpus, max_steps=100000, audio_every=100000, checkpoint_every=100000),
                 "decoder.excitation_harmonics=0", "data.batch_size=1"]
    metrics = out / "metrics.jsonl"

    def ready() -> bool:
        return metrics.exists() and metrics.read_text().count('"kind": "train"') >= 3

    status, output = _run_in_terminal(make_demo(processes, ["--out", str(out), "--no-progress", *overrides]),
                                      ready=ready, timeout=240)
    assert status == 0, output
    assert "Traceback" not in output and "SignalException" not in output, output
    assert "make:" not in output and "Interrupt" not in output, output
    stopped = re.search(r"interrupted at step (\d+); continue with --resume", output)
    assert stopped, output
    step = int(stopped.group(1))
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"step-{step:08d}.pt"]  # no temporary files
    payload = torch.load(out / "checkpoints" / f"step-{step:08d}.pt", weights_only=True)
    assert payload["step"] == step and payload["world_size"] == processes


# ------------------------------------------------------------------ 3. options are checked


@pytest.mark.slow
@pytest.mark.parametrize("argv, wanted", [
    (["convert", "--temperature", "-1"], "argument --temperature: expected a number >= 0, got '-1'"),
    (["convert", "--temperature", "nan"], "argument --temperature: expected a number >= 0, got 'nan'"),
    (["reconstruct", "--pitch-shift", "inf"], "argument --pitch-shift: expected a number in [-48, 48], got 'inf'"),
    (["decode", "--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
])
def test_console_script_refuses_bad_numbers_in_one_line(checkpoint, speech, tmp_path, argv, wanted):
    output = tmp_path / "out.wav"
    result = console(*argv, "--checkpoint", checkpoint, "--input", speech, "--speaker", "p226", "--output", output)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith(f"audio-vqvae {argv[0]}: error: {wanted}") and "--help" in line
    assert not output.exists()


NUMERIC_OPTIONS = [  # every numeric option of every sub-command, with a value out of its range
    *[(command, option, value) for command in ("reconstruct", "convert", "decode")
      for option, value in (("--temperature", "nan"), ("--seed", "-1"), ("--batch-size", "0"),
                            ("--pitch-shift", "49"), ("--voiced-noise", "1.5"))],
    ("bench", "--seconds", "0"), ("bench", "--reference-seconds", "inf"), ("bench", "--threads", "0"),
    ("bench", "--repeats", "0"), ("bench", "--batches", "1,0"),
    ("prepare", "--sample-rate", "16"), ("prepare", "--trim-silence-db", "nan"), ("prepare", "--level-db", "3"),
    ("prepare", "--valid-utterances-per-speaker", "-1"), ("prepare", "--prepare-workers", "-2"),
    ("demo-corpus", "--workers", "x"),
    ("evaluate", "--utterances", "0"), ("evaluate", "--conversions", "-1"), ("evaluate", "--seconds", "-inf"),
    ("evaluate", "--temperature", "-0.5"), ("evaluate", "--voiced-noise", "-0.1"), ("evaluate", "--seed", "1e3"),
    ("evaluate", "--classifier-utterances", "0"),
]


@pytest.mark.parametrize("command, option, value", NUMERIC_OPTIONS)
def test_every_numeric_option_is_range_checked_and_its_range_is_in_the_help(command, option, value, capsys):
    required = {"reconstruct": ["--checkpoint", "c.pt", "--input", "i.wav", "--output", "o.wav"],
                "convert": ["--checkpoint", "c.pt", "--input", "i.wav", "--speaker", "s", "--output", "o.wav"],
                "decode": ["--checkpoint", "c.pt", "--input", "i.npy", "--speaker", "s", "--output", "o.wav"],
                "prepare": ["--corpus", "demo"], "evaluate": ["--checkpoint", "c.pt", "--out", "r.json"]}
    with pytest.raises(SystemExit) as exited:
        cli_main([command, *required.get(command, []), f"{option}={value}"])
    assert exited.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"audio-vqvae {command}: error: argument {option}: expected ")
    accepted = line.split("expected ")[1].split(", got")[0]
    with pytest.raises(SystemExit):
        cli_main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert accepted.replace("comma-separated, each ", "") in help_text, (accepted, help_text)


@pytest.mark.slow
@pytest.mark.parametrize("override, wanted", [
    ("train.learning_rate=.nan", "train.learning_rate: expected a finite number, got nan"),
    ("train.max_steps=0", "train.max_steps must be a positive integer, got 0"),
    ("data.batch_size=-1", "data.batch_size must be a positive integer, got -1"),
    ("input_noise=.inf", "model.input_noise: expected a finite number, got inf"),
    ("quantizer.commitment=-1", "quantizer.commitment must be >= 0, got -1.0"),
])
def test_recipe_refuses_bad_config_values_in_one_line(override, wanted, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(recipe_command(out, [override], config="demo"), capture_output=True, text=True,
                            env=subprocess_env(), timeout=120, cwd=str(REPO))
    assert result.returncode == 2
    assert one_line(result.stderr) == f"recipes/vctk/train.py: error: {wanted}"
    assert not out.exists()


def test_every_numeric_config_key_is_validated():
    """Each int or float key of the experiment config refuses a value far out of any sensible range."""
    import dataclasses

    def numeric_keys(config, prefix=""):
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            if dataclasses.is_dataclass(value):
                yield from numeric_keys(value, f"{prefix}{field.name}.")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                yield f"{prefix}{field.name}", value

    config = ExperimentConfig.from_yaml(REPO / "recipes" / "vctk" / "conf" / "demo.yaml")
    config.validate()
    for key, value in numeric_keys(config):
        broken = ExperimentConfig.from_dict(config.to_dict())
        *path, name = key.split(".")
        target = broken
        for part in path:
            target = getattr(target, part)
        setattr(target, name, type(value)(-10**9))
        with pytest.raises(ValueError, match=re.escape(name)):
            broken.validate()


# ------------------------------------------------------------------ 4. --resume without a checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("exists", [False, True])
def test_resume_without_a_checkpoint_stops_naming_the_folder(exists, tmp_path):
    out = tmp_path / "mistyped"
    if exists:
        out.mkdir()
    result = subprocess.run(recipe_command(out, [], "--resume", "--demo", config=None), capture_output=True,
                            text=True, env=subprocess_env(), timeout=120, cwd=str(REPO))
    assert result.returncode == 2
    where = "holds no checkpoint" if exists else "does not exist"
    assert one_line(result.stderr) == (f"recipes/vctk/train.py: error: --resume: {out} {where} (looked for "
                                       f"{out}/checkpoints/step-*.pt); check --out, or leave out --resume to start "
                                       "a new run")
    assert out.exists() == exists and (not exists or not any(out.iterdir()))


# ------------------------------------------------------------------ 5. errors name the real cause


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_says_so(checkpoint, speech, tmp_path):
    result = console("reconstruct", "--checkpoint", checkpoint, "--input", speech, "--output", tmp_path / "o.wav",
                     "--device", "cuda")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "CUDA is not available on this machine" in line and "--device cpu" in line and "checkpoint" not in line
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.slow
def test_checkpoint_folder_and_truncated_checkpoint_are_named_as_such(checkpoint, speech, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, run_dir / "checkpoints" / "step-00000010.pt")
    result = console("encode", "--checkpoint", run_dir, "--input", speech, "--output", tmp_path / "c.npy")
    assert result.returncode == 2
    assert one_line(result.stderr) == (f"audio-vqvae encode: error: {run_dir}: is a folder, not a checkpoint file; "
                                       f"pass one .pt file; the newest in it is {run_dir}/checkpoints/step-00000010.pt")

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:checkpoint.stat().st_size // 2])
    result = console("encode", "--checkpoint", truncated, "--input", speech, "--output", tmp_path / "c.npy")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert f"{truncated}: the file is incomplete" in line and "copy it again" in line
    assert "PytorchStreamReader" not in line and "miniz" not in line
    assert not (tmp_path / "c.npy").exists()


@pytest.mark.slow
def test_prepare_and_evaluate_advise_their_own_options(checkpoint, tmp_path):
    result = console("prepare", "--corpus", "vctk", "--data-root", tmp_path / "nowhere", "--quiet",
                     "--out", tmp_path / "cache")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "nowhere" in line and "prepare --corpus demo" in line and "--demo" not in line.replace("--corpus demo", "")
    assert not (tmp_path / "cache").exists()

    result = console("evaluate", "--checkpoint", checkpoint, "--out", tmp_path / "r.json", "--corpus", "vctk",
                     "--data-root", tmp_path / "nowhere", "--no-progress")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "nowhere" in line and "--data-root" in line and "--cache" in line and "--demo" not in line
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_encode_reports_the_entropy_bitrate_like_evaluate(checkpoint, speech, tmp_path):
    from audio_vqvae.evaluation.metrics import code_statistics

    result = console("encode", "--checkpoint", checkpoint, "--input", speech, "--output", tmp_path / "c.npy")
    assert result.returncode == 0, result.stderr
    codes = np.load(tmp_path / "c.npy")
    usage = code_statistics(np.bincount(codes, minlength=16), 1000.0)  # 8 kHz / hop 8
    assert one_line(result.stdout) == (f"{tmp_path / 'c.npy'}: {codes.size} frames at 1000 frames/s, "
                                       f"{usage.codes_used} of 16 codes used, code bitrate {usage.bitrate:,.0f} "
                                       "bits/s (entropy of this file's codes; max 4,000)")


# ------------------------------------------------------------------ 6. smaller


@pytest.mark.slow
def test_aborted_recipe_leaves_no_run_directory(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(recipe_command(out, [], "--data-root", str(tmp_path / "no-corpus"), config=None),
                            capture_output=True, text=True, env=subprocess_env(), timeout=120, cwd=str(REPO))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "no-corpus" in line and "datashare.ed.ac.uk" in line and "recipes/vctk/train.py --demo" in line
    assert not out.exists()


@pytest.mark.slow
def test_help_texts_are_plain_and_current():
    reconstruct = console("reconstruct", "--help").stdout
    assert "``" not in reconstruct and ":func:" not in reconstruct and "file name" in reconstruct
    assert "about 9.4 minutes" in " ".join(console("demo-corpus", "--help").stdout.split())


def test_package_builds_without_setuptools_warnings(tmp_path):
    """setup.cfg lists the preset folder as a package: a fresh install prints no 'is absent' warning."""
    tree = tmp_path / "src"
    shutil.copytree(REPO / "audio_vqvae", tree / "audio_vqvae", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                             "--no-index", "-w", str(tmp_path / "wheel")], capture_output=True, text=True,
                            cwd=str(tree), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout + result.stderr
    assert "is absent" not in printed and "Package would be ignored" not in printed, printed
    import zipfile

    names = zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl"))).namelist()
    assert "audio_vqvae/configs/small.yaml" in names and "audio_vqvae/training/launch.py" in names
    assert not any("__pycache__" in name for name in names)
