#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment for a CPU-only machine.
#
# This is the only place that knows about this machine's quirks:
#   * torch is pinned to the local 2.13.0 CPU wheel (an unpinned torch pulls a multi-GB CUDA build);
#   * every torchaudio wheel on PyPI for x86_64 is CUDA-linked, so next to a CPU torch its native
#     libraries cannot load. We install it without dependencies and, if `import torchaudio` fails,
#     remove torchaudio/lib/*.so; its pure-Python parts (mu-law, MelSpectrogram, resample) still work.
#     Audio I/O in audio-vqvae never goes through torchaudio (soundfile is used instead).
# A GPU user does not need this script: `pip install -e .` resolves matching CUDA wheels.
set -euo pipefail
venv=${1:-.venv}
torch_version=${TORCH_VERSION:-2.13.0}
torchaudio_version=${TORCHAUDIO_VERSION:-2.11.0}

python3 -m venv "$venv"
py="$venv/bin/python"
pip_quiet() { "$py" -m pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v '^WARNING: Location' || true; }

pip_quiet --upgrade pip
pip_quiet "torch==${torch_version}"
pip_quiet --no-deps "torchaudio==${torchaudio_version}"
if ! "$py" -c "import torchaudio" >/dev/null 2>&1; then
    site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "setup_env: torchaudio's native libraries do not match this torch build; removing them (pure-Python parts stay)"
    rm -f "$site"/torchaudio/lib/*.so
fi
pip_quiet -e ".[dev]"
"$py" -c "import torch, torchaudio, audio_vqvae; print(f'setup_env: torch {torch.__version__}, torchaudio {torchaudio.__version__}, audio_vqvae {audio_vqvae.__version__}')"
