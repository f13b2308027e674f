"""The CLI end to end: finetune -> run folder -> predict / evaluate, and its error messages."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from smilesformer.cli import app

from .conftest import SHARED_DATA, needs_shared_data

runner = CliRunner()


@pytest.fixture(scope="module")
def slice200(tmp_path_factory):
    """200 AqSolDB rows (trailing spaces and all), with the column names of the source."""
    path = tmp_path_factory.mktemp("slice") / "aqsol200.csv"
    with gzip.open(SHARED_DATA / "aqsoldb.csv.gz", "rt") as fh:
        pd.read_csv(fh, dtype=str, keep_default_na=False).sample(200, random_state=1).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def run_dir(slice200, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = runner.invoke(app, ["finetune", "--data", str(slice200), "--smiles-col", "SMILES",
                                 "--target", "Solubility", "--task", "regression", "--model", "random:tiny",
                                 "--split", "scaffold", "--epochs", "3", "--batch-size", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@needs_shared_data
def test_finetune_writes_a_complete_run_folder(run_dir):
    for name in ["config.json", "environment.json", "split.csv", "metrics.json", "parity.png", "training_curve.png",
                 "test_predictions.csv", "history.json", "model/config.json", "model/model.safetensors",
                 "model/tokenizer.json", "model/smilesformer.json"]:
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_valid"] + metrics["n_test"] == 200
    for key in ["rmse", "mae", "mse", "r2", "pearson_r", "spearman_rho"]:
        assert key in metrics["test"]["per_target"]["Solubility"]
    split = pd.read_csv(run_dir / "split.csv")
    assert len(split) == 200 and set(split["split"]) == {"train", "valid", "test"}
    env = json.loads((run_dir / "environment.json").read_text())
    assert len(env["data"]["sha256"]) == 64 and env["packages"]["transformers"].startswith("5.")
    assert len(pd.read_csv(run_dir / "test_predictions.csv")) == metrics["n_test"]
    assert not (run_dir / "checkpoints").exists()


@needs_shared_data
def test_predict_cli_keeps_rows_and_order(run_dir, tmp_path):
    table = pd.DataFrame({"id": [1, 2, 3, 4], "smiles": ["CCO", "C1CC", "c1ccccc1O", "xyz"]})
    table.to_csv(tmp_path / "in.csv", index=False)
    result = runner.invoke(app, ["predict", str(run_dir / "model"), "--data", str(tmp_path / "in.csv"),
                                 "--out", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert out["id"].tolist() == [1, 2, 3, 4]
    assert [bool(e) for e in out["error"]] == [False, True, False, True]
    assert "2 invalid" in result.output


@needs_shared_data
def test_evaluate_cli(run_dir, slice200, tmp_path):
    result = runner.invoke(app, ["evaluate", str(run_dir / "model"), "--data", str(slice200), "--smiles-col", "SMILES",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "metrics.json").read_text())["per_target"]["Solubility"]["n"] == 200


def test_bad_input_exits_with_the_listed_rows(tmp_path):
    pd.DataFrame({"smiles": ["CCO", "C1CC"], "y": [1, 2]}).to_csv(tmp_path / "bad.csv", index=False)
    result = runner.invoke(app, ["finetune", "--data", str(tmp_path / "bad.csv"), "--target", "y",
                                 "--model", "random:tiny", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "data row 2, column 'smiles': 'C1CC'" in result.output
    result = runner.invoke(app, ["finetune", "--data", str(tmp_path / "bad.csv"), "--target", "logS",
                                 "--model", "random:tiny", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "available columns: 'smiles', 'y'" in result.output


def test_skip_policy_writes_a_report(tmp_path, esol50):
    table = pd.concat([esol50, pd.DataFrame({"smiles": ["C1CC", "CCO"], "logS": [1.0, "n/a"]})], ignore_index=True)
    table.to_csv(tmp_path / "data.csv", index=False)
    result = runner.invoke(app, ["finetune", "--data", str(tmp_path / "data.csv"), "--target", "logS",
                                 "--model", "random:tiny", "--bad-input", "skip", "--epochs", "1",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "skipped 2 bad row(s)" in result.output
    assert pd.read_csv(tmp_path / "run" / "bad_rows.csv")["data_row"].tolist() == [51, 52], "counted from 1"


@needs_shared_data
def test_datasets_lists_where_each_resolves(monkeypatch):
    from smilesformer import cli

    def measure(setting):
        raise AssertionError("datasets runs no model: no thread measurement, no torch import")

    monkeypatch.setattr(cli, "set_threads", measure)
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0
    for name in ["aqsoldb", "esol", "lipophilicity", "bbbp", "bace", "clintox"]:
        assert name in result.output
    assert "aqsoldb.csv.gz" in result.output


def test_help_lists_the_verbs():
    result = runner.invoke(app, ["--help"])
    for verb in ["finetune", "evaluate", "predict", "datasets", "demo", "pretrain"]:
        assert verb in result.output


def test_pretrain_command_defaults_are_the_config_defaults():
    """The CLI reads its pretraining defaults from PretrainConfig: the two cannot drift apart."""
    import dataclasses

    import typer.main

    from smilesformer.config import PretrainConfig

    command = typer.main.get_command(app).commands["pretrain"]
    fields = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    renamed = {"lr": "learning_rate"}
    checked = 0
    for param in command.params:
        name = renamed.get(param.name, param.name)
        if name in fields and fields[name] is not dataclasses.MISSING:
            default = fields[name].value if hasattr(fields[name], "value") else fields[name]
            assert param.default == default, (param.name, param.default, default)
            checked += 1
    assert checked >= 20


def test_a_model_card_command_line_is_one_the_cli_accepts(tmp_path):
    """The card's "redo it" line, written from a saved PretrainConfig, parses as `smilesformer pretrain` options
    with the same values (every field but those set from Python only)."""
    import dataclasses
    import shlex

    import typer.main

    from smilesformer.config import PretrainConfig, save_config
    from smilesformer.pretrain import NOT_ON_THE_CLI, pretrain_command

    save_config(tmp_path / "c.json", pretrain=PretrainConfig(corpus="c.smi", limit=500, learning_rate=3e-4,
                                                             dedupe=False, max_minutes=2.5))
    config = json.loads((tmp_path / "c.json").read_text())["pretrain"]  # as a model folder keeps it
    line = pretrain_command(config)
    command = typer.main.get_command(app).commands["pretrain"]
    parsed = command.make_context("pretrain", shlex.split(line)[2:]).params
    renamed = {"lr": "learning_rate"}
    compared = 0
    for name, value in parsed.items():
        field = renamed.get(name, name)
        if field in config:
            got = value.value if hasattr(value, "value") else str(value) if field == "corpus" else value
            assert got == config[field], name
            compared += 1
    assert compared == len([f for f in dataclasses.fields(PretrainConfig) if f.name not in NOT_ON_THE_CLI])
    assert "--no-dedupe" in line and "--lr 0.0003" in line


@needs_shared_data
def test_corpus_command_writes_a_corpus_and_its_report(tmp_path):
    source = tmp_path / "src.smi"
    source.write_text("CC(N)Cc1ccc(Cl)cc1\nOC(=O)CCc1ccc(Br)cc1\nCc1occc1C(=O)Nc2ccccc2\n")
    result = runner.invoke(app, ["corpus", "--source", str(source), "--out", str(tmp_path / "c.smi"),
                                 "--exclude", "esol", "--transform", "stereo=1", "--n-jobs", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "c.smi.json").read_text())
    assert report["kept"] == 2 and report["removed_benchmark"] == 1  # fenfuram is in ESOL
    assert report["config"]["transforms"]["stereo"] == 1.0
    bad = runner.invoke(app, ["corpus", "--source", str(source), "--out", str(tmp_path / "d.smi"),
                              "--transform", "stereo"])
    assert bad.exit_code == 2 and "NAME=P" in bad.output


def test_finetune_command_defaults_are_the_config_defaults():
    """The CLI reads its fine-tuning defaults from TrainConfig and DataConfig: they cannot drift apart."""
    import dataclasses

    import typer.main

    from smilesformer.config import DataConfig, TrainConfig

    command = typer.main.get_command(app).commands["finetune"]
    fields = {f.name: f.default for cls in (DataConfig, TrainConfig) for f in dataclasses.fields(cls)}
    renamed = {"lr": "learning_rate", "patience": "early_stopping_patience", "target": "target_cols"}
    derived = {"split"}  # None on the command line: DataConfig's random, or column when --split-col is given
    checked = 0
    for param in command.params:
        name = renamed.get(param.name, param.name)
        if name in fields and fields[name] is not dataclasses.MISSING and name not in derived:
            default = fields[name].value if hasattr(fields[name], "value") else fields[name]
            shown = tuple(param.default) if isinstance(param.default, list | tuple) else param.default
            assert shown == default, (param.name, param.default, default)
            checked += 1
    assert checked >= 20


def test_python_api_and_cli_fine_tune_the_same_default_model(esol50_path, tmp_path):
    """The README's Python snippet and `smilesformer finetune`, with the same settings, build the same model:
    the bundled encoder, the descriptor head, the tree blend, and the same test predictions."""
    from smilesformer import SmilesModel, TrainConfig
    from smilesformer.descriptors import uses_descriptors

    result = CliRunner().invoke(app, ["finetune", "--data", str(esol50_path), "--smiles-col", "smiles",
                                      "--target", "logS", "--epochs", "2", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    split = pd.read_csv(tmp_path / "cli" / "split.csv")
    table = pd.read_csv(esol50_path)
    parts = {name: split.index[split["split"] == name].tolist() for name in ("train", "valid", "test")}
    smiles, y = table["smiles"].tolist(), table[["logS"]].to_numpy(float)
    model = SmilesModel.from_pretrained("smilesformer-moses", task="regression", targets=["logS"])
    model.fit([smiles[i] for i in parts["train"]], y[parts["train"]], [smiles[i] for i in parts["valid"]],
              y[parts["valid"]], config=TrainConfig(epochs=2))
    cli_meta = json.loads((tmp_path / "cli" / "model" / "smilesformer.json").read_text())
    assert model.meta.tree_weights == cli_meta["tree_weights"] and model.meta.tree_weights is not None
    assert model.meta.max_length == cli_meta["max_length"]
    assert uses_descriptors(model.model), "the descriptor head, as the CLI builds it"
    api = model.predict([smiles[i] for i in parts["test"]])["logS_pred"].to_numpy()
    cli = pd.read_csv(tmp_path / "cli" / "test_predictions.csv")["logS_pred"].to_numpy()
    assert np.allclose(api, cli, atol=1e-4), np.abs(api - cli).max()


def test_finetune_takes_the_descriptors_from_workers_started_before_the_model_loads(esol50_path, tmp_path,
                                                                                    monkeypatch):
    """The CLI starts the table's RDKit descriptors in a worker while it imports PyTorch: the fine-tune (the
    descriptor head, the trees, the valid and test predictions) computes none itself."""
    from smilesformer import rdkit_descriptors as module

    in_this_process = []
    real = module._compute  # what the cache runs for molecules nobody started
    monkeypatch.setattr(module, "_compute", lambda s, n: in_this_process.append(len(s)) or real(s, n))
    monkeypatch.setenv(module.WORKERS_ENV, "2")
    module.clear_descriptor_cache()
    try:
        result = runner.invoke(app, ["finetune", "--data", str(esol50_path), "--smiles-col", "smiles",
                                     "--target", "logS", "--model", "random:tiny", "--descriptors", "rdkit",
                                     "--epochs", "1", "--out", str(tmp_path / "run")])
        assert result.exit_code == 0, result.output
        assert list(module._POOLS) == [1], "one worker: the main process keeps a core for its import"
    finally:
        module.shutdown_pool()
    assert in_this_process == []
    meta = json.loads((tmp_path / "run" / "model" / "smilesformer.json").read_text())
    assert meta["tree_weights"] is not None, "the trees read the workers' descriptors too"


def test_fit_refuses_a_setting_it_cannot_honour(make_tiny_model, esol50, tiny_regressor_dir):
    from smilesformer import SmilesformerError, SmilesModel, TrainConfig

    smiles, y = esol50["smiles"].tolist(), esol50["logS"].to_numpy(float)
    with pytest.raises(SmilesformerError, match="descriptors='rdkit'"):
        make_tiny_model().fit(smiles, y, config=TrainConfig(epochs=1, descriptors="rdkit"))
    with pytest.raises(SmilesformerError, match="ensemble > 1"):
        SmilesModel.from_pretrained(tiny_regressor_dir).fit(smiles, y, config=TrainConfig(epochs=1, ensemble=2))
    model = make_tiny_model().fit(smiles, y, config=TrainConfig(epochs=1, max_length=24, trees="none", tta=1))
    assert model.meta.max_length == 24 and model.members[0].meta.max_length == 24, "max_length is honoured"
    assert model.meta.tta == 1 and "logS_sd" in model.predict(["CCO"]).columns, "tta is honoured"


def test_errors_print_square_brackets_as_written(tmp_path):
    """Rich reads [..] as markup: bracket atoms and package extras must survive into the message."""
    pd.DataFrame({"smiles": ["CCO", "c1ccccc1[nH]", "[bold]C"], "y": [1, 2, 3]}).to_csv(tmp_path / "b.csv",
                                                                                        index=False)
    result = runner.invoke(app, ["finetune", "--data", str(tmp_path / "b.csv"), "--target", "y",
                                 "--model", "random:tiny", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "'c1ccccc1[nH]'" in result.output and "'[bold]C'" in result.output, result.output


def test_finetune_into_a_file_is_one_line_naming_it(tmp_path, esol50_path):
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(app, ["finetune", "--data", str(esol50_path), "--target", "logS",
                                      "--model", "random:tiny", "--out", str(tmp_path / "afile")])
    assert result.exit_code == 2 and "afile is a file, not a folder" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3


def test_a_split_column_alone_selects_the_column_split(tmp_path, esol50):
    table = esol50.assign(fold=["train"] * 40 + ["valid"] * 5 + ["test"] * 5)
    table.to_csv(tmp_path / "t.csv", index=False)
    result = CliRunner().invoke(app, ["finetune", "--data", str(tmp_path / "t.csv"), "--target", "logS",
                                      "--split-col", "fold", "--model", "random:tiny", "--epochs", "1",
                                      "--descriptors", "none", "--trees", "none", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert split["split"].tolist() == table["fold"].tolist()


def test_predict_reads_a_csv_saved_as_txt_as_a_table(tmp_path, tiny_regressor_dir, esol50):
    esol50[["smiles"]].assign(y=1.0).head(10).to_csv(tmp_path / "csvcontent.txt", index=False)
    result = CliRunner().invoke(app, ["predict", str(tiny_regressor_dir), "--data", str(tmp_path / "csvcontent.txt"),
                                      "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    out = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert len(out) == 10 and (out["error"] == "").all() and out["smiles"].tolist() == esol50["smiles"][:10].tolist()


def test_ctrl_c_says_what_was_kept_and_how_to_go_on(tmp_path, esol50_path, monkeypatch):
    import smilesformer.workflow as workflow

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "run_finetune", interrupted)
    result = CliRunner().invoke(app, ["finetune", "--data", str(esol50_path), "--target", "logS",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 130
    assert "interrupted:" in result.output and "run the same command again to resume" in result.output
