"""The HTTP service: a FastAPI app that serves one fine-tuned model, its API and a web page.

``create_app(model_dir)`` builds the app; the model is loaded once when the app starts (lifespan) and every
model call runs on one worker thread, through a micro-batcher that merges concurrent ``/predict`` requests.

Endpoints: ``POST /predict`` (many SMILES), ``POST /explain`` (one SMILES: attributions and attention),
``POST /draw`` (a structure coloured by given atom weights), ``GET /model``, ``GET /health``, the page at
``/`` and the OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from ..config import ServeConfig
from ..data import MoleculeLimits, SmilesformerError, parse_smiles
from ..model import SmilesModel
from ..networks import resolve_model_source
from ..predictors import predict_table
from ..tasks import DOMAIN_COLUMNS, META_FILE, prediction_columns
from ..version import __version__
from .batching import MicroBatcher

T = TypeVar("T")

__all__ = [
    "DrawRequest",
    "DrawResponse",
    "ExplainRequest",
    "ExplainResponse",
    "Health",
    "ModelInfo",
    "PredictRequest",
    "PredictResponse",
    "RowPrediction",
    "ServeConfig",
    "create_app",
    "run_server",
]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


# request and response bodies (they are the OpenAPI schema) ----------------------------------------------------
class PredictRequest(BaseModel):
    smiles: list[str] = Field(min_length=1, description="SMILES to predict, one per molecule.",
                              examples=[["CCO", "c1ccccc1O", "not a smiles"]])


class RowPrediction(BaseModel):
    row: int = Field(description="Position of this SMILES in the request (0-based).")
    smiles: str
    predictions: dict[str, float | None] = Field(
        description="Column -> value, columns as in `GET /model` (`<target>_pred`, `<target>_prob`, ...); "
                    "null where the SMILES is invalid.")
    uncertainty: dict[str, float | None] | None = Field(
        default=None, description="The prediction's uncertainty, by column: `<target>_sd` (the error's standard "
                                  "deviation) and the 90% interval `<target>_pi90_low/high` (regression), "
                                  "`<target>_confidence` (classification: calibrated probability of the predicted "
                                  "class); null: this model gives no uncertainty.")
    domain: dict[str, Any] | None = Field(
        default=None, description="`similarity`: Tanimoto similarity to the nearest training molecule; "
                                  "`in_domain`: false below the model's `threshold` (chosen on its validation set: "
                                  "such molecules had clearly larger errors; still predicted); null: no domain check.")
    error: str | None = Field(default=None, description="Why this row has no prediction (invalid SMILES).")
    warning: str | None = Field(default=None, description="A caveat, e.g. the SMILES was truncated.")


class PredictResponse(BaseModel):
    model: str
    task: str
    targets: list[str]
    columns: list[str]
    results: list[RowPrediction]


class ExplainRequest(BaseModel):
    smiles: str = Field(examples=["c1ccccc1O"])
    layer: int | None = Field(default=None, description="Only this layer's attention (default: all).")
    head: int | None = Field(default=None, description="Only this head's attention (default: all).")
    target: int = Field(default=0, ge=0, description="Output to attribute (target or class index).")


class ExplainResponse(BaseModel):
    smiles: str
    prediction: dict[str, float | None] | None = Field(default=None, description="As in `/predict`.")
    tokens: list[str] | None = Field(default=None, description="Tokens, special tokens included.")
    token_atoms: list[list[int]] | None = Field(
        default=None, description="Atom indices each token spells ([] for ring digits, bonds, specials).")
    n_atoms: int | None = None
    atom_attributions: list[float] | None = Field(
        default=None, description="Integrated-gradients attribution per atom (sum over its tokens).")
    token_attributions: list[float] | None = None
    attributed_output: str | None = Field(default=None, description="The output that was attributed.")
    output_value: float | None = None
    baseline_value: float | None = None
    completeness_gap: float | None = Field(
        default=None, description="Integrated-gradients check: sum of attributions minus the output change.")
    blend: dict[str, Any] | None = Field(
        default=None, description='For a model blended with trees: {"transformer_weight", "trees_output", "note"}; '
                                  "the prediction is w * output_value + (1 - w) * trees_output, and the "
                                  "attributions explain the transformer's part")
    attribution_svg: str | None = Field(default=None, description="The structure coloured by attribution.")
    attention: dict[str, Any] | None = Field(
        default=None, description='{"layers", "heads" (counts), "weights"[layer][head][token][token]}')
    atom_attention: dict[str, Any] | None = Field(
        default=None, description='{"layers", "heads" (counts), "weights"[layer][head][atom]}: attention each '
                                  "atom receives; draw one with `POST /draw`")
    attention_svg: str | None = Field(
        default=None, description="The structure coloured by the attention of the requested layer and head.")
    error: str | None = Field(default=None, description="Why there is no explanation (invalid SMILES).")


class DrawRequest(BaseModel):
    smiles: str
    atom_weights: list[float] = Field(max_length=2000, description="One weight per atom, in RDKit atom order.")
    legend: str = Field(default="", max_length=200)
    width: int = Field(default=400, ge=50, le=2000)
    height: int = Field(default=300, ge=50, le=2000)


class DrawResponse(BaseModel):
    svg: str


class ModelInfo(BaseModel):
    name: str = Field(description="The model folder's name.")
    task: str
    targets: list[str]
    columns: list[str] = Field(description="Prediction columns that `POST /predict` returns.")
    meta: dict[str, Any] = Field(description=f"The folder's {META_FILE}.")
    config: dict[str, Any] = Field(description="Architecture summary.")
    card: str | None = Field(default=None, description="The folder's README.md (model card), if any.")
    limits: dict[str, Any]
    version: str = Field(description="smilesformer version serving the model.")


class Health(BaseModel):
    status: str
    model: str
    version: str
    queued_requests: int
    batching: dict[str, Any]


# the model side --------------------------------------------------------------------------------------------
def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def predict_rows(model: SmilesModel, smiles: list[str], batch_size: int,
                 limits: MoleculeLimits | None = None) -> list[dict[str, Any]]:
    """One result dict per SMILES (the micro-batcher's batch function); invalid SMILES get an ``error``."""
    meta = model.meta
    columns = served_columns(meta)
    spread = set(meta.layout.spread_columns(meta))
    table = predict_table(model, smiles, batch_size=batch_size, limits=limits)
    values = table[columns].to_numpy(float)  # (n, columns)
    threshold = meta.uncertainty["domain_threshold"] if meta.has_uncertainty else None
    valid = [i for i, e in enumerate(table["error"]) if not e]
    lengths = dict(zip(valid, model.tokenizer([smiles[i].strip() for i in valid], add_special_tokens=True,
                                              return_length=True)["length"])) if valid else {}
    rows = []
    for i, s in enumerate(smiles):
        error = table["error"].iat[i] or None
        warning = None
        if lengths.get(i, 0) > model.meta.max_length:
            warning = (f"{lengths[i]} tokens, more than the model's {model.meta.max_length}: the SMILES was "
                       "truncated and its prediction is less reliable")
        shown = {c: _finite(v) for c, v in zip(columns, values[i])}
        uncertainty = {c: v for c, v in shown.items() if c in spread} or None
        domain = None
        if threshold is not None and not error:
            domain = {"similarity": _finite(table["domain_similarity"].iat[i]),
                      "in_domain": bool(table["in_domain"].iat[i]), "threshold": threshold}
        rows.append({"smiles": _as_text(s), "predictions": shown, "uncertainty": uncertainty, "domain": domain,
                     "error": error, "warning": warning})
    return rows


def served_columns(meta) -> list[str]:
    """The columns of a result's ``predictions``: the prediction table's, but for the domain check (its own field)."""
    return [c for c in prediction_columns(meta) if c not in DOMAIN_COLUMNS]


def _as_text(smiles: str) -> str:
    """The SMILES as sent, with what UTF-8 cannot carry (a lone surrogate) written as its escape (\\ud800)."""
    return smiles.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers and the response would fail to encode."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _config_summary(model: SmilesModel) -> dict[str, Any]:
    config = model.model.config
    keys = ["model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "vocab_size", "max_position_embeddings", "num_labels", "problem_type"]
    summary = {k: getattr(config, k, None) for k in keys}
    summary["n_parameters"] = sum(p.numel() for p in model.model.parameters())
    summary["tokenizer_size"] = len(model.tokenizer)
    summary["max_length"] = model.meta.max_length
    return summary


@dataclass
class _Service:
    model: SmilesModel
    batcher: MicroBatcher
    info: ModelInfo


def _model_folder(model_dir: Path) -> Path:
    """The fine-tuned model folder to serve (a run folder stands for its model/)."""
    if not model_dir.exists():
        raise SmilesformerError(f"model folder {model_dir} does not exist; pass a fine-tuned model folder "
                                "(a run's model/ folder, written by `smilesformer finetune`)")
    folder = Path(resolve_model_source(str(model_dir)))
    if not (folder / META_FILE).is_file():
        raise SmilesformerError(f"{model_dir} has no {META_FILE}, so it is not a fine-tuned smilesformer model; "
                                "pass a run's model/ folder (written by `smilesformer finetune`)")
    return folder


def _too_long(smiles: str, row: int | None, settings: ServeConfig) -> HTTPException | None:
    if len(smiles) <= settings.max_smiles_length:
        return None
    where = f"SMILES {row + 1} of the request (smiles[{row}])" if row is not None else "the SMILES"
    return HTTPException(422, f"{where} has {len(smiles)} characters; the limit is {settings.max_smiles_length} "
                              f"characters per SMILES (max_smiles_length). Shorten or drop it.")


def _limits(settings: ServeConfig) -> MoleculeLimits:
    return MoleculeLimits(max_chars=settings.max_smiles_length, max_atoms=settings.max_atoms)


async def _in_time(work: Awaitable[T], settings: ServeConfig) -> T:
    try:
        return await asyncio.wait_for(work, settings.request_timeout_s)
    except TimeoutError:
        raise HTTPException(503, f"no result within {settings.request_timeout_s:g} s (request_timeout_s): the "
                                 "service is busy or the molecules are large; retry, or send fewer SMILES per "
                                 "request") from None


class BodyLimit:
    """ASGI middleware refusing a request body over ``max_bytes`` with 413 before it is read into memory.

    Written by hand because Starlette and uvicorn have no body-size limit (uvicorn's h11 limit is for headers):
    without one a 60 MB body costs about 800 MB of memory before the request's own limits can refuse it.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        seen, refused = 0, False

        async def counted() -> dict:
            # a body without a declared length, counted as it arrives: at the limit the 413 goes out and the app
            # sees the client leave (FastAPI would turn an exception raised here into a 400)
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes and not refused:
                refused = True
                await self._refuse(send)
                return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: dict) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted, send_unless_refused)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": f"request body over {self.max_bytes} bytes (max_body_bytes, from "
                                     "max_smiles_per_request and max_smiles_length); send fewer SMILES per "
                                     "request"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# the app -----------------------------------------------------------------------------------------------------
def create_app(model_dir: str | Path, config: ServeConfig | None = None) -> FastAPI:
    """A FastAPI app serving the fine-tuned model in ``model_dir``, its API and the web page.

    Args:
        model_dir: a smilesformer model folder (with smilesformer.json); checked now, loaded at start-up.
        config: request limits and batching settings; defaults to ``ServeConfig()``.

    Raises:
        SmilesformerError: ``model_dir`` is not a fine-tuned model folder.
    """
    model_dir = _model_folder(Path(model_dir))
    settings = config or ServeConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model = SmilesModel.from_pretrained(model_dir)  # any fine-tuned folder: one model, ensemble, blend
        for member in model.members:
            member.model.eval()
        batcher: MicroBatcher[str, dict] = MicroBatcher(
            lambda smiles: predict_rows(model, smiles, settings.batch_size, _limits(settings)), settings.max_batch,
            settings.max_wait_ms)
        card = model_dir / "README.md"
        info = ModelInfo(
            name=model_dir.resolve().name, task=model.meta.task.value, targets=model.meta.targets,
            columns=served_columns(model.meta), meta=json.loads((model_dir / META_FILE).read_text()),
            config=_config_summary(model), card=card.read_text() if card.is_file() else None,
            limits={"max_smiles_per_request": settings.max_smiles_per_request,
                    "max_smiles_length": settings.max_smiles_length, "max_atoms": settings.max_atoms,
                    "request_timeout_s": settings.request_timeout_s, "max_body_bytes": settings.max_body_bytes},
            version=__version__,
        )
        await batcher.start()
        # set on the model thread itself: OpenMP keeps the thread count per calling thread (None: the count this
        # process chose, e.g. the CLI's --threads policy)
        await batcher.run(torch.set_num_threads, settings.torch_threads or torch.get_num_threads())
        app.state.service = _Service(model, batcher, info)
        logger.info("serving %s (%s, targets %s)", info.name, info.task, ", ".join(info.targets))
        try:
            yield
        finally:
            await batcher.stop()

    # FastAPI's /docs pages load Swagger UI from a CDN; fastapi-offline serves the same files from the package
    app = FastAPIOffline(
        title="smilesformer",
        version=__version__,
        summary="Predictions, attributions and attention of a chemical language model on SMILES.",
        lifespan=lifespan,
    )

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    def service(request: Request) -> _Service:
        return request.app.state.service

    @app.post("/predict", response_model=PredictResponse, responses={
        413: {"description": "More SMILES than max_smiles_per_request."},
        422: {"description": "A SMILES longer than max_smiles_length, or a malformed body."}})
    async def predict(body: PredictRequest, request: Request) -> PredictResponse:
        """Predict a batch of SMILES: one result per input, in order; an invalid SMILES gets an `error`."""
        svc = service(request)
        if len(body.smiles) > settings.max_smiles_per_request:
            raise HTTPException(413, f"{len(body.smiles)} SMILES in one request; the limit is "
                                     f"{settings.max_smiles_per_request} per request (max_smiles_per_request). "
                                     "Split them into several requests.")
        for row, s in enumerate(body.smiles):
            if (problem := _too_long(s, row, settings)) is not None:
                raise problem
        rows = await _in_time(svc.batcher.submit(body.smiles), settings)
        return PredictResponse(model=svc.info.name, task=svc.info.task, targets=svc.info.targets,
                               columns=svc.info.columns,
                               results=[RowPrediction(row=i, **r) for i, r in enumerate(rows)])

    @app.post("/explain", response_model=ExplainResponse, responses={
        422: {"description": "A SMILES longer than max_smiles_length, or a layer/head/target out of range."}})
    async def explain(body: ExplainRequest, request: Request) -> ExplainResponse:
        """Explain one prediction: atom attributions (drawn as SVG) and attention weights.

        An invalid SMILES answers 200 with `error` set, as in `/predict`.
        """
        from ..explain import explain_molecule

        svc = service(request)
        if (problem := _too_long(body.smiles, None, settings)) is not None:
            raise problem
        n_layers = svc.info.config["num_hidden_layers"]
        n_heads = svc.info.config["num_attention_heads"]
        for name, value, n in (("layer", body.layer, n_layers), ("head", body.head, n_heads),
                               ("target", body.target, svc.info.config["num_labels"])):
            if value is not None and not 0 <= value < n:
                raise HTTPException(422, f"{name} {value} is out of range: this model has {n} ({name} 0..{n - 1})")
        mol, reason = parse_smiles(body.smiles, _limits(settings))
        if mol is None:
            return ExplainResponse(smiles=_as_text(body.smiles), error=f"invalid SMILES: {reason}")
        try:
            result = await _in_time(svc.batcher.run(explain_molecule, svc.model, body.smiles, body.layer, body.head,
                                                    body.target), settings)
        except SmilesformerError as exc:
            return ExplainResponse(smiles=body.smiles, error=str(exc))
        return ExplainResponse(**_json_safe(result))

    @app.post("/draw", response_model=DrawResponse, responses={
        422: {"description": "An invalid SMILES, or not one weight per atom."}})
    def draw(body: DrawRequest) -> DrawResponse:
        """Draw a structure with atoms coloured by the given weights (e.g. one head's attention from `/explain`)."""
        from ..explain import draw_atom_heatmap

        if (problem := _too_long(body.smiles, None, settings)) is not None:
            raise problem
        mol, reason = parse_smiles(body.smiles, _limits(settings))
        if mol is None:
            raise HTTPException(422, f"invalid SMILES {body.smiles!r}: {reason}")
        try:
            svg = draw_atom_heatmap(body.smiles, body.atom_weights, fmt="svg", size=(body.width, body.height),
                                    legend=body.legend)
        except (SmilesformerError, ValueError) as exc:
            raise HTTPException(422, str(exc)) from exc
        return DrawResponse(svg=svg)

    @app.get("/model", response_model=ModelInfo)
    async def model_info(request: Request) -> ModelInfo:
        """The served model: its smilesformer.json, architecture, model card and request settings."""
        return service(request).info

    @app.get("/health", response_model=Health)
    async def health(request: Request) -> Health:
        """Liveness, and batching counters (requests / batches > 1 means requests are being merged)."""
        svc = service(request)
        return Health(status="ok" if svc.batcher.running else "stopped", model=svc.info.name, version=__version__,
                      queued_requests=svc.batcher.queued, batching=svc.batcher.stats.as_dict())

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def run_server(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
               config: ServeConfig | None = None, log_level: str = "info") -> None:
    """Serve ``model_dir`` with uvicorn until interrupted (the ``smilesformer serve`` command)."""
    import uvicorn

    app = create_app(model_dir, config)
    logger.info("page at http://%s:%d/ and API docs at http://%s:%d/docs", host, port, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
