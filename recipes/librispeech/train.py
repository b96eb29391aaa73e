#!/usr/bin/env python
"""Train the VQ-VAE on LibriSpeech; `python recipes/librispeech/train.py --help` lists the options.

The configs are in conf/: paper.yaml (default, paper scale), small.yaml (CPU), demo.yaml (--demo).
"""

import sys
from pathlib import Path

try:
    from audio_vqvae.training.recipe import main
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from audio_vqvae.training.recipe import main

if __name__ == "__main__":
    sys.exit(main("librispeech", Path(__file__).resolve().parent))
