"""Digests of everything a tiny run, its resume and the generation commands write: the proof that a refactor
left behaviour unchanged (the same digests before and after).

    python scripts/behaviour_fingerprint.py --out /tmp/fp-before        # on the old commit
    python scripts/behaviour_fingerprint.py --out /tmp/fp-after         # on the new one
    python scripts/behaviour_fingerprint.py --compare /tmp/fp-before/digests.json /tmp/fp-after/digests.json

What runs, on a generated ``folders`` corpus of 4 speakers and the tests' tiny model, for each decoder variant
(plain; source excitation + LPC split + harmonic part): ``prepare``; a 12-step run with validation, audio rounds
and checkpoints; the same run stopped at its step-6 checkpoint and resumed; then, on the final checkpoint,
``encode``, ``decode``, ``reconstruct`` and ``convert`` (two speakers, two input lengths, batched). Digested:
the cache's files, every checkpoint's tensors (model, optimizer, scheduler, random states), metrics.jsonl and
train.log without their clock fields, the TensorBoard scalars, audio and images, and every generated file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this checkout's library, whatever is installed

from helpers import make_tiny_corpus, speech_like, tiny_overrides, write  # noqa: E402

VARIANTS = {
    "plain": [],
    "synthesis": ["decoder.excitation_harmonics=4", "decoder.lpc_order=4", "decoder.harmonics=6"],
}
CLOCK = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|[\d.,]+ ?(s|samples/s|min)\b|in [\d.]+ s)")


ROOT = [""]  # the folder being digested: its path is replaced by "<out>" in every text, so two folders compare


def digest(data: bytes) -> str:
    if ROOT[0]:
        data = data.replace(ROOT[0].encode(), b"<out>")
    return hashlib.sha256(data).hexdigest()[:16]


def tensor_digests(value, prefix: str, out: dict) -> None:
    if isinstance(value, torch.Tensor):
        out[prefix] = digest(value.detach().cpu().contiguous().numpy().tobytes()) + str(tuple(value.shape))
    elif isinstance(value, np.ndarray):
        out[prefix] = digest(np.ascontiguousarray(value).tobytes()) + str(value.shape)
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            tensor_digests(value[key], f"{prefix}/{key}", out)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            tensor_digests(item, f"{prefix}/{index}", out)
    else:
        out[prefix] = repr(value).replace(ROOT[0], "<out>") if ROOT[0] else repr(value)


def run_digests(run: Path, out: dict) -> None:
    for path in sorted((run / "checkpoints").glob("*.pt")):
        payload = torch.load(path, map_location="cpu", weights_only=False)
        tensor_digests(payload, f"{run.name}/{path.name}", out)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        for key in [k for k in record if "time" in k or "second" in k or "per_s" in k or k.endswith("_s")]:
            record.pop(key)
    out[f"{run.name}/metrics.jsonl"] = digest(json.dumps(records, sort_keys=True).encode())
    log = [CLOCK.sub("#", line) for line in (run / "train.log").read_text().splitlines()]
    out[f"{run.name}/train.log"] = digest("\n".join(log).encode())
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    values: dict[str, list] = {}
    for path in sorted(run.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                tag = value.tag
                if "second" in tag or "time" in tag or "samples_per" in tag:
                    continue
                if value.HasField("tensor"):
                    content = value.tensor.SerializeToString()
                elif value.HasField("audio"):
                    content = value.audio.encoded_audio_string
                elif value.HasField("image"):
                    content = value.image.encoded_image_string
                else:
                    content = repr(value.simple_value).encode()
                values.setdefault(tag, []).append(digest(str(event.step).encode() + content))
    for tag in sorted(values):
        out[f"{run.name}/tb/{tag}"] = digest("".join(values[tag]).encode())


def command(*argv: str, env: dict) -> None:
    result = subprocess.run([sys.executable, *argv], env=env, cwd=str(REPO), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def fingerprint(out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    out = out.resolve()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    corpus = make_tiny_corpus(out / "corpus")
    recipe = [str(REPO / "recipes" / "vctk" / "train.py"), "--config", str(REPO / "recipes/vctk/conf/small.yaml"),
              "--no-progress"]
    cli = ["-m", "audio_vqvae.commands.main"]
    speech = [write(out / "inputs" / f"spk{i}_clip.wav", speech_like(0.3 + 0.1 * i, 16000, seed=i), 16000)
              for i in range(2)]
    for name, options in VARIANTS.items():
        cache = out / f"cache-{name}"
        overrides = [*tiny_overrides(corpus, cache, max_steps=12, checkpoint_every=6, keep_checkpoints=3),
                     *options, "train.seed=7"]
        whole, resumed = out / f"{name}-whole", out / f"{name}-resumed"
        command(*recipe, "--out", str(whole), *overrides, env=env)
        command(*recipe, "--out", str(resumed), *overrides, "train.max_steps=12", env=env)
        # Resume from step 6: drop the later checkpoint and what was logged after it.
        (resumed / "checkpoints" / "step-00000012.pt").unlink()
        command(*recipe, "--out", str(resumed), "--resume", *overrides, env=env)
        checkpoint = str(whole / "checkpoints" / "step-00000012.pt")
        made = out / f"{name}-generated"
        codes = made / ("codes.npz" if options else "codes.npy")  # with f0 (a model that reads it) or codes only
        command(*cli, "encode", "--checkpoint", checkpoint, "--input", str(speech[0]), "--output", str(codes), env=env)
        command(*cli, "decode", "--checkpoint", checkpoint, "--input", str(codes), "--speaker", "spk1",
                "--output", str(made / "decoded.wav"), "--no-progress", env=env)
        command(*cli, "reconstruct", "--checkpoint", checkpoint, "--input", str(speech[0]), "--speaker", "spk0",
                "--output", str(made / "reconstructed.wav"), "--no-progress", env=env)
        command(*cli, "convert", "--checkpoint", checkpoint, "--input", str(out / "inputs"), "--speaker", "spk2,spk3",
                "--output", str(made / "converted"), "--batch-size", "3", "--no-progress", env=env)
    return collect(out)


def collect(out: Path) -> dict:
    """Digest what :func:`fingerprint` left in ``out``; writes ``out/digests.json``."""
    ROOT[0] = str(out.resolve())
    digests: dict[str, str] = {}
    for name in VARIANTS:
        cache, made = out / f"cache-{name}", out / f"{name}-generated"
        for path in sorted(cache.rglob("*")):
            if path.is_file() and path.suffix != ".log":
                data = path.read_bytes()
                if path.suffix == ".json":  # without the clock and the hash of the corpus' path
                    data = json.dumps(_without_clock(json.loads(data)), sort_keys=True).encode()
                digests[f"{name}/cache/{path.relative_to(cache)}"] = digest(data)
        run_digests(out / f"{name}-whole", digests)
        run_digests(out / f"{name}-resumed", digests)
        for path in sorted(made.rglob("*")):
            if path.is_file():
                digests[f"{name}/generated/{path.relative_to(made)}"] = digest(path.read_bytes())
    (out / "digests.json").write_text(json.dumps(digests, indent=1, sort_keys=True))
    return digests


def _without_clock(value):
    if isinstance(value, dict):
        return {k: _without_clock(v) for k, v in value.items() if not k.endswith(("_s", "hash", "time", "report.json"))}
    if isinstance(value, list):
        return [_without_clock(v) for v in value]
    return value


def compare(before: Path, after: Path) -> int:
    old, new = json.loads(before.read_text()), json.loads(after.read_text())
    differ = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    only = sorted(old.keys() ^ new.keys())
    for key in differ:
        print(f"differs: {key}")
    for key in only:
        print(f"only in {'before' if key in old else 'after'}: {key}")
    print(f"{len(old.keys() & new.keys()) - len(differ)} of {len(old.keys() | new.keys())} digests identical")
    return 1 if differ or only else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder to run in (replaced); digests.json is written there")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--collect", type=Path, metavar="DIR", help="digest an existing --out folder again")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.collect:
        print(f"{len(collect(args.collect))} digests written to {args.collect / 'digests.json'}")
        return 0
    if args.out is None:
        parser.error("--out or --compare")
    digests = fingerprint(args.out)
    print(f"{len(digests)} digests written to {args.out / 'digests.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
