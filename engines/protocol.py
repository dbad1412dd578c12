"""The border between the berth server and its engine processes.

This is the only module both sides import. It holds what crosses the border: the
spec an engine is started with, the routes each task serves, the health states,
the exit codes and their meaning, the JSON error shape, and the request bodies
(pydantic models) that the router validates before a request reaches an engine and
that the engine parses again on its side.

Nothing here imports torch, transformers or aiohttp.
"""

from __future__ import annotations

import enum
import json
import signal
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

# --- routes -------------------------------------------------------------------

HEALTH = "/health"
COMPLETIONS = "/v1/completions"
CHAT_COMPLETIONS = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
IMAGES_GENERATIONS = "/v1/images/generations"
AUDIO_SPEECH = "/v1/audio/speech"
MODERATIONS = "/v1/moderations"


class Task(enum.StrEnum):
    TEXT = "text"
    EMBEDDINGS = "embeddings"
    MODERATION = "moderation"  # Llama Guard: /v1/moderations, and its verdict as chat
    IMAGES = "images"  # SDXL base / turbo
    CAPTION = "caption"  # BLIP: an image part in, a caption out
    VQA = "vqa"  # moondream2: an image part and a question in, the answer out
    SPEECH = "speech"  # Bark


TASK_ROUTES: dict[Task, tuple[str, ...]] = {
    Task.TEXT: (COMPLETIONS, CHAT_COMPLETIONS),
    Task.EMBEDDINGS: (EMBEDDINGS,),
    Task.MODERATION: (MODERATIONS, CHAT_COMPLETIONS),
    Task.IMAGES: (IMAGES_GENERATIONS,),
    Task.CAPTION: (CHAT_COMPLETIONS,),
    Task.VQA: (CHAT_COMPLETIONS,),
    Task.SPEECH: (AUDIO_SPEECH,),
}

INFERENCE_ROUTES: tuple[str, ...] = (
    COMPLETIONS, CHAT_COMPLETIONS, EMBEDDINGS, IMAGES_GENERATIONS, AUDIO_SPEECH, MODERATIONS,
)

# Every stream ends with this SSE comment (clients ignore comments) before `data: [DONE]`,
# followed by the usage JSON: the router accounts tokens even without include_usage.
USAGE_COMMENT = b": berth-usage "

# The router tells the images engine `<scheme>://<host>` of the request it forwards, so
# that `url` answers are absolute links to the server's /files/ route.
BASE_URL_HEADER = "X-Berth-Base-Url"


class HealthState(enum.StrEnum):
    """What an engine says of itself on its health route."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class EngineHealth:
    """The JSON body of an engine's health route.

    `state` is `loading` from the moment the socket answers until the model is
    loaded, then `ready`; `failed` (with `detail`) for about a second before the
    process exits with EXIT_LOAD_FAILED. `context_length` is null until ready.
    """

    state: HealthState
    pid: int
    name: str
    model: str
    task: Task
    detail: str | None = None
    in_flight: int = 0
    context_length: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value, "task": self.task.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineHealth:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["state"] = HealthState(known["state"])
        known["task"] = Task(known["task"])
        return cls(**known)


# Seconds an engine lets in-flight requests finish after SIGTERM before it cancels them.
SHUTDOWN_GRACE_S = 5.0


# --- exit codes -----------------------------------------------------------------

EXIT_OK = 0
EXIT_BAD_SPEC = 2
EXIT_LOAD_FAILED = 3
EXIT_PARENT_GONE = 4

_EXIT_MEANINGS = {
    EXIT_OK: "exited normally",
    EXIT_BAD_SPEC: "bad engine spec",
    EXIT_LOAD_FAILED: "model failed to load",
    EXIT_PARENT_GONE: "server went away",
}


def describe_exit(returncode: int) -> str:
    """A short human reason for a process exit status (negative = killed by signal)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    meaning = _EXIT_MEANINGS.get(returncode)
    return f"exit {returncode} ({meaning})" if meaning else f"exit {returncode}"


# A model folder holding this file has tiny RANDOM weights (`python -m engines.prepare
# --tiny`): it deploys like the real model and answers garbage. /api/models says so.
TINY_WEIGHTS_MARKER = "TINY_RANDOM_WEIGHTS"


# --- the spec an engine is started with ---------------------------------------------

SPEC_ARG = "--spec"


@dataclass(frozen=True)
class EngineSpec:
    """Everything an engine needs to know; passed as JSON on its command line."""

    name: str
    task: Task
    model: str
    model_path: str
    socket_path: str
    dtype: str = "auto"
    threads: int = 1
    trust_remote_code: bool = False
    # Where the engine may write files the server serves at /files/ (generated images
    # asked for as `url`); empty: nowhere.
    files_dir: str = ""
    # Image parts given by http(s) URL: fetched only when allowed, from public addresses,
    # up to this size and time. data: URLs are always accepted.
    fetch_urls: bool = False
    fetch_max_bytes: int = 20 * 1024 * 1024
    fetch_timeout_s: float = 10.0
    # The most tokens one embeddings request may carry, all inputs together (OpenAI's
    # limit): more is a 400, not minutes of a small tier's CPU.
    embedding_max_tokens: int = 300_000

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EngineSpec:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("engine spec must be a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown engine spec fields: {sorted(unknown)}")
        data["task"] = Task(data["task"])
        if data.get("dtype", "auto") not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}")
        return cls(**data)


DTYPES = frozenset({"auto", "float32", "bfloat16", "float16"})


def cpu_supports_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_dtype(requested: str, *, has_gpu: bool = False) -> str:
    """The dtype an engine will load weights in; the catalog's memory figures use it too."""
    if requested != "auto":
        return requested
    if has_gpu or cpu_supports_bf16():
        return "bfloat16"
    return "float32"


# --- errors -----------------------------------------------------------------------


def error_body(
    message: str,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """The one JSON error shape, on every route of the server and of every engine."""
    return {"error": {"message": message, "type": type, "code": code, "param": param}}


def describe_validation_error(exc: ValidationError) -> tuple[str, str | None]:
    """(message, param) for the first problem pydantic found in a request body."""
    errors = exc.errors(include_url=False)
    # The deepest problem is the most specific: for a bad item of a list that may also
    # be a string, "content.0: unknown part type" beats "content: not a string".
    first = max(errors, key=lambda e: len([p for p in e["loc"] if not _is_union_tag(p)]))
    parts: list[str] = []
    for p in first["loc"]:
        # skip union members; a discriminated part's tag repeats its field ("text.text")
        if not _is_union_tag(p) and (not parts or parts[-1] != str(p)):
            parts.append(str(p))
    param = ".".join(parts) or None
    msg = _JSON_TYPE_ERRORS.get(first["type"]) or first["msg"].removeprefix("Value error, ")
    # a value that fits none of a union's types: name them all ("a string or an array")
    depth = _depth(first)
    kinds = list(dict.fromkeys(
        _JSON_TYPE_ERRORS[e["type"]].removeprefix("must be ") for e in errors
        if e["type"] in _JSON_TYPE_ERRORS and _depth(e) == depth
        and [p for p in e["loc"] if not _is_union_tag(p)] == [
            p for p in first["loc"] if not _is_union_tag(p)]))
    if len(kinds) > 1:
        msg = "must be " + " or ".join(kinds)
    elif first["type"] == "too_short" and (first.get("ctx") or {}).get("min_length") == 1:
        msg = "must not be empty"
    return (f"{param}: {msg}" if param else msg), param


def _depth(error: Any) -> int:
    return len([p for p in error["loc"] if not _is_union_tag(p)])


# pydantic's wording for a value of the wrong type names Python classes ("a valid
# dictionary or instance of ChatMessage"); a client sent JSON, so it reads JSON's names.
_JSON_TYPE_ERRORS = {
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "list_type": "must be an array",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
}


def _is_union_tag(part: object) -> bool:
    # pydantic puts the union member it tried (e.g. "str", "list[str]") into loc
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "function-after"})


# --- request bodies -------------------------------------------------------------------

StrictInt = Annotated[int, Field(strict=True)]
StrictFloat = Annotated[float, Field(strict=True)]
StrictStr = Annotated[str, Field(strict=True)]


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an unpaired surrogate (not valid Unicode)") from None
    return text


# Text a tokenizer will read: JSON can smuggle in lone surrogates ("\ud800").
Text = Annotated[str, Field(strict=True), AfterValidator(_valid_unicode)]


def _unsupported(*harmless: Any) -> AfterValidator:
    """A field berth's engines do not implement: refused unless it asks for nothing."""

    def check(value: Any) -> Any:
        if value not in harmless:
            raise ValueError("is not supported by berth's engines")
        return value

    return AfterValidator(check)


class _Body(BaseModel):
    # Unknown fields are accepted and ignored: OpenAI clients send many we do not use.
    model_config = ConfigDict(extra="ignore", frozen=True)


class StreamOptions(_Body):
    include_usage: Annotated[bool, Field(strict=True)] = False


class _Sampling(_Body):
    model: StrictStr | None = None
    max_tokens: Annotated[int | None, Field(strict=True, ge=1)] = None
    temperature: Annotated[float, Field(strict=True, ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(strict=True, gt=0.0, le=1.0)] = 1.0
    n: Annotated[int, Field(strict=True, ge=1, le=8)] = 1
    stream: Annotated[bool, Field(strict=True)] = False
    stream_options: StreamOptions | None = None
    stop: Text | list[Text] | None = None
    seed: Annotated[int | None, Field(strict=True, ge=-(2**63), le=2**63 - 1)] = None
    # Known OpenAI fields that would silently change the answer's meaning if ignored.
    logprobs: Annotated[Any, _unsupported(None, False, 0)] = None
    top_logprobs: Annotated[Any, _unsupported(None, 0)] = None
    logit_bias: Annotated[Any, _unsupported(None, {})] = None
    presence_penalty: Annotated[Any, _unsupported(None, 0, 0.0)] = None
    frequency_penalty: Annotated[Any, _unsupported(None, 0, 0.0)] = None

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, v: StreamOptions | None,
                             info: ValidationInfo) -> StreamOptions | None:
        if v is not None and not info.data.get("stream"):
            raise ValueError("is only allowed when stream is true")  # as OpenAI answers
        return v

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        return [s for s in stops if s]


class CompletionRequest(_Sampling):
    prompt: Text | list[Text] | list[StrictInt] = Field(min_length=1)
    echo: Annotated[Any, _unsupported(None, False)] = None
    best_of: Annotated[Any, _unsupported(None, 1)] = None
    suffix: Annotated[Any, _unsupported(None, "")] = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[Any]) -> str | list[Any]:
        if isinstance(v, list) and v and isinstance(v[0], str) and len(v) != 1:
            raise ValueError("only one prompt per request is supported")
        return v


class TextPart(_Body):
    type: Literal["text"]
    text: Text


IMAGE_URL_SCHEMES = ("data", "http", "https")


def _image_url(value: str) -> str:
    scheme = value.partition(":")[0].lower() if ":" in value else ""
    if scheme not in IMAGE_URL_SCHEMES:
        shown = f"{scheme}: URLs are" if scheme else "a URL without a scheme is"
        raise ValueError(f"{shown} not accepted; send the image as a data: URL "
                         "(data:image/png;base64,...) or an http(s) URL")
    return value


class ImageURL(_Body):
    # The scheme is checked here, at the router too: file:// never reaches an engine.
    url: Annotated[str, Field(strict=True), AfterValidator(_image_url)]
    detail: str | None = None


class ImagePart(_Body):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[ContentPart] | None = None
    name: StrictStr | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Annotated[int | None, Field(strict=True, ge=1)] = None
    tools: Annotated[Any, _unsupported(None, [])] = None
    tool_choice: Annotated[Any, _unsupported(None, "none", "auto")] = None
    functions: Annotated[Any, _unsupported(None, [])] = None
    function_call: Annotated[Any, _unsupported(None, "none", "auto")] = None
    response_format: Annotated[Any, _unsupported(None, {"type": "text"})] = None

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class EmbeddingRequest(_Body):
    model: StrictStr | None = None
    input: (
        Text | list[Text] | list[StrictInt] | list[list[StrictInt]]
    ) = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int | None, Field(strict=True, ge=1)] = None

    @field_validator("input")
    @classmethod
    def _bounded(cls, v: Any) -> Any:
        if isinstance(v, list) and len(v) > 2048:
            raise ValueError("at most 2048 inputs per request")
        return v


class ModerationRequest(_Body):
    model: StrictStr | None = None
    input: Text | list[Text] = Field(min_length=1)

    @field_validator("input")
    @classmethod
    def _bounded(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) > 32:
            raise ValueError("at most 32 inputs per request")
        return v

    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


IMAGE_SIDE_MIN = 64
IMAGE_SIDE_MAX = 2048


def _image_size(value: str) -> str:
    width, sep, height = value.partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise ValueError(f"must be WIDTHxHEIGHT in pixels, like '1024x1024'; not {value!r}")
    for side in (int(width), int(height)):
        if side % 8 or not IMAGE_SIDE_MIN <= side <= IMAGE_SIDE_MAX:
            raise ValueError(f"sides must be multiples of 8 from {IMAGE_SIDE_MIN} to "
                             f"{IMAGE_SIDE_MAX}; not {value!r}")
    return value


class ImageGenerationRequest(_Body):
    model: StrictStr | None = None
    prompt: Text = Field(min_length=1, max_length=4000)
    negative_prompt: Text | None = None
    n: Annotated[int, Field(strict=True, ge=1, le=4)] = 1
    size: Annotated[str | None, Field(strict=True), AfterValidator(
        lambda v: None if v is None else _image_size(v))] = None  # None: the model's default
    response_format: Literal["b64_json", "url"] = "b64_json"
    seed: Annotated[int | None, Field(strict=True, ge=0, le=2**63 - 1)] = None
    # None: the model's own default (SDXL base 30 steps, guidance 5; turbo 1-4 steps, 0)
    num_inference_steps: Annotated[int | None, Field(strict=True, ge=1, le=100)] = None
    guidance_scale: Annotated[float | None, Field(strict=True, ge=0.0, le=30.0)] = None
    style: Annotated[Any, _unsupported(None)] = None

    def dimensions(self) -> tuple[int, int] | None:
        if self.size is None:
            return None
        width, _, height = self.size.partition("x")
        return int(width), int(height)


AUDIO_FORMATS: dict[str, str] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "opus": "audio/ogg",  # Ogg Opus, as OpenAI sends it
    "pcm": "audio/pcm",  # raw 16-bit little-endian mono at the model's sample rate
}


def _audio_format(value: str) -> str:
    if value not in AUDIO_FORMATS:
        raise ValueError(f"{value!r} is not supported; berth speaks "
                         f"{', '.join(AUDIO_FORMATS)}")
    return value


class SpeechRequest(_Body):
    model: StrictStr | None = None
    input: Text = Field(min_length=1, max_length=4096)
    voice: StrictStr = "alloy"
    response_format: Annotated[str, Field(strict=True), AfterValidator(_audio_format)] = "mp3"
    # "audio": the file itself; "sse": server-sent events, `speech.audio.delta` events
    # carrying the file's bytes in base64, then `speech.audio.done` with the usage.
    stream_format: Literal["audio", "sse"] = "audio"
    # berth extension (not in OpenAI's API): the same seed, input and voice give the
    # same bytes; without one every request samples afresh.
    seed: Annotated[int | None, Field(strict=True, ge=0, le=2**63 - 1)] = None
    speed: Annotated[Any, _unsupported(None, 1, 1.0)] = None
    instructions: Annotated[Any, _unsupported(None, "")] = None


REQUEST_BODIES: dict[str, type[_Body]] = {
    COMPLETIONS: CompletionRequest,
    CHAT_COMPLETIONS: ChatCompletionRequest,
    EMBEDDINGS: EmbeddingRequest,
    MODERATIONS: ModerationRequest,
    IMAGES_GENERATIONS: ImageGenerationRequest,
    AUDIO_SPEECH: SpeechRequest,
}


def json_type(value: object) -> str:
    """What JSON calls a parsed value's type ("null", not Python's "NoneType")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def parse_json(raw: bytes | str) -> Any:
    """A request body as JSON (RFC 8259): UTF-8, and no NaN or Infinity, which Python's
    parser would take but no JSON encoder writes (a temperature of NaN is bad input)."""
    return json.loads(raw, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
