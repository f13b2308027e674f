"""The optional head that joins RDKit descriptors to the pooled embedding (``--descriptors rdkit``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import wait

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from smilesformer import SmilesModel, TrainConfig, load_dataset
from smilesformer.config import DataConfig
from smilesformer.data import SmilesformerError
from smilesformer.descriptors import (
    RobertaWithDescriptorsForSequenceClassification,
    compute_descriptors,
    descriptor_block,
    descriptor_names,
    uses_descriptors,
)

from .conftest import needs_shared_data, served_explanation

QUICK = TrainConfig(epochs=2, batch_size=16, progress=False, trees="none")  # the transformer alone


@pytest.fixture
def make_descriptor_model(tiny_tokenizer):
    def make(task: str = "regression", targets=("logS",), n_classes: int = 2, seed: int = 0) -> SmilesModel:
        return SmilesModel.from_scratch("tiny", task, list(targets), n_classes, tokenizer=tiny_tokenizer, seed=seed,
                                        descriptors="rdkit")

    return make


def test_compute_descriptors_matches_rdkit_and_marks_what_it_cannot_compute():
    names = descriptor_names("rdkit")
    assert len(names) > 200 and "MolLogP" in names and "TPSA" in names
    values = compute_descriptors(["CCO", "not a smiles", " c1ccccc1O "], ["MolWt", "MolLogP"])
    assert values.shape == (3, 2)
    assert values[0, 0] == pytest.approx(Descriptors.MolWt(Chem.MolFromSmiles("CCO")))
    assert values[2, 1] == pytest.approx(Crippen.MolLogP(Chem.MolFromSmiles("c1ccccc1O"))), "input is stripped"
    assert np.isnan(values[1]).all(), "an unparsable SMILES gives NaN, not an exception"
    with pytest.raises(SmilesformerError, match="NoSuchDescriptor"):
        compute_descriptors(["CCO"], ["MolWt", "NoSuchDescriptor"])
    with pytest.raises(SmilesformerError, match="unknown descriptor set"):
        descriptor_names("mordred")


def test_every_descriptor_equals_rdkits_own_call():
    """The block computes E-state indices once per molecule (``force=False``); each value is still RDKit's."""
    from smilesformer.descriptors import descriptor_block

    smiles = ["CCCCC[C@@H](Br)CC", "OC(=O)c1ccccc1O", "C[N+](C)(C)C.[Cl-]", "CP(=O)(O)O", "OB(O)c1ccccc1", "FC(F)F"]
    names = descriptor_names("rdkit")
    ours = descriptor_block(smiles, names)
    functions = dict(Descriptors._descList)
    theirs = np.array([[functions[n](Chem.MolFromSmiles(s)) for n in names] for s in smiles], dtype=float)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0, equal_nan=True)
    assert not np.isnan(ours[:, names.index("MinAbsEStateIndex")]).any()


def test_descriptor_model_trains_predicts_and_reloads(make_descriptor_model, esol50, tmp_path):
    model = make_descriptor_model()
    assert isinstance(model.model, RobertaWithDescriptorsForSequenceClassification)
    smiles, y = esol50["smiles"].tolist(), esol50["logS"].to_numpy(float)
    model.fit(smiles[:40], y[:40], smiles[40:], y[40:], QUICK)
    raw = compute_descriptors(smiles[:40], model.model.config.descriptor_names)
    expected_center = np.nan_to_num(np.nanmedian(raw, axis=0))
    assert np.allclose(model.model.descriptor_center.numpy(), expected_center, rtol=1e-5, atol=1e-4), \
        "scaling is fitted on the training molecules"

    table = model.predict(smiles[40:] + ["C1CC"])
    assert len(table) == 11 and table["logS_pred"][:10].notna().all()
    assert np.isnan(table["logS_pred"][10]) and "invalid SMILES" in table["error"][10]

    folder = model.save_pretrained(tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "smilesformer-roberta-descriptors"
    again = SmilesModel.from_pretrained(folder)
    assert isinstance(again.model, RobertaWithDescriptorsForSequenceClassification)
    assert torch.equal(again.model.descriptor_scale, model.model.descriptor_scale)
    assert np.allclose(again.predict(smiles[40:])["logS_pred"], table["logS_pred"][:10], atol=1e-5)
    assert isinstance(AutoModelForSequenceClassification.from_pretrained(folder),
                      RobertaWithDescriptorsForSequenceClassification), "registered with the Auto classes"


def test_descriptors_change_the_prediction(make_descriptor_model, esol50):
    """The head reads the descriptors: the same tokens with other descriptors give another output."""
    model = make_descriptor_model()
    net = model.model.eval()
    ids = model.tokenizer(["CCO"], return_tensors="pt")
    d = torch.tensor(compute_descriptors(["CCO"], net.config.descriptor_names), dtype=torch.float32)
    with torch.no_grad():
        a = net(**ids, descriptors=d).logits
        b = net(**ids, descriptors=d + 5.0).logits
        bare = net(**ids, output_hidden_states=True)
    assert not torch.allclose(a, b)
    assert bare.logits is None and len(bare.hidden_states) == 3, "no descriptors: the encoder still runs"
    with pytest.raises(SmilesformerError, match="descriptors="):
        net(**ids, labels=torch.zeros(1, 1))


def test_pretrained_encoder_keeps_its_weights_under_the_descriptor_head(tiny_regressor_dir):
    plain = SmilesModel.from_pretrained(tiny_regressor_dir)
    joined = SmilesModel.from_pretrained(tiny_regressor_dir, task="classification", targets=["a", "b"],
                                         descriptors="rdkit")
    assert uses_descriptors(joined.model) and not uses_descriptors(plain.model)
    base, new = plain.model.state_dict(), joined.model.state_dict()
    encoder = [k for k in base if k.startswith("roberta.")]
    assert encoder and all(torch.equal(base[k], new[k]) for k in encoder)
    assert joined.model.classifier.out_proj.out_features == 2
    assert torch.equal(joined.model.descriptor_scale, torch.ones_like(joined.model.descriptor_scale))


def test_descriptor_head_refuses_what_it_cannot_do(tmp_path, esol50):
    bert = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64))
    bert.save_pretrained(tmp_path / "bert")
    with pytest.raises(SmilesformerError, match="RoBERTa"):
        SmilesModel.from_pretrained(tmp_path / "bert", task="regression", targets=["y"], descriptors="rdkit")
    tokenizer = SmilesModel.from_scratch("tiny", "regression", ["y"], vocab_smiles=esol50["smiles"]).tokenizer
    tokenizer.save_pretrained(tmp_path / "bert")
    auto = SmilesModel.from_pretrained(tmp_path / "bert", task="regression", targets=["y"], descriptors="auto")
    assert isinstance(auto.model, BertForSequenceClassification), "auto: the plain head where descriptors cannot go"
    assert uses_descriptors(SmilesModel.from_scratch("tiny", "regression", ["y"], vocab_smiles=esol50["smiles"],
                                                     descriptors="auto").model), "auto: descriptors on RoBERTa"
    with pytest.raises(SmilesformerError, match="unknown descriptor set"):
        SmilesModel.from_scratch("tiny", "regression", ["y"], vocab_smiles=esol50["smiles"], descriptors="maccs")
    with pytest.raises(ValueError, match="descriptors must be"):
        TrainConfig(descriptors="yes")


def test_explain_and_embed_a_descriptor_model(make_descriptor_model, esol50):
    from smilesformer.embeddings import EmbedConfig, Pooling, embed
    from smilesformer.explain import extract_attention, head_importance, integrated_gradients

    model = make_descriptor_model()
    model.fit(esol50["smiles"][:30].tolist(), esol50["logS"][:30].to_numpy(float), config=QUICK)
    result = integrated_gradients(model, "CCOc1ccccc1", n_steps=64)
    assert result.completeness_gap < 0.05 * max(1.0, abs(result.value - result.baseline_value))
    assert abs(result.value - float(model.predict(["CCOc1ccccc1"])["logS_pred"][0])) < 1e-4, \
        "the explained value is the prediction, descriptors included"
    importance, objective = head_importance(model, esol50["smiles"][:8].tolist())
    assert importance.shape == (2, 2) and objective == "output" and (importance > 0).any()
    assert extract_attention(model, "CCO")[0].weights.shape[:2] == (2, 2)
    vectors = embed(model, ["CCO", "C1CC", "c1ccccc1"], EmbedConfig(pooling=Pooling.head)).vectors
    assert vectors.shape == (3, 32) and np.isfinite(vectors[[0, 2]]).all() and np.isnan(vectors[1]).all()


@needs_shared_data
def test_descriptor_head_learns_what_tokens_alone_do_not(tiny_tokenizer):
    """Target: Crippen logP, which RDKit computes exactly. A tiny encoder from random weights learns it
    poorly from tokens in a few seconds of training; with the descriptors joined it fits it closely."""
    smiles = load_dataset(DataConfig("esol", bad_input="skip")).table["smiles"].tolist()[:400]
    logp = np.array([Crippen.MolLogP(Chem.MolFromSmiles(s)) for s in smiles])
    config = TrainConfig(epochs=20, batch_size=32, learning_rate=1e-3, progress=False, trees="none")
    scores = {}
    for kind in ("none", "rdkit"):
        model = SmilesModel.from_scratch("tiny", "regression", ["logP"], tokenizer=tiny_tokenizer, seed=0,
                                         descriptors=kind)
        model.fit(smiles[:300], logp[:300], config=config)
        scores[kind] = model.evaluate(smiles[300:], logp[300:])["mean"]["r2"]
    assert scores["rdkit"] > 0.9, scores
    assert scores["rdkit"] > scores["none"] + 0.1, scores


def test_cli_finetunes_and_predicts_with_descriptors(tmp_path, esol50_path):
    from typer.testing import CliRunner

    from smilesformer.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["finetune", "--data", str(esol50_path), "--target", "logS", "--model", "random:tiny",
                                 "--descriptors", "rdkit", "--epochs", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["descriptors"] == "rdkit" and np.isfinite(metrics["test"]["mean"]["rmse"])
    (tmp_path / "in.csv").write_text("smiles\nCCO\nC1CC\nc1ccccc1\n")
    result = runner.invoke(app, ["predict", str(tmp_path / "run" / "model"), "--data", str(tmp_path / "in.csv"),
                                 "--out", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert out["smiles"].tolist() == ["CCO", "C1CC", "c1ccccc1"] and out["error"][1].startswith("invalid SMILES")
    result = runner.invoke(app, ["finetune", "--data", str(esol50_path), "--target", "logS", "--model", "random:tiny",
                                 "--descriptors", "maccs", "--out", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "descriptors must be 'auto', 'none', 'rdkit' or 'fast'" in result.output


def test_ensemble_with_tta_reads_each_molecules_descriptors_once(tmp_path, esol50_path, monkeypatch):
    from smilesformer import DataConfig, load_predictor, run_finetune
    from smilesformer import rdkit_descriptors as module

    data = DataConfig(str(esol50_path), smiles_col="smiles", target_cols=["logS"], task="regression",
                      fractions=(0.6, 0.2, 0.2))
    train = TrainConfig(epochs=2, batch_size=16, ensemble=2, tta=3, descriptors="rdkit", progress=False)
    result = run_finetune(data, "random:tiny", train, tmp_path / "run")
    predictor = load_predictor(result.model_dir)
    assert all(uses_descriptors(m.model) for m in predictor.members)
    seen: list[tuple[str, ...]] = []
    compute = module.descriptor_block

    def counting(smiles, names):
        seen.append(tuple(smiles))
        return compute(smiles, names)

    module.clear_descriptor_cache()
    monkeypatch.setattr(module, "descriptor_block", counting)
    table = predictor.predict(["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"])
    assert (table["logS_sd"] > 0).all() and table["error"].eq("").all()
    assert seen == [("CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1")], \
        "2 members x 4 spellings share one descriptor computation, from the SMILES as given"


def test_serve_predicts_and_explains_a_descriptor_model(make_descriptor_model, esol50, tmp_path):
    model = make_descriptor_model()
    model.fit(esol50["smiles"][:30].tolist(), esol50["logS"][:30].to_numpy(float), config=QUICK)
    folder = model.save_pretrained(tmp_path / "model")
    explained = served_explanation(model, folder, "c1ccccc1O")
    assert explained["error"] is None and len(explained["atom_attributions"]) == 7


def test_long_inputs_use_a_process_pool_with_the_same_result(monkeypatch, esol50):
    from smilesformer import rdkit_descriptors as module

    smiles = tuple(esol50["smiles"]) + ("C1CC",)
    names = tuple(descriptor_names("rdkit"))
    serial = module.descriptor_block(smiles, names)
    monkeypatch.delenv(module.WORKERS_ENV, raising=False)
    monkeypatch.setattr(module, "_pool_allowed", False)  # as in a fresh process; the CLI tests allow it
    assert module.descriptor_workers() == 1, "a library call stays serial unless allowed"
    module.allow_process_pool()
    assert module.descriptor_workers() >= 1
    monkeypatch.setenv(module.WORKERS_ENV, "2")
    monkeypatch.setattr(module, "PARALLEL_MIN", 10)
    module.clear_descriptor_cache()
    pooled = compute_descriptors(smiles, names)
    module.clear_descriptor_cache()
    assert list(module._POOLS) == [2], "the pool was used (and is kept for the next call)"
    assert np.array_equal(pooled, serial, equal_nan=True) and np.isnan(pooled[-1]).all()
    module.shutdown_pool()
    assert not module._POOLS, "the pool's owner stops it"


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads processes from /proc (Linux)")
def test_descriptor_workers_end_when_their_parent_is_killed(tmp_path):
    """A SIGKILLed predict must not leave its descriptor workers running (atexit does not run on SIGKILL)."""
    script = tmp_path / "parent.py"
    script.write_text(
        "from smilesformer import rdkit_descriptors as d\n"
        "if __name__ == '__main__':  # spawned workers import this module again\n"
        "    d.allow_process_pool()\n"
        "    names = d.descriptor_names('fast')\n"
        "    # distinct molecules: repeats are computed once, and fewer than PARALLEL_MIN would stay serial\n"
        "    smiles = ['C' * (k % 40 + 1) + 'O' + 'C' * (k // 40) for k in range(d.PARALLEL_MIN)]\n"
        "    d.compute_descriptors(smiles, names)\n"
        "    print(' '.join(str(p) for p in d._POOLS[2]._processes), flush=True)\n"
        "    while True:\n"
        "        smiles = [s + 'C' for s in smiles]\n"
        "        d.compute_descriptors(smiles, names)\n"
    )
    env = {**os.environ, "SMILESFORMER_DESCRIPTOR_WORKERS": "2", "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    workers: list[int] = []
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), "descriptor workers outlived their parent"
    finally:
        parent.kill()
        for pid in filter(_alive, workers):  # when the test fails, do not leave them running
            os.kill(pid, signal.SIGKILL)


def test_descriptors_of_validated_molecules_print_no_rdkit_warnings(capfd):
    """RDKit's "not removing hydrogen atom without neighbors", seen on salts with hydride, is noise here."""
    from smilesformer.descriptors import descriptor_block, descriptor_names

    values = descriptor_block(["[Na+].[H-]", "[H]Cl", "CCO"], descriptor_names("rdkit"))
    assert np.isfinite(values[2]).all()
    assert "not removing hydrogen" not in capfd.readouterr().err


def test_the_fast_set_feeds_the_head_and_the_trees(tmp_path, esol50, tiny_tokenizer):
    """descriptors="fast": the head and the blended trees read the same 157 descriptors, computed once, and the
    folder reloads to the same predictions; asking such a model for another head is refused."""
    from smilesformer import SmilesformerError, SmilesModel, TrainConfig
    from smilesformer.descriptors import descriptor_names
    from smilesformer.predictors import TreeBlend

    model = SmilesModel.from_scratch("tiny", "regression", ["logS"], tokenizer=tiny_tokenizer, descriptors="fast")
    smiles, y = esol50["smiles"].tolist(), esol50["logS"].to_numpy(float)
    model.fit(smiles[:40], y[:40], smiles[40:], y[40:],
              config=TrainConfig(epochs=1, batch_size=20, progress=False, descriptors="fast", trees="gbm"))
    fast = descriptor_names("fast")
    assert model.model.config.descriptor_names == fast and len(fast) < len(descriptor_names("rdkit"))
    assert model.find(TreeBlend).trees.descriptor_names == fast
    folder = model.save_pretrained(tmp_path / "model")
    again = SmilesModel.from_pretrained(folder)
    np.testing.assert_allclose(again.predict(smiles[40:])["logS_pred"], model.predict(smiles[40:])["logS_pred"],
                               rtol=1e-5)
    with pytest.raises(SmilesformerError, match="another head than this model has \\(fast\\)"):
        SmilesModel.from_scratch("tiny", "regression", ["logS"], tokenizer=tiny_tokenizer, descriptors="fast").fit(
            smiles[:10], y[:10], config=TrainConfig(epochs=1, progress=False, descriptors="rdkit"))


def test_descriptors_are_kept_per_molecule_across_lists(monkeypatch):
    """The cache keys molecules, not argument lists: a later list computes only the molecules it has not seen."""
    from smilesformer import rdkit_descriptors as module

    names = ["MolWt", "TPSA"]
    module.clear_descriptor_cache()
    seen: list[tuple[str, ...]] = []
    compute = module.descriptor_block

    def counting(smiles, names):
        seen.append(tuple(smiles))
        return compute(smiles, names)

    monkeypatch.setattr(module, "descriptor_block", counting)
    first = compute_descriptors(["CCO", "c1ccccc1O"], names)
    second = compute_descriptors(["c1ccccc1O", "CCN", "CCO", "CCN"], names)
    assert seen == [("CCO", "c1ccccc1O"), ("CCN",)], "a molecule seen before, or twice in a list, is computed once"
    assert np.array_equal(second, compute(["c1ccccc1O", "CCN", "CCO", "CCN"], names))
    assert np.array_equal(first, second[[2, 0]])
    compute_descriptors(["CCO"], ["MolWt"])
    assert seen[-1] == ("CCO",), "another descriptor list is kept apart"


def test_prefetched_descriptors_are_collected_not_recomputed(monkeypatch, esol50):
    from smilesformer import rdkit_descriptors as module

    smiles = esol50["smiles"].tolist() + ["C1CC"]
    names = descriptor_names("fast")
    serial = module.descriptor_block(smiles, names)
    module.clear_descriptor_cache()
    monkeypatch.setenv(module.WORKERS_ENV, "2")
    module.prefetch_descriptors(smiles, names)  # returns at once; the pool computes
    pending = module._CACHE.pending[tuple(names)]
    assert len(pending) == len(smiles)
    wait([future for future, _ in pending.values()])  # the pool pickles its calls in a thread of its own

    def refuse(smiles, names):
        raise AssertionError(f"recomputed {len(smiles)} prefetched molecule(s) in the calling process")

    monkeypatch.setattr(module, "descriptor_block", refuse)
    got = compute_descriptors(smiles[::-1], names)
    assert np.array_equal(got, serial[::-1], equal_nan=True) and np.isnan(got[0]).all()
    assert not module._CACHE.pending[tuple(names)], "collected futures are dropped"
    module.shutdown_pool()


def test_the_mtr_set_is_rdkits_own_values_computed_by_family():
    from rdkit import Chem
    from rdkit.Chem import Descriptors, rdMolDescriptors

    names = descriptor_names("mtr")
    assert len(names) == len(set(names)) == 85
    smiles = ["CC(=O)Oc1ccccc1C(=O)O", "C[C@@H]([NH3+])C(=O)[O-]", "[13CH3]OP(=O)(O)O", "Brc1ccc2[nH]ccc2c1.[Na+]",
              "O=C1CCCN1", "C1CC2CCC1C2", "ClC(Cl)(Cl)Cl"]
    values = descriptor_block(smiles, names)
    registry = dict(Descriptors._descList)
    for i, text in enumerate(smiles):
        mol = Chem.MolFromSmiles(text)
        mqn = rdMolDescriptors.MQNs_(mol)
        expected = [mqn[int(n[3:]) - 1] if n.startswith("MQN") else registry[n](mol) for n in names]
        np.testing.assert_allclose(values[i], expected, rtol=1e-12, err_msg=text)
