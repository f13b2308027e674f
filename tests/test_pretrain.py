"""Pretraining: both objectives on a small corpus, resume, caches, bad lines, and the bundled model."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from smilesformer import SmilesModel
from smilesformer.config import PretrainConfig
from smilesformer.descriptors import descriptor_names
from smilesformer.networks import bundled_model_path
from smilesformer.pretrain import MTR_HEAD_FILE, export_model, run_pretrain
from smilesformer.train import Trainer

from .conftest import SHARED_DATA, needs_shared_data


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """500 MOSES SMILES as a CSV column, gzip, with two invalid lines among them."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.csv.gz"
    with gzip.open(SHARED_DATA / "moses_train.csv.gz", "rt") as src, gzip.open(path, "wt") as dst:
        for i, line in enumerate(src):
            dst.write(line)
            if i == 100:
                dst.write("C1CC(\n")
            if i == 500:
                break
        dst.write("not_a_smiles\n")
    return path


def _config(corpus, **kw) -> PretrainConfig:
    base = dict(corpus=str(corpus), smiles_col="SMILES", preset="tiny", batch_size=32, max_steps=12, save_steps=4,
                logging_steps=2, learning_rate=1e-3, progress=False, n_jobs=1)
    base.update(kw)
    return PretrainConfig(**base)


@needs_shared_data
def test_mlm_pretraining_learns_and_reports_bad_lines(corpus, tmp_path):
    model_dir = run_pretrain(_config(corpus, max_steps=40, save_steps=20), tmp_path)
    summary = json.loads((model_dir / "pretrain_summary.json").read_text())
    assert summary["corpus"] == {"read": 502, "invalid": 2, "duplicates": 0, "kept": 500}
    assert summary["tokenizer_coverage"]["roundtrip"] == 1.0
    assert summary["throughput"]["tokens_per_second"] > 0
    history = json.loads((tmp_path / "history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert np.mean(losses[-3:]) < losses[0]  # MLM loss falls from ~ln(vocab)
    invalid = (tmp_path / "cache" / "invalid_lines.tsv").read_text()
    assert "C1CC(" in invalid and "not_a_smiles" in invalid
    for name in ["model.safetensors", "tokenizer.json", "pretrain_config.json", "loss_curve.png"]:
        assert (model_dir / name).is_file(), name
    finetuned = SmilesModel.from_pretrained(model_dir, task="regression", targets=["y"])
    assert finetuned.predict(["CCO"])["y_pred"].notna().all()


@needs_shared_data
def test_mtr_pretraining_caches_descriptors(corpus, tmp_path):
    model_dir = run_pretrain(_config(corpus, objective="mtr", tokenizer="bpe", vocab_size=200), tmp_path)
    stats = json.loads((model_dir / "descriptor_stats.json").read_text())
    assert stats["names"] == descriptor_names("mtr") and stats["n"] == 500
    cache = tmp_path / "cache" / "descriptors.npy"
    values = np.load(cache)
    assert values.shape == (500, len(stats["names"])) and np.nanmax(np.abs(values)) <= 10
    stamp = cache.stat().st_mtime_ns
    run_pretrain(_config(corpus, objective="mtr", tokenizer="bpe", vocab_size=200, max_steps=14), tmp_path)
    assert cache.stat().st_mtime_ns == stamp  # reused, not recomputed


@needs_shared_data
def test_descriptors_resume_after_a_kill(corpus, tmp_path, monkeypatch):
    import smilesformer.pretrain as pretrain

    cleaned, _ = pretrain.clean_corpus(_config(corpus), tmp_path)
    monkeypatch.setattr(pretrain, "DESCRIPTOR_BLOCK", 100)
    real, calls = pretrain._descriptor_chunk, []

    def dies_on_the_fourth_block(args):
        calls.append(len(args[0]))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(pretrain, "_descriptor_chunk", dies_on_the_fourth_block)
    with pytest.raises(KeyboardInterrupt):
        pretrain.compute_descriptors(cleaned, tmp_path, n_jobs=1)
    assert json.loads((tmp_path / "descriptors_raw.json").read_text())["rows_done"] == 300
    calls.clear()
    monkeypatch.setattr(pretrain, "_descriptor_chunk", real)
    resumed = pretrain.compute_descriptors(cleaned, tmp_path, n_jobs=1).values
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    fresh = pretrain.compute_descriptors(cleaned, fresh_dir, n_jobs=1).values
    assert np.array_equal(np.asarray(resumed), np.asarray(fresh), equal_nan=True)


@needs_shared_data
def test_pretraining_resumes_after_a_kill(corpus, tmp_path, monkeypatch):
    original = Trainer.training_step
    calls = {"n": 0}

    def die_at_step_7(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", die_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(_config(corpus), tmp_path)
    assert (tmp_path / "checkpoints" / "checkpoint-4").is_dir()
    calls["n"] = -100
    model_dir = run_pretrain(_config(corpus), tmp_path)
    assert calls["n"] == -100 + 8  # steps 5..12 only
    summary = json.loads((model_dir / "pretrain_summary.json").read_text())
    assert summary["throughput"]["resumed_from"].endswith("checkpoint-4") and summary["steps"] == 12


def test_bundled_model_is_a_plain_hugging_face_folder_with_a_card_of_what_the_run_did():
    from transformers import AutoModel, AutoTokenizer

    folder = bundled_model_path()
    encoder, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(["CCCCC[C@@H](Br)CC"], return_tensors="pt")
    assert encoder(**ids).last_hidden_state.shape == (1, ids["input_ids"].shape[1], encoder.config.hidden_size)
    assert tokenizer.unk_token_id not in ids["input_ids"][0].tolist()
    summary = json.loads((folder / "pretrain_summary.json").read_text())
    config = json.loads((folder / "pretrain_config.json").read_text())["pretrain"]
    batch = config["batch_size"] * config["grad_accum"]
    assert summary["molecules_presented"] == summary["steps"] * batch, "presentations as trained, not as planned"
    card = (folder / "README.md").read_text()
    assert f"{summary['steps']:,} steps" in card and f"{summary['epochs_done']:.2f} passes" in card
    if summary.get("budget"):  # a budgeted run's card says why it stopped
        assert summary["budget"]["stopped_because"] in card


def test_bundled_model_loads_offline_and_predicts(tmp_path, esol50):
    assert bundled_model_path() is not None, "the bundled model is missing from the package"
    code = (
        "from smilesformer import SmilesModel, TrainConfig\n"
        "import pandas as pd, sys\n"
        f"t = pd.read_csv({str(tmp_path / 'esol.csv')!r})\n"
        "m = SmilesModel.from_pretrained('smilesformer-moses', task='regression', targets=['logS'])\n"
        "m.fit(t.smiles, t.logS, config=TrainConfig(epochs=1, progress=False))\n"
        "print(m.predict(['CCO', 'c1ccccc1'])['logS_pred'].notna().sum())\n"
    )
    esol50.to_csv(tmp_path / "esol.csv", index=False)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("2")
    card = (bundled_model_path() / "README.md").read_text()
    assert "smilesformer pretrain" in card
    size = sum(p.stat().st_size for p in bundled_model_path().iterdir())
    assert size < 25 * 2**20


@needs_shared_data
def test_mlm_and_mtr_at_once_write_a_plain_masked_lm_and_the_mtr_head(corpus, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model_dir = run_pretrain(_config(corpus, objective="mlm+mtr", mlm_probability=0.3, max_steps=30), tmp_path)
    losses = [h["loss"] for h in json.loads((tmp_path / "history.json").read_text()) if "loss" in h]
    assert np.mean(losses[-3:]) < losses[0]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["RobertaForMaskedLM"] and "n_descriptors" not in config
    assert config["hidden_dropout_prob"] == config["attention_probs_dropout_prob"] == 0.1  # pretrained without
    assert (model_dir / MTR_HEAD_FILE).is_file() and (model_dir / "descriptor_stats.json").is_file()
    net = AutoModelForMaskedLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    logits = net(**tok("CCCCC[C@@H](Br)CC", return_tensors="pt")).logits  # (1, tokens, vocab)
    assert logits.shape == (1, 17, len(tok))
    assert tok.unk_token_id not in tok("CCCCC[C@@H](Br)CC")["input_ids"]
    assert "30%" in (model_dir / "README.md").read_text()

    exported = export_model(model_dir, tmp_path / "exported", max_file_mb=1)
    again = AutoModelForMaskedLM.from_pretrained(exported)
    for (name, a), b in zip(net.state_dict().items(), again.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy()), name
    assert (exported / MTR_HEAD_FILE).is_file()


@needs_shared_data
def test_gpu_pretraining_script_runs_end_to_end_at_tiny_scale(tmp_path):
    """scripts/pretrain_gpu.sh, prepared for a GPU machine, runs on the CPU with SCALE=tiny: corpus, pretraining,
    export of files under the size limit."""
    import os

    root = bundled_model_path().parents[3]
    env = dict(os.environ, SCALE="tiny", MINUTES="1", OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"),
               SMILESFORMER_DATA=str(SHARED_DATA), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    started = time.time()
    out = subprocess.run(["bash", str(root / "scripts" / "pretrain_gpu.sh")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    parts = sorted((tmp_path / "out").glob("model.tar.gz.part-*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    packed = tmp_path / "packed.tar.gz"
    packed.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(packed) as tar:
        tar.extractall(tmp_path / "back", filter="data")
    model = tmp_path / "back" / "model"
    assert (model / "config.json").is_file() and (model / MTR_HEAD_FILE).is_file()
    report = json.loads((tmp_path / "work" / "corpus.smi.gz.json").read_text())
    assert report["kept"] > 2900 and set(report["benchmark_sets"]) == {
        "aqsoldb", "esol", "lipophilicity", "bbbp", "bace", "clintox"}
    assert "because their InChIKey skeleton" in (model / "README.md").read_text()
    breakdown = json.loads((tmp_path / "out" / "breakdown.json").read_text())
    assert breakdown["steps"] > 0 and breakdown["training_seconds"] > 0
    assert breakdown["stopped"] in ("fitted", "deadline")
    assert time.time() - started < 60 + 45  # the window, and what a slow corpus step may overrun it by


@needs_shared_data
def test_a_corpus_made_by_smilesformer_corpus_is_neither_parsed_nor_described_again(tmp_path, monkeypatch):
    import smilesformer.pretrain as pretrain
    from smilesformer.corpus import CorpusConfig, build_corpus

    source = tmp_path / "source.smi"
    with gzip.open(SHARED_DATA / "moses_train.csv.gz", "rt") as src:
        source.write_text("".join(line for _, line in zip(range(301), src)))  # a header and 300 molecules
    corpus = tmp_path / "corpus.smi.gz"
    build_corpus(CorpusConfig(str(source), exclude=["esol"], n_jobs=1, descriptors="mtr"), corpus)
    monkeypatch.setattr(pretrain, "_parse_chunk", None)  # neither parsed again ...
    monkeypatch.setattr(pretrain, "_descriptor_chunk", None)  # ... nor described again
    config = PretrainConfig(corpus=str(corpus), preset="tiny", objective="mlm+mtr", batch_size=16, max_steps=4,
                            save_steps=100, logging_steps=2, progress=False, n_jobs=1, limit=250)
    model_dir = run_pretrain(config, tmp_path / "run")
    summary = json.loads((model_dir / "pretrain_summary.json").read_text())
    assert summary["corpus"]["prepared"] and summary["corpus"]["kept"] == 250
    stats = json.loads((model_dir / "descriptor_stats.json").read_text())
    assert stats["computed_by"] == "smilesformer corpus" and stats["n"] == 250
    raw = np.load(str(corpus) + ".descriptors.npy")[:250]
    standardized = np.load(tmp_path / "run" / "cache" / "descriptors.npy")
    expected = np.clip((raw - np.asarray(stats["mean"])) / np.asarray(stats["std"]), -10, 10)
    np.testing.assert_allclose(standardized, expected, rtol=1e-5, atol=1e-5)
    assert (model_dir / "corpus_build.json").is_file()


@pytest.mark.parametrize("kind", ["smiles", "bpe"])
def test_token_cache_holds_the_tokenizers_own_ids(tmp_path, kind, esol50):
    from smilesformer.pretrain import TokenCache
    from smilesformer.tokenization import build_smiles_tokenizer, train_bpe_tokenizer

    smiles = list(esol50["smiles"]) + ["C" * 300]  # one longer than max_length: truncated alike
    corpus = tmp_path / "c.smi"
    corpus.write_text("\n".join(smiles) + "\n")
    tokenizer = (build_smiles_tokenizer(64) if kind == "smiles"
                 else train_bpe_tokenizer(smiles, 120, model_max_length=64))
    cache = TokenCache.build(tokenizer, corpus, tmp_path, 64)
    expected = tokenizer(smiles, truncation=True, max_length=64)["input_ids"]
    assert [cache[i]["input_ids"] for i in range(len(cache))] == expected


def test_a_sharded_corpus_reads_the_shards_ready_and_then_the_rest(tmp_path):
    import pickle

    from smilesformer.corpus import CorpusConfig, ShardWriter
    from smilesformer.descriptors import descriptor_names
    from smilesformer.pretrain import ShardedCorpus

    names = descriptor_names("mtr")
    config = CorpusConfig("source.smi", shard_size=2, descriptors="mtr")
    writer = ShardWriter(tmp_path / "c.smi.gz.shards", config, names, expected=5)
    rows = [("CCO", [0, 10, 11, 2]), ("CCN", [0, 10, 12, 2]), ("c1ccccc1", [0, 13, 14, 15, 2]),
            ("CC(=O)O", [0, 10, 16, 2]), ("CCCl", [0, 17, 2])]
    for k, (smiles, ids) in enumerate(rows[:2]):
        writer.add(smiles, np.asarray(ids, np.uint16), np.full(len(names), float(k)))
    mean, std = np.zeros(len(names)), np.ones(len(names))
    dataset = ShardedCorpus(tmp_path / "c.smi.gz.shards", mean, std)
    assert len(dataset) == 5 and dataset.refresh(force=True) == 2
    assert dataset[1]["input_ids"] == [0, 10, 12, 2] and dataset[1]["labels"][0] == 1.0
    assert dataset[4]["input_ids"] in ([0, 10, 11, 2], [0, 10, 12, 2])  # not ready: stands for a ready one
    copy = pickle.loads(pickle.dumps(dataset))  # what a data worker gets: no arrays, opened again there
    assert copy.shards == [] and copy[0]["input_ids"] == [0, 10, 11, 2]
    for k, (smiles, ids) in enumerate(rows[2:], start=2):
        writer.add(smiles, np.asarray(ids, np.uint16), np.full(len(names), float(k)))
    writer.close()
    assert dataset.refresh(force=True) == 5 and dataset.complete
    assert [dataset[i]["input_ids"][1] for i in range(5)] == [10, 10, 13, 10, 17]
    assert dataset.tokens_per_molecule == pytest.approx(20 / 5)
