"""The speech engine in-process on the tiny random Bark (engines.tiny.bark)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiohttp.test_utils import TestClient

from engines.protocol import AUDIO_FORMATS, AUDIO_SPEECH, Task
from engines.speech import OPENAI_VOICES
from engines.tiny.bark import PRESETS, SAMPLE_RATE
from tests.engines.conftest import make_spec
from tests.engines.test_audio import MAGIC

BARK = "suno/bark"


@pytest.fixture
async def bark(engine_client, tiny_zoo) -> TestClient[Any, Any]:
    return await engine_client(make_spec(tiny_zoo.path(BARK), Task.SPEECH, name="tts"))


async def speak(client: TestClient[Any, Any], **body: Any) -> tuple[int, str, bytes]:
    async with client.post(AUDIO_SPEECH, json={"input": "Hello there, world!", **body}) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.read()


def pcm_samples(data: bytes) -> np.ndarray:
    assert len(data) % 2 == 0
    return np.frombuffer(data, dtype="<i2")


async def test_health_reports_the_input_limit(bark):
    async with bark.get("/health") as resp:
        health = await resp.json()
    assert health["state"] == "ready" and health["task"] == "speech"
    assert health["context_length"] == 256


async def test_every_format_has_its_magic_and_content_type(bark):
    for fmt in AUDIO_FORMATS:
        status, content_type, data = await speak(bark, response_format=fmt, seed=1)
        assert status == 200, data[:300]
        assert content_type == AUDIO_FORMATS[fmt]
        if fmt == "pcm":
            assert pcm_samples(data).size > 0
        else:
            assert MAGIC[fmt](data), (fmt, data[:16])
    # the OpenAI default format is mp3
    status, content_type, data = await speak(bark)
    assert status == 200 and content_type == "audio/mpeg" and MAGIC["mp3"](data)


async def test_wav_decodes_at_24_khz_and_matches_pcm(bark):
    _, _, wav = await speak(bark, response_format="wav", seed=3)
    _, _, pcm = await speak(bark, response_format="pcm", seed=3)
    samples, rate = sf.read(io.BytesIO(wav), dtype="int16")
    assert rate == SAMPLE_RATE
    assert samples.ndim == 1 and samples.size > 0
    # EnCodec makes 320 samples per frame at 24 kHz
    assert samples.size % 320 == 0
    assert np.array_equal(samples, pcm_samples(pcm))


async def test_same_seed_same_bytes_other_seed_other_audio(bark):
    first = await speak(bark, response_format="flac", seed=42, voice="nova")
    again = await speak(bark, response_format="flac", seed=42, voice="nova")
    assert first[0] == 200 and first == again
    opus = await speak(bark, response_format="opus", seed=42)
    assert opus == await speak(bark, response_format="opus", seed=42)
    a = await speak(bark, response_format="pcm", seed=1)
    b = await speak(bark, response_format="pcm", seed=2)
    assert a[2] != b[2]


async def test_presets_and_openai_voices(bark):
    assert set(OPENAI_VOICES.values()) <= set(PRESETS)
    for voice in ("alloy", "shimmer", "v2/en_speaker_6", "v2/en_speaker_0"):
        status, content_type, data = await speak(bark, voice=voice, response_format="pcm", seed=5)
        assert status == 200, data[:300]
        assert content_type == "audio/pcm" and pcm_samples(data).size > 0
    # alloy is v2/en_speaker_6: the same preset, seed and text speak the same samples
    alloy = await speak(bark, voice="alloy", response_format="pcm", seed=5)
    assert alloy == await speak(bark, voice="v2/en_speaker_6", response_format="pcm", seed=5)


async def test_unknown_voice_is_400_listing_the_choices(bark):
    for voice in ("robot", "ALLOY", "v2/en_speaker_99", "../../etc/passwd", "/tmp/x.npz"):
        status, content_type, data = await speak(bark, voice=voice)
        assert status == 400 and content_type.startswith("application/json")
        error = json.loads(data)["error"]
        assert error["param"] == "voice" and error["code"] == "invalid_voice"
        assert "alloy" in error["message"] and "v2/en_speaker_6" in error["message"]


async def test_bad_bodies_are_400_with_their_param(bark):
    cases = [
        ({"response_format": "aac"}, "response_format"),
        ({"input": ""}, "input"),
        ({"input": 5}, "input"),
        ({"seed": -1}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"speed": 2.0}, "speed"),
        ({"voice": 3}, "voice"),
        ({"stream_format": "chunked"}, "stream_format"),
        ({"stream_format": None}, "stream_format"),
    ]
    for extra, param in cases:
        async with bark.post(AUDIO_SPEECH, json={"input": "hi", **extra}) as resp:
            assert resp.status == 400, extra
            body = await resp.json()
        assert body["error"]["param"] == param, (extra, body)
        assert body["error"]["code"] == "invalid_value", (extra, body)


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
async def test_sse_carries_the_same_audio_in_openai_events(bark, fmt):
    status, _, plain = await speak(bark, response_format=fmt, seed=5, stream_format="audio")
    assert status == 200
    async with bark.post(AUDIO_SPEECH, json={"input": "Hello there, world!", "seed": 5,
                                             "response_format": fmt,
                                             "stream_format": "sse"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = (await resp.read()).decode()
    blocks = raw.strip().split("\n\n")
    events = [json.loads(b.removeprefix("data: ")) for b in blocks if b.startswith("data: ")]
    assert all(b.startswith(("data: ", ": berth-usage {")) for b in blocks), blocks[:3]
    *deltas, done = events
    assert deltas and all(e["type"] == "speech.audio.delta" for e in deltas)
    # joined, the pieces are exactly the file the plain answer sends
    assert b"".join(base64.b64decode(e["audio"]) for e in deltas) == plain
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_too_long_and_empty_inputs_are_400(bark):
    long_text = "The quick brown fox jumps over the lazy dog. " * 60  # ~2700 chars
    async with bark.post(AUDIO_SPEECH, json={"input": long_text}) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["param"] == "input" and error["code"] == "input_too_long"
    assert "256" in error["message"]
    async with bark.post(AUDIO_SPEECH, json={"input": "   "}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["param"] == "input"
