"""SMILES enumeration, test-time augmentation, seed ensembles, layer-wise LR decay and the prediction spread."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from typer.testing import CliRunner

from smilesformer import DataConfig, SmilesEnsemble, SmilesModel, TrainConfig, load_predictor, run_finetune
from smilesformer.cli import app
from smilesformer.data import SmilesformerError, randomized_smiles
from smilesformer.evaluate import calibrate_interval, uncertainty_metrics
from smilesformer.predictors import Augmented, TreeBlend, Uncertain
from smilesformer.train import AugmentedDataset, layerwise_param_groups

from .conftest import spy_lengths


def _canonical(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def test_randomized_smiles_spell_the_same_molecule_other_ways():
    smiles = ["CC(=O)Oc1ccccc1C(=O)O", "C[C@@H](N)C(=O)O", "c1ccc2ccccc2c1"]
    variants = randomized_smiles(smiles, 5, seed=1)
    for s, options in zip(smiles, variants):
        assert len(options) == 5
        assert {_canonical(v) for v in options} == {_canonical(s)}, "same molecule, stereo included"
    assert any(v != smiles[0] for v in variants[0]), "the spellings differ from the input"
    assert variants == randomized_smiles(smiles, 5, seed=1), "deterministic for a seed"
    with pytest.raises(SmilesformerError, match="SMILES 2: .*'C1CC'"):
        randomized_smiles(["CCO", "C1CC"], 2)


def test_augmented_dataset_draws_a_spelling_per_read():
    data = AugmentedDataset([[[1, 2], [3, 4, 5], [6]]], np.zeros((1, 1), np.float32), seed=0)
    seen = {tuple(data[0]["input_ids"]) for _ in range(50)}
    assert seen == {(1, 2), (3, 4, 5), (6,)}


def test_layerwise_decay_slows_lower_layers(make_tiny_model):
    net = make_tiny_model().model
    groups = layerwise_param_groups(net, 1e-3, 0.5, 0.01)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in net.parameters() if p.requires_grad)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    params = dict(net.named_parameters())
    head = lr_of[id(params["classifier.out_proj.weight"])]
    top = lr_of[id(params["roberta.encoder.layer.1.attention.self.query.weight"])]
    bottom = lr_of[id(params["roberta.encoder.layer.0.attention.self.query.weight"])]
    emb = lr_of[id(params["roberta.embeddings.word_embeddings.weight"])]
    assert head == pytest.approx(1e-3) and top == pytest.approx(5e-4) and bottom == pytest.approx(2.5e-4)
    assert emb == pytest.approx(1.25e-4)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(params["roberta.encoder.layer.0.attention.self.query.bias"]) in no_decay
    assert len({g["lr"] for g in layerwise_param_groups(net, 1e-3, 1.0, 0.01)}) == 1


def test_fit_with_augmentation_and_llrd_learns(make_tiny_model, esol50):
    model = make_tiny_model()
    before = model.predict(esol50["smiles"])["logS_pred"].to_numpy()
    model.fit(esol50["smiles"], esol50["logS"].to_numpy(float),
              config=TrainConfig(epochs=3, batch_size=16, augment=3, layer_lr_decay=0.8, progress=False,
                                 learning_rate=1e-3))
    after = model.predict(esol50["smiles"])["logS_pred"].to_numpy()
    y = esol50["logS"].to_numpy()
    assert np.mean((after - y) ** 2) < np.mean((before - y) ** 2)


def test_calibrated_interval_covers_ninety_percent():
    rng = np.random.default_rng(0)
    sd = rng.uniform(0.2, 1.0, size=(4000, 1))
    pred = np.zeros_like(sd)
    y = rng.normal(0, 2 * sd)  # the spread is half the true error scale: too narrow as it is
    scale = calibrate_interval(y[:2000], pred[:2000], sd[:2000])[0]
    assert scale == pytest.approx(2 * 1.645, rel=0.1)
    m = uncertainty_metrics(y[2000:, 0], pred[2000:, 0], sd[2000:, 0], scale)
    assert m["coverage_90"] == pytest.approx(0.9, abs=0.03)
    assert m["spearman_sd_abs_error"] > 0.2, "a bigger spread goes with bigger errors here"
    raw = uncertainty_metrics(y[2000:, 0], pred[2000:, 0], sd[2000:, 0])
    assert raw["coverage_90"] < 0.7, "uncalibrated, the too-narrow spread under-covers"


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, esol50_path):
    out = tmp_path_factory.mktemp("ensemble_run")
    data = DataConfig(str(esol50_path), smiles_col="smiles", target_cols=["logS"], task="regression",
                      fractions=(0.6, 0.2, 0.2))
    train = TrainConfig(epochs=2, batch_size=16, ensemble=2, tta=2, progress=False)
    return run_finetune(data, "random:tiny", train, out)


def test_ensemble_run_saves_members_and_reports_uncertainty(ensemble_run):
    model_dir = ensemble_run.model_dir
    assert json.loads((model_dir / "ensemble.json").read_text())["members"] == ["member_0", "member_1"]
    assert not (ensemble_run.out_dir / "checkpoints").exists()
    test = ensemble_run.metrics["test"]
    assert set(test["uncertainty"]["logS"]) >= {"spearman_sd_abs_error", "coverage_90", "interval_scale"}
    preds = pd.read_csv(ensemble_run.out_dir / "test_predictions.csv")
    assert {"logS_pred", "logS_sd", "logS_pi90_low", "logS_pi90_high"} <= set(preds.columns)
    assert (preds["logS_sd"] > 0).all()
    assert (preds["logS_pi90_low"] < preds["logS_pred"]).all() and (preds["logS_pred"] < preds["logS_pi90_high"]).all()


def test_ensemble_predicts_every_row_with_a_spread(ensemble_run):
    predictor = load_predictor(ensemble_run.model_dir)
    # one loader builds the composition the folder describes: the uncertainty around trees around augmentation
    # around the members; the uncertainty reads the members' spread too
    assert isinstance(predictor, Uncertain) and isinstance(predictor.inner, TreeBlend)
    assert isinstance(predictor.inner.inner, Augmented)
    assert predictor.meta.uncertainty["signals"][:3] == ["spread", "disagreement", "dissimilarity"]
    assert isinstance(predictor.find(SmilesEnsemble), SmilesEnsemble)
    assert predictor.meta.tta == 2 and predictor.meta.ensemble_size == 2
    out = predictor.predict(["CCO", "C1CC", "c1ccccc1O"])
    assert out["error"].tolist()[0] == "" and "invalid SMILES" in out["error"][1]
    assert np.isnan(out.loc[1, "logS_sd"]) and out.loc[[0, 2], "logS_sd"].gt(0).all()
    # the mean over members and spellings is what each member predicts, averaged
    members = [m.predict(["CCO"])["logS_pred"][0] for m in predictor.members]
    assert not np.isclose(members[0], members[1]), "members differ (different seeds)"
    same = SmilesModel.from_pretrained(ensemble_run.model_dir).predict(["CCO", "C1CC", "c1ccccc1O"])
    # float32 noise of a first forward pass shows in the spread, and the interval scale multiplies it
    pd.testing.assert_frame_equal(same, out, check_exact=False, rtol=1e-3)


def test_predict_cli_on_an_ensemble_keeps_rows(ensemble_run, tmp_path):
    pd.DataFrame({"smiles": ["CCO", "not a smiles", "CCN"]}).to_csv(tmp_path / "in.csv", index=False)
    result = CliRunner().invoke(app, ["predict", str(ensemble_run.model_dir), "--data", str(tmp_path / "in.csv"),
                                      "--out", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["smiles"].tolist() == ["CCO", "not a smiles", "CCN"]
    assert out["logS_sd"].notna().tolist() == [True, False, True]


def test_single_model_without_tta_has_no_spread_columns(tiny_regressor_dir):
    out = load_predictor(tiny_regressor_dir).predict(["CCO"])
    assert list(out.columns) == ["logS_pred", "error"]


def test_evaluate_reports_the_spread_quality_of_an_ensemble(ensemble_run, esol50, tmp_path):
    from smilesformer import run_evaluate

    table = pd.concat([esol50, pd.DataFrame({"smiles": ["C1CC"], "logS": [0.0]})], ignore_index=True)
    table.to_csv(tmp_path / "labelled.csv", index=False)
    result = run_evaluate(ensemble_run.model_dir, tmp_path / "labelled.csv", out_dir=tmp_path / "eval")
    assert result.metrics["invalid_rows"] == 1
    quality = result.metrics["uncertainty"]["logS"]
    assert quality["n"] == 50 and 0 <= quality["coverage_90"] <= 1 and quality["mean_interval_width"] > 0
    assert -1 <= quality["spearman_sd_abs_error"] <= 1
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["uncertainty"] == result.metrics["uncertainty"]


def test_every_entry_point_reads_an_ensemble_with_trees(ensemble_run, tmp_path):
    """One loader: the Python API, streaming, the service, explain and embed all take the composed folder."""
    from fastapi.testclient import TestClient

    from smilesformer import embed, stream_predict
    from smilesformer.serve import ServeConfig, create_app

    folder = ensemble_run.model_dir
    smiles = ["CCO", "C1CC", "c1ccccc1O"]
    expected = load_predictor(folder).predict(smiles)
    pd.DataFrame({"smiles": smiles}).to_csv(tmp_path / "in.csv", index=False)
    stream_predict(folder, tmp_path / "in.csv", tmp_path / "out.csv")
    streamed = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert np.allclose(pd.to_numeric(streamed["logS_pred"], errors="coerce"), expected["logS_pred"], atol=1e-4,
                       equal_nan=True)
    with TestClient(create_app(folder, ServeConfig(torch_threads=1))) as client:
        served = client.post("/predict", json={"smiles": smiles}).json()["results"]
    assert served[0]["predictions"]["logS_pred"] == pytest.approx(expected["logS_pred"][0], rel=1e-4)
    # the spread is a small difference of near-equal outputs: float32 padding noise shows in its last digits
    assert served[0]["predictions"]["logS_sd"] == pytest.approx(expected["logS_sd"][0], abs=1e-4)
    assert served[1]["error"].startswith("invalid SMILES")
    pytest.importorskip("captum")
    result = CliRunner().invoke(app, ["explain", str(folder), "--smiles", "CCO", "--out", str(tmp_path / "x"),
                                      "--steps", "8"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "x" / "explanation.json").read_text())
    assert summary["prediction"]["logS_pred"] == pytest.approx(expected["logS_pred"][0], rel=1e-4)
    assert summary["blend"]["transformer_weight"] == ensemble_run.metrics["tree_weights"][0]
    assert embed(str(folder), smiles).valid.tolist() == [True, False, True]


def test_interval_is_calibrated_on_the_blend_over_the_valid_set(ensemble_run, esol50_path):
    """The valid set's outputs are taken once for the blend weights and the uncertainty: the saved error model and
    interval scale are what the loaded predictor's blended outputs and signals on the valid rows fit to."""
    from smilesformer.uncertainty import POOLED, fit_regression

    predictor = load_predictor(ensemble_run.model_dir)
    split = pd.read_csv(ensemble_run.out_dir / "split.csv")
    labels = pd.read_csv(esol50_path)["logS"].to_numpy(float)
    valid = split[split["split"] == "valid"]
    smiles = valid["smiles"].tolist()
    mean, signals = predictor.inner.signals(smiles)
    signals.update(predictor.reference.signals(smiles, mean, signals.pop(POOLED))[1])
    weights, scales = fit_regression(labels[valid["row"].to_numpy()].reshape(-1, 1), mean, signals,
                                     predictor.meta.uncertainty["signals"], seed=0)
    np.testing.assert_allclose(predictor.meta.interval_scale, scales, rtol=1e-3)
    np.testing.assert_allclose(predictor.meta.uncertainty["weights"], weights, rtol=1e-3, atol=1e-6)


def test_fine_tuning_predicts_the_valid_set_once(make_tiny_model, esol50, monkeypatch):
    calls = spy_lengths(monkeypatch, Augmented, "forward")
    model = make_tiny_model()
    model.fit(esol50["smiles"][:30], esol50["logS"][:30].to_numpy(float), esol50["smiles"][30:],
              esol50["logS"][30:].to_numpy(float),
              config=TrainConfig(epochs=1, batch_size=16, ensemble=2, tta=2, trees="gbm", progress=False))
    assert calls == [len(esol50) - 30], "one pass of the ensemble over the valid set serves blend and interval"
