"""Gradient-boosted trees on RDKit descriptors, blended with the transformer (``--trees gbm``)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from rdkit.Chem import Crippen
from typer.testing import CliRunner

from smilesformer import DataConfig, TrainConfig, load_predictor
from smilesformer.cli import app
from smilesformer.data import SmilesformerError
from smilesformer.explain import explain_molecule
from smilesformer.predictors import fit_blend
from smilesformer.tasks import ModelMeta
from smilesformer.trees import (
    TREE_FILE,
    WEIGHT_GRID,
    choose_weights,
    fit_trees,
    load_trees,
    tree_outputs,
)
from smilesformer.workflow import run_finetune

from .conftest import served_explanation

QUICK = TrainConfig(epochs=2, batch_size=16, progress=False, descriptors="none", trees="none")
REG = ModelMeta("regression", ["y"])


def _logp(smiles):
    return np.array([Crippen.MolLogP(Chem.MolFromSmiles(s)) for s in smiles])


def test_trees_learn_a_descriptor_property(esol50):
    """Crippen logP is one of the descriptors: even from 40 molecules the trees beat the training mean."""
    smiles = esol50["smiles"].tolist()
    y = _logp(smiles)
    trees = fit_trees(REG, smiles[:40], y[:40])
    pred = tree_outputs(trees, REG, smiles[40:])[:, 0]
    assert np.mean(np.abs(pred - y[40:])) < 0.85 * np.mean(np.abs(y[:40].mean() - y[40:]))


def test_classification_trees_give_probabilities_and_skip_one_class_targets(esol50):
    smiles = esol50["smiles"].tolist()
    logp = _logp(smiles)
    labels = np.stack([(logp > np.median(logp)).astype(float), np.ones(len(smiles))], axis=1)
    labels[:5, 0] = np.nan  # a missing label is left out, not read as a class
    binary = ModelMeta("classification", ["a", "b"])
    trees = fit_trees(binary, smiles, labels)
    out = tree_outputs(trees, binary, smiles)
    assert out.shape == (50, 2) and ((out[:, 0] >= 0) & (out[:, 0] <= 1)).all()
    assert trees.models[1] is None and np.isnan(out[:, 1]).all(), "one class only: no trees for that target"
    weights = choose_weights(binary, labels, np.full((50, 2), 0.5), out)
    assert weights[1] == 1.0, "a target without trees keeps the transformer alone"

    three = np.digitize(logp, np.quantile(logp, [1 / 3, 2 / 3])).astype(float)
    three_classes = ModelMeta("classification", ["c"], n_classes=3)
    multi = fit_trees(three_classes, smiles, three[:, None])
    probs = tree_outputs(multi, three_classes, smiles)
    assert probs.shape == (50, 3) and np.allclose(probs.sum(axis=1), 1)
    assert list(three_classes.layout.output_columns(three_classes, [0.3])) == [0.3, 0.3, 0.3]


def test_weights_follow_the_better_model_on_validation():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(200, 1))
    good, bad = y + 0.05 * rng.normal(size=y.shape), rng.normal(size=y.shape)
    assert choose_weights(REG, y, good, bad) == [1.0]
    assert choose_weights(REG, y, bad, good) == [0.0]
    # two equally good, independent models: the average is best
    a, b = y + 0.5 * rng.normal(size=y.shape), y + 0.5 * rng.normal(size=y.shape)
    assert 0.3 <= choose_weights(REG, y, a, b)[0] <= 0.7
    assert choose_weights(REG, None, None, None) == [0.5], "no valid set: an even blend"


def test_blended_model_predicts_the_blend_and_reloads(make_tiny_model, esol50, tmp_path):
    smiles, y = esol50["smiles"].tolist(), _logp(esol50["smiles"])
    model = make_tiny_model().fit(smiles[:40], y[:40], smiles[40:], y[40:], QUICK)
    alone = model.predict(smiles[40:])["logS_pred"].to_numpy()
    model = fit_blend(model, smiles[:40], y[:40], smiles[40:], y[40:])
    w = model.meta.tree_weights[0]
    assert w in np.round(WEIGHT_GRID, 2)
    trees = tree_outputs(model.trees, model.meta, smiles[40:])[:, 0]
    blended = model.predict(smiles[40:] + ["C1CC"])
    assert np.allclose(blended["logS_pred"][:10], w * alone + (1 - w) * trees, atol=1e-5)
    assert np.isnan(blended["logS_pred"][10]) and "invalid SMILES" in blended["error"][10], "rows are kept"
    assert w < 1, "on a descriptor property the trees beat a 2-epoch tiny transformer and get weight"

    folder = model.save_pretrained(tmp_path / "model")
    assert (folder / TREE_FILE).is_file()
    again = load_predictor(folder)
    assert again.meta.tree_weights == [w]
    assert np.allclose(again.predict(smiles[40:])["logS_pred"], blended["logS_pred"][:10], atol=1e-5)

    explained = explain_molecule(again, smiles[41], n_steps=8)
    part = explained["blend"]
    assert part["transformer_weight"] == w
    expected = w * explained["output_value"] + (1 - w) * part["trees_output"]
    assert explained["prediction"]["logS_pred"] == pytest.approx(expected, abs=1e-4), \
        "the prediction is the transformer's output blended with the trees'"


def test_tree_file_is_checked_on_load(make_tiny_model, esol50, tmp_path):
    smiles, y = esol50["smiles"].tolist(), _logp(esol50["smiles"])
    model = fit_blend(make_tiny_model(), smiles[:40], y[:40])
    assert model.meta.tree_weights == [0.5], "no validation set"
    folder = model.save_pretrained(tmp_path / "model")

    (folder / TREE_FILE).unlink()
    with pytest.raises(SmilesformerError, match="trees.skops is missing"):
        load_predictor(folder)

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    # a file that references anything outside the trusted list (here os.getcwd) is refused, not loaded
    sio.dump({"descriptor_names": ["MolWt"], "models": [FunctionTransformer(os.getcwd)]}, folder / TREE_FILE)
    with pytest.raises(SmilesformerError, match="getcwd"):
        load_trees(folder)

    sio.dump({"descriptor_names": ["MolWt", "NoSuchDescriptor"], "models": []}, folder / TREE_FILE)
    with pytest.raises(SmilesformerError, match="NoSuchDescriptor"):
        load_trees(folder)


def test_finetune_blends_by_default_and_not_with_trees_none(esol50_path, tmp_path):
    data = DataConfig(str(esol50_path), smiles_col="smiles", target_cols=["logS"], task="regression",
                      fractions=(0.6, 0.2, 0.2))
    run = run_finetune(data, "random:tiny", TrainConfig(epochs=1, batch_size=16, progress=False), tmp_path / "a")
    weights = run.metrics["tree_weights"]
    assert len(weights) == 1 and 0 <= weights[0] <= 1
    assert (run.model_dir / TREE_FILE).is_file()
    assert any("gradient-boosted trees" in n for n in run.notes)

    result = CliRunner().invoke(app, ["finetune", "--data", str(esol50_path), "--smiles-col", "smiles",
                                      "--target", "logS", "--model", "random:tiny", "--epochs", "1",
                                      "--trees", "none", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["tree_weights"] is None
    assert not (tmp_path / "b" / "model" / TREE_FILE).exists()
    bad = CliRunner().invoke(app, ["finetune", "--data", str(esol50_path), "--target", "logS", "--trees", "xgb",
                                   "--out", str(tmp_path / "c")])
    assert bad.exit_code != 0 and "trees must be 'auto', 'gbm' or 'none'" in bad.output


def test_ensemble_with_trees_keeps_the_transformer_spread(esol50_path, tmp_path):
    data = DataConfig(str(esol50_path), smiles_col="smiles", target_cols=["logS"], task="regression",
                      fractions=(0.6, 0.2, 0.2))
    run = run_finetune(data, "random:tiny", TrainConfig(epochs=1, batch_size=16, ensemble=2, progress=False),
                       tmp_path / "run")
    assert (run.model_dir / TREE_FILE).is_file() and not (run.model_dir / "member_0" / TREE_FILE).exists()
    ensemble = load_predictor(run.model_dir)
    assert ensemble.meta.tree_weights == run.metrics["tree_weights"]
    preds = pd.read_csv(run.out_dir / "test_predictions.csv")
    assert (preds["logS_sd"] > 0).all(), "the members' spread survives the blend"
    assert "uncertainty" in run.metrics["test"]


def test_classification_blends_only_when_asked(esol50, tmp_path):
    table = esol50.assign(soluble=(esol50["logS"] > esol50["logS"].median()).astype(int))
    path = tmp_path / "soluble.csv"
    table[["smiles", "soluble"]].to_csv(path, index=False)
    data = DataConfig(str(path), smiles_col="smiles", target_cols=["soluble"], task="classification",
                      fractions=(0.6, 0.2, 0.2))
    auto = run_finetune(data, "random:tiny", TrainConfig(epochs=1, batch_size=16, progress=False), tmp_path / "a")
    assert auto.metrics["tree_weights"] is None, "auto blends regression models only"
    gbm = run_finetune(data, "random:tiny", TrainConfig(epochs=1, batch_size=16, progress=False, trees="gbm"),
                       tmp_path / "b")
    assert len(gbm.metrics["tree_weights"]) == 1
    probs = load_predictor(gbm.model_dir).predict(table["smiles"].tolist())["soluble_prob"]
    assert probs.between(0, 1).all()


def test_a_target_without_training_labels_gets_no_trees(esol50):
    smiles = esol50["smiles"].tolist()
    labels = np.stack([_logp(smiles), np.full(len(smiles), np.nan)], axis=1)
    meta = ModelMeta("regression", ["a", "b"])
    trees = fit_trees(meta, smiles, labels)
    assert trees.models[0] is not None and trees.models[1] is None
    out = tree_outputs(trees, meta, smiles)
    assert np.isfinite(out[:, 0]).all() and np.isnan(out[:, 1]).all()
    assert choose_weights(meta, labels, np.zeros((50, 2)), out)[1] == 1.0


def test_service_predicts_the_blend(make_tiny_model, esol50, tmp_path):
    smiles, y = esol50["smiles"].tolist(), _logp(esol50["smiles"])
    model = make_tiny_model().fit(smiles[:40], y[:40], config=QUICK)
    model = fit_blend(model, smiles[:40], y[:40], smiles[40:], y[40:])
    folder = model.save_pretrained(tmp_path / "model")
    explained = served_explanation(model, folder, "c1ccccc1O")
    assert explained["blend"]["transformer_weight"] == model.meta.tree_weights[0]
