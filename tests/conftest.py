"""Shared fixtures: tiny random models and small tables, all CPU and seconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smilesformer import SmilesModel, build_regex_tokenizer

TESTS = Path(__file__).parent
SHARED_DATA = (TESTS.parent.parent / "shared" / "data").resolve()

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SMILESFORMER_DATA", str(SHARED_DATA))


@pytest.fixture(scope="session")
def esol50() -> pd.DataFrame:
    """50 ESOL molecules: columns smiles, logS."""
    return pd.read_csv(TESTS / "data" / "esol50.csv")


@pytest.fixture(scope="session")
def esol50_path() -> Path:
    return TESTS / "data" / "esol50.csv"


@pytest.fixture(scope="session")
def tiny_tokenizer(esol50):
    return build_regex_tokenizer(esol50["smiles"], model_max_length=128)


@pytest.fixture
def make_tiny_model(tiny_tokenizer):
    """Factory for a random `tiny` SmilesModel (2 layers, hidden 32) with the ESOL-50 regex tokenizer."""

    def make(task: str = "regression", targets=("logS",), n_classes: int = 2, seed: int = 0) -> SmilesModel:
        return SmilesModel.from_scratch("tiny", task, list(targets), n_classes, max_length=128,
                                        tokenizer=tiny_tokenizer, seed=seed)

    return make


@pytest.fixture(scope="session")
def tiny_regressor_dir(tmp_path_factory, esol50, tiny_tokenizer) -> Path:
    """A saved, briefly fine-tuned tiny regression model (a smilesformer model folder)."""
    from smilesformer import TrainConfig

    model = SmilesModel.from_scratch("tiny", "regression", ["logS"], tokenizer=tiny_tokenizer, seed=0)
    model.fit(esol50["smiles"], esol50["logS"].to_numpy(float),
              config=TrainConfig(epochs=2, batch_size=16, progress=False, trees="none"))
    return model.save_pretrained(tmp_path_factory.mktemp("tiny_regressor"))


@pytest.fixture(scope="session")
def tiny_uncertain_dir(tmp_path_factory, esol50, tiny_tokenizer) -> Path:
    """A tiny regressor with trees, fitted with a validation set: it carries the uncertainty and domain check."""
    from smilesformer import TrainConfig

    smiles, y = esol50["smiles"].tolist(), esol50["logS"].to_numpy(float)
    model = SmilesModel.from_scratch("tiny", "regression", ["logS"], tokenizer=tiny_tokenizer, seed=0)
    model.fit(smiles[:30], y[:30], smiles[30:], y[30:],
              config=TrainConfig(epochs=2, batch_size=16, progress=False, descriptors="none"))
    return model.save_pretrained(tmp_path_factory.mktemp("uncertain"))


def served_explanation(model, folder: Path, smiles: str) -> dict:
    """Serve the model saved in ``folder``; check ``/predict`` matches ``model.predict`` and keeps an invalid
    row, and return ``/explain``'s JSON for ``smiles``."""
    pytest.importorskip("fastapi")
    pytest.importorskip("captum")
    from fastapi.testclient import TestClient

    from smilesformer.serve import ServeConfig, create_app

    with TestClient(create_app(folder, ServeConfig(torch_threads=1))) as client:
        body = client.post("/predict", json={"smiles": ["CCO", "C1CC"]}).json()
        assert body["results"][0]["predictions"]["logS_pred"] == pytest.approx(
            float(model.predict(["CCO"])["logS_pred"][0]), rel=1e-4)
        assert body["results"][1]["error"].startswith("invalid SMILES")
        return client.post("/explain", json={"smiles": smiles}).json()


def shared_data_available() -> bool:
    return (SHARED_DATA / "aqsoldb.csv.gz").is_file()


needs_shared_data = pytest.mark.skipif(not shared_data_available(), reason="../shared/data not present")
np.random.seed(0)


def spy_lengths(monkeypatch, owner, name: str) -> list[int]:
    """Replace ``owner.name`` (a function or method whose second argument is a sequence) by one that records
    that sequence's length on each call, then calls the original; returns the list it records into."""
    seen: list[int] = []
    original = getattr(owner, name)

    def spy(first, items, *args, **kwargs):
        seen.append(len(items))
        return original(first, items, *args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return seen
