"""A float waveform to the bytes of an audio file: wav, mp3, flac, opus (Ogg), pcm.

Pure numpy and soundfile (libsndfile), no torch. `encode(samples, rate, fmt)` returns
the bytes and the Content-Type of `engines.protocol.AUDIO_FORMATS`, so the two always
agree. Samples are mono floats in [-1, 1]; anything outside is clipped and NaN is
silence. Opus and MP3 accept only some sample rates: other rates are resampled
(band-limited, by FFT) to the nearest one they accept.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import soundfile as sf

from engines.protocol import AUDIO_FORMATS

log = logging.getLogger(__name__)

# format -> (libsndfile container, subtype, sample rates it accepts; None: any)
_CODECS: dict[str, tuple[str, str, tuple[int, ...] | None]] = {
    "wav": ("WAV", "PCM_16", None),
    "flac": ("FLAC", "PCM_16", None),
    "mp3": ("MP3", "MPEG_LAYER_III",
            (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "opus": ("OGG", "OPUS", (8000, 12000, 16000, 24000, 48000)),
}


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> tuple[bytes, str]:
    """(file bytes, Content-Type) of a mono float waveform in the format `fmt`."""
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"unsupported audio format {fmt!r}; choose from {list(AUDIO_FORMATS)}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, not {sample_rate}")
    mono = clean(samples)
    if fmt == "pcm":
        return to_pcm16(mono).tobytes(), AUDIO_FORMATS[fmt]
    container, subtype, rates = _CODECS[fmt]
    rate = sample_rate
    if rates is not None and rate not in rates:
        rate = min((r for r in rates if r >= sample_rate), default=max(rates))
        log.debug("%s: resampling %d Hz to %d Hz", fmt, sample_rate, rate)
        mono = resample(mono, sample_rate, rate)
    buffer = io.BytesIO()
    # the same 16-bit samples as pcm: libsndfile's own float scaling differs at -1.0
    sf.write(buffer, to_pcm16(mono), rate, format=container, subtype=subtype)
    data = buffer.getvalue()
    if container == "OGG":
        data = with_ogg_serial(data, OGG_SERIAL)
    return data, AUDIO_FORMATS[fmt]


# libsndfile picks a random Ogg stream serial number; a fixed one makes the same samples
# give the same bytes (seeded speech is byte-for-byte reproducible in every format).
OGG_SERIAL = 0x62657274  # "bert"


def with_ogg_serial(data: bytes, serial: int) -> bytes:
    """The Ogg stream with every page's serial number set to `serial` (CRCs redone)."""
    out = bytearray(data)
    at = 0
    while at + 27 <= len(out):
        if out[at : at + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {at}")
        segments = out[at + 26]
        end = at + 27 + segments + sum(out[at + 27 : at + 27 + segments])
        out[at + 14 : at + 18] = serial.to_bytes(4, "little")
        out[at + 22 : at + 26] = bytes(4)
        out[at + 22 : at + 26] = _ogg_crc(bytes(out[at:end])).to_bytes(4, "little")
        at = end
    return bytes(out)


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32: polynomial 0x04C11DB7, not reflected, initial value 0."""
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def clean(samples: np.ndarray) -> np.ndarray:
    """A 1-D float32 copy with NaN as silence and everything clipped to [-1, 1]."""
    mono = np.asarray(samples, dtype=np.float32).reshape(-1)
    mono = np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(mono, -1.0, 1.0)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Little-endian signed 16-bit samples of a clean float waveform."""
    return np.round(clean(samples) * 32767.0).astype("<i2")


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling by zero-padding or truncating the spectrum."""
    if rate_in == rate_out or samples.size == 0:
        return samples
    n_out = max(1, round(samples.size * rate_out / rate_in))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    out = np.fft.irfft(spectrum, n=n_out) * (n_out / samples.size)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
