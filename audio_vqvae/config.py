"""Configuration dataclasses: one per part, nested in :class:`ModelConfig` and :class:`ExperimentConfig`.

Every config round-trips through plain data (``to_dict`` / ``from_dict``), so it can live in YAML
files and inside checkpoints that load with ``torch.load(..., weights_only=True)``.

Example:
    >>> cfg = ModelConfig.preset("small")
    >>> cfg.encoder.hop_length, cfg.decoder.receptive_field
    (64, 2047)
    >>> ModelConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> apply_overrides(cfg, ["quantizer.num_codes=128"]).quantizer.num_codes
    128
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Sequence, Tuple, TypeVar, Union

import yaml

T = TypeVar("T")

PRESET_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A configuration value, key or file is not what the dataclass expects."""


class _Config:
    """Mixin giving dataclasses plain-data (de)serialisation."""

    def to_dict(self) -> dict:
        return _to_plain(self)

    @classmethod
    def from_dict(cls: type[T], data: dict, *, where: str = "") -> T:
        return _from_plain(cls, data, where or cls.__name__)

    @classmethod
    def from_yaml(cls: type[T], path: Union[str, Path]) -> T:
        """Read a YAML file; a top-level ``base: other.yaml`` (relative to the file) names a file whose
        values this one overlays key by key, so that a config holds only its differences from another."""
        return _from_plain(cls, read_yaml(Path(path), config=cls), str(path))

    def to_yaml(self, path: Union[str, Path]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


@dataclass
class EncoderConfig(_Config):
    """Strided 1-D convolutions over the raw waveform, (B, 1, T) -> (B, D, T // hop_length).

    Each stride ``s`` gets a convolution of window ``2 * s`` (the paper's stride 2, window 4),
    followed by ``residual_layers`` non-strided residual blocks.
    """

    hidden_channels: int = 128
    strides: Tuple[int, ...] = (2, 2, 2, 2, 2, 2)
    residual_layers: int = 1

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    def validate(self) -> None:
        if not self.strides or any(s < 1 for s in self.strides):
            raise ConfigError(f"encoder.strides must be positive integers, got {self.strides}")
        _require_positive(self, "hidden_channels")
        if self.residual_layers < 0:
            raise ConfigError("encoder.residual_layers must be >= 0")


@dataclass
class QuantizerConfig(_Config):
    """Codebook of ``num_codes`` vectors of size ``code_dim`` (van den Oord et al. 2017, Sec. 3.1).

    ``kind`` names the quantizer class in :data:`audio_vqvae.quantizer.QUANTIZERS` (``"vq"``: the
    paper's :class:`~audio_vqvae.quantizer.VectorQuantizer`; a config without the key, e.g. in an older
    checkpoint, gets it). ``update="ema"`` uses the exponential-moving-average codebook of the paper's appendix;
    ``"grad"`` learns it with the codebook loss. ``dead_code_steps`` restarts codes unused for that
    many training steps from recent encoder outputs (0 turns restarts off); ``data_init`` initialises
    the codebook from the first training batch.
    """

    kind: str = "vq"
    num_codes: int = 512
    code_dim: int = 64
    update: Literal["ema", "grad"] = "ema"
    decay: float = 0.99
    commitment: float = 0.25
    epsilon: float = 1e-5
    data_init: bool = True
    dead_code_steps: int = 50

    def validate(self) -> None:
        # The registry lives with the classes, so that adding a quantizer touches quantizer.py alone; imported
        # here, not at the top, because quantizer.py imports this module.
        from audio_vqvae.quantizer import QUANTIZERS

        if self.kind not in QUANTIZERS:
            raise ConfigError(f"quantizer.kind must be one of {', '.join(map(repr, QUANTIZERS))}, got {self.kind!r}")
        _require_positive(self, "num_codes")
        _require_positive(self, "code_dim")
        if self.update not in ("ema", "grad"):
            raise ConfigError(f"quantizer.update must be 'ema' or 'grad', got {self.update!r}")
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"quantizer.decay must be in [0, 1), got {self.decay}")
        if self.dead_code_steps < 0:
            raise ConfigError("quantizer.dead_code_steps must be >= 0")
        _require_range(self, "commitment", "quantizer", minimum=0.0)
        _require_range(self, "epsilon", "quantizer", above=0.0)


@dataclass
class WaveNetConfig(_Config):
    """WaveNet decoder (van den Oord et al. 2016) with local and global conditioning.

    ``stacks`` x ``layers_per_stack`` causal dilated convolutions of kernel 2, dilations
    1, 2, ..., 2**(layers_per_stack - 1) in every stack. ``gate_channels`` is split in half between
    the tanh and the sigmoid branch of each gated unit (the r9y9/wavenet_vocoder convention).
    """

    stacks: int = 2
    layers_per_stack: int = 10
    residual_channels: int = 64
    gate_channels: int = 128
    skip_channels: int = 128
    conditioning_channels: int = 128
    speaker_dim: int = 64
    quantization_channels: int = 256
    # Source excitation (0 = off, the paper's model): the decoder's conditioning also gets K harmonics of
    # the glottal cycle, v cos kφ and v sin kφ at the sample rate, the voicing v and the log-f0, from f0
    # tracked in `prepare` (phase measured in the audio) or, when generating, the source's f0 moved to the
    # target speaker. See audio_vqvae.pitch.
    excitation_harmonics: int = 0
    # Source-filter decoder (0 = off, the paper's model): an envelope network predicts an all-pole filter of
    # this order per frame from the codes and the speaker, and the WaveNet models only the excitation
    # e[t] = s[t] - p[t] of the filter's prediction p[t], which it also gets as an input. See audio_vqvae.lpc.
    lpc_order: int = 0
    # Weight of the envelope network's loss (squared error of atanh of the reflection coefficients).
    lpc_weight: float = 1.0
    # Harmonic part (0 = off, the paper's model): a frame-rate network predicts the amplitudes of this many
    # harmonics of f0 from the codes, the speaker and f0; their sum h on the f0 phase is the periodic part of
    # voiced speech, and the WaveNet models only the residual x - h (with h as an input; generation emits
    # h + r). Needs f0 (pitch rows) like the excitation. See audio_vqvae.harmonic.
    harmonics: int = 0
    # Weight of the harmonic part's loss (residual energy on voiced samples relative to theirs).
    harmonic_weight: float = 1.0
    # Weight of the harmonic part's multi-resolution log-mel distance on voiced frames (0 = not computed).
    harmonic_spectral_weight: float = 0.0
    # Noise envelope (false = off, the paper's model): a frame-rate network predicts the log RMS of what the
    # synthesis parts leave from the codes and the speaker, and the WaveNet draws that excitation on a scale of
    # 8x the predicted RMS (generation emits p + g e). Needs a synthesis part (harmonics or lpc_order).
    # See audio_vqvae.noise.
    noise_envelope: bool = False
    # Weight of the noise envelope's loss (squared error of the log RMS per code frame).
    noise_weight: float = 1.0
    # Weight of the rendering loss (0 = not computed): the log-mel distance of the signal to the expected
    # spectrum of what the parts make with white noise for the WaveNet, h + the LPC filter's response to noise
    # of the predicted RMS. Trains the part networks together. Needs noise_envelope. See audio_vqvae.rendering.
    render_weight: float = 0.0
    # Generation only (training never reads it): the noise envelope's gain in voiced samples, by the f0 rows'
    # voicing, is multiplied by this (1 = as trained). Needs noise_envelope and f0 (harmonics or
    # excitation_harmonics). See audio_vqvae.noise.
    voiced_noise: float = 1.0

    @property
    def excitation_channels(self) -> int:
        """Inputs of the excitation projection: 2 per harmonic, voicing and log-f0 (0 when off)."""
        return 2 * self.excitation_harmonics + 2 if self.excitation_harmonics else 0

    @property
    def dilations(self) -> list[int]:
        return [2**i for i in range(self.layers_per_stack)] * self.stacks

    @property
    def receptive_field(self) -> int:
        """Number of past samples the prediction of sample t can see (kernel 2: sum of dilations + 1)."""
        return sum(self.dilations) + 1

    def validate(self) -> None:
        for name in ("stacks", "layers_per_stack", "residual_channels", "gate_channels", "skip_channels",
                     "conditioning_channels", "speaker_dim", "quantization_channels"):
            _require_positive(self, name)
        if self.excitation_harmonics < 0:
            raise ConfigError(f"decoder.excitation_harmonics must be 0 (off) or more, got {self.excitation_harmonics}")
        if not 0 <= self.lpc_order <= 64:
            raise ConfigError(f"decoder.lpc_order must be 0 (off) to 64, got {self.lpc_order}")
        _require_range(self, "lpc_weight", "decoder", minimum=0.0)
        if not 0 <= self.harmonics <= 256:
            raise ConfigError(f"decoder.harmonics must be 0 (off) to 256, got {self.harmonics}")
        _require_range(self, "harmonic_weight", "decoder", minimum=0.0)
        _require_range(self, "harmonic_spectral_weight", "decoder", minimum=0.0)
        if self.harmonic_spectral_weight and not self.harmonics:
            raise ConfigError("decoder.harmonic_spectral_weight weighs a loss of the harmonic part: it needs "
                              "decoder.harmonics")
        _require_range(self, "noise_weight", "decoder", minimum=0.0)
        if self.noise_envelope and not (self.harmonics or self.lpc_order):
            raise ConfigError("decoder.noise_envelope scales what a synthesis part leaves: it needs decoder.harmonics "
                              "or decoder.lpc_order")
        _require_range(self, "render_weight", "decoder", minimum=0.0)
        if self.render_weight and not self.noise_envelope:
            raise ConfigError("decoder.render_weight scores the parts' rendering with noise of the predicted level: it "
                              "needs decoder.noise_envelope")
        _require_range(self, "voiced_noise", "decoder", minimum=0.0, maximum=1.0)
        if self.voiced_noise != 1.0 and not self.noise_envelope:
            raise ConfigError("decoder.voiced_noise scales the noise envelope's gain: it needs decoder.noise_envelope")
        if self.voiced_noise != 1.0 and not (self.harmonics or self.excitation_harmonics):
            raise ConfigError("decoder.voiced_noise scales the noise in voiced samples, known from f0: it needs "
                              "decoder.harmonics or decoder.excitation_harmonics")
        if self.gate_channels % 2:
            raise ConfigError(f"decoder.gate_channels must be even (tanh and sigmoid halves), got {self.gate_channels}")


@dataclass
class ModelConfig(_Config):
    """The whole VQ-VAE: encoder, quantizer, WaveNet decoder and what ties them together.

    A mapping read into it may name a bundled preset and hold only its differences from it
    (``{"preset": "small", "sample_rate": 8000, "decoder": {"lpc_order": 12}}``): the preset's values,
    overlaid key by key. ``preset`` is no field: ``to_dict`` (run directories, checkpoints) writes the
    resolved values, so a run directory or checkpoint reads the same after a preset changes.
    """

    sample_rate: int = 16000
    num_speakers: int = 1
    time_jitter: float = 0.12
    # The decoder models x[t] - preemphasis * x[t-1] and generation inverts it (0 = off, the paper's
    # setting): tilts the decoder's white noise towards the low frequencies; see audio_vqvae.emphasis.
    preemphasis: float = 0.0
    # Training only: the decoder's input samples (not its targets) get Gaussian noise of this standard
    # deviation in μ-law classes, rounded, so that it learns to continue from the imperfect samples it
    # draws itself when generating (FFTNet's injected noise, Jin et al. 2018). 0 = off, the paper's setting.
    input_noise: float = 0.0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    decoder: WaveNetConfig = field(default_factory=WaveNetConfig)

    @property
    def hop_length(self) -> int:
        return self.encoder.hop_length

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def bitrate(self) -> float:
        """Bits per second of the code stream at full codebook use (frames/s x log2 K)."""
        return self.frame_rate * math.log2(self.quantizer.num_codes)

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        """Load a bundled preset: ``"small"`` (CPU, demo) or ``"paper"`` (VCTK, paper scale)."""
        path = PRESET_DIR / f"{name}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown model preset {name!r}; known presets: {', '.join(known)}")
        return cls.from_yaml(path)

    def validate(self) -> None:
        _require_positive(self, "sample_rate")
        _require_positive(self, "num_speakers")
        if not 0.0 <= self.time_jitter < 1.0:
            raise ConfigError(f"time_jitter must be in [0, 1), got {self.time_jitter}")
        if not (math.isfinite(self.input_noise) and self.input_noise >= 0.0):
            raise ConfigError(f"input_noise must be 0 or more (μ-law classes), got {self.input_noise}")
        if not 0.0 <= self.preemphasis < 1.0:
            raise ConfigError(f"preemphasis must be in [0, 1), got {self.preemphasis}")
        self.encoder.validate()
        self.quantizer.validate()
        self.decoder.validate()


@dataclass
class DataConfig(_Config):
    """Which corpus to read, how to prepare it and how to cut it into training examples.

    ``corpus`` names an entry of the corpus registry, :data:`audio_vqvae.data.corpora.CORPORA`. The preparation
    settings carry the names of :func:`~audio_vqvae.data.prepare.prepare_corpus`'s arguments and of the
    ``audio-vqvae prepare`` flags (``trim_silence_db``, ``--trim-silence-db``).
    """

    # Keys of older configs (and of the experiment configs stored in older checkpoints) -> the keys that now hold
    # their value: ``num_workers`` meant both the loader's workers and prepare's decoding processes.
    RENAMED_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"num_workers": ("loader_workers", "prepare_workers")}

    corpus: str = "vctk"
    data_root: Optional[str] = None
    cache_dir: Optional[str] = None
    segment_length: int = 16384
    batch_size: int = 16
    # DataLoader worker processes cutting training segments (0: in the training process).
    loader_workers: int = 2
    # Processes decoding the corpus when prepare (or a training start) builds the cache (0 or 1: in this process).
    prepare_workers: int = 2
    trim_silence_db: Optional[float] = 40.0
    # Speech RMS in dBFS that prepare scales every utterance to (null: kept as recorded); generation scales a
    # user's recording the same way before encoding it (audio_vqvae.data.audio.model_input).
    level_db: Optional[float] = -24.0
    valid_utterances_per_speaker: int = 2
    valid_speakers: Tuple[str, ...] = ()
    train_subsets: Tuple[str, ...] = ("train-clean-100",)
    valid_subsets: Tuple[str, ...] = ()
    mic: Literal["mic1", "mic2"] = "mic1"
    # Voiced crops: offsets drawn per training crop, the one with the most voiced 10 ms frames kept
    # (audio_vqvae.data.dataset); 1 is a uniform crop. Validation crops stay uniform. The demo keeps 1: at equal
    # wall time 4 gave better codes and a worse, less voiced decoder (docs/results.md).
    crop_candidates: int = 1

    def validate(self) -> None:
        # The registry lives with the scanners, so that adding a corpus touches data/corpora.py alone; imported
        # here, not at the top, because the data package imports this module.
        from audio_vqvae.data.corpora import CORPORA

        if self.corpus not in CORPORA:
            raise ConfigError(f"data.corpus must be one of {', '.join(map(repr, CORPORA))}, got {self.corpus!r}")
        for name in ("segment_length", "batch_size", "crop_candidates"):
            _require_positive(self, name, "data")
        _require_range(self, "loader_workers", "data", minimum=0)
        _require_range(self, "prepare_workers", "data", minimum=0)
        _require_range(self, "valid_utterances_per_speaker", "data", minimum=0)
        if self.trim_silence_db is not None:
            _require_range(self, "trim_silence_db", "data", above=0.0, maximum=120.0, extra="or null (no trimming)")
        if self.level_db is not None:
            _require_range(self, "level_db", "data", minimum=-60.0, maximum=0.0, extra="or null (keep the level)")


@dataclass
class TrainConfig(_Config):
    """Optimisation, logging and checkpointing of one training run."""

    max_steps: int = 200000
    learning_rate: float = 2e-4
    warmup_steps: int = 1000
    min_learning_rate: float = 1e-5
    grad_clip: float = 1.0
    seed: int = 1234
    bf16: bool = True
    device: str = "auto"
    log_every: int = 50
    valid_every: int = 1000
    valid_batches: int = 8
    audio_every: int = 5000
    audio_clips: int = 2
    audio_seconds: float = 1.0
    conversion_speakers: int = 3
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    # A time-boxed run: stop after the first step that ends this many minutes into training (timed from the
    # start of this process's loop, so a resumed run gets the budget again), checkpoint, exit 0. 0 = no limit.
    max_minutes: float = 0.0
    # torch.compile the decoder's teacher-forced pass (nn.Module.compile: in place, so checkpoint keys are
    # unchanged); off by default: compilation takes one to two minutes per process, and on a CPU it needs a
    # C++ compiler (measured on the demo: docs/results.md, "Learning per CPU-second").
    compile: bool = False
    # bf16 autocast on a CPU as well (oneDNN; ``bf16`` alone applies to CUDA only). Off by default: on the
    # demo it is 1.11x faster per compiled step, but its validation curve lags float32's by 0.05-0.09 bits
    # at equal steps (docs/results.md). Validation stays float32 on a CPU (Trainer._validate).
    cpu_bf16: bool = False

    def validate(self) -> None:
        for name in ("max_steps", "log_every", "valid_every", "valid_batches", "audio_every", "checkpoint_every",
                     "keep_checkpoints"):
            _require_positive(self, name, "train")
        _require_range(self, "learning_rate", "train", above=0.0)
        _require_range(self, "min_learning_rate", "train", minimum=0.0, maximum=self.learning_rate,
                       extra="(train.learning_rate)")
        _require_range(self, "warmup_steps", "train", minimum=0)
        _require_range(self, "grad_clip", "train", minimum=0.0, extra="(0 = no clipping)")
        _require_range(self, "seed", "train", minimum=0, maximum=2**32 - 1)
        _require_range(self, "audio_clips", "train", minimum=0)
        _require_range(self, "audio_seconds", "train", above=0.0)
        _require_range(self, "conversion_speakers", "train", minimum=0)
        _require_range(self, "max_minutes", "train", minimum=0.0, extra="(0 = no time limit)")


@dataclass
class ExperimentConfig(_Config):
    """Everything a training run needs: model, data and training settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """Check every part's ranges: a bad value stops a run before any work, with one line naming the key."""
        self.model.validate()
        self.data.validate()
        self.train.validate()


# --------------------------------------------------------------------------- plain-data machinery


def _require_positive(config: Any, name: str, section: Optional[str] = None) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not (isinstance(value, int) and value > 0):
        raise ConfigError(f"{section or type(config).__name__}.{name} must be a positive integer, got {value!r}")


def _require_range(config: Any, name: str, section: str, *, minimum: Optional[float] = None,
                   maximum: Optional[float] = None, above: Optional[float] = None, extra: str = "") -> None:
    """``section.name`` must be finite and within bounds: inclusive ``minimum``/``maximum``, exclusive ``above``."""
    value = getattr(config, name)
    bounds = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else "",
              f"<= {maximum:g}" if maximum is not None else ""]
    wanted = " and ".join(b for b in bounds if b) + (f" {extra}" if extra else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (minimum is not None and value < minimum) or (above is not None and value <= above) \
            or (maximum is not None and value > maximum):
        raise ConfigError(f"{section}.{name} must be {wanted}, got {value!r}")


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _from_plain(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    if cls is ModelConfig and "preset" in data:
        data = _with_preset(data, where)
    data = _renamed(cls, data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; "
                          f"known: {', '.join(sorted(names))}")
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def _renamed(cls: type, data: dict) -> dict:
    """``data`` with the keys that ``cls`` and the config classes nested in it have renamed (their
    ``RENAMED_KEYS``) under their new names; a new key given as well wins."""
    renamed = getattr(cls, "RENAMED_KEYS", {})
    current = {key: value for key, value in data.items() if key not in renamed}
    for old, new_keys in renamed.items():
        if old in data:
            for key in new_keys:
                current.setdefault(key, data[old])
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        for field_ in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[field_.name]) and isinstance(current.get(field_.name), dict):
                current[field_.name] = _renamed(hints[field_.name], current[field_.name])
    return current


def _with_preset(data: dict, where: str) -> dict:
    """A model mapping that names ``preset``: the preset's values, overlaid by the mapping's other keys."""
    name = data["preset"]
    if not isinstance(name, str):
        raise ConfigError(f"{where}.preset: expected a preset name, got {name!r}")
    try:
        resolved = ModelConfig.preset(name).to_dict()
    except ConfigError as err:
        raise ConfigError(f"{where}.preset: {err}") from None
    return _overlay(resolved, {key: value for key, value in data.items() if key != "preset"})


def read_yaml(path: Path, _seen: tuple[Path, ...] = (), *, config: Optional[type] = None) -> dict:
    """A config file's mapping, with its ``base:`` chain resolved (each file overlays the one it names).

    Args:
        config: the config class the file describes: each file's renamed keys (``RENAMED_KEYS``) then take their
            new names before it is overlaid, so that a file's old key overrides its base's new one.
    """
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    if config is not None:
        data = _renamed(config, data)
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str):
        raise ConfigError(f"{path}.base: expected the path of a YAML file, got {base!r}")
    resolved = (path.parent / base).resolve()
    if resolved in _seen or resolved == path.resolve():
        raise ConfigError(f"{path}.base: {base} includes itself")
    return _overlay(read_yaml(resolved, _seen + (path.resolve(),), config=config), data)


def _overlay(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied; nested mappings are merged key by key, not replaced."""
    merged = dict(base)
    for key, value in changes.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _overlay(base[key], value) if nested else value
    return merged


def _coerce(annotation: Any, value: Any, where: str) -> Any:
    """Check ``value`` against a field annotation and convert lists to tuples where declared."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        return _from_plain(annotation, value, where)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(item_type, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is float:
        # No config value means anything as NaN or infinity (YAML's .nan, .inf): refused on reading.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def apply_overrides(config: T, overrides: Sequence[str]) -> T:
    """Return a copy of ``config`` with dotted ``key=value`` overrides applied and type-checked.

    Values are parsed as YAML scalars (``quantizer.update=grad``, ``train.bf16=false``,
    ``encoder.strides=[2,4,5,8]``).
    """
    result = copy.deepcopy(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        parts = key.strip().split(".")
        target = result
        for part in parts[:-1]:
            if not dataclasses.is_dataclass(target) or not hasattr(target, part):
                raise ConfigError(f"override {item!r}: no config section {part!r}")
            target = getattr(target, part)
        name = parts[-1]
        names = getattr(target, "RENAMED_KEYS", {}).get(name, (name,))
        if not dataclasses.is_dataclass(target) or not set(names) <= {f.name for f in dataclasses.fields(target)}:
            known = ", ".join(f.name for f in dataclasses.fields(target)) if dataclasses.is_dataclass(target) else ""
            raise ConfigError(f"override {item!r}: unknown key {name!r}" + (f"; known: {known}" if known else ""))
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if value is None and raw.strip() not in ("null", "~", "none", "None"):
            value = raw
        for name in names:  # a renamed key sets the keys that now hold its value
            setattr(target, name, _coerce(typing.get_type_hints(type(target))[name], value, key))
    return result
