"""eSpeak NG through ctypes, and a worker script that synthesises one demo speaker.

eSpeak NG keeps synthesis state in library globals that neither ``espeak_Terminate`` nor reseeding
resets (an utterance's waveform depends on everything the process synthesised before), so each
speaker of the demo corpus is synthesised in a fresh process running this file as a script::

    python espeak_worker.py < job.json     # prints {"seconds": ..., "sample_rate": ..., "phonemes": {...}}

The job is ``{"voice": str, "rate": int, "pitch": int, "range": int, "pad_seconds": float,
"files": [[path, text, seed], ...]}``. ``phonemes`` maps each path to the ``[sample, mnemonic]`` of every
phoneme eSpeak NG spoke (phoneme events; the sample counted from the start of the written file, padding
included). Turning the events on does not change a sample of the audio. This module imports only numpy,
soundfile and the loader wheel, so a worker starts in a fraction of a second.
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_VOLUME, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 2, 3, 4
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7  # espeak_EVENT_TYPE


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.POINTER(_Event))


class ESpeak:
    """eSpeak NG from the espeakng-loader wheel, synthesising into numpy arrays (one per process)."""

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._libc = ctypes.CDLL(None)  # some voices draw noise from libc's rand()
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                                       espeakng_loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError("eSpeak NG failed to initialise")
        self._chunks: list[np.ndarray] = []
        self.phonemes: list[tuple[int, str]] = []  # of the last synthesise(): (sample, eSpeak mnemonic)
        # Mnemonics (ASCII, one token each), not IPA: they go into whitespace-separated alignment files.
        self._lib.espeak_ng_SetPhonemeEvents.argtypes = [ctypes.c_int, ctypes.c_int]
        self._lib.espeak_ng_SetPhonemeEvents(1, 0)
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept on self: ctypes must not free it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples: int, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        k = 0
        while events and events[k].type != _EVENT_LIST_TERMINATED:
            if events[k].type == _EVENT_PHONEME:
                # ``sample`` counts from the start of this utterance's audio (``audio_position`` is whole ms)
                self.phonemes.append((int(events[k].sample), events[k].id.string.decode("ascii", "replace")))
            k += 1
        return 0

    def synthesise(self, text: str, *, voice: str, rate: int, pitch: int, range: int, seed: int = 0) -> np.ndarray:
        """Speak ``text``: int16[T] at ``self.sample_rate``.

        Args:
            text: what to say.
            voice: eSpeak NG voice and variant (``"en-us+m3"``).
            rate: words per minute.
            pitch: base pitch, 0..100.
            range: pitch range, 0..100.
            seed: seed of the noise generators (unvoiced sounds).
        """
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"eSpeak NG has no voice {voice!r}")
        for parameter, value in ((_ESPEAK_RATE, rate), (_ESPEAK_PITCH, pitch), (_ESPEAK_RANGE, range),
                                 (_ESPEAK_VOLUME, 100)):
            self._lib.espeak_SetParameter(parameter, value, 0)
        self._lib.espeak_ng_SetRandSeed(seed)
        self._libc.srand(ctypes.c_uint(seed))
        self._chunks, self.phonemes = [], []
        data = text.encode() + b"\0"
        if self._lib.espeak_Synth(data, len(data), 0, 0, 0, 0, None, None) != 0:
            raise RuntimeError(f"eSpeak NG failed on {text!r}")
        self._lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def run_job(job: dict) -> dict:
    """Synthesise ``job["files"]`` with one voice, each padded with ``job["pad_seconds"]`` of silence,
    as 16-bit FLAC.

    Returns:
        ``{"seconds": written, "sample_rate": eSpeak's rate, "phonemes": {path: [[sample, mnemonic], ...]},
        "lengths": {path: samples}}``.
    """
    import soundfile

    engine = ESpeak()
    pad = np.zeros(round(job["pad_seconds"] * engine.sample_rate), np.int16)
    seconds = 0.0
    phonemes: dict[str, list] = {}
    lengths: dict[str, int] = {}
    for path, text, seed in job["files"]:
        speech = engine.synthesise(text, voice=job["voice"], rate=job["rate"], pitch=job["pitch"],
                                   range=job["range"], seed=seed)
        audio = np.concatenate([pad, speech, pad])
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, audio, engine.sample_rate, format="FLAC", subtype="PCM_16")
        seconds += len(audio) / engine.sample_rate
        phonemes[path] = [[len(pad) + sample, name] for sample, name in engine.phonemes]
        lengths[path] = len(audio)
    return {"seconds": seconds, "sample_rate": engine.sample_rate, "phonemes": phonemes, "lengths": lengths}


if __name__ == "__main__":
    print(json.dumps(run_job(json.load(sys.stdin))))
