"""engines.audio: every response_format from a synthetic sine, checked by its bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from engines import audio
from engines.protocol import AUDIO_FORMATS, SpeechRequest, describe_validation_error

RATE = 24_000


def sine(seconds: float = 0.5, rate: int = RATE, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def is_mp3(data: bytes) -> bool:
    # an ID3 tag, or straight into an MPEG audio frame (11 set sync bits)
    return data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)


MAGIC = {
    "wav": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WAVE",
    "mp3": is_mp3,
    "flac": lambda b: b[:4] == b"fLaC",
    "opus": lambda b: b[:4] == b"OggS" and b"OpusHead" in b[:64],
}


def test_every_protocol_format_is_encoded():
    assert set(MAGIC) | {"pcm"} == set(AUDIO_FORMATS)


@pytest.mark.parametrize("fmt", sorted(MAGIC))
def test_container_formats_have_their_magic_and_decode(fmt):
    samples = sine()
    data, content_type = audio.encode(samples, RATE, fmt)
    assert content_type == AUDIO_FORMATS[fmt]
    assert MAGIC[fmt](data), data[:16]
    decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert decoded.ndim == 1 and decoded.size > 0
    if fmt in {"wav", "flac"}:  # lossless at 16 bits
        assert rate == RATE and decoded.size == samples.size
        assert np.max(np.abs(decoded - samples)) < 1e-4
    else:  # lossy codecs pad a little, but keep the length about right
        assert rate == RATE
        assert abs(decoded.size - samples.size) < RATE // 10


def test_content_types():
    assert audio.encode(sine(), RATE, "wav")[1] == "audio/wav"
    assert audio.encode(sine(), RATE, "mp3")[1] == "audio/mpeg"
    assert audio.encode(sine(), RATE, "flac")[1] == "audio/flac"
    assert audio.encode(sine(), RATE, "opus")[1] == "audio/ogg"
    assert audio.encode(sine(), RATE, "pcm")[1] == "audio/pcm"


def test_pcm_is_raw_s16le_mono():
    samples = sine()
    data, _ = audio.encode(samples, RATE, "pcm")
    assert len(data) == 2 * samples.size
    decoded = np.frombuffer(data, dtype="<i2")
    assert np.array_equal(decoded, np.round(samples * 32767).astype(np.int16))


def test_out_of_range_and_nan_are_clipped_not_wrapped():
    samples = np.array([2.0, -3.0, np.nan, 0.5, np.inf], dtype=np.float32)
    decoded = np.frombuffer(audio.encode(samples, RATE, "pcm")[0], dtype="<i2")
    assert decoded.tolist() == [32767, -32767, 0, 16384, 32767]
    data, _ = audio.encode(samples, RATE, "wav")
    back, _ = sf.read(io.BytesIO(data), dtype="int16")
    assert back.tolist() == [32767, -32767, 0, 16384, 32767]


@pytest.mark.parametrize(("fmt", "rate", "expected"), [
    ("opus", 22_050, 24_000),
    ("opus", 44_100, 48_000),
    ("mp3", 20_000, 22_050),
])
def test_rates_a_codec_refuses_are_resampled(fmt, rate, expected):
    samples = sine(rate=rate)
    data, _ = audio.encode(samples, rate, fmt)
    assert MAGIC[fmt](data)
    decoded, got = sf.read(io.BytesIO(data), dtype="float32")
    assert got == expected
    assert abs(decoded.size / expected - samples.size / rate) < 0.1


def test_resample_keeps_the_tone():
    out = audio.resample(sine(rate=16_000), 16_000, 48_000)
    assert out.size == 24_000
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * 48_000 / out.size
    assert abs(peak_hz - 440.0) < 3.0


def test_same_samples_same_bytes():
    for fmt in AUDIO_FORMATS:
        assert audio.encode(sine(), RATE, fmt)[0] == audio.encode(sine(), RATE, fmt)[0], fmt


def test_unknown_format_is_a_value_error():
    with pytest.raises(ValueError, match="aac"):
        audio.encode(sine(), RATE, "aac")


@pytest.mark.parametrize("fmt", ["aac", "ogg", "WAV", "", "m4a"])
def test_unsupported_format_is_refused_at_validation(fmt):
    with pytest.raises(ValidationError) as info:
        SpeechRequest.model_validate({"input": "hello", "response_format": fmt})
    message, param = describe_validation_error(info.value)
    assert param == "response_format"
    assert "wav" in message and "opus" in message


def test_ogg_pages_keep_valid_crcs_with_the_fixed_serial():
    data, _ = audio.encode(sine(2.0), RATE, "opus")
    pages = 0
    at = 0
    while at < len(data):
        assert data[at:at + 4] == b"OggS"
        assert int.from_bytes(data[at + 14:at + 18], "little") == audio.OGG_SERIAL
        segments = data[at + 26]
        end = at + 27 + segments + sum(data[at + 27:at + 27 + segments])
        page = data[at:at + 22] + bytes(4) + data[at + 26:end]
        assert audio._ogg_crc(page) == int.from_bytes(data[at + 22:at + 26], "little")
        pages += 1
        at = end
    assert pages >= 3  # OpusHead, OpusTags, audio
    # libsndfile's reader checks the CRCs too
    decoded, _ = sf.read(io.BytesIO(data), dtype="float32")
    assert decoded.size > RATE
