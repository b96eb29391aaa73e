"""Build the bundled demo corpus in data/demo/VCTK-Corpus-0.92 (same as `audio-vqvae demo-corpus`).

Usage: python data/make_demo_corpus.py [--out DIR] [--force] [--workers N]
"""

import argparse
import sys

from audio_vqvae.data.cli import register
from audio_vqvae.errors import AudioVQVAEError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="make_demo_corpus.py")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo-corpus", *sys.argv[1:]])
    try:
        sys.exit(args.func(args))
    except AudioVQVAEError as err:
        sys.exit(f"make_demo_corpus.py: error: {err}")
