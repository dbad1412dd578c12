"""Bark through the whole server: deployed by the admin API, called through the router.

One test, one engine process (each pays the transformers import): the tiny random Bark
(engines.tiny.bark) is deployed under the catalog's alias `bark/suno` and asked for
every response format.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import soundfile as sf

from engines.protocol import AUDIO_FORMATS
from tests.engines.test_audio import MAGIC
from tests.server.test_router_errors import assert_error

SPEECH = "/v1/audio/speech"


async def wait_ready(api, name: str, seconds: float = 90.0) -> dict:
    async with asyncio.timeout(seconds):
        while True:
            resp = await api.get(f"/api/deployments/{name}")
            assert resp.status == 200
            dep = await resp.json()
            assert dep["status"] not in ("failed", "crashed"), dep
            if dep["status"] == "ready":
                return dep
            await asyncio.sleep(0.1)


async def test_bark_deployed_and_speaking_every_format(make_client, tiny_zoo, tmp_path):
    models = tiny_zoo.models_dir(tmp_path / "models", "suno/bark")
    api = await make_client(models_dir=models)
    resp = await api.post("/api/deployments",
                          json={"name": "tts", "model": "bark/suno", "hardware": "micro"})
    assert resp.status == 201, await resp.text()
    dep = await wait_ready(api, "tts")
    assert dep["hardware"] == "micro"

    for fmt, content_type in AUDIO_FORMATS.items():
        resp = await api.post(SPEECH, json={"model": "tts", "input": "Hello from berth.",
                                            "voice": "alloy", "response_format": fmt,
                                            "seed": 7})
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == content_type
        data = await resp.read()
        if fmt == "pcm":
            assert len(data) > 0 and len(data) % 2 == 0
        else:
            assert MAGIC[fmt](data), (fmt, data[:16])
        if fmt == "wav":
            samples, rate = sf.read(io.BytesIO(data), dtype="int16")
            assert rate == 24_000 and samples.ndim == 1 and samples.size > 0
            wav, pcm_of_wav = data, samples

    # the same seed gives the same bytes (also on the /endpoints/{name} path); pcm is the
    # wav's samples
    body = {"input": "Hello from berth.", "voice": "alloy", "seed": 7}
    again = await api.post("/endpoints/tts" + SPEECH, json={**body, "response_format": "wav"})
    assert again.status == 200 and await again.read() == wav
    pcm = await api.post(SPEECH, json={**body, "model": "tts", "response_format": "pcm"})
    assert np.array_equal(np.frombuffer(await pcm.read(), dtype="<i2"), pcm_of_wav)

    # a Bark preset by name; then refusals, all JSON errors naming their param
    resp = await api.post(SPEECH, json={**body, "model": "tts", "voice": "v2/en_speaker_3",
                                        "response_format": "flac"})
    assert resp.status == 200 and MAGIC["flac"](await resp.read())
    resp = await api.post(SPEECH, json={**body, "model": "tts", "voice": "robot"})
    assert resp.status == 400
    err = await resp.json()
    assert_error(err, code="invalid_voice", param="voice")
    assert "alloy" in err["error"]["message"] and "v2/en_speaker_6" in err["error"]["message"]
    resp = await api.post(SPEECH, json={**body, "model": "tts", "response_format": "aac"})
    assert resp.status == 400
    assert_error(await resp.json(), param="response_format")
    resp = await api.post(SPEECH, json={**body, "model": "tts", "input": "word " * 400})
    assert resp.status == 400
    assert_error(await resp.json(), code="input_too_long", param="input")
    resp = await api.post("/v1/chat/completions",
                          json={"model": "tts", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status == 400
    assert_error(await resp.json(), code="unsupported_route")

    resp = await api.post(SPEECH, json={**body, "model": "tts", "stream_format": "chunked"})
    assert resp.status == 400
    assert_error(await resp.json(), code="invalid_value", param="stream_format")

    # stream_format "sse": OpenAI's speech events through the router, the same wav inside
    resp = await api.post(SPEECH, json={**body, "model": "tts", "response_format": "wav",
                                        "stream_format": "sse"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"  # streamed, never cached
    blocks = (await resp.read()).decode().strip().split("\n\n")
    events = [json.loads(b.removeprefix("data: ")) for b in blocks if b.startswith("data: ")]
    assert [e["type"] for e in events][-1] == "speech.audio.done"
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == wav

    # the engine lived through the refusals
    resp = await api.post(SPEECH, json={**body, "model": "tts", "response_format": "mp3"})
    assert resp.status == 200 and MAGIC["mp3"](await resp.read())
    assert (await api.delete("/api/deployments/tts")).status in (200, 202, 204)
