#!/usr/bin/env python
"""What checking a corpus cache's checksums costs (docs/corpora.md): one VCTK-sized file, hashed several ways.

    python scripts/bench_checksums.py /big/disk/hashbench.bin      # writes 40 h of int16 at 16 kHz (4.6 GB) once

Times a plain read and zlib.crc32 (what the cache manifest records), adler32, sha1, md5, blake2b and sha256, in
16 MB reads. The file is written on first use and read from the page cache after that (run it twice for a
warm figure, drop the caches for a cold one).
"""

import hashlib
import os
import sys
import time
import zlib

import numpy as np

HOURS, RATE = 40, 16000
BLOCK = 1 << 24


def write(path: str) -> None:
    rng = np.random.default_rng(0)
    samples = HOURS * 3600 * RATE
    with open(path, "wb") as handle:
        for start in range(0, samples, 16_000_000):
            handle.write(rng.integers(-3000, 3000, min(16_000_000, samples - start), dtype=np.int16).tobytes())


def timed(path: str, name: str, update, state) -> None:
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(BLOCK):
            state = update(state, block)
    elapsed = time.perf_counter() - started
    print(f"{name:8s} {elapsed:6.2f} s  {os.path.getsize(path) / elapsed / 1e9:.2f} GB/s")


def main(path: str) -> None:
    if not os.path.exists(path):
        write(path)
    print(f"{path}: {os.path.getsize(path) / 1e9:.2f} GB ({HOURS} h of int16 at {RATE} Hz)")
    timed(path, "read", lambda state, block: state, None)
    timed(path, "crc32", lambda state, block: zlib.crc32(block, state), 0)
    timed(path, "adler32", lambda state, block: zlib.adler32(block, state), 1)
    for name in ("sha1", "md5", "blake2b", "sha256"):
        timed(path, name, lambda state, block: state.update(block) or state, getattr(hashlib, name)())


if __name__ == "__main__":
    main(sys.argv[1])
