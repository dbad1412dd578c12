"""`python -m engines.prepare --tiny`: stand-ins under real ids, never over real weights."""

from __future__ import annotations

import pytest

from engines import prepare
from engines.protocol import TINY_WEIGHTS_MARKER
from server.catalog import catalog_json
from server.config import config_from_dict

OPT = "facebook/opt-125m"


def test_tiny_places_a_marked_stand_in_and_spares_other_folders(tmp_path, capsys):
    real = tmp_path / "openai-community" / "gpt2-large"
    real.mkdir(parents=True)
    (real / "config.json").write_text("{}")

    done = prepare.prepare_tiny(tmp_path, [OPT, "openai-community/gpt2-large"])
    assert list(done) == [OPT]
    folder = done[OPT]
    assert prepare.is_valid_model_dir(folder) and (folder / TINY_WEIGHTS_MARKER).is_file()
    assert sorted(p.name for p in real.iterdir()) == ["config.json"]  # left alone
    assert "holds other weights" in capsys.readouterr().out

    config = config_from_dict({"server": {"models_dir": str(tmp_path),
                                          "state_dir": str(tmp_path / "state")}})
    rows = {r["id"]: r for r in catalog_json(config)}
    assert rows[OPT]["present"] and rows[OPT]["random_weights"] is True
    assert rows["openai-community/gpt2-large"]["random_weights"] is False

    mtime = (folder / "config.json").stat().st_mtime_ns
    prepare.prepare_tiny(tmp_path, [OPT])  # idempotent: not rebuilt
    assert (folder / "config.json").stat().st_mtime_ns == mtime


def test_tiny_refuses_an_unknown_id(tmp_path):
    with pytest.raises(ValueError, match="no tiny stand-in for nope"):
        prepare.prepare_tiny(tmp_path, ["nope"])
    assert prepare.main(["--models-dir", str(tmp_path / "m"), "--tiny", "nope"]) == 1
