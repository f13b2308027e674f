"""The web service through FastAPI's TestClient: predict, limits, health, model card, page, micro-batching."""

from __future__ import annotations

import asyncio
import math
import re
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from smilesformer import SmilesformerError, SmilesModel
from smilesformer.serve import MicroBatcher, ServeConfig, create_app

INVALID = "C1CC(("


@pytest.fixture(scope="module")
def served_dir(tiny_regressor_dir):
    (tiny_regressor_dir / "README.md").write_text("# tiny ESOL regressor\nFor tests only.\n")
    return tiny_regressor_dir


@pytest.fixture(scope="module")
def client(served_dir):
    config = ServeConfig(max_smiles_per_request=8, max_smiles_length=100, torch_threads=1)
    with TestClient(create_app(served_dir, config)) as c:
        yield c


def test_predict_matches_library_and_keeps_invalid_rows(client, served_dir, esol50):
    smiles = [esol50["smiles"][0], INVALID, "", esol50["smiles"][1]]
    response = client.post("/predict", json={"smiles": smiles})
    assert response.status_code == 200
    body = response.json()
    assert body["columns"] == ["logS_pred"] and body["targets"] == ["logS"]
    rows = body["results"]
    assert [r["row"] for r in rows] == [0, 1, 2, 3]
    assert [r["smiles"] for r in rows] == smiles
    expected = SmilesModel.from_pretrained(served_dir).predict(smiles)
    for r, (_, e) in zip(rows, expected.iterrows()):
        assert "uncertainty" in r and r["uncertainty"] is None
        if e["error"]:
            assert r["predictions"] == {"logS_pred": None}
            assert r["error"] and "invalid SMILES" in r["error"]
        else:
            assert r["error"] is None
            assert math.isclose(r["predictions"]["logS_pred"], e["logS_pred"], rel_tol=1e-4, abs_tol=1e-5)


def test_too_many_smiles_is_413_naming_the_limit(client):
    response = client.post("/predict", json={"smiles": ["CCO"] * 9})
    assert response.status_code == 413
    assert "limit is 8" in response.json()["detail"]


def test_too_long_smiles_is_422_naming_row_and_limit(client):
    response = client.post("/predict", json={"smiles": ["CCO", "C" * 101]})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "row 1" in detail and "101 characters" in detail and "limit is 100" in detail


@pytest.mark.parametrize("body", [{"smiles": []}, {"smiles": "CCO"}, {"smiles": [None]}, {}])
def test_malformed_body_is_422(client, body):
    assert client.post("/predict", json=body).status_code == 422


def test_health_and_model_card(client, served_dir):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == served_dir.name
    info = client.get("/model").json()
    assert info["task"] == "regression" and info["columns"] == ["logS_pred"]
    assert info["meta"]["targets"] == ["logS"]
    assert info["config"]["num_hidden_layers"] == 2 and info["config"]["n_parameters"] > 0
    assert info["card"].startswith("# tiny ESOL regressor")
    assert info["limits"] == {"max_smiles_per_request": 8, "max_smiles_length": 100}


def test_page_and_its_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN or web fonts
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/predict", "/explain", "/model", "/health"}
    for docs in ("/docs", "/redoc"):  # Swagger UI and ReDoc from the package, not from a CDN
        html = client.get(docs).text
        assert "http://" not in html and "https://" not in html
        for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert asset.startswith("/") and client.get(asset).status_code == 200


def test_concurrent_requests_share_model_calls(served_dir, esol50):
    config = ServeConfig(max_wait_ms=50)
    smiles = list(esol50["smiles"][:12])
    with TestClient(create_app(served_dir, config)) as c:
        answers: dict[int, list] = {}

        def call(i: int) -> None:
            answers[i] = c.post("/predict", json={"smiles": [smiles[i], INVALID]}).json()["results"]

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(smiles))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = c.get("/health").json()["batching"]
    assert stats["requests"] == len(smiles)
    assert stats["batches"] < stats["requests"]  # some requests were merged
    for i, rows in answers.items():  # each caller got its own rows back
        assert rows[0]["smiles"] == smiles[i] and rows[0]["error"] is None
        assert rows[1]["error"] is not None


def test_create_app_rejects_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(SmilesformerError, match="smilesformer.json"):
        create_app(tmp_path)
    with pytest.raises(SmilesformerError, match="does not exist"):
        create_app(tmp_path / "missing")


def test_micro_batcher_merges_splits_and_propagates_errors():
    calls: list[list[int]] = []

    def square(items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("boom")
        calls.append(list(items))
        return [x * x for x in items]

    async def scenario():
        batcher = MicroBatcher(square, max_batch=5, max_wait_ms=30)
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(4)))
            with pytest.raises(ValueError, match="boom"):
                await batcher.submit([-1])
            after = await batcher.submit([3])
        finally:
            await batcher.stop()
        return results, after

    results, after = asyncio.run(scenario())
    assert results == [[i * i, (i + 100) ** 2] for i in range(4)]
    assert after == [9]
    assert all(len(c) <= 5 for c in calls)  # no call above max_batch
    assert len(calls) < 5  # 4 requests merged into fewer calls (plus the one after the error)
    assert sorted(np.concatenate(calls[:-1]).tolist()) == sorted([i for j in range(4) for i in (j, j + 100)])


def test_cli_serve_reports_a_bad_model_folder(tmp_path):
    from typer.testing import CliRunner

    from smilesformer.cli import app

    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", "0"])
    assert result.exit_code == 2
    assert "smilesformer.json" in result.output


def test_explain_gives_attribution_svg_and_attention(client):
    pytest.importorskip("captum")
    response = client.post("/explain", json={"smiles": "c1ccccc1O"})
    assert response.status_code == 200
    ex = response.json()
    assert ex["error"] is None and ex["n_atoms"] == 7
    assert set(ex["prediction"]) == {"logS_pred"}
    assert len(ex["atom_attributions"]) == 7
    assert "<svg" in ex["attribution_svg"]
    att = ex["atom_attention"]
    assert len(att["weights"]) == 2 and len(att["weights"][0]) == 2 and len(att["weights"][0][0]) == 7
    n_tokens = len(ex["tokens"])
    assert np.asarray(ex["attention"]["weights"]).shape == (2, 2, n_tokens, n_tokens)

    drawn = client.post("/draw", json={"smiles": "c1ccccc1O", "atom_weights": att["weights"][1][0],
                                       "legend": "layer 1, head 0"})
    assert drawn.status_code == 200 and "<svg" in drawn.json()["svg"]


def test_explain_and_draw_refuse_bad_input_without_500(client):
    invalid = client.post("/explain", json={"smiles": INVALID})
    assert invalid.status_code == 200
    assert "invalid SMILES" in invalid.json()["error"] and invalid.json()["attribution_svg"] is None
    out_of_range = client.post("/explain", json={"smiles": "CCO", "layer": 2})
    assert out_of_range.status_code == 422 and "layer 0..1" in out_of_range.json()["detail"]
    too_long = client.post("/explain", json={"smiles": "C" * 101})
    assert too_long.status_code == 422 and "limit is 100" in too_long.json()["detail"]
    wrong_count = client.post("/draw", json={"smiles": "CCO", "atom_weights": [1.0, 2.0]})
    assert wrong_count.status_code == 422 and "3 atoms" in wrong_count.json()["detail"]
    assert client.post("/draw", json={"smiles": INVALID, "atom_weights": [1.0]}).status_code == 422
