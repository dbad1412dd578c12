"""The model catalog: what each model of the seed list is, what it needs, where it fits.

Every model berth knows by name is one `CatalogEntry` (id, aliases, task, engine,
parameter count, dtype policy, trust_remote_code). `resolve` accepts the spellings
people use; `memory_needed` turns parameters into the bytes a deployment needs;
`check_deployable` is what the create path calls and raises the API errors; and
`catalog_json` is the body of `GET /api/models`.

Memory a deployment needs (bytes), at the dtype its engine will load weights in:

    weights  = parameters * bytes_per_element(dtype)
    need     = weights + weights * 15 // 100 + 600 MiB

600 MiB is the Python + torch + tokenizer process before any weights; 15% of the
weights covers activations, KV cache and allocator slack. Parameters come from the
weights on disk when they are there (safetensors headers, never the tensors), else
from the catalog. Nothing here imports torch.

The dtype: weights load as bf16 where the hardware computes it (a GPU, or a CPU with
AVX512-BF16 or AMX), else as fp32 (`engines.protocol.resolve_dtype`); the engine and
the memory figure use the same rule. Every text family keeps it, Mamba2 included: its
pure-PyTorch CPU path runs the selective scan in fp32 whatever the weights' dtype, and
with bf16 weights it measured no slower than fp32 (32 tokens at hidden size 1024 on an
AVX512-BF16 core: 0.85 s vs 0.92 s). `dtype="float32"` marks an exception (today
only the embeddings model, whose engine always loads fp32).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engines.protocol import TINY_WEIGHTS_MARKER, Task, resolve_dtype
from server.config import Config, Tier
from server.errors import BadRequest, Unprocessable
from server.weights import WeightsNotFound, find_weights, infer_task

log = logging.getLogger(__name__)

BASE_OVERHEAD_BYTES = 600 * 1024**2
RUNTIME_OVERHEAD_PERCENT = 15
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
GiB = 1024**3

ENGINE_TASKS = frozenset(t.value for t in Task)



@dataclass(frozen=True)
class CatalogEntry:
    id: str
    task: str  # a Task value when an engine serves it, else the planned task name
    parameters: int
    description: str
    aliases: tuple[str, ...] = ()
    hf_id: str | None = None  # where `berth pull` downloads from, when not `id`
    dtype: Literal["auto", "float32"] = "auto"  # float32: the engine always loads fp32
    trust_remote_code: bool = False
    approximate: bool = False  # parameters is a rounded public figure

    @property
    def engine(self) -> str:
        return self.task

    @property
    def available(self) -> bool:
        return self.task in ENGINE_TASKS

    @property
    def engine_task(self) -> Task | None:
        return Task(self.task) if self.available else None

    @property
    def unavailable_reason(self) -> str | None:
        if self.available:
            return None
        served = " and ".join(sorted(ENGINE_TASKS))
        return f"no {self.task} engine yet (berth serves {served} models today)"

    @property
    def source_id(self) -> str:
        return self.hf_id or self.id

    def names(self) -> list[str]:
        """Every name this entry answers to (besides case and _/- differences)."""
        names = [self.id, *([self.hf_id] if self.hf_id else []), *self.aliases]
        names += [n.rsplit("/", 1)[-1] for n in names[:2]]
        return list(dict.fromkeys(names))


_E = CatalogEntry
CATALOG: tuple[CatalogEntry, ...] = (
    _E("meta-llama/Meta-Llama-3-8B-Instruct", "text", 8_030_261_248,
       "Meta's Llama 3 8B, instruction-tuned for chat (8k context, gated on the Hub).",
       aliases=("llama-3-8b-instruct",)),
    _E("meta-llama/Meta-Llama-Guard-2-8B", "moderation", 8_030_261_248,
       "Llama 3 8B fine-tuned to classify prompts and replies as safe or unsafe.",
       aliases=("llama-guard-2-8b",)),
    _E("mistralai/Mistral-7B-Instruct-v0.3", "text", 7_248_023_552,
       "Mistral 7B instruction-tuned, v0.3 (32k vocabulary, function calling)."),
    _E("google/gemma-7b", "text", 8_537_680_896,
       "Google's Gemma 7B base model (8.5B with its 256k-token embeddings; gated)."),
    _E("google/gemma-2b-it", "text", 2_506_172_416,
       "Google's Gemma 2B, instruction-tuned for chat (gated)."),
    _E("facebook/opt-125m", "text", 125_239_296,
       "Meta's OPT 125M base model: tiny, good for trying berth out."),
    _E("openai-community/gpt2-large", "text", 774_030_080,
       "OpenAI's GPT-2 large (774M) base model, no chat template.",
       aliases=("gpt2-large",)),
    _E("microsoft/phi-2", "text", 2_779_683_840,
       "Microsoft's Phi-2, a 2.7B base model trained on textbook-quality data."),
    _E("mistralai/Mamba-Codestral-7B-v0.1", "text", 7_290_000_000,
       "Mistral's Mamba-2 code model; slow on CPUs (no fused kernels there).",
       approximate=True),
    _E("mistralai/Mistral-7B-Instruct-v0.1", "text", 7_241_732_096,
       "Mistral 7B instruction-tuned, first release."),
    _E("meta-llama/Meta-Llama-3.1-8B", "text", 8_030_261_248,
       "Meta's Llama 3.1 8B base model (128k context, gated on the Hub).",
       aliases=("meta-llama/Llama-3.1-8B",)),
    _E("allenai/OLMoE-1B-7B-0924", "text", 6_920_000_000,
       "AllenAI's open mixture of experts: 6.9B parameters, 1.3B active per token.",
       approximate=True),
    _E("stabilityai/stable-diffusion-xl-base-1.0", "images", 3_500_000_000,
       "Stable Diffusion XL base 1.0 text to image (UNet, two text encoders, VAE).",
       aliases=("sdxl-base",), approximate=True),
    _E("lucataco/moondream2", "vqa", 1_860_000_000,
       "Small vision-language model that answers questions about an image.",
       hf_id="vikhyatk/moondream2", trust_remote_code=True, approximate=True),
    _E("suno/bark", "speech", 1_000_000_000,
       "Suno's Bark text to speech (text, coarse and fine transformers + EnCodec).",
       aliases=("bark/suno",), approximate=True),
    _E("stabilityai/sdxl-turbo", "images", 3_500_000_000,
       "SDXL distilled for 1 to 4 step text to image.", approximate=True),
    _E("Salesforce/blip-image-captioning-large", "caption", 470_000_000,
       "Salesforce BLIP (ViT-L) image captioning.", approximate=True),
    _E("sentence-transformers/all-MiniLM-L6-v2", "embeddings", 22_713_216,
       "Sentence embeddings, 384 dimensions; berth's default embeddings model.",
       dtype="float32"),
)


# --- names ------------------------------------------------------------------------------

def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _index() -> dict[str, CatalogEntry]:
    index: dict[str, CatalogEntry] = {}
    for entry in CATALOG:
        for name in entry.names():
            other = index.setdefault(_key(name), entry)
            assert other is entry, f"{name!r} names both {other.id} and {entry.id}"
    return index


_INDEX = _index()


def resolve(model_id: str) -> CatalogEntry | None:
    """The catalog entry for an id, alias or bare name (any case, _ or -); else None."""
    return _INDEX.get(_key(model_id))


def close_matches(model_id: str, n: int = 5) -> list[str]:
    """Catalog ids whose names look like `model_id`, best first."""
    keys = difflib.get_close_matches(_key(model_id), list(_INDEX), n=n * 3, cutoff=0.6)
    return list(dict.fromkeys(_INDEX[k].id for k in keys))[:n]


# --- parameters from the files on disk ------------------------------------------------

_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_STANDARD = re.compile(r"^(model|pytorch_model|diffusion_pytorch_model)\.(safetensors|bin)$")
_VARIANT = re.compile(r"^(model|pytorch_model|diffusion_pytorch_model)\.\w+\.(safetensors|bin)$")
_MAX_HEADER = 100 * 1024**2


def safetensors_parameters(path: Path) -> int:
    """Floating-point elements in a safetensors file, from its header only.

    The file starts with an 8-byte little-endian header length and a JSON header
    mapping tensor names to dtype and shape. Integer buffers (position ids) are not
    parameters and are left out.
    """
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > _MAX_HEADER:
            raise ValueError(f"{path}: safetensors header of {length} bytes")
        header = json.loads(f.read(length))
    return sum(math.prod(t["shape"]) for name, t in header.items()
               if name != "__metadata__" and t["dtype"] in _FLOAT_DTYPES)


def count_parameters(folder: Path, depth: int = 2) -> int | None:
    """Parameters of the weights in a Hugging Face folder; None when it holds none.

    Diffusers pipelines (model_index.json) count each component sub-folder; a folder
    without weight files of its own (bark-style layouts) counts its sub-folders, down
    to `depth` levels.
    """
    components = _diffusers_components(folder)
    if components is None:
        files, kind = _weight_files(folder)
        if files:
            if kind == "safetensors":
                return sum(safetensors_parameters(f) for f in files)
            return sum(f.stat().st_size for f in files) // _stored_dtype_bytes(folder, files)
        if depth <= 0:
            return None
        components = sorted(p for p in folder.iterdir()
                            if p.is_dir() and not p.name.startswith("."))
    counts = [count_parameters(c, depth - 1) for c in components]
    found = [c for c in counts if c is not None]
    return sum(found) if found else None


def _diffusers_components(folder: Path) -> list[Path] | None:
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return None
    return [folder / name for name, value in index.items()
            if isinstance(value, list) and (folder / name).is_dir()]


def _weight_files(folder: Path) -> tuple[list[Path], str]:
    """The weight files a loader would read here: an index's shards, else the
    standard file, else one variant (fp16), else every file; safetensors before .bin."""
    for kind in ("safetensors", "bin"):
        indexes = sorted(folder.glob(f"*.{kind}.index.json"), key=lambda p: len(p.suffixes))
        if indexes:
            weight_map = json.loads(indexes[0].read_text()).get("weight_map", {})
            shards = sorted({folder / name for name in weight_map.values()})
            return [s for s in shards if s.is_file()], kind
        files = sorted(p for p in folder.glob(f"*.{kind}")
                       if p.is_file() and p.name != "training_args.bin")
        for pattern in (_STANDARD, _VARIANT):
            chosen = [p for p in files if pattern.match(p.name)]
            if chosen:
                return chosen[:1], kind
        if files:
            return files, kind
    return [], ""


def _stored_dtype_bytes(folder: Path, files: list[Path]) -> int:
    """Bytes per element of .bin weights: the variant in the name, else config.json."""
    if any(".fp16." in f.name or ".bf16." in f.name for f in files):
        return 2
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    return DTYPE_BYTES.get(str(config.get("torch_dtype") or config.get("dtype")), 4)


# --- memory -------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryEstimate:
    bytes: int
    parameters: int
    dtype: str
    source: Literal["weights", "catalog"]

    @property
    def gib(self) -> float:
        return self.bytes / GiB


def memory_for(parameters: int, dtype: str) -> int:
    """The bytes a deployment needs for `parameters` loaded as `dtype` (see top)."""
    weights = parameters * DTYPE_BYTES[dtype]
    return weights + weights * RUNTIME_OVERHEAD_PERCENT // 100 + BASE_OVERHEAD_BYTES


def engine_dtype(entry: CatalogEntry | None, task: Task | None = None,
                 requested: str = "auto", *, has_gpu: bool = False) -> str:
    """The dtype the engine will load in (the embeddings engine always uses float32)."""
    if (entry and entry.dtype == "float32") or task == Task.EMBEDDINGS:
        return "float32"
    return resolve_dtype(requested, has_gpu=has_gpu)


def memory_needed(entry: CatalogEntry | None, folder: Path | None, *,
                  dtype: str | None = None) -> MemoryEstimate:
    """Memory for a model: counted from `folder`'s weights when it has any, else from
    the catalog; ValueError when neither knows. `dtype` defaults to the engine's."""
    if dtype is None:
        task = entry.engine_task if entry else (infer_task(folder) if folder else None)
        dtype = engine_dtype(entry, task)
    parameters = None
    if folder is not None:
        try:
            parameters = count_parameters(folder)
        except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
            log.warning("cannot count the parameters in %s: %s", folder, e)
    if parameters:
        return MemoryEstimate(memory_for(parameters, dtype), parameters, dtype, "weights")
    if entry is not None:
        return MemoryEstimate(memory_for(entry.parameters, dtype), entry.parameters,
                              dtype, "catalog")
    raise ValueError(f"no weight files in {folder}" if folder else "nothing to count")


# --- tiers ----------------------------------------------------------------------------------

def _by_memory(tiers: dict[str, Tier]) -> list[Tier]:
    return sorted(tiers.values(), key=lambda t: (t.memory_bytes, t.gpus, t.cpus,
                                                 t.price_per_hour))


def fitting_tiers(need_bytes: int, tiers: dict[str, Tier]) -> list[str]:
    """Names of the tiers with at least `need_bytes` of memory, smallest first."""
    return [t.name for t in _by_memory(tiers) if t.memory_bytes >= need_bytes]


def smallest_fitting_tier(need_bytes: int, tiers: dict[str, Tier]) -> str | None:
    fits = fitting_tiers(need_bytes, tiers)
    return fits[0] if fits else None


def tiers_that_hold(entry: CatalogEntry | None, folder: Path | None,
                    tiers: dict[str, Tier], *, task: Task | None = None,
                    requested: str = "auto") -> list[str]:
    """Names of the tiers that hold the model as each tier's engine loads it, smallest
    first: a GPU tier loads bf16 whatever the CPU, so an 8B model fits `a10` even on a
    CPU without bf16, where it needs fp32 (twice the bytes) on the CPU tiers.
    ValueError when nothing tells the model's size."""
    if task is None:
        task = entry.engine_task if entry else (infer_task(folder) if folder else None)
    estimates: dict[str, MemoryEstimate] = {}
    names = []
    for tier in _by_memory(tiers):
        dtype = engine_dtype(entry, task, requested, has_gpu=tier.gpus > 0)
        if dtype not in estimates:
            estimates[dtype] = memory_needed(entry, folder, dtype=dtype)
        if estimates[dtype].bytes <= tier.memory_bytes:
            names.append(tier.name)
    return names


# --- where weights are -------------------------------------------------------------------

def find_entry_weights(entry: CatalogEntry, models_dir: Path) -> Path | None:
    """The local folder of a catalog model, under its id, upstream id or an alias."""
    for name in dict.fromkeys([entry.id, entry.source_id, *entry.aliases]):
        try:
            return find_weights(name, models_dir)
        except WeightsNotFound:
            folder = models_dir / name
            if ".." not in Path(name).parts and (folder / "model_index.json").is_file():
                return folder  # a diffusers pipeline has no top-level config.json
    return None


def local_models(models_dir: Path) -> list[tuple[str, Path]]:
    """(id, folder) of every `<org>/<name>` (or legacy `<name>`) folder with a config."""
    found: list[tuple[str, Path]] = []
    if not models_dir.is_dir():
        return found
    for top in sorted(models_dir.iterdir()):
        if top.name.startswith(".") or not top.is_dir():
            continue
        if (top / "config.json").is_file():
            found.append((top.name, top))
            continue
        found += [(f"{top.name}/{sub.name}", sub) for sub in sorted(top.iterdir())
                  if not sub.name.startswith(".") and (sub / "config.json").is_file()]
    return found


# --- GET /api/models -----------------------------------------------------------------------

def catalog_json(config: Config) -> list[dict[str, Any]]:
    """Every catalog model, then every uncatalogued local model, as JSON objects."""
    models_dir = config.server.models_dir
    rows = []
    for entry in CATALOG:
        folder = find_entry_weights(entry, models_dir)
        row = {
            "id": entry.id, "aliases": [n for n in entry.names() if n != entry.id],
            "task": entry.task, "engine": entry.engine, "available": entry.available,
            "unavailable_reason": entry.unavailable_reason, "catalog": True,
            "parameters_approximate": entry.approximate and folder is None,
            "trust_remote_code": entry.trust_remote_code, "description": entry.description,
        }
        rows.append(row | _memory_json(entry, folder, config))
    for model_id, folder in local_models(models_dir):
        if resolve(model_id) is not None:
            continue
        task = infer_task(folder)
        row = {
            "id": model_id, "aliases": [], "task": task.value if task else None,
            "engine": task.value if task else None, "available": task is not None,
            "unavailable_reason": None if task else "cannot tell the task from its files",
            "catalog": False, "parameters_approximate": False, "trust_remote_code": False,
            "description": None,
        }
        rows.append(row | _memory_json(None, folder, config))
    return rows


def _memory_json(entry: CatalogEntry | None, folder: Path | None,
                 config: Config) -> dict[str, Any]:
    try:
        mem: MemoryEstimate | None = memory_needed(entry, folder)
        fits = tiers_that_hold(entry, folder, config.tiers)
    except ValueError:
        mem, fits = None, []
    return {
        "parameters": mem.parameters if mem else None, "dtype": mem.dtype if mem else None,
        "memory_bytes": mem.bytes if mem else None,
        "memory_source": mem.source if mem else None,
        "fits": fits, "smallest_tier": fits[0] if fits else None,
        "present": folder is not None, "path": str(folder) if folder else None,
        "random_weights": folder is not None and (folder / TINY_WEIGHTS_MARKER).is_file(),
    }


# --- the create path --------------------------------------------------------------------

@dataclass(frozen=True)
class Resolved:
    entry: CatalogEntry | None  # None for a local model the catalog does not know
    model_id: str  # canonical: the catalog id, else the id as given
    folder: Path
    task: Task
    memory: MemoryEstimate

    @property
    def trust_remote_code(self) -> bool:
        return bool(self.entry and self.entry.trust_remote_code)


def check_deployable(model_id: str, tier_name: str, config: Config, *,
                     task: Task | None = None, dtype: str = "auto") -> Resolved:
    """Everything that makes a (model, tier) deployment impossible, as API errors.

    Checked in this order: the tier, the model, its task, its memory (from the catalog
    when the weights are absent, so nobody downloads 16 GB for a tier that cannot hold
    it), then the weights. `task` and `dtype` are a deployment's own settings.
    """
    tier = config.tiers.get(tier_name)
    if tier is None:
        raise BadRequest(f"unknown hardware {tier_name!r}; tiers are "
                         f"{', '.join(t.name for t in _by_memory(config.tiers))}",
                         code="unknown_hardware", param="hardware")
    models_dir = config.server.models_dir
    entry = resolve(model_id)
    folder: Path | None
    if entry is not None:
        model_id = entry.id
        task = task or entry.engine_task
        if task is None:
            raise Unprocessable(f"{entry.id} is a model for the {entry.task} task: "
                                f"{entry.unavailable_reason}", code="task_unavailable",
                                param="model")
        folder = find_entry_weights(entry, models_dir)
    else:
        try:
            folder = find_weights(model_id, models_dir)
        except WeightsNotFound:
            matches = close_matches(model_id)
            hint = f"did you mean {', '.join(matches)}? " if matches else ""
            raise BadRequest(f"unknown model {model_id!r}: not in the catalog and not in "
                             f"{models_dir}; {hint}GET /api/models lists the models",
                             code="model_not_found", param="model") from None
        task = task or infer_task(folder)
        if task is None:
            raise Unprocessable(f"cannot tell which task {model_id!r} serves from its "
                                "files (config.json names no known architecture); a "
                                "config.toml deployment can set `task` explicitly",
                                code="task_unavailable", param="model")
    empty = None  # a folder with a config but no weight files berth can read
    try:
        memory = memory_needed(entry, folder, dtype=engine_dtype(
            entry, task, dtype, has_gpu=tier.gpus > 0))
    except ValueError:
        empty, folder = folder, None
    else:
        if folder is not None and memory.source == "catalog":
            empty, folder = folder, None
        if memory.bytes > tier.memory_bytes:
            fits = tiers_that_hold(entry, folder, config.tiers, task=task, requested=dtype)
            smallest = fits[0] if fits else None
            advice = (f"the smallest tier that fits is {smallest}" if smallest else
                      "no tier has that much memory")
            raise Unprocessable(
                f"{model_id} needs about {_size(memory.bytes)} ({_count(memory.parameters)}"
                f" parameters as {memory.dtype}); tier {tier.name} has "
                f"{_size(tier.memory_bytes)}; {advice}",
                code="insufficient_memory", param="hardware")
    if folder is None:
        where = (f"{empty} has no weight files berth can read" if empty else
                 f"the weights of {model_id} are not in {models_dir} nor in the Hugging "
                 "Face cache")
        raise Unprocessable(f"{where}; download them with "
                            f"`berth pull {model_id} --models-dir {models_dir}`",
                            code="weights_missing", param="model")
    return Resolved(entry, model_id, folder, task, memory)


def _size(n: int) -> str:
    """1.5 GiB, 200 MiB: the unit a person would pick."""
    if n >= GiB:
        return f"{n / GiB:.1f}".removesuffix(".0") + " GiB"
    return f"{n / 2**20:.0f} MiB"


def _count(parameters: int) -> str:
    """8.03B, 125.0M, 1.2K parameters."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if parameters >= scale:
            return f"{parameters / scale:.{2 if unit == 'B' else 1}f}{unit}"
    return str(parameters)
