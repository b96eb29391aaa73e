"""``audio-vqvae reconstruct/convert/encode/decode/speakers/bench`` end to end on a tiny checkpoint."""

import numpy as np
import pytest
import soundfile

from helpers import RATE, SPEAKERS, run


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


def test_speakers_lists_the_table(checkpoint, capsys):
    assert run("speakers", "--checkpoint", checkpoint) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["id", "name", "gender"]
    assert [line.split("\t")[1] for line in lines[1:]] == SPEAKERS


def test_reconstruct_takes_the_speaker_from_the_file_name(checkpoint, speech, tmp_path, capsys):
    out = tmp_path / "out" / "rec.wav"
    assert run("reconstruct", "--checkpoint", checkpoint, "--input", speech, "--output", out) == 0
    audio, rate = soundfile.read(out)
    assert rate == RATE and audio.ndim == 1
    assert audio.shape[0] == (int(0.3 * RATE) // 8) * 8  # whole frames of the resampled input
    assert "speaker p225" in capsys.readouterr().out


def test_reconstruct_needs_a_speaker_when_the_name_does_not_tell(checkpoint, speech, tmp_path, capsys):
    anonymous = tmp_path / "hello.flac"
    speech.rename(anonymous)
    out = tmp_path / "rec.wav"
    assert run("reconstruct", "--checkpoint", checkpoint, "--input", anonymous, "--output", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--speaker" in err and "p226" in err
    assert not out.exists()
    assert run("reconstruct", "--checkpoint", checkpoint, "--input", anonymous, "--output", out,
               "--speaker", "p226") == 0
    assert out.exists()


def test_convert_a_file_and_a_folder_to_several_speakers(checkpoint, speech, tmp_path):
    single = tmp_path / "single.wav"
    assert run("convert", "--checkpoint", checkpoint, "--input", speech, "--speaker", "p231", "--output", single) == 0
    assert soundfile.info(single).samplerate == RATE

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    speech.rename(folder / "a.flac")
    soundfile.write(folder / "sub" / "b.wav", np.zeros(3000), 16000)  # another rate and format, mono
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "converted"
    assert run("convert", "--checkpoint", checkpoint, "--input", folder, "--speaker", "p226,p231",
               "--output", out, "--batch-size", "3") == 0
    assert files_in(out) == ["a_to_p226.wav", "a_to_p231.wav", "sub"]
    assert files_in(out / "sub") == ["b_to_p226.wav", "b_to_p231.wav"]
    assert soundfile.info(out / "sub" / "b_to_p231.wav").frames == (3000 // 2 // 8) * 8


def test_convert_is_the_same_batched_or_one_at_a_time(checkpoint, speech, tmp_path):
    for batch in ("1", "4"):
        assert run("convert", "--checkpoint", checkpoint, "--input", speech, "--speaker", "p226,p231",
                   "--output", tmp_path / batch, "--batch-size", batch, "--seed", "3") == 0
    for name in ("p225_001_to_p226.wav", "p225_001_to_p231.wav"):
        assert np.array_equal(soundfile.read(tmp_path / "1" / name)[0], soundfile.read(tmp_path / "4" / name)[0])


def test_unknown_speaker_is_one_line_listing_the_known_ones(checkpoint, speech, tmp_path, capsys):
    out = tmp_path / "x.wav"
    assert run("convert", "--checkpoint", checkpoint, "--input", speech, "--speaker", "p226,nobody",
               "--output", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'nobody'" in err and "p225, p226, p231" in err
    assert not out.exists() and files_in(tmp_path) == [speech.name]


def test_unreadable_input_and_missing_checkpoint_are_clear_errors(checkpoint, tmp_path, capsys):
    garbage = tmp_path / "p225_bad.wav"
    garbage.write_bytes(b"this is not a wav file")
    out = tmp_path / "out.wav"
    assert run("reconstruct", "--checkpoint", checkpoint, "--input", garbage, "--output", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a readable audio file" in err
    assert run("convert", "--checkpoint", tmp_path / "missing.pt", "--input", garbage, "--speaker", "p225",
               "--output", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint not found" in err
    assert run("convert", "--checkpoint", checkpoint, "--input", tmp_path / "nope.wav", "--speaker", "p225",
               "--output", out) == 2
    assert "input not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p225_bad.wav"]  # no partial or temporary files


def test_encode_then_decode(checkpoint, speech, tmp_path, capsys):
    codes_path = tmp_path / "codes.npy"
    assert run("encode", "--checkpoint", checkpoint, "--input", speech, "--output", codes_path) == 0
    out = capsys.readouterr().out
    codes = np.load(codes_path)
    assert codes.dtype == np.int64 and codes.ndim == 1 and codes.shape[0] == int(0.3 * RATE) // 8
    # The entropy rate of this file's codes, the figure evaluate and validation report, next to the ceiling.
    used = np.unique(codes).size
    assert f"{codes.shape[0]} frames" in out and f"{used} of 16 codes used" in out
    assert "code bitrate " in out and "(entropy of this file's codes; max 4,000)" in out

    wav = tmp_path / "decoded.wav"
    assert run("decode", "--checkpoint", checkpoint, "--input", codes_path, "--speaker", "p231", "--output", wav) == 0
    assert soundfile.info(wav).frames == codes.shape[0] * 8

    np.save(tmp_path / "bad.npy", np.array([1, 99]))
    assert run("decode", "--checkpoint", checkpoint, "--input", tmp_path / "bad.npy", "--speaker", "p231",
               "--output", tmp_path / "bad.wav") == 2
    assert "codes must lie in [0, 16)" in capsys.readouterr().err
    assert not (tmp_path / "bad.wav").exists()


@pytest.mark.slow
def test_bench_runs_every_method_and_prints_the_table(checkpoint, capsys):
    assert run("bench", "--checkpoint", checkpoint, "--batches", "1,2", "--seconds", "0.05",
               "--reference-seconds", "0.01") == 0
    out = capsys.readouterr().out
    assert "| preset | method | batch | samples/s | × real time | vs PyTorch queue |" in out
    assert out.count("fused (numba)") >= 2 + 2 and "pytorch-queue (method torch)" in out
    assert "r9y9" in out


# ------------------------------------------------------------------ a model with a source excitation


def test_pitch_model_encode_writes_codes_and_f0_and_decode_reads_them(pitch_checkpoint, speech, tmp_path, capsys):
    codes_path = tmp_path / "codes.npz"
    assert run("encode", "--checkpoint", pitch_checkpoint, "--input", speech, "--output", codes_path) == 0
    with np.load(codes_path) as saved:
        assert set(saved.files) == {"codes", "f0", "log_f0", "sample_rate"}
        assert saved["codes"].dtype == np.int64 and int(saved["sample_rate"]) == RATE
        f0 = saved["f0"]
        assert np.median(f0[f0 > 0]) == pytest.approx(220, rel=0.02)  # the fixture's tone
        assert len(f0) == int(0.3 * RATE) // 80 + 1
    out = tmp_path / "decoded.wav"
    assert run("decode", "--checkpoint", pitch_checkpoint, "--input", codes_path, "--speaker", "p226",
               "--output", out, "--pitch-shift", "-3", "--no-progress") == 0
    assert soundfile.read(out)[0].shape[0] == (int(0.3 * RATE) // 8) * 8
    # The wrong suffix for this model's codes file is refused before anything is written.
    assert run("encode", "--checkpoint", pitch_checkpoint, "--input", speech, "--output", tmp_path / "c.npy") == 2
    assert ".npz" in capsys.readouterr().err and not (tmp_path / "c.npy").exists()


def test_pitch_model_refuses_a_codes_only_file_and_a_broken_npz(pitch_checkpoint, tmp_path, capsys):
    np.save(tmp_path / "codes.npy", np.array([1, 2, 3], np.int64))
    out = tmp_path / "out.wav"
    assert run("decode", "--checkpoint", pitch_checkpoint, "--input", tmp_path / "codes.npy", "--speaker", "p231",
               "--output", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "codes only" in err and "encode" in err
    np.savez(tmp_path / "half.npz", codes=np.array([1, 2], np.int64))
    assert run("decode", "--checkpoint", pitch_checkpoint, "--input", tmp_path / "half.npz", "--speaker", "p231",
               "--output", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing f0, log_f0, sample_rate" in err
    assert not out.exists()


def test_pitch_model_refuses_unvoiced_only_input(pitch_checkpoint, tmp_path, capsys):
    noise = tmp_path / "p225_whisper.wav"
    soundfile.write(noise, 0.1 * np.random.default_rng(3).standard_normal(RATE), RATE)
    out = tmp_path / "out.wav"
    assert run("convert", "--checkpoint", pitch_checkpoint, "--input", noise, "--speaker", "p226", "--output", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no voiced frame" in err and "p225_whisper.wav" in err
    assert not out.exists()
    short = tmp_path / "p225_short.wav"
    soundfile.write(short, np.zeros(4), RATE)  # shorter than one frame of the model
    assert run("convert", "--checkpoint", pitch_checkpoint, "--input", short, "--speaker", "p226", "--output", out) == 2
    assert "too short" in capsys.readouterr().err and not out.exists()


def test_voiced_noise_needs_a_noise_envelope_and_says_so_in_one_line(pitch_checkpoint, speech, tmp_path, capsys):
    out = tmp_path / "out.wav"
    assert run("convert", "--checkpoint", pitch_checkpoint, "--input", speech, "--speaker", "p226", "--output", out,
               "--voiced-noise", "0.5") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--voiced-noise" in err and "needs decoder.noise_envelope" in err
    assert not out.exists()


def test_pitch_model_conversion_moves_f0_unless_kept(pitch_checkpoint, speech, tmp_path, monkeypatch):
    """The f0 a conversion speaks with: moved to the target's range, kept, or shifted, as asked."""
    from audio_vqvae.commands import generation as generation_cli

    spoken = []
    original = generation_cli.run_jobs

    def record(model, jobs, *args, **kwargs):
        spoken.extend(float(np.median(job.pitch[1][job.pitch[2] == 1])) for job in jobs)
        return original(model, jobs, *args, **kwargs)

    monkeypatch.setattr(generation_cli, "run_jobs", record)
    base = ["convert", "--checkpoint", pitch_checkpoint, "--input", speech, "--speaker", "p226", "--no-progress"]
    assert run(*base, "--output", tmp_path / "a.wav") == 0
    assert run(*base, "--output", tmp_path / "b.wav", "--keep-pitch") == 0
    assert run(*base, "--output", tmp_path / "c.wav", "--keep-pitch", "--pitch-shift", "12") == 0
    moved, kept, octave = spoken
    # The file is named after p225 (ln-f0 mean 4.6): p226's mean is 0.7 higher in ln f0.
    assert moved == pytest.approx(kept * np.exp(0.7), rel=0.02)
    assert kept == pytest.approx(220, rel=0.02) and octave == pytest.approx(440, rel=0.02)


def test_an_explicit_cpu_device_gives_the_same_audio(pitch_checkpoint, speech, tmp_path):
    default, explicit = tmp_path / "default.wav", tmp_path / "cpu.wav"
    base = ["reconstruct", "--checkpoint", pitch_checkpoint, "--input", speech, "--no-progress"]
    assert run(*base, "--output", default) == 0
    assert run(*base, "--output", explicit, "--device", "cpu") == 0
    assert np.array_equal(soundfile.read(default)[0], soundfile.read(explicit)[0])
