"""The model catalog: names, memory from real weight files, tier fit, create-time errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from engines.protocol import TASK_ROUTES, Task
from server.catalog import (
    BASE_OVERHEAD_BYTES,
    CATALOG,
    GiB,
    catalog_json,
    check_deployable,
    close_matches,
    count_parameters,
    fitting_tiers,
    memory_for,
    memory_needed,
    resolve,
    smallest_fitting_tier,
    tiers_that_hold,
)
from server.config import DEFAULT_TIERS, Config, config_from_dict
from server.errors import ApiError

SEED = [
    "meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama/Meta-Llama-Guard-2-8B",
    "mistralai/Mistral-7B-Instruct-v0.3", "google/gemma-7b", "google/gemma-2b-it",
    "facebook/opt-125m", "openai-community/gpt2-large", "microsoft/phi-2",
    "mistralai/Mamba-Codestral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.1",
    "meta-llama/Meta-Llama-3.1-8B", "allenai/OLMoE-1B-7B-0924",
    "stabilityai/stable-diffusion-xl-base-1.0", "lucataco/moondream2", "bark/suno",
    "stabilityai/sdxl-turbo", "Salesforce/blip-image-captioning-large",
]
LLAMA3 = "meta-llama/Meta-Llama-3-8B-Instruct"


@pytest.fixture(autouse=True)
def empty_hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Weights are looked up in the Hugging Face cache too: point it at an empty folder
    so that what this machine has downloaded does not change the results."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def make_config(tmp_path: Path, models_dir: Path | None = None) -> Config:
    return config_from_dict({"server": {
        "state_dir": str(tmp_path / "state"),
        "models_dir": str(models_dir or tmp_path / "models")}})


def write_model(folder: Path, tensors: dict[str, np.ndarray], *,
                architectures: tuple[str, ...] = ("GPT2LMHeadModel",),
                name: str = "model.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": list(architectures)}))
    save_file(tensors, str(folder / name))
    return folder


def small_tensors() -> dict[str, np.ndarray]:
    """230 parameters (fp32 and fp16) plus an integer buffer that is not a parameter."""
    return {"w": np.zeros((10, 20), np.float32), "b": np.ones(30, np.float16),
            "position_ids": np.arange(7, dtype=np.int64)}


def api_error(excinfo: pytest.ExceptionInfo[ApiError]) -> tuple[int, str | None, str]:
    e = excinfo.value
    body = json.loads(e.response().body)  # type: ignore[arg-type]
    assert body["error"]["code"] == e.code
    return e.status, e.code, e.message


# --- names ------------------------------------------------------------------------------

@pytest.mark.parametrize("model_id", SEED)
def test_every_seed_model_resolves(model_id: str) -> None:
    entry = resolve(model_id)
    assert entry is not None
    assert entry.parameters > 0 and entry.description


def test_catalog_covers_the_seed_and_the_default_embeddings_model() -> None:
    ids = {e.id for e in CATALOG}
    assert {resolve(s).id for s in SEED} | {"sentence-transformers/all-MiniLM-L6-v2"} == ids  # type: ignore[union-attr]
    assert len(ids) == len(CATALOG) == 18


@pytest.mark.parametrize(("name", "canonical"), [
    ("bark/suno", "suno/bark"),
    ("OPT-125M", "facebook/opt-125m"),
    ("opt_125m", "facebook/opt-125m"),
    ("gpt2-large", "openai-community/gpt2-large"),
    ("phi-2", "microsoft/phi-2"),
    ("gemma-2b-it", "google/gemma-2b-it"),
    ("vikhyatk/moondream2", "lucataco/moondream2"),
    ("META-LLAMA/meta-llama-3-8b-instruct", LLAMA3),
    ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
])
def test_aliases_and_spellings(name: str, canonical: str) -> None:
    entry = resolve(name)
    assert entry is not None and entry.id == canonical


def test_unknown_names_and_close_matches() -> None:
    assert resolve("openai/gpt-5") is None
    assert close_matches("meta-llama/Meta-Llama-3-8B-Instuct")[0] == LLAMA3
    assert close_matches("facebok/opt-125m") == ["facebook/opt-125m"]
    assert close_matches("zzzzzzzz") == []


def test_every_seed_model_has_an_engine_task_with_routes() -> None:
    for entry in CATALOG:
        assert entry.available and entry.unavailable_reason is None
        assert TASK_ROUTES[Task(entry.task)]
    assert resolve("bark/suno").task == "speech"  # type: ignore[union-attr]
    assert resolve("lucataco/moondream2").trust_remote_code  # type: ignore[union-attr]


# --- memory -------------------------------------------------------------------------------

def test_memory_from_a_real_safetensors_file(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m", small_tensors())
    mem = memory_needed(None, folder, dtype="bfloat16")
    assert (mem.parameters, mem.dtype, mem.source) == (230, "bfloat16", "weights")
    assert mem.bytes == BASE_OVERHEAD_BYTES + 460 + 460 * 15 // 100
    assert memory_needed(None, folder, dtype="float32").bytes == memory_for(230, "float32")


def test_weights_on_disk_win_over_the_catalog(tmp_path: Path) -> None:
    entry = resolve("facebook/opt-125m")
    folder = write_model(tmp_path / "opt", small_tensors())
    assert memory_needed(entry, folder).source == "weights"
    mem = memory_needed(entry, None, dtype="bfloat16")
    assert (mem.parameters, mem.source) == (125_239_296, "catalog")
    with pytest.raises(ValueError):
        memory_needed(None, tmp_path / "nothing-here")


def test_sharded_index_is_followed_and_stray_files_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    save_file({"a": np.zeros((4, 4), np.float32)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b": np.zeros(10, np.float16)}, str(folder / "model-00002-of-00002.safetensors"))
    save_file({"a": np.zeros(999, np.float32)}, str(folder / "consolidated.safetensors"))
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert count_parameters(folder) == 26


def test_diffusers_pipeline_counts_its_components(tmp_path: Path) -> None:
    root = tmp_path / "sdxl"
    root.mkdir()
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"], "scheduler": ["diffusers", "X"]}))
    save_file({"x": np.zeros(100, np.float32)}, str(root / "single_file_checkpoint.safetensors"))
    (root / "unet").mkdir()
    save_file({"u": np.zeros(50, np.float32)},
              str(root / "unet/diffusion_pytorch_model.safetensors"))
    save_file({"u": np.zeros(50, np.float16)},
              str(root / "unet/diffusion_pytorch_model.fp16.safetensors"))
    write_model(root / "text_encoder", {"t": np.zeros(7, np.float32)})
    (root / "scheduler").mkdir()
    assert count_parameters(root) == 57


def test_subfolder_layout_and_bin_fallback(tmp_path: Path) -> None:
    root = tmp_path / "bark"
    (root / "speaker_embeddings").mkdir(parents=True)
    (root / "speaker_embeddings" / "v2.npy").write_bytes(b"\0" * 64)
    write_model(root / "semantic", {"s": np.zeros(12, np.float32)})
    coarse = root / "coarse"
    coarse.mkdir()
    (coarse / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    (coarse / "pytorch_model.bin").write_bytes(b"\0" * 2000)
    (coarse / "training_args.bin").write_bytes(b"\0" * 500)
    assert count_parameters(root) == 12 + 1000


def test_real_minilm_weights(tiny_models) -> None:
    entry = resolve(tiny_models.MINILM_ID)
    mem = memory_needed(entry, tiny_models.minilm)
    assert (mem.parameters, mem.dtype, mem.source) == (22_713_216, "float32", "weights")


# --- tiers ----------------------------------------------------------------------------------

def test_llama3_8b_fits_only_the_big_tiers() -> None:
    mem = memory_needed(resolve(LLAMA3), None, dtype="bfloat16")
    assert 17 * GiB < mem.bytes < 18 * GiB
    fits = fitting_tiers(mem.bytes, DEFAULT_TIERS)
    assert not {"micro", "small", "medium"} & set(fits)
    assert fits == ["a10"] and smallest_fitting_tier(mem.bytes, DEFAULT_TIERS) == "a10"


@pytest.mark.parametrize(("cpu_bf16", "phi2_fits"), [
    (False, ["large", "a10"]),  # fp32 on the CPU tiers: 2.78B x 4 bytes
    (True, ["medium", "large", "a10"]),
])
def test_each_tier_is_sized_in_the_dtype_its_engine_loads(
        monkeypatch, tmp_path: Path, cpu_bf16: bool, phi2_fits: list[str]) -> None:
    """A GPU tier loads bf16 whatever the CPU; the CPU tiers load what the CPU computes.
    So an 8B model fits a10 on every host, and where it fits is not the host's accident."""
    monkeypatch.setattr("engines.protocol.cpu_supports_bf16", lambda: cpu_bf16)
    assert tiers_that_hold(resolve(LLAMA3), None, DEFAULT_TIERS) == ["a10"]
    assert tiers_that_hold(resolve("microsoft/phi-2"), None, DEFAULT_TIERS) == phi2_fits
    rows = {r["id"]: r for r in catalog_json(make_config(tmp_path, tmp_path / "models"))}
    assert rows[LLAMA3]["fits"] == ["a10"]
    assert rows["microsoft/phi-2"]["fits"] == phi2_fits
    assert rows["microsoft/phi-2"]["dtype"] == ("bfloat16" if cpu_bf16 else "float32")
    with pytest.raises(ApiError) as info:
        check_deployable(LLAMA3, "micro", make_config(tmp_path, tmp_path / "models"))
    assert api_error(info)[:2] == (422, "insufficient_memory")
    assert "smallest tier that fits is a10" in str(info.value)


def test_tiers_are_ordered_by_memory() -> None:
    shuffled = {name: DEFAULT_TIERS[name] for name in ("a10", "micro", "large", "small")}
    assert fitting_tiers(3 * GiB, shuffled) == ["small", "large", "a10"]
    assert fitting_tiers(0, shuffled)[0] == "micro"
    assert smallest_fitting_tier(100 * GiB, shuffled) is None


# --- check_deployable -------------------------------------------------------------------

def test_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(ApiError) as info:
        check_deployable("meta-llama/Meta-Llama-3-8B-Instuct", "a10", make_config(tmp_path))
    status, code, message = api_error(info)
    assert (status, code) == (400, "model_not_found")
    assert LLAMA3 in message and "GET /api/models" in message


def test_unknown_hardware(tmp_path: Path) -> None:
    with pytest.raises(ApiError) as info:
        check_deployable("facebook/opt-125m", "huge", make_config(tmp_path))
    status, code, message = api_error(info)
    assert (status, code) == (400, "unknown_hardware")
    assert "micro, small, medium, large, a10" in message


def test_an_alias_resolves_before_the_weights_are_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ApiError) as info:
        check_deployable("bark/suno", "large", make_config(tmp_path))
    status, code, message = api_error(info)
    assert (status, code) == (422, "weights_missing")
    assert "`berth pull suno/bark" in message


def test_missing_weights_name_the_command(tmp_path: Path) -> None:
    with pytest.raises(ApiError) as info:
        check_deployable("OPT-125M", "micro", make_config(tmp_path))
    status, code, message = api_error(info)
    assert (status, code) == (422, "weights_missing")
    assert "`berth pull facebook/opt-125m --models-dir " in message


def test_insufficient_memory_is_told_before_missing_weights(tmp_path: Path) -> None:
    config = make_config(tmp_path)  # no weights: the catalog's parameter count
    with pytest.raises(ApiError) as info:
        check_deployable(LLAMA3, "medium", config, dtype="bfloat16")
    status, code, message = api_error(info)
    assert (status, code) == (422, "insufficient_memory")
    assert "17.8 GiB" in message and "medium has 8 GiB" in message
    assert "smallest tier that fits is a10" in message
    with pytest.raises(ApiError) as info:
        check_deployable(LLAMA3, "a10", config, dtype="float32")
    assert "no tier" in api_error(info)[2]
    with pytest.raises(ApiError) as info:
        check_deployable(LLAMA3, "a10", config, dtype="bfloat16")
    assert api_error(info)[:2] == (422, "weights_missing")


def test_folder_without_weight_files(tmp_path: Path) -> None:
    models = tmp_path / "models"
    config = make_config(tmp_path, models)
    for model_id in (LLAMA3, "acme/empty"):
        write_model(models / model_id, {}, architectures=("LlamaForCausalLM",))
        (models / model_id / "model.safetensors").unlink()
        with pytest.raises(ApiError) as info:
            check_deployable(model_id, "a10", config)
        status, code, message = api_error(info)
        assert (status, code) == (422, "weights_missing")
        assert "has no weight files" in message
        assert f"`berth pull {model_id} --models-dir" in message


def test_deployable_catalog_and_local_models(tiny_models, tmp_path: Path) -> None:
    config = make_config(tmp_path, tiny_models.models_dir)
    ok = check_deployable("all-minilm-l6-v2", "micro", config)
    assert (ok.model_id, ok.task, ok.folder) == (tiny_models.MINILM_ID, Task.EMBEDDINGS,
                                                 tiny_models.minilm)
    assert ok.memory.source == "weights" and ok.memory.dtype == "float32"
    local = check_deployable(tiny_models.CHAT_ID, "micro", config)
    assert (local.entry, local.task, local.folder) == (None, Task.TEXT, tiny_models.chat)


def test_local_model_of_unknown_task(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_model(models / "acme/mystery", small_tensors(), architectures=("AcmeForSomething",))
    with pytest.raises(ApiError) as info:
        check_deployable("acme/mystery", "micro", make_config(tmp_path, models))
    assert api_error(info)[:2] == (422, "task_unavailable")


# --- GET /api/models -----------------------------------------------------------------------

def test_catalog_json_marks_present_models_and_lists_local_ones(tmp_path: Path) -> None:
    models = tmp_path / "models"
    opt = write_model(models / "facebook/opt-125m", small_tensors(),
                      architectures=("OPTForCausalLM",))
    write_model(models / "vikhyatk/moondream2", small_tensors(), architectures=("Moondream",))
    write_model(models / "acme/mystery", small_tensors(), architectures=("AcmeForSomething",))
    write_model(models / "acme/tiny-gpt", small_tensors())
    rows = {r["id"]: r for r in catalog_json(make_config(tmp_path, models))}

    assert len(rows) == len(CATALOG) + 2
    row = rows["facebook/opt-125m"]
    assert (row["present"], row["path"], row["memory_source"]) == (True, str(opt), "weights")
    assert row["parameters"] == 230 and row["fits"][0] == row["smallest_tier"] == "micro"
    assert rows["lucataco/moondream2"]["present"]
    assert rows["lucataco/moondream2"]["trust_remote_code"]
    llama = rows[LLAMA3]
    assert (llama["present"], llama["path"], llama["memory_source"]) == (False, None, "catalog")
    assert llama["fits"] == ["a10"]
    bark = rows["suno/bark"]
    assert "bark/suno" in bark["aliases"] and bark["task"] == "speech"

    mystery = rows["acme/mystery"]
    assert (mystery["catalog"], mystery["task"], mystery["available"]) == (False, None, False)
    assert mystery["unavailable_reason"] and mystery["parameters"] == 230
    tiny = rows["acme/tiny-gpt"]
    assert (tiny["task"], tiny["available"], tiny["present"]) == ("text", True, True)
    json.dumps(list(rows.values()))  # the body of GET /api/models


def test_catalog_json_over_the_test_models(tiny_models, tmp_path: Path) -> None:
    rows = {r["id"]: r for r in catalog_json(make_config(tmp_path, tiny_models.models_dir))}
    minilm = rows[tiny_models.MINILM_ID]
    assert minilm["present"] and minilm["parameters"] == 22_713_216
    assert rows[tiny_models.CHAT_ID]["task"] == "text"
    assert rows[tiny_models.CHAT_ID]["catalog"] is False
