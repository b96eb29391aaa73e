"""The listening page: ``report.html`` next to the JSON report, with its audio in ``report_files/``.

On top, the summary (the headline rows of :data:`~audio_vqvae.evaluation.measures.MEASURES`); then one
row per held-out clip: the truth, the reconstruction, each conversion and each f0-only control, every
one with a player, its log-mel spectrogram (a PNG inside the page) and each judge's verdict. The page
and its folder work wherever they are copied together (relative links, nothing fetched).

Example:
    >>> import numpy as np
    >>> png = png_bytes(np.zeros((2, 3, 3), np.uint8))
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", len(png) > 50
    (True, True)
"""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Union

import librosa
import numpy as np
import soundfile

from audio_vqvae.atomic import atomic_write
from audio_vqvae.evaluation.measures import HEADLINE, SECTIONS

if TYPE_CHECKING:
    from audio_vqvae.evaluation.evaluate import Evaluation

KIND_TITLES = {"original": "truth", "reconstruction": "reconstruction", "conversion": "conversion to",
               "control": "f0-only control to"}
# A perceptual dark-to-bright colour ramp (black, purple, orange, pale yellow) for the spectrograms.
_RAMP = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], dtype=np.float64)


def page_path(out: Union[str, Path]) -> Path:
    """The listening page of a ``.json`` report: ``report.json`` -> ``report.html``."""
    return Path(out).with_suffix(".html")


def files_folder(page: Union[str, Path]) -> Path:
    """The page's audio folder: ``report.html`` -> ``report_files``."""
    page = Path(page)
    return page.with_name(page.stem + "_files")


def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of uint8[H x W x 3] (no filter, zlib level 9)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(rgb, dtype=np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def log_mel_image(audio: np.ndarray, sample_rate: int, *, bands: int = 64, range_db: float = 80.0) -> np.ndarray:
    """uint8[bands x frames x 3]: the log-mel spectrogram (10 ms frames), low bands at the bottom, the loudest
    cell at the top of the ramp and ``range_db`` below it at the bottom; silence is the ramp's bottom."""
    hop = max(1, sample_rate // 100)
    window = 1 << (round(0.025 * sample_rate) - 1).bit_length()
    power = librosa.feature.melspectrogram(y=np.asarray(audio, np.float32), sr=sample_rate, n_fft=window,
                                           hop_length=hop, n_mels=bands)
    decibels = 10 * np.log10(np.maximum(power, 1e-10))
    level = np.clip((decibels - decibels.max() + range_db) / range_db, 0.0, 1.0)[::-1]
    positions = np.linspace(0, 1, len(_RAMP))
    rgb = np.stack([np.interp(level, positions, _RAMP[:, channel]) for channel in range(3)], axis=-1)
    return rgb.round().astype(np.uint8)


def write_page(evaluation: "Evaluation", page: Union[str, Path]) -> None:
    """Write the page and its audio folder; the folder is built aside and swapped in, the page written atomically."""
    page = Path(page)
    folder = files_folder(page)
    material = evaluation.material
    page.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=page.parent))
    try:
        sources = []
        for index, item in enumerate(material.heard):
            clip = material.clips[item.clip]
            name = f"{index:03d}_{clip.name}_{item.kind}" + (f"_{item.intended}" if item.kind in ("conversion",
                                                                                                 "control") else "")
            name = re.sub(r"[^\w.-]", "_", name)  # utterance names may hold folders ("p225/0")
            soundfile.write(staging / f"{name}.wav", np.clip(item.audio, -1, 1), material.sample_rate,
                            subtype="PCM_16")
            sources.append(f"{folder.name}/{name}.wav")
        text = format_page(evaluation, sources)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}-old-", dir=page.parent))
            os.replace(folder, old / folder.name)
            os.replace(staging, folder)
            shutil.rmtree(old)
        else:
            os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    atomic_write(page, lambda file: file.write(text), text=True)


def format_page(evaluation: "Evaluation", sources: list[str]) -> str:
    """The page's HTML; ``sources[i]`` is the relative address of heard item i's audio."""
    report, material = evaluation.report, evaluation.material
    escape = html.escape
    step = f" (step {report['step']})" if report.get("step") is not None else ""
    summary = "".join(
        f"<tr><td>{escape(measure.label)}</td><td class=n>{escape(measure.cell(report))}</td>"
        f"<td>{escape(measure.reference(report))}</td></tr>"
        for measure in HEADLINE if measure.value(report) is not None)
    rows = []
    for number, (clip, entry) in enumerate(zip(material.clips, report["clips"])):
        cells = []
        indices = [i for i, item in enumerate(material.heard) if item.clip == number]
        for index, verdicts in zip(indices, (item["verdicts"] for item in entry["items"])):
            item = material.heard[index]
            title = KIND_TITLES[item.kind] + (f" {item.intended}" if item.kind in ("conversion", "control") else "")
            image = base64.b64encode(png_bytes(log_mel_image(item.audio, material.sample_rate))).decode()
            judged = "".join(f"<li><span>{escape(SECTIONS.get(section, section))}</span>: {escape(text)}</li>"
                             for section, text in verdicts.items())
            cells.append(f"<div class=cell><h3>{escape(title)}</h3>"
                         f"<audio controls preload=metadata src=\"{escape(sources[index])}\"></audio>"
                         f"<img alt=\"log-mel spectrogram\" src=\"data:image/png;base64,{image}\">"
                         f"<ul>{judged}</ul></div>")
        rows.append(f"<section><h2>{escape(clip.name)} ({escape(clip.speaker)})</h2><div class=row>"
                    + "".join(cells) + "</div></section>")
    return f"""<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8>
<title>Evaluation of {escape(str(report['checkpoint']))}{step}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }} td.n {{ text-align: right; }}
td {{ border-top: 1px solid #ddd; padding: 2px 8px; }}
.row {{ display: flex; flex-wrap: wrap; gap: 10px; }}
.cell {{ width: 260px; border: 1px solid #ccc; padding: 6px; }}
.cell h3 {{ font-size: 0.95em; margin: 0 0 4px 0; }}
.cell audio {{ width: 100%; }} .cell img {{ width: 100%; height: 90px; image-rendering: pixelated; }}
.cell ul {{ font-size: 0.8em; padding-left: 1.1em; margin: 4px 0; }} .cell li span {{ color: #555; }}
</style></head><body>
<h1>Evaluation of <code>{escape(str(report['checkpoint']))}</code>{step}</h1>
<p>Seed {report['settings']['seed']}, temperature {report['settings']['temperature']:g}, {len(material.clips)} held-out
clips of up to {report['settings']['seconds']:g} s. A ✓ marks the speaker intended; “(source)” a conversion named as
its source. See docs/evaluation.md for each judge.</p>
<table><tr><th>measure</th><th>value</th><th>reference</th></tr>{summary}</table>
{''.join(rows)}
</body></html>
"""
