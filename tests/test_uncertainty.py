"""The uncertainty and domain check fitted on the validation set (``smilesformer.uncertainty``)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from smilesformer import SmilesformerError, SmilesModel, SmilesRegressor, TrainConfig, load_predictor
from smilesformer.evaluate import domain_metrics, expected_spearman, retention_curve, uncertainty_metrics
from smilesformer.predictors import Uncertain
from smilesformer.serve import ServeConfig, create_app
from smilesformer.tasks import META_FILE
from smilesformer.uncertainty import (
    REFERENCE_FILE,
    Reference,
    calibrate,
    choose_domain_threshold,
    embedding_distance,
    fit_calibration,
    fit_regression,
    predicted_sd,
    signal_matrix,
)

QUICK = TrainConfig(epochs=2, batch_size=16, progress=False, descriptors="none")


def test_similarities_match_rdkit_tanimoto_and_come_largest_first(esol50):
    smiles = esol50["smiles"].tolist()
    reference = Reference.from_smiles(smiles[:40])
    query = smiles[38:45] + ["not a smiles"]
    got = reference.nearest(query, k=3, chunk=16)[0]  # several chunks of the reference
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    ref_fps = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles[:40]]
    for i, s in enumerate(query[:-1]):
        expected = sorted(DataStructs.BulkTanimotoSimilarity(generator.GetFingerprint(Chem.MolFromSmiles(s)), ref_fps),
                          reverse=True)[:3]
        np.testing.assert_allclose(got[i], expected, atol=1e-6)
    assert got[0, 0] == pytest.approx(1.0) and got[1, 0] == pytest.approx(1.0), "a training molecule is its own match"
    assert (got[-1] == 0).all(), "an unreadable SMILES is like nothing"


def test_neighbour_signals_read_the_nearest_training_labels(esol50):
    smiles = esol50["smiles"].tolist()
    labels = np.arange(len(smiles), dtype=float)[:, None]
    reference = Reference.from_smiles(smiles + smiles[:3], np.vstack([labels, labels[:3] + 100]))
    assert len(reference) == len(smiles) and reference.labels[0, 0] == 0, "a repeated molecule: its first row"
    sims, where = reference.nearest(smiles[:4], k=5)
    similarity, signals = reference.signals(smiles[:4], mean=np.zeros((4, 1)))
    np.testing.assert_allclose(similarity, sims[:, 0])
    w = sims[0]
    centre = (w * where[0]).sum() / w.sum()  # labels are the positions here
    assert signals["neighbour_disagreement"][0, 0] == pytest.approx(centre, rel=1e-5)
    assert signals["neighbour_spread"][0, 0] == pytest.approx(np.sqrt((w * (where[0] - centre) ** 2).sum() / w.sum()),
                                                              rel=1e-5)
    assert set(reference.signals(smiles[:4])[1]) == {"dissimilarity", "size"}, "no predictions: no neighbour signals"
    assert signals["size"][0] == Chem.MolFromSmiles(smiles[0]).GetNumHeavyAtoms()


def test_reference_is_bounded_and_saved_as_arrays_only(tmp_path, esol50, monkeypatch):
    import smilesformer.uncertainty as unc

    monkeypatch.setattr(unc, "MAX_REFERENCE", 10)
    reference = unc.Reference.from_smiles(esol50["smiles"].tolist(), seed=1)
    assert len(reference) == 10 and reference.packed.shape == (10, 256)  # 256 bytes per molecule
    reference.save(tmp_path)
    assert (Reference.load(tmp_path).packed == reference.packed).all() and Reference.load(tmp_path).labels is None
    with_labels = unc.Reference.from_smiles(esol50["smiles"].tolist()[:5], np.arange(5.0))
    with_labels.save(tmp_path)
    np.testing.assert_array_equal(Reference.load(tmp_path).labels[:, 0], np.arange(5.0))
    (tmp_path / REFERENCE_FILE).unlink()
    with pytest.raises(SmilesformerError, match="copy the whole model folder"):
        Reference.load(tmp_path)


def test_embedding_distance_is_the_mean_cosine_distance_to_the_nearest_reference_vectors(tmp_path):
    rng = np.random.default_rng(0)
    ref, query = rng.normal(size=(50, 8)), rng.normal(size=(7, 8))
    got = embedding_distance(ref, query, k=3, chunk=16)  # several chunks of the reference
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cos = unit(query) @ unit(ref).T
    np.testing.assert_allclose(got, 1 - np.sort(cos, axis=1)[:, -3:].mean(axis=1), atol=1e-5)
    assert embedding_distance(ref, ref[:2] * 5.0, k=1) == pytest.approx(0.0, abs=1e-5), "scale does not matter"
    packed = np.zeros((50, 256), dtype=np.uint8)
    Reference(packed, embeddings=ref).save(tmp_path)
    loaded = Reference.load(tmp_path)
    assert loaded.embeddings.dtype == np.float16  # 2 bytes per dimension per molecule
    np.testing.assert_allclose(embedding_distance(loaded.embeddings, query, k=3), got, atol=2e-3)


def test_the_embedding_signal_reads_the_pooled_vector_the_head_reads(uncertain_dir, esol50):
    """The vector taken in the prediction's own forward pass is the one ``embed(pooling='head')`` gives, and the
    reference keeps the training molecules' ones: a training molecule is at distance 0 from itself."""
    from smilesformer.embeddings import EmbedConfig, embed
    from smilesformer.uncertainty import POOLED

    model = load_predictor(uncertain_dir)
    smiles = esol50["smiles"][:6].tolist()
    mean, signals = model.inner.signals(smiles)
    expected = embed(uncertain_dir, smiles, EmbedConfig(pooling="head")).vectors
    np.testing.assert_allclose(signals[POOLED], expected, rtol=1e-4, atol=1e-5)
    _, near = model.reference.signals(smiles, mean, signals[POOLED])  # the fixture trained on the first 30
    nearest = embedding_distance(model.reference.embeddings, signals[POOLED], k=1)
    assert near["embedding"].shape == (6,) and (near["embedding"] >= nearest - 1e-6).all()
    np.testing.assert_allclose(nearest, 0.0, atol=2e-3, err_msg="a training molecule's nearest vector is its own")


def _synthetic(n: int, seed: int):
    """Errors whose sd grows with the first signal; the second signal is noise."""
    rng = np.random.default_rng(seed)
    signals = {"disagreement": rng.uniform(0, 2, (n, 1)), "dissimilarity": rng.uniform(0, 1, n)}
    sd = 0.1 + signals["disagreement"][:, 0]
    y = rng.normal(0, sd)[:, None]
    return y, np.zeros((n, 1)), signals, sd


def test_the_error_model_weights_the_signal_that_carries_the_error_and_its_interval_covers_90_percent():
    names = ["disagreement", "dissimilarity"]
    y, mean, signals, _ = _synthetic(400, 0)
    weights, scales = fit_regression(y, mean, signals, names, seed=0)
    intercept, w_disagreement, w_noise = weights[0]
    assert w_disagreement > 5 * max(w_noise, 1e-3)
    y2, mean2, signals2, true_sd = _synthetic(4000, 1)  # new molecules from the same distribution
    sd = predicted_sd(weights[0], signal_matrix(signals2, names, 0))
    covered = np.abs(y2[:, 0]) <= scales[0] * sd
    assert 0.86 <= covered.mean() <= 0.94
    assert np.corrcoef(sd, true_sd)[0, 1] > 0.95


def test_the_domain_threshold_flags_the_molecules_with_larger_errors():
    rng = np.random.default_rng(0)
    similarity = rng.uniform(0.1, 1.0, 300)
    error = np.where(similarity < 0.3, 2.0, 0.5) * rng.uniform(0.5, 1.5, 300)
    threshold, choice = choose_domain_threshold(similarity, error)
    assert 0.2 < threshold <= 0.31 and choice["ratio"] > 2
    flat, choice = choose_domain_threshold(similarity, rng.uniform(0, 1, 300) * 0 + 1.0)
    assert "reason" in choice and flat == pytest.approx(np.quantile(similarity, 0.05))


def test_platt_scaling_calibrates_overconfident_probabilities():
    rng = np.random.default_rng(0)
    true = rng.uniform(0.05, 0.95, 2000)
    y = (rng.uniform(size=2000) < true).astype(float)[:, None]
    logit = np.log(true / (1 - true))
    overconfident = (1 / (1 + np.exp(-3 * logit)))[:, None]
    params = fit_calibration(y[:1000], overconfident[:1000], multiclass=False)
    fixed = calibrate(overconfident[1000:], params, multiclass=False)
    assert params[0][0] == pytest.approx(1 / 3, rel=0.25)
    assert np.mean(np.abs(fixed[:, 0] - true[1000:])) < 0.5 * np.mean(np.abs(overconfident[1000:, 0] - true[1000:]))
    assert fit_calibration(y[:10], overconfident[:10], multiclass=False) == [[]], "too few to fit: left as it is"


def test_a_temperature_calibrates_an_overconfident_multiclass_model():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (3000, 3))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in true], dtype=float)[:, None]
    sharp = np.exp(2 * logits) / np.exp(2 * logits).sum(1, keepdims=True)  # a temperature of 1/2 too sharp
    params = fit_calibration(y[:1500], sharp[:1500], multiclass=True)
    assert params[0][0] == pytest.approx(0.5, rel=0.2)
    fixed = calibrate(sharp[1500:], params, multiclass=True)
    np.testing.assert_allclose(fixed.sum(1), 1.0, rtol=1e-6)
    assert np.abs(fixed - true[1500:]).mean() < 0.5 * np.abs(sharp[1500:] - true[1500:]).mean()


def test_metrics_of_an_uncertainty():
    rng = np.random.default_rng(0)
    sd = rng.uniform(0.1, 2.0, 3000)
    err = rng.normal(0, sd)
    m = uncertainty_metrics(err, np.zeros_like(err), sd, scale=1.6448536)
    assert m["coverage_90"] == pytest.approx(0.9, abs=0.02)
    assert m["spearman_sd_abs_error"] == pytest.approx(m["spearman_expected"], abs=0.05)
    assert m["mae_confident_half_ratio"] < 0.7
    assert expected_spearman(np.full(100, 1.0) + 1e-9 * np.arange(100)) == pytest.approx(0.0, abs=0.1)
    fractions, means = retention_curve(sd, np.abs(err))
    assert fractions[-1] == 1.0 and means[-1] == pytest.approx(np.abs(err).mean()) and means[0] < means[-1]
    d = domain_metrics(np.array([True, True, False, False]), np.array([1.0, 1.0, 3.0, np.nan]))
    assert d == {"n": 3, "flagged": 1, "error_in_domain": 1.0, "error_flagged": 3.0, "ratio": 3.0}


@pytest.fixture(scope="module")
def uncertain_dir(tiny_uncertain_dir):
    return tiny_uncertain_dir


def test_a_model_fitted_with_validation_predicts_an_interval_and_a_domain(uncertain_dir, esol50):
    model = load_predictor(uncertain_dir)
    assert isinstance(model, Uncertain) and (uncertain_dir / REFERENCE_FILE).is_file()
    fit = model.meta.uncertainty
    assert fit["signals"] == ["disagreement", "dissimilarity", "neighbour_spread", "neighbour_disagreement", "size",
                              "embedding"]
    assert fit["reference_size"] == 30 and model.reference.labels.shape == (30, 1)
    hidden = model.members[0].model.config.hidden_size
    assert model.reference.embeddings.shape == (30, hidden) and model.reference.embeddings.dtype == np.float16
    smiles = [esol50["smiles"][0], "not a smiles", esol50["smiles"][45]]
    table = model.predict(smiles)
    assert list(table.columns) == ["logS_pred", "logS_sd", "logS_pi90_low", "logS_pi90_high", "domain_similarity",
                                   "in_domain", "error"]
    assert table["error"][1] and table.iloc[1].drop("error").isna().all(), "a failed row keeps its place"
    ok = table.drop(index=1)
    assert (ok["logS_sd"] > 0).all()
    scale = model.meta.interval_scale[0]
    np.testing.assert_allclose(ok["logS_pi90_high"] - ok["logS_pred"], scale * ok["logS_sd"], rtol=1e-5)
    assert ok["domain_similarity"][0] == pytest.approx(1.0), "a training molecule is in the training set"
    assert ok["in_domain"][0] is True or ok["in_domain"][0] == True  # noqa: E712 (numpy bool)
    again = SmilesModel.from_pretrained(uncertain_dir).predict(smiles)
    pd.testing.assert_frame_equal(table, again)


def test_an_old_model_folder_predicts_and_says_it_has_no_uncertainty(uncertain_dir, tmp_path, esol50, caplog):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(uncertain_dir, old)
    meta = json.loads((old / META_FILE).read_text())
    del meta["uncertainty"]  # as written before uncertainties existed
    meta["interval_scale"] = None
    (old / META_FILE).write_text(json.dumps(meta))
    (old / REFERENCE_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        model = load_predictor(old)
    assert "carries no uncertainty" in caplog.text
    table = model.predict(esol50["smiles"][:3].tolist())
    assert list(table.columns) == ["logS_pred", "error"] and table["logS_pred"].notna().all()


def test_classification_gets_calibrated_probabilities_and_a_confidence(esol50, tiny_tokenizer):
    smiles = esol50["smiles"].tolist()
    labels = (esol50["logS"].to_numpy(float) > esol50["logS"].median()).astype(float)
    model = SmilesModel.from_scratch("tiny", "classification", ["soluble"], tokenizer=tiny_tokenizer, seed=0)
    model.fit(smiles[:25], labels[:25], smiles[25:], labels[25:], config=QUICK)
    table = model.predict(smiles[:5])
    assert list(table.columns) == ["soluble_prob", "soluble_pred", "soluble_confidence", "domain_similarity",
                                   "in_domain", "error"]
    prob = table["soluble_prob"]
    np.testing.assert_allclose(table["soluble_confidence"], np.maximum(prob, 1 - prob))
    inner_prob, _ = model.predictor.inner.outputs(smiles[:5])
    np.testing.assert_allclose(table["soluble_prob"], calibrate(inner_prob, model.meta.uncertainty["calibration"],
                                                                False)[:, 0], rtol=1e-5)


def test_the_regressor_returns_a_std_as_scikit_learn_regressors_do(esol50):
    smiles, y = esol50["smiles"], esol50["logS"].to_numpy(float)
    fast = dict(model="random:tiny", batch_size=16, descriptors="none", trees="none", progress=False, epochs=2)
    regressor = SmilesRegressor(**fast, validation_fraction=0.3).fit(smiles, y)
    mean, std = regressor.predict(smiles[:4], return_std=True)
    assert mean.shape == std.shape == (4,) and (std > 0).all()
    np.testing.assert_allclose(mean, regressor.predict(smiles[:4]))
    bare = SmilesRegressor(**fast, validation_fraction=0.0).fit(smiles, y)
    with pytest.raises(SmilesformerError, match="no uncertainty"):
        bare.predict(smiles[:4], return_std=True)


def test_the_service_returns_the_uncertainty_and_the_domain(uncertain_dir, esol50):
    config = ServeConfig(max_smiles_per_request=8, max_smiles_length=200, torch_threads=1)
    with TestClient(create_app(uncertain_dir, config)) as client:
        body = client.post("/predict", json={"smiles": [esol50["smiles"][0], "not a smiles"]}).json()
        info = client.get("/model").json()
    assert info["columns"] == body["columns"] == ["logS_pred", "logS_sd", "logS_pi90_low", "logS_pi90_high"]
    good, bad = body["results"]
    assert set(good["uncertainty"]) == {"logS_sd", "logS_pi90_low", "logS_pi90_high"}
    interval = good["uncertainty"]
    assert interval["logS_pi90_low"] < good["predictions"]["logS_pred"] < interval["logS_pi90_high"]
    assert good["domain"]["in_domain"] is True and math.isclose(good["domain"]["similarity"], 1.0, rel_tol=1e-6)
    assert bad["domain"] is None and bad["error"]


def test_finetune_evaluate_and_streamed_predict_carry_the_uncertainty(tmp_path, esol50_path):
    from smilesformer import DataConfig, run_evaluate, stream_predict
    from smilesformer.workflow import run_finetune

    data = DataConfig(str(esol50_path), smiles_col="smiles", target_cols=["logS"], task="regression",
                      fractions=(0.5, 0.3, 0.2))
    run = run_finetune(data, "random:tiny", QUICK, tmp_path / "run")
    assert (tmp_path / "run" / "uncertainty.png").is_file()
    quality = run.metrics["test"]["uncertainty"]
    assert {"spearman_expected", "coverage_90", "mae_confident_half_ratio"} <= set(quality["logS"])
    assert quality["domain"]["n"] == run.metrics["n_test"]
    result = run_evaluate(run.model_dir, esol50_path, out_dir=tmp_path / "eval")
    assert (tmp_path / "eval" / "uncertainty.png").is_file() and "domain" in result.metrics["uncertainty"]
    pd.DataFrame({"smiles": ["CCO", "not a smiles", "c1ccccc1O"]}).to_csv(tmp_path / "in.csv", index=False)
    for out in ("out.csv", "out.parquet"):
        stream_predict(run.model_dir, tmp_path / "in.csv", tmp_path / out)
        table = pd.read_csv(tmp_path / out) if out.endswith(".csv") else pd.read_parquet(tmp_path / out)
        assert table["in_domain"].isna().tolist() == [False, True, False], "a failed row has no domain verdict"
        assert table["logS_pi90_low"].notna().tolist() == [True, False, True]
