"""The web service through FastAPI's TestClient: predict, limits, health, model card, page, micro-batching."""

from __future__ import annotations

import asyncio
import json
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
    assert "SMILES 2 of the request (smiles[1])" in detail and "101 characters" in detail and "limit is 100" in detail


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
    assert info["limits"] == {"max_smiles_per_request": 8, "max_smiles_length": 100, "max_atoms": 200,
                              "request_timeout_s": 60.0, "max_body_bytes": 8 * (6 * 100 + 4) + 65536}


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
    with pytest.raises(SmilesformerError, match="not a model folder"):
        create_app(tmp_path)
    (tmp_path / "config.json").write_text("{}")
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
            # a bad item fails its own request only, not the requests merged into its batch
            mixed = await asyncio.gather(batcher.submit([5]), batcher.submit([-1, 6]), batcher.submit([7]),
                                         return_exceptions=True)
            assert mixed[0] == [25] and mixed[2] == [49]
            assert isinstance(mixed[1], ValueError)
            after = await batcher.submit([3])
        finally:
            await batcher.stop()
        return results, after

    results, after = asyncio.run(scenario())
    assert results == [[i * i, (i + 100) ** 2] for i in range(4)]
    assert after == [9]
    assert all(len(c) <= 5 for c in calls)  # no call above max_batch
    merged = [c for c in calls if c not in ([5], [7], [3])]
    assert len(merged) < 4  # 4 requests merged into fewer calls
    assert sorted(np.concatenate(merged).tolist()) == sorted([i for j in range(4) for i in (j, j + 100)])


def test_cli_serve_reports_a_bad_model_folder(tmp_path):
    from typer.testing import CliRunner

    from smilesformer.cli import app

    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", "0"])
    assert result.exit_code == 2
    assert "not a model folder" in result.output


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


def test_one_bad_request_does_not_fail_its_neighbours(served_dir, esol50):
    """A lone surrogate (valid JSON, not valid text) sent beside valid requests: its row fails, theirs do not."""
    smiles = list(esol50["smiles"][:5])
    with TestClient(create_app(served_dir, ServeConfig(max_wait_ms=100))) as c:
        answers: dict[int, object] = {}

        def call(i: int, body: bytes) -> None:
            answers[i] = c.post("/predict", content=body, headers={"content-type": "application/json"})

        bodies = [json.dumps({"smiles": [s]}).encode() for s in smiles] + [b'{"smiles": ["\\ud800", "CCO"]}']
        threads = [threading.Thread(target=call, args=(i, b)) for i, b in enumerate(bodies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(answers[i].status_code == 200 for i in range(6)), [answers[i].text for i in range(6)]
    for i, s in enumerate(smiles):
        assert answers[i].json()["results"][0] == {**answers[i].json()["results"][0], "smiles": s, "error": None}
    lone, ethanol = answers[5].json()["results"]
    assert lone["error"].startswith("invalid SMILES: not valid text") and ethanol["error"] is None


def test_size_and_time_limits(served_dir):
    config = ServeConfig(max_smiles_per_request=4, max_smiles_length=50, max_atoms=10, torch_threads=1)
    with TestClient(create_app(served_dir, config)) as c:
        rows = c.post("/predict", json={"smiles": ["CCO", "C" * 11]}).json()["results"]
        assert rows[0]["error"] is None
        assert rows[1]["error"].startswith("invalid SMILES: too large: 11 atoms, over the limit of 10")
        assert "too large" in c.post("/explain", json={"smiles": "C" * 11}).json()["error"]
        drawn = c.post("/draw", json={"smiles": "C" * 11, "atom_weights": [0.0] * 11})
        assert drawn.status_code == 422 and "too large" in drawn.json()["detail"]
        legend = c.post("/draw", json={"smiles": "CCO", "atom_weights": [0.0] * 3, "legend": "x" * 201})
        assert legend.status_code == 422
        # a body over the limit is refused before it is read, whether its length is declared or not
        big = json.dumps({"smiles": ["C" * 50] * 10_000}).encode()
        assert len(big) > config.max_body_bytes
        declared = c.post("/predict", content=big, headers={"content-type": "application/json"})
        assert declared.status_code == 413 and "max_body_bytes" in declared.json()["detail"]
        streamed = c.post("/predict", content=(big[i:i + 65536] for i in range(0, len(big), 65536)),
                          headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert c.post("/predict", json={"smiles": ["CCO"]}).status_code == 200
    with TestClient(create_app(served_dir, ServeConfig(request_timeout_s=0.001, max_wait_ms=50))) as c:
        late = c.post("/predict", json={"smiles": ["CCO"]})
        assert late.status_code == 503 and "request_timeout_s" in late.json()["detail"]
