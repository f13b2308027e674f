"""The accuracy suite's path end to end on a small slice: split files shared by every model, scoring, outputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import needs_shared_data

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "bench_accuracy.py"


def _script(name: str):
    """A benchmark script of benchmarks/, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def suite():
    return _script("bench_accuracy")


def test_model_specs_parse_and_typos_fail_early(suite):
    assert suite.parse_model("bundled+aug=10+tta=5+llrd=0.8+desc=rdkit") == (
        "bundled", {"augment": 10, "tta": 5, "layer_lr_decay": 0.8, "descriptors": "rdkit"})
    assert suite.parse_model("rf-rdkit") == ("rf-rdkit", {})
    assert suite.parse_model("bundled+trees=gbm") == ("bundled", {"trees": "gbm"})
    with pytest.raises(SystemExit, match="unknown variant"):
        suite.parse_model("bundled+augment=3")
    with pytest.raises(SystemExit, match="smilesformer models only"):
        suite.parse_model("rf+tta=3")


@needs_shared_data
def test_suite_runs_every_model_on_the_same_split_file(suite, tmp_path):
    models = ["random+tta=2+desc=rdkit+trees=gbm", "rf", "rf-rdkit", "gbm-rdkit"]
    chemprop = Path(".venv-chemprop/bin/chemprop")
    if chemprop.is_file():  # `make test` builds it (make bench-env)
        models.append("chemprop")
    argv = ["--datasets", "esol", "--splits", "scaffold", "--seeds", "1", "--models", ",".join(models),
            "--epochs", "1", "--chemprop-epochs", "3", "--rf-trees", "20", "--sample", "0.15",
            "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results"), "--tag", "smoke"]
    report = suite.main(argv)
    runs = report["runs"]
    assert [r["model"] for r in runs] == models
    assert len({r["split_sha256"] for r in runs}) == 1, "every model read the same split file"
    split = pd.read_csv(tmp_path / "work" / "splits" / "esol_scaffold_seed0.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    assert all(r["n"]["test"] == (split["split"] == "test").sum() for r in runs)
    for r in runs:
        assert set(r["metrics"]) == {"rmse", "mae", "r2"} and r["metrics"]["rmse"] > 0
    assert "uncertainty" in runs[0], "test-time augmentation gives a spread and its quality"
    assert set(runs[0]["valid_metrics"]) == {"rmse", "mae", "r2"}, "a smilesformer run keeps its validation figures"
    assert runs[0]["valid_metrics"] != runs[0]["metrics"]
    assert all("valid_metrics" not in r for r in runs[1:]), "the baselines here fit on train and score test only"
    summary = pd.read_csv(tmp_path / "results" / "accuracy_smoke.csv")
    assert summary["model"].tolist() == models
    assert summary["valid_mae_mean"].iloc[0] == runs[0]["valid_metrics"]["mae"]
    assert summary["valid_mae_mean"].iloc[1:].isna().all()
    assert (tmp_path / "results" / "accuracy_smoke_scaffold.png").stat().st_size > 0
    saved = json.loads((tmp_path / "results" / "accuracy_smoke.json").read_text())
    assert saved["hardware"]["cpu_count"] and saved["wall_seconds"] > 0
    again = suite.main(argv)  # finished runs are reused, not retrained
    assert [r["seconds"] for r in again["runs"]] == [r["seconds"] for r in runs]
    assert again["runs"][0]["valid_metrics"] == runs[0]["valid_metrics"]
    done = tmp_path / "work" / "esol_scaffold_seed0" / "random_tta2_descrdkit_treesgbm" / "result.json"
    record = json.loads(done.read_text())
    done.write_text(json.dumps({k: v for k, v in record.items() if k != "valid_metrics"}))  # a run kept before
    assert suite.main(argv)["runs"][0]["valid_metrics"] == runs[0]["valid_metrics"], "read back from metrics.json"
    partial = argv[:argv.index("--models") + 1] + ["rf,bundled"] + argv[argv.index("--models") + 2:]
    partial[partial.index("--tag") + 1] = "partial"
    summary_only = suite.main(partial + ["--only-finished"])  # trains nothing, says what is missing
    assert [r["model"] for r in summary_only["runs"]] == ["rf"]
    assert summary_only["missing"] == ["esol/scaffold/seed0/bundled"]


def test_tuning_reads_smaller_patiences_off_one_validation_curve():
    tune = _script("tune")
    history = [{"loss": 9.0, "epoch": 0.5}] + [{"eval_loss": v, "epoch": i + 1}
                                                for i, v in enumerate([3.0, 2.0, 2.5, 2.4, 1.9, 2.0])]
    table = tune.patience_table(history, run_patience=3)
    assert table["valid_loss_per_epoch"] == [3.0, 2.0, 2.5, 2.4, 1.9, 2.0]
    assert table["early_stopping"] == {
        1: {"stopped_at_epoch": 3, "best_epoch": 2, "valid_loss": 2.0},
        2: {"stopped_at_epoch": 4, "best_epoch": 2, "valid_loss": 2.0},
        3: {"stopped_at_epoch": 6, "best_epoch": 5, "valid_loss": 1.9}}
    assert tune.parse_grid("learning_rate=5e-5, 1e-4; early_stopping_patience=3,5") == {
        "learning_rate": [5e-5, 1e-4], "early_stopping_patience": [3, 5]}
    assert tune.parse_grid("group_by_length=false,true") == {"group_by_length": [False, True]}
    with pytest.raises(SystemExit, match="'lr' is not a TrainConfig setting"):
        tune.parse_grid("lr=1e-4")


@needs_shared_data
def test_tuning_scores_trials_on_validation_sets_only(tmp_path):
    tune = _script("tune")
    report = tune.main(["--datasets", "esol", "--trials", "2", "--epochs", "1", "--model", "random:tiny",
                        "--sample", "0.15", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "res")])
    assert len(report["trials"]) == 2
    assert set(report["best"]["params"]) == {"learning_rate", "layer_lr_decay", "augment", "batch_size",
                                                 "descriptors"}
    assert report["best"]["value"] == min(t["value"] for t in report["trials"]) > 0
    assert (tmp_path / "res" / "tune.json").is_file()
    grid = tune.main(["--datasets", "esol", "--grid", "learning_rate=1e-4,3e-4", "--epochs", "2", "--patience", "1",
                      "--model", "random:tiny", "--sample", "0.15", "--work", str(tmp_path / "grid"),
                      "--results", str(tmp_path / "res"), "--tag", "grid"])
    assert sorted(t["params"]["learning_rate"] for t in grid["trials"]) == [1e-4, 3e-4]  # each value once
    curve = grid["trials"][0]["curves"]["esol"]
    assert 1 <= len(curve["valid_loss_per_epoch"]) <= 2 and set(curve["early_stopping"]) == {1}
    assert (tmp_path / "res" / "tune_grid.json").is_file()


def test_recipe_blend_weights_are_cross_fitted_on_other_folds():
    import numpy as np

    from smilesformer.tasks import ModelMeta

    recipe, meta = _script("bench_recipe"), ModelMeta(task="regression", targets=["y"])
    rng = np.random.default_rng(0)
    y = rng.normal(size=(100, 1))
    head, trees = y + rng.normal(scale=0.1, size=y.shape), y + rng.normal(scale=1.0, size=y.shape)
    blended, weights = recipe.cross_fitted_blend(meta, y, head, trees, seed=0)
    assert len(weights) == recipe.FOLDS and all(w[0] >= 0.9 for w in weights), "the better head gets the weight"
    assert recipe.score("regression", y, blended, sd=1.0) < recipe.score("regression", y, trees, sd=1.0)
    # a fold's own labels never choose its weight: spoil one fold's labels so that only trees fit them there
    from sklearn.model_selection import KFold

    folds = list(KFold(recipe.FOLDS, shuffle=True, random_state=0).split(head))
    spoiled = y.copy()
    spoiled[folds[0][1]] = trees[folds[0][1]]
    again, weights_again = recipe.cross_fitted_blend(meta, spoiled, head, trees, seed=0)
    assert np.allclose(again[folds[0][1]], blended[folds[0][1]]), "fold 0 is blended as before"
    assert weights_again[0] == weights[0] and weights_again[1] != weights[1], "the others' weights moved"
    assert recipe.score("classification", np.array([[0.0], [1.0], [1.0], [0.0]]),
                        np.array([[0.1], [0.8], [0.3], [0.4]]), sd=1.0) == pytest.approx(0.25)


@needs_shared_data
def test_recipe_bench_scores_each_recipe_and_reuses_finished_runs(tmp_path):
    recipe = _script("bench_recipe")
    argv = ["--datasets", "esol", "--seeds", "1", "--model", "random:tiny", "--epochs", "1", "--sample", "0.15",
            "--work", str(tmp_path / "work"), "--results", str(tmp_path / "res"), "--tag", "smoke"]
    report = recipe.main(argv)
    assert [row["recipe"] for row in report["summary"]] == list(recipe.RECIPES)
    assert all(row["score"] > 0 for row in report["summary"])
    records = sorted((tmp_path / "work").rglob("valid_outputs.json"))
    assert [p.parent.name for p in records] == ["none", "rdkit"]
    assert not list((tmp_path / "work").rglob("model.safetensors")), "the weights are not kept"
    stamps = [p.stat().st_mtime_ns for p in records]
    assert recipe.main(argv)["summary"] == report["summary"] and [p.stat().st_mtime_ns for p in records] == stamps
    assert (tmp_path / "res" / "recipe_smoke.json").is_file()


def test_report_comparison_takes_the_first_result_present(tmp_path, monkeypatch):
    report = _script("report")
    monkeypatch.setattr(report, "RESULTS", tmp_path)

    def write(tag: str, model: str, dataset: str, mae: float, epochs: int, patience: int) -> None:
        summary = [{"model": model, "dataset": dataset, "split": "scaffold", "task": "regression", "seeds": 3,
                    "mae_mean": mae, "mae_sd": 0.01, "rmse_mean": mae + 0.3, "rmse_sd": 0.02}]
        (tmp_path / f"accuracy_{tag}.json").write_text(
            json.dumps({"settings": {"epochs": epochs, "patience": patience}, "summary": summary}))

    assert report._comparison() == [], "no result file, no table"
    write("v3_aqsoldb", report._V3, "aqsoldb", 0.9, 10, 3)
    write("aqsoldb_scaffold", "chemprop", "aqsoldb", 0.757, 10, 3)
    table = "\n".join(report._comparison())
    assert "| v3, SMILES only | 0.900 ± 0.010 (3; 10/3) |" in table
    assert "| chemprop | 0.757 ± 0.010 (3) |" in table, "chemprop ignores smilesformer's epochs and patience"
    assert "v2, SMILES only" not in table, "rows with no result are left out"
    write("v3_aqsoldb_smiles", "bundled", "aqsoldb", 0.75, 20, 5)
    assert "| v3, SMILES only | 0.750 ± 0.010 (3; 20/5) |" in "\n".join(report._comparison())
