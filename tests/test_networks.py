"""Finding and loading models: run folders, missing paths, damaged files, an unreachable hub, quiet loading."""

from __future__ import annotations

import logging
import shutil
import socket

import numpy as np
import pytest

from smilesformer import SmilesformerError, SmilesModel, TrainConfig, networks
from smilesformer.networks import hub_reachable, resolve_model_source
from smilesformer.predictors import load_predictor


def test_a_run_folder_stands_for_its_model(tmp_path, tiny_regressor_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_regressor_dir, run / "model")
    (run / "config.json").write_text('{"data": {}, "train": {}}')  # the run's settings, not a model config
    assert resolve_model_source(str(run)) == str(run / "model")
    assert load_predictor(run).predict(["CCO"])["error"].tolist() == [""]


@pytest.mark.parametrize("name", ["runs/esol/model", "./nowhere", "/tmp/does/not/exist", "runs\\esol"])
def test_a_missing_folder_is_said_to_be_missing_not_looked_up_on_the_hub(name):
    with pytest.raises(SmilesformerError, match="no such folder"):
        resolve_model_source(name)


def test_a_file_or_a_folder_without_a_model_is_named(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(SmilesformerError, match="is a file; give the model folder that holds it"):
        resolve_model_source(str(tmp_path / "weights.bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SmilesformerError, match="not a model folder"):
        resolve_model_source(str(tmp_path / "empty"))


@pytest.mark.parametrize("damage", ["half", "garbage", "empty"])
@pytest.mark.parametrize("file", ["config.json", "model.safetensors", "smilesformer.json", "tokenizer.json",
                                  "tokenizer_config.json"])
def test_a_damaged_model_file_is_named(tmp_path, tiny_regressor_dir, file, damage):
    folder = shutil.copytree(tiny_regressor_dir, tmp_path / "model")
    path = folder / file
    data = path.read_bytes()
    damaged = {"half": data[: len(data) // 2], "garbage": b"\xff\x00not what it should be", "empty": b""}
    path.write_bytes(damaged[damage])
    with pytest.raises(SmilesformerError, match=rf"model file .*{file} is damaged or incomplete.*again"):
        load_predictor(folder)


def test_a_damaged_tree_file_is_named(tmp_path, esol50, make_tiny_model):
    model = make_tiny_model()
    model.fit(esol50["smiles"][:40], esol50["logS"][:40], esol50["smiles"][40:], esol50["logS"][40:],
              config=TrainConfig(epochs=1, batch_size=20, progress=False, trees="gbm"))
    folder = model.save_pretrained(tmp_path / "model")
    (folder / "trees.skops").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(SmilesformerError, match=r"trees.skops is damaged or incomplete"):
        load_predictor(folder)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_hub_turns_offline_at_once(monkeypatch):
    from huggingface_hub import constants

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(networks, "_WENT_OFFLINE", False)
    assert not hub_reachable(timeout=1.0)
    assert resolve_model_source("someone/some-model") == "someone/some-model"
    assert constants.HF_HUB_OFFLINE, "offline mode on: no minute of retries before the cache is used"
    with pytest.raises(SmilesformerError, match="not in the cache .* hub could not be reached.*hf download"):
        load_predictor("someone/some-model")


def test_a_new_head_is_reported_in_one_line_not_a_table(caplog, capfd):
    with caplog.at_level(logging.INFO):
        SmilesModel.from_pretrained("smilesformer-moses", "regression", ["y"])
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("smilesformer")]
    assert any("under a new task head" in line for line in lines)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err and "Loading weights" not in err


def test_a_one_class_target_is_refused(make_tiny_model, esol50):
    model = make_tiny_model("classification", ["active"])
    with pytest.raises(SmilesformerError, match=r"target 'active' has a single class \(1\)"):
        model.fit(esol50["smiles"][:20], np.ones(20), config=TrainConfig(epochs=1, progress=False))
