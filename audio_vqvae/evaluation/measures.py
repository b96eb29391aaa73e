"""The one table of measures: where each figure is in a report, how it reads, and what it is compared with.

The markdown summary and TensorBoard show every row of :data:`MEASURES` that a report has; ``compare``
and the listening page's summary show the ``headline`` rows. A new judge adds its rows here.

    >>> report = {"speaker_encoder": {"available": True, "conversion_target_accuracy": 0.5,
    ...                               "control_target_accuracy": 0.125, "chance": 0.125}}
    >>> measure = by_tag("speaker_encoder/conversion_target_accuracy")
    >>> measure.value(report), measure.cell(report), measure.meets(report)
    (0.5, '50.0 %', False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from audio_vqvae.evaluation.metrics import LEVELS


@dataclass(frozen=True)
class Target:
    """What a measure must meet on every seed: ``check(value, report)``, described by ``text``."""

    text: str
    check: Callable[[float, dict], bool]


@dataclass(frozen=True)
class Measure:
    """One row: where its value is in a report, how it prints, and what it is compared with.

    Attributes:
        path: the keys of the value in a report, section first (``("codes", "bitrate")``).
        label: what the row says.
        format: the number without its unit.
        unit: appended to the number (``" %"``, ``" dB"``).
        reference: the text to compare with, read from the report ('' where its figures are absent).
        target: the demo's target, if the row has one.
        headline: shown by ``compare`` and on the listening page's summary (every row is in the markdown
            summary and TensorBoard).
    """

    path: tuple[str, ...]
    label: str
    format: Callable[[float], str]
    unit: str
    reference: Callable[[dict], str]
    target: Optional[Target] = None
    headline: bool = False

    @property
    def section(self) -> str:
        return self.path[0]

    @property
    def tag(self) -> str:
        """``section/key``: the TensorBoard scalar ``eval/<tag>``."""
        return "/".join(self.path)

    def value(self, report: dict) -> Optional[float]:
        """The number, or None where the section is absent, not measured, or the value is."""
        value = report
        for key in self.path:
            if not isinstance(value, dict) or value.get("available") is False or key not in value:
                return None
            value = value[key]
        return None if value is None or isinstance(value, bool) else float(value)

    def cell(self, report: dict) -> str:
        """The value with its unit, ``n/a`` where not measured."""
        value = self.value(report)
        return "n/a" if value is None else self.format(value) + self.unit

    def meets(self, report: dict) -> Optional[bool]:
        """Whether the report meets the target; None without a target or a value."""
        value = self.value(report)
        if self.target is None or value is None:
            return None
        return bool(self.target.check(value, report))


SECTIONS = {
    "teacher_forced": "teacher-forced likelihood",
    "codes": "codebook use",
    "reconstruction": "reconstruction distortion",
    "speaker_id": "speaker classifier, clean training (noise-sensitive)",
    "speaker_id_multicondition": "speaker classifier, multi-condition training",
    "speaker_encoder": "pretrained speaker encoder (Resemblyzer GE2E)",
    "quality": "predicted quality (DNSMOS P.835)",
    "intelligibility": "phone recognizer (intelligibility)",
    "parallel": "parallel comparison",
    "units": "speech units",
}
"""Report section -> its title in the summaries, in the order they are shown."""


def _share(value: float) -> str:
    return f"{100 * value:.1f}"


def percent(value: Optional[float]) -> str:
    return "n/a" if value is None else _share(value) + " %"


def _db(value: float) -> str:
    return f"{value:.2f} dB"


def _reference(text: Callable[[dict], str]) -> Callable[[dict], str]:
    """A reference text that reads the report, or '' where the figures it needs are absent."""

    def read(report: dict) -> str:
        try:
            return text(report)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return ""

    return read


_NUMBER, _PRECISE, _ONE = "{:.2f}".format, "{:.3f}".format, "{:.1f}".format
_NONE = _reference(lambda r: "")


def _above_control(section: str) -> Target:
    """≥ 60 % of the conversions named as their target, and more of them than of the f0-only controls
    (where the report has controls: reports from before them are held to the 60 % alone)."""
    def check(value: float, report: dict) -> bool:
        control = report[section].get("control_target_accuracy")
        return value >= 0.60 and (control is None or value > control)
    return Target("≥ 60 % and above the f0 controls", check)


def _speaker_rows(section: str, judge: str, *, headline: bool, targets: bool) -> tuple[Measure, ...]:
    """The rows of a speaker judge's section (:func:`~audio_vqvae.evaluation.speaker_id.speaker_section`)."""
    chance = _reference(lambda r: f"chance {percent(r[section]['chance'])} ({r[section]['classes']} speakers)")
    ceiling = _reference(lambda r: f"its ceiling {percent(r[section]['real_heldout_accuracy'])}")
    return (
        Measure((section, "real_heldout_accuracy"), f"{judge}: real held-out clips named correctly (its ceiling)",
                _share, " %", chance, headline=headline),
        Measure((section, "reconstruction_accuracy"), f"{judge}: reconstructions named as their own speaker",
                _share, " %", ceiling, headline=headline),
        Measure((section, "conversion_target_accuracy"), f"{judge}: conversions named as their target",
                _share, " %", _reference(lambda r: f"f0 controls {percent(r[section].get('control_target_accuracy'))}"
                                                   f"; chance {percent(r[section]['chance'])}"),
                _above_control(section) if targets else None, headline=headline),
        Measure((section, "conversion_source_confusion"), f"{judge}: conversions named as their source",
                _share, " %", _reference(lambda r: f"f0 controls {percent(r[section].get('control_source_accuracy'))}"
                                                   "; lower is better"), headline=headline),
        Measure((section, "control_target_accuracy"), f"{judge}: f0-only controls named as the target",
                _share, " %", _reference(lambda r: f"≤ chance {percent(r[section]['chance'])}: else the judge hears "
                                                   "f0"), headline=headline),
        Measure((section, "generated_top_share"), f"{judge}: generated clips named as the most common speaker",
                _share, " %", _reference(lambda r: f"{percent(1 / r[section]['classes'])} if spread evenly "
                                                   f"({r[section]['generated_top_prediction']} here)"),
                Target("≤ 30 %", lambda v, r: v <= 0.30) if targets else None, headline=headline),
    )


def _secs_rows() -> tuple[Measure, ...]:
    section = "speaker_encoder"
    return tuple(
        Measure((section, f"{kind}_secs_{side}"), f"speaker encoder: SECS of the {name} to the {who}'s centroid",
                _NUMBER, "", reference, headline=headline)
        for kind, name, side, who, reference, headline in (
            ("original", "real held-out clips", "intended", "speaker",
             _reference(lambda r: "cosine; 1 = the same voice"), True),
            ("reconstruction", "reconstructions", "intended", "speaker",
             _reference(lambda r: f"real clips {r[section]['original_secs_intended']:.2f}"), False),
            ("conversion", "conversions", "intended", "target",
             _reference(lambda r: f"f0 controls {r[section]['control_secs_intended']:.2f}; real clips "
                                  f"{r[section]['original_secs_intended']:.2f}"), True),
            ("conversion", "conversions", "source", "source",
             _reference(lambda r: f"f0 controls {r[section]['control_secs_source']:.2f}"), True),
            ("control", "f0 controls", "intended", "target", _NONE, False),
            ("control", "f0 controls", "source", "source", _NONE, False),
        )) + (
        Measure((section, "conversion_closer_to_intended"),
                "speaker encoder: conversions closer to the target's centroid than to the source's", _share, " %",
                _reference(lambda r: f"f0 controls {percent(r[section]['control_closer_to_intended'])}"),
                headline=True),
    )


def _quality_rows() -> tuple[Measure, ...]:
    rows = []
    for rating, meaning in (("sig", "signal"), ("bak", "background: the noise floor"), ("ovrl", "overall"),
                            ("p808", "P.808 MOS")):
        for kind, name in (("original", "real clips"), ("reconstruction", "reconstructions"),
                           ("conversion", "conversions"), ("control", "f0 controls")):
            reference = (_reference(lambda r: "1-5, higher is better") if kind == "original" else
                         _reference(lambda r, rating=rating: f"real clips {r['quality'][f'original_{rating}']:.2f}"))
            rows.append(Measure(("quality", f"{kind}_{rating}"), f"DNSMOS {rating.upper()} ({meaning}), {name}",
                                _NUMBER, "", reference,
                                headline=rating in ("sig", "bak", "ovrl") and kind != "control"))
    return tuple(rows)


def _phone_rows() -> tuple[Measure, ...]:
    section = "intelligibility"
    majority = _reference(lambda r: f"always the majority phone {percent(r[section]['majority_baseline'])}")
    real = _reference(lambda r: f"real clips {percent(r[section]['original_accuracy'])}")
    return (
        Measure((section, "heldout_accuracy"), "phone recognizer: frame accuracy on every real held-out utterance "
                "(its ceiling)", _share, " %", majority, headline=True),
        Measure((section, "original_accuracy"), "phone recognizer: frame accuracy on the real held-out clips",
                _share, " %", majority, headline=True),
        Measure((section, "reconstruction_accuracy"), "phone recognizer: reconstructions, against the source's "
                "alignment", _share, " %", real, headline=True),
        Measure((section, "conversion_accuracy"), "phone recognizer: conversions, against the source's alignment",
                _share, " %", real, headline=True),
        Measure((section, "control_accuracy"), "phone recognizer: f0 controls, against the source's alignment",
                _share, " %", real),
        Measure((section, "original_speech_accuracy"), "phone recognizer: real clips, speech frames only",
                _share, " %", _NONE),
        Measure((section, "conversion_speech_accuracy"), "phone recognizer: conversions, speech frames only",
                _share, " %", _reference(lambda r: f"real clips {percent(r[section]['original_speech_accuracy'])}")),
    )


def _level_rows() -> tuple[Measure, ...]:
    def reference(level: str) -> Callable[[dict], str]:
        def text(r: dict) -> str:
            tf = r["teacher_forced"]
            share = f"{percent(tf[f'{level}_share'])} of the samples"
            if level == "silence" or tf.get(f"{level}_lpc_bits_per_sample") is None:
                return f"{share}; frames below -50 dBFS" if level == "silence" else share
            return (f"{share}; an order-16 linear predictor fitted to each frame (knows its envelope, not its pitch "
                    f"pulses): {tf[f'{level}_lpc_bits_per_sample']:.2f}, the decoder on the same samples "
                    f"{tf[f'{level}_scored_bits_per_sample']:.2f}")
        return _reference(text)
    return tuple(Measure(("teacher_forced", f"{level}_bits_per_sample"), f"… in {level} frames", _NUMBER, "",
                         reference(level)) for level in LEVELS)


MEASURES: tuple[Measure, ...] = (
    Measure(("teacher_forced", "bits_per_sample"), "teacher-forced bits per sample (the decoder's own targets)",
            _PRECISE, "", _reference(lambda r: f"{r['teacher_forced']['chance_bits_per_sample']:.0f}: uniform over "
                                               "the μ-law classes"), headline=True),
    *_level_rows(),
    Measure(("codes", "perplexity"), "codebook perplexity", _ONE, "",
            _reference(lambda r: f"{r['codes']['num_codes']} at uniform use of every code")),
    Measure(("codes", "share_used"), "codes used", _share, " %",
            _reference(lambda r: f"{r['codes']['codes_used']} of {r['codes']['num_codes']}")),
    Measure(("codes", "bitrate"), "code bitrate (entropy × frame rate)", "{:,.0f}".format, " bit/s",
            _reference(lambda r: f"{r['codes']['bitrate_max']:,.0f} bit/s at uniform use"), headline=True),
    Measure(("reconstruction", "mcd_db"), "reconstruction MCD", _NUMBER, " dB",
            _reference(lambda r: f"{_db(r['reconstruction']['baseline_mcd_db'])}: another utterance of the speaker"),
            headline=True),
    Measure(("reconstruction", "lsd_db"), "reconstruction log-spectral distance", _NUMBER, " dB",
            _reference(lambda r: f"{_db(r['reconstruction']['baseline_lsd_db'])}: the same baseline"), headline=True),
    Measure(("reconstruction", "voiced_share"), "reconstructions' frames voiced (pYIN)", _share, " %",
            _reference(lambda r: f"originals {percent(r['reconstruction']['original_voiced_share'])}; near 0 is noise "
                                 "without harmonics"),
            Target("≥ 60 %", lambda v, r: v >= 0.60), headline=True),
    Measure(("reconstruction", "silence_floor_db"), "reconstructions in the originals' pauses (re loudest frame)",
            _ONE, " dB",
            _reference(lambda r: f"originals {r['reconstruction']['original_silence_floor_db']:.1f} dB: frames more "
                                 "than 40 dB below the clip's loudest"), headline=True),
    *_speaker_rows("speaker_encoder", "speaker encoder", headline=True, targets=True),
    *_secs_rows(),
    *_speaker_rows("speaker_id_multicondition", "multi-condition classifier", headline=True, targets=False),
    *_speaker_rows("speaker_id", "noise-sensitive classifier", headline=True, targets=False),
    *_quality_rows(),
    *_phone_rows(),
    Measure(("parallel", "conversion_mcd_db"), "conversion vs the target's reading, MCD (DTW)", _NUMBER, " dB",
            _reference(lambda r: f"{_db(r['parallel']['source_target_mcd_db'])}: the unconverted source"),
            Target("below the source's", lambda v, r: v < r["parallel"]["source_target_mcd_db"]), headline=True),
    Measure(("parallel", "f0_error_semitones"), "median f0, conversion vs the target's reading", _ONE, " semitones",
            _reference(lambda r: f"the source {r['parallel']['source_f0_error_semitones']:.1f} semitones"),
            Target("≤ 1 semitone", lambda v, r: v <= 1.0 + 1e-9), headline=True),
    Measure(("units", "phone_accuracy", "accuracy"), "phone accuracy of the codes (each code labelled with its most "
            "frequent training phone)", _share, " %",
            _reference(lambda r: f"majority phone {percent(r['units']['phone_accuracy']['majority_baseline'])}; "
                                 f"chance {percent(r['units']['phone_accuracy']['chance'])}"), headline=True),
    Measure(("units", "probe_z_e_accuracy"), "linear probe of the phone from the encoder output, before quantization",
            _share, " %", _reference(lambda r: f"majority phone "
                                               f"{percent(r['units']['phone_accuracy']['majority_baseline'])}")),
    Measure(("units", "probe_z_q_accuracy"), "linear probe of the phone from the encoder output, after quantization",
            _share, " %", _reference(lambda r: f"before {percent(r['units']['probe_z_e_accuracy'])}")),
    Measure(("units", "abx", "within_speaker"), "ABX error within speakers, phone triplets in the same context",
            _share, " %", _reference(lambda r: "50 % = no phone information; 0 is perfect")),
    Measure(("units", "abx", "across_speaker"), "ABX error across speakers, phone triplets in the same context",
            _share, " %", _reference(lambda r: "the same")),
    Measure(("units", "abx", "within_speaker_any_context"), "ABX error within speakers, any context", _share, " %",
            _reference(lambda r: "the same")),
    Measure(("units", "abx", "across_speaker_any_context"), "ABX error across speakers, any context", _share, " %",
            _reference(lambda r: "50 % = no phone information"), headline=True),
    Measure(("units", "speaker", "accuracy"), "speaker named from 1 s of codes", _share, " %",
            _reference(lambda r: f"chance {percent(r['units']['speaker']['chance'])}; lower is freer of the speaker"),
            headline=True),
)
"""Every row. The targets are the demo's (docs/results.md): what an audible conversion needs."""

HEADLINE = tuple(measure for measure in MEASURES if measure.headline)
DEMO_TARGETS = tuple(measure for measure in MEASURES if measure.target is not None)


def by_tag(tag: str) -> Measure:
    """The row whose :attr:`Measure.tag` is ``tag``."""
    return next(measure for measure in MEASURES if measure.tag == tag)
