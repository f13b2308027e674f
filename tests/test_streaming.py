"""Streaming predict / embed: chunked reading, same output as the in-memory path, resuming after an
interruption, the `predict` command, and the Ray engine on a local 2-CPU Ray."""

from __future__ import annotations

import gzip
import importlib.util
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from smilesformer import streaming
from smilesformer.cli import app
from smilesformer.data import SmilesformerError, read_table
from smilesformer.embeddings import EmbedConfig
from smilesformer.streaming import parts_dir, read_chunks, stream_embed, stream_predict
from smilesformer.workflow import run_predict

from .conftest import spy_lengths

runner = CliRunner()


@pytest.fixture(scope="module")
def table_path(tmp_path_factory, esol50):
    """ESOL-50 with two bad rows and an id column: 52 rows."""
    table = esol50.assign(id=[f"m{i}" for i in range(len(esol50))])
    bad = pd.DataFrame({"smiles": ["C1CC", ""], "logS": [0.0, 1.0], "id": ["bad1", "bad2"]})
    table = pd.concat([table.iloc[:10], bad, table.iloc[10:]], ignore_index=True)
    path = tmp_path_factory.mktemp("input") / "in.csv"
    table.to_csv(path, index=False)
    return path


def test_read_chunks_matches_read_table(table_path, tmp_path):
    whole = read_table(table_path)
    gz = tmp_path / "in.csv.gz"
    gz.write_bytes(gzip.compress(table_path.read_bytes()))
    whole.to_parquet(tmp_path / "in.parquet", index=False)
    (tmp_path / "in.smi").write_text("".join(f"{s} {i}\n" for s, i in zip(whole["smiles"], whole["id"]) if s))
    for path in (table_path, gz, tmp_path / "in.parquet", tmp_path / "in.smi"):
        col, chunks = read_chunks(path, chunk_size=7)
        chunks = list(chunks)
        assert col == "smiles" and max(len(c) for c in chunks) == 7
        joined = pd.concat(chunks, ignore_index=True)
        pd.testing.assert_frame_equal(joined, read_table(path), check_dtype=False)
    with pytest.raises(SmilesformerError, match="available columns"):
        read_chunks(table_path, smiles_col="SMILES")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_stream_predict_equals_run_predict(tiny_regressor_dir, table_path, tmp_path, suffix):
    summary = stream_predict(tiny_regressor_dir, table_path, tmp_path / f"s{suffix}", chunk_size=8)
    expected = run_predict(tiny_regressor_dir, table_path, tmp_path / f"r{suffix}")
    assert (summary.rows, summary.invalid, summary.chunks) == (52, 2, 7)
    got = read_table(tmp_path / f"s{suffix}")
    want = read_table(tmp_path / f"r{suffix}")
    assert got.columns.tolist() == want.columns.tolist() == ["smiles", "logS", "id", "logS_pred", "error"]
    assert got["id"].tolist() == want["id"].tolist() and got["error"].tolist() == want["error"].tolist()
    # Batches differ (chunks are sorted separately), so floats may differ in the last digits.
    np.testing.assert_allclose(pd.to_numeric(got["logS_pred"]), pd.to_numeric(want["logS_pred"]), rtol=1e-5)
    assert np.isnan(pd.to_numeric(got["logS_pred"])[[10, 11]]).all()
    assert len(expected) == 52 and not parts_dir(tmp_path / f"s{suffix}").exists()


def test_chunks_bound_what_is_in_memory(tiny_regressor_dir, table_path, tmp_path, monkeypatch):
    seen = spy_lengths(monkeypatch, streaming, "predict_frame")
    stream_predict(tiny_regressor_dir, table_path, tmp_path / "o.csv", chunk_size=10)
    assert seen == [10, 10, 10, 10, 10, 2]


class Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch, name: str, k: int) -> None:
    """Make the k+1-th chunk fail, as if the process were killed while computing it."""
    original = getattr(streaming, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > k:
            raise Interrupted
        return original(*args, **kwargs)

    monkeypatch.setattr(streaming, name, failing)


def test_predict_resumes_after_interruption(tiny_regressor_dir, table_path, tmp_path, monkeypatch):
    reference = stream_predict(tiny_regressor_dir, table_path, tmp_path / "ref.csv", chunk_size=10)
    out = tmp_path / "out.csv"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, "predict_frame", 3)
        with pytest.raises(Interrupted):
            stream_predict(tiny_regressor_dir, table_path, out, chunk_size=10)
    manifest = json.loads((parts_dir(out) / "manifest.json").read_text())
    assert len(manifest["chunks"]) == 3 and manifest["rows_done"] == 30 and not out.exists()
    (parts_dir(out) / "part-000003.csv.tmp").write_text("half-written part of the killed run")
    calls = []
    original = streaming.predict_frame

    def counting(model, chunk, *args, **kwargs):
        calls.append(len(chunk))
        return original(model, chunk, *args, **kwargs)

    monkeypatch.setattr(streaming, "predict_frame", counting)
    resumed = stream_predict(tiny_regressor_dir, table_path, out, chunk_size=10)
    assert calls == [10, 10, 2], "only the chunks after the last written one are computed"
    assert (resumed.resumed_chunks, resumed.rows, resumed.invalid) == (3, reference.rows, reference.invalid)
    assert out.read_bytes() == (tmp_path / "ref.csv").read_bytes()
    assert not parts_dir(out).exists()


def test_other_settings_start_over(tiny_regressor_dir, table_path, tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, "predict_frame", 2)
        with pytest.raises(Interrupted):
            stream_predict(tiny_regressor_dir, table_path, out, chunk_size=10)
    summary = stream_predict(tiny_regressor_dir, table_path, out, chunk_size=20)
    assert summary.resumed_chunks == 0 and summary.chunks == 3
    assert len(pd.read_csv(out)) == 52


def test_embed_resumes_after_interruption(tiny_regressor_dir, table_path, tmp_path, monkeypatch):
    config = EmbedConfig(pooling="mean", per_token=True)
    stream_embed(tiny_regressor_dir, table_path, tmp_path / "ref.parquet", config=config, chunk_size=16)
    out = tmp_path / "out.parquet"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, "embed", 2)
        with pytest.raises(Interrupted):
            stream_embed(tiny_regressor_dir, table_path, out, config=config, chunk_size=16)
    resumed = stream_embed(tiny_regressor_dir, table_path, out, config=config, chunk_size=16)
    assert resumed.resumed_chunks == 2 and resumed.chunks == 4
    got, want = pq.read_table(out), pq.read_table(tmp_path / "ref.parquet")
    assert got.equals(want)
    assert got.column("row_id").to_pylist() == list(range(52))
    assert got.column("embedding").null_count == 2


def test_predict_cli_streams(tiny_regressor_dir, table_path, tmp_path):
    result = runner.invoke(app, ["predict", str(tiny_regressor_dir), "--data", str(table_path),
                                 "--out", str(tmp_path / "o.parquet"), "--chunk-size", "20"])
    assert result.exit_code == 0, result.output
    assert "wrote 52 rows" in result.output and "2 invalid" in result.output
    out = pd.read_parquet(tmp_path / "o.parquet")
    assert out["id"].tolist() == read_table(table_path)["id"].tolist()


@pytest.fixture(scope="module")
def local_ray():
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'smilesformer[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_ray_engine_matches_local(local_ray, tiny_regressor_dir, table_path, tmp_path):
    ray_out = stream_predict(tiny_regressor_dir, table_path, tmp_path / "ray.csv", chunk_size=16, engine="ray",
                             workers=2)
    stream_predict(tiny_regressor_dir, table_path, tmp_path / "local.csv", chunk_size=16)
    got, want = read_table(tmp_path / "ray.csv"), read_table(tmp_path / "local.csv")
    assert ray_out.rows == 52 and ray_out.invalid == 2
    assert got.columns.tolist() == want.columns.tolist()
    assert got[["smiles", "logS", "id", "error"]].equals(want[["smiles", "logS", "id", "error"]])
    np.testing.assert_allclose(pd.to_numeric(got["logS_pred"]), pd.to_numeric(want["logS_pred"]), rtol=1e-5)

    stream_embed(tiny_regressor_dir, table_path, tmp_path / "ray.parquet", chunk_size=16, engine="ray", workers=2)
    stream_embed(tiny_regressor_dir, table_path, tmp_path / "local.parquet", chunk_size=16)
    got, want = pd.read_parquet(tmp_path / "ray.parquet"), pd.read_parquet(tmp_path / "local.parquet")
    assert got["row_id"].tolist() == list(range(52)) and got["smiles"].tolist() == want["smiles"].tolist()
    valid = want["error"] == ""
    np.testing.assert_allclose(np.stack(got["embedding"][valid]), np.stack(want["embedding"][valid]), rtol=1e-5)


def test_ray_engine_predicts_a_composite_model_as_locally(local_ray, esol50, tiny_tokenizer, table_path,
                                                          tmp_path):
    """Each Ray worker loads the whole folder: an ensemble with a descriptor head, test-time spellings and trees."""
    from smilesformer import SmilesModel, TrainConfig

    model = SmilesModel.from_scratch("tiny", "regression", ["logS"], tokenizer=tiny_tokenizer, seed=0,
                                     descriptors="fast")
    y = esol50["logS"].to_numpy(float)
    model.fit(esol50["smiles"][:40], y[:40], esol50["smiles"][40:], y[40:],
              config=TrainConfig(epochs=1, batch_size=16, ensemble=2, tta=2, trees="gbm", progress=False))
    folder = model.save_pretrained(tmp_path / "model")
    stream_predict(folder, table_path, tmp_path / "ray.csv", chunk_size=16, engine="ray", workers=2)
    stream_predict(folder, table_path, tmp_path / "local.csv", chunk_size=16)
    got, want = read_table(tmp_path / "ray.csv"), read_table(tmp_path / "local.csv")
    columns = ["logS_pred", "logS_sd", "logS_pi90_low", "logS_pi90_high"]
    assert got.columns.tolist() == want.columns.tolist() and set(columns) <= set(got.columns)
    assert got["error"].equals(want["error"])
    got, want = got[columns].apply(pd.to_numeric), want[columns].apply(pd.to_numeric)
    np.testing.assert_allclose(got["logS_pred"], want["logS_pred"], rtol=1e-4)
    # the spread of nearly equal passes carries a process's first-forward-pass float noise (about 1e-5), and
    # the interval scale (large for a model this untrained) multiplies it
    np.testing.assert_allclose(got["logS_sd"], want["logS_sd"], atol=1e-4)
    scale = float(SmilesModel.from_pretrained(folder).meta.interval_scale[0])
    for side in ("logS_pi90_low", "logS_pi90_high"):
        np.testing.assert_allclose(got[side], want[side], atol=2e-4 * scale)


def test_streamed_prediction_prefetches_the_next_chunks_descriptors(make_tiny_model, table_path, tmp_path,
                                                                     monkeypatch):
    """A model that reads descriptors gets the next chunk's started while this one runs (where a core is spare);
    resumed chunks are not."""
    import torch

    from smilesformer import SmilesModel

    model = SmilesModel.from_scratch("tiny", "regression", ["logS"], tokenizer=make_tiny_model().tokenizer,
                                     descriptors="fast")
    folder = model.save_pretrained(tmp_path / "model")
    started: list[list[str]] = []
    monkeypatch.setattr(streaming, "prefetch_descriptors", lambda smiles, names: started.append(list(smiles)))
    monkeypatch.setattr(streaming, "usable_cores", lambda: 1)  # the model's threads fill every core
    stream_predict(folder, table_path, tmp_path / "busy.csv", chunk_size=10)
    assert started == [], "no prefetch where no core is left for it"
    monkeypatch.setattr(streaming, "usable_cores", lambda: torch.get_num_threads() + 1)
    rows = pd.read_csv(table_path)["smiles"].tolist()  # 52 rows: chunks of 10, 10, 10, 10, 10 and 2
    chunks = [[s for s in rows[i:i + 10] if isinstance(s, str)] for i in range(0, len(rows), 10)]
    reference = stream_predict(folder, table_path, tmp_path / "ref.csv", chunk_size=10)
    assert started == chunks, "the first chunk at once, each other one while the one before it runs"
    assert "" not in started[1] and "C1CC" in started[1], "the empty SMILES is not sent; an invalid one gives NaN"

    out = tmp_path / "out.csv"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, "predict_frame", 3)
        with pytest.raises(Interrupted):
            stream_predict(folder, table_path, out, chunk_size=10)
    started.clear()
    resumed = stream_predict(folder, table_path, out, chunk_size=10)
    assert started == chunks[3:], "resumed at chunk 4: chunks 4 to 6, not the ones already written"
    assert resumed.rows == reference.rows and out.read_bytes() == (tmp_path / "ref.csv").read_bytes()


def test_output_path_problems_are_one_line_before_any_work(tmp_path, monkeypatch):
    import tempfile

    from smilesformer.data import check_output

    (tmp_path / "afile").write_text("x")
    with pytest.raises(SmilesformerError, match=r"--out .*afile is a file, not a folder"):
        check_output(tmp_path / "afile", folder=True)
    with pytest.raises(SmilesformerError, match=r"afile is a file, so no folder can be made there"):
        check_output(tmp_path / "afile" / "p.csv")
    with pytest.raises(SmilesformerError, match=r"is a folder: give a file name"):
        check_output(tmp_path)

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refused)  # what a folder this user cannot write gives
    with pytest.raises(SmilesformerError, match=r"cannot write --out .*ro/p.csv: .* is not writable by this user"):
        check_output(tmp_path / "ro" / "p.csv")


def test_a_second_run_on_the_same_output_stops_with_a_message(tmp_path, tiny_regressor_dir):
    from smilesformer.streaming import output_lock

    out = tmp_path / "same.csv"
    data = tmp_path / "in.smi"
    data.write_text("CCO\nCCN\n")
    with output_lock(out):  # the first run, still writing
        with pytest.raises(SmilesformerError, match=r"same.csv is being written by another run \(process \d+\)"):
            stream_predict(tiny_regressor_dir, data, out)
    summary = stream_predict(tiny_regressor_dir, data, out)  # once it is done, the output is free again
    assert summary.rows == 2 and not (tmp_path / "same.csv.lock").exists()
