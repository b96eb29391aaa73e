#!/usr/bin/env python
"""Generation benchmark (same as ``audio-vqvae bench``): samples/s and × real time of every method.

    python scripts/bench_generation.py                      # SMALL and paper presets, batch 1 and 16
    python scripts/bench_generation.py --presets small --batches 1,16 --seconds 2
"""

import sys

from audio_vqvae.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
