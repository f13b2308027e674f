"""The prediction pipeline and the predictors that compose over it.

Every prediction, from any entry point (Python, CLI, streaming, Ray, the service, explain), goes the same way:
validate each row with RDKit, predict the valid ones, keep every row in order with the reason where one
failed (``predict_table``). Underneath, a predictor gives per molecule one or more *passes* (outputs in the
label scale, see ``tasks.Layout``); their mean is the prediction and their spread an uncertainty:

- ``Transformer``: one fine-tuned network and its tokenizer; one pass (the tokenize, length-batch, forward loop).
- ``Ensemble``: several transformers of one task; one pass each.
- ``Augmented``: any predictor, run on the SMILES as written and on ``n`` randomized SMILES (test-time
  augmentation); their passes together.
- ``TreeBlend``: any predictor whose mean is blended with gradient-boosted trees on RDKit descriptors.
- ``Uncertain``: the outermost predictor of a model fitted with a validation set: an uncertainty (``<target>_sd``
  and a 90% interval, or calibrated probabilities and a confidence) and a domain check on every prediction,
  from signals the predictors below give (``signals``) and the similarity to the training molecules.

A model folder says which of these it is (``smilesformer.json``, ``ensemble.json``, ``trees.skops``) and
``load_predictor`` builds it, so the folder kinds load the same everywhere.
"""

from __future__ import annotations

import copy
import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import MoleculeLimits, SmilesformerError, randomized_smiles, readable_like_the_rest, validate_smiles
from .descriptors import descriptor_inputs, uses_descriptors
from .networks import (
    capture_input,
    check_model_folder,
    download_model,
    head_input_layer,
    load_finetuned,
    quiet_transformers,
    resolve_model_source,
)
from .tasks import ENSEMBLE_FILE, ModelMeta, compute_metrics, molecule_errors, prediction_columns, prediction_matrix
from .tokenization import length_batches, warn_truncated, warn_unknown
from .trees import Trees, choose_weights, fit_trees, load_trees, save_trees, tree_outputs
from .uncertainty import (
    DEFAULT_SIGNALS,
    POOLED,
    SIGNALS,
    Reference,
    UncertaintyFit,
    calibrate,
    choose_domain_threshold,
    fit_calibration,
    fit_regression,
    predicted_sd,
    signal_matrix,
)

__all__ = ["ENSEMBLE_FILE", "Predictor", "Transformer", "Ensemble", "Augmented", "TreeBlend", "Uncertain",
           "Report", "predict_table", "load_predictor", "fit_blend", "fit_uncertain", "descriptor_lists"]

logger = logging.getLogger(__name__)


@dataclass
class Report:
    """A predictor's outputs on valid SMILES, with what a reader needs to trust them."""

    mean: np.ndarray
    """(n, num_labels) outputs in the label scale."""
    sd: np.ndarray | None = None
    """(n, num_labels) the error's standard deviation (regression) or the spread over passes; None: none."""
    similarity: np.ndarray | None = None
    """(n,) Tanimoto similarity to the nearest training molecule; None: the model has no reference."""


class Predictor:
    """What every predictor offers. Subclasses give ``meta``, ``members`` and ``passes``."""

    meta: ModelMeta

    @property
    def members(self) -> list[Transformer]:
        """The transformers underneath, in order (one for a single model)."""
        raise NotImplementedError

    def forward(self, smiles: Sequence[str], batch_size: int = 128, progress: bool = False,
                descriptors_of: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(passes, n, num_labels) outputs in the label scale for valid SMILES, and (n, d) the pooled vector the
        first member's head read on the SMILES as given (None: a network without a head), a by-product of the
        same forward passes.

        Args:
            descriptors_of: SMILES of the same molecules to compute RDKit descriptors from (the SMILES as given,
                when ``smiles`` are randomized spellings of them); default ``smiles``.
        """
        raise NotImplementedError

    def passes(self, smiles: Sequence[str], batch_size: int = 128, progress: bool = False,
               descriptors_of: Sequence[str] | None = None) -> np.ndarray:
        """(passes, n, num_labels) outputs in the label scale for valid SMILES (see ``forward``)."""
        return self.forward(smiles, batch_size, progress, descriptors_of)[0]

    def outputs(self, smiles: Sequence[str], batch_size: int = 128,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean (n, num_labels) over the passes, and their standard deviation (None with a single pass)."""
        passes = self.passes(smiles, batch_size, progress)
        return passes.mean(axis=0), (passes.std(axis=0) if len(passes) > 1 else None)

    def signals(self, smiles: Sequence[str], batch_size: int = 128,
                progress: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The mean outputs, and the signals of their uncertainty computed on the way (see ``uncertainty``):
        ``spread`` over several passes, and the head's pooled vectors (n, d) under ``POOLED`` (a ``Reference``
        turns them into the ``embedding`` signal); a blend adds ``disagreement``."""
        passes, pooled = self.forward(smiles, batch_size, progress)
        signals = {} if pooled is None else {POOLED: pooled}
        if len(passes) > 1:
            signals["spread"] = passes.std(axis=0)
        return passes.mean(axis=0), signals

    def report(self, smiles: Sequence[str], batch_size: int = 128, progress: bool = False) -> Report:
        """The outputs with their uncertainty and domain, where the predictor has them (``Uncertain`` does)."""
        return Report(*self.outputs(smiles, batch_size, progress))

    def predict(self, smiles: Sequence[str], batch_size: int = 128, progress: bool = False) -> pd.DataFrame:
        """One output row per input, in order, with an ``error`` column (see ``predict_table``)."""
        return predict_table(self, smiles, batch_size, progress)

    def evaluate(self, smiles: Sequence[str], labels, batch_size: int = 128) -> dict:
        """Metrics per target and averaged (see ``tasks.compute_metrics``)."""
        preds = self.predict(smiles, batch_size=batch_size)
        return compute_metrics(self.meta, np.asarray(labels, dtype=float).reshape(len(preds), -1),
                               prediction_matrix(self.meta, preds))

    def save_pretrained(self, folder: str | Path) -> Path:
        raise NotImplementedError

    def find(self, kind: type) -> Predictor | None:
        """This predictor or the one it wraps, at any depth, that is a ``kind`` (a ``TreeBlend``, say), or None."""
        return self if isinstance(self, kind) else None

    def to(self, device: str | torch.device) -> Predictor:
        for member in self.members:
            member.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.members[0].device


class Transformer(Predictor):
    """One network with a prediction head, its tokenizer, and what it predicts (``meta``)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, meta: ModelMeta):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta

    @property
    def members(self) -> list[Transformer]:
        return [self]

    @torch.inference_mode()
    def forward(self, smiles, batch_size=128, progress=False, descriptors_of=None):
        # The Trainer's predict pads batches in input order; sorting by length first cuts the padded tokens
        # (and time) several-fold on SMILES, whose lengths vary widely, hence this small loop.
        meta, tok, net = self.meta, self.tokenizer, self.model
        net.eval()
        ids = tok(list(smiles), truncation=True, max_length=meta.max_length, add_special_tokens=True)["input_ids"]
        out = np.zeros((len(ids), meta.num_labels), dtype=np.float32)
        head = head_input_layer(net)
        pooled = None
        batches = list(length_batches([len(x) for x in ids], batch_size))
        if progress:
            from rich.progress import track

            batches = track(batches, description="predicting")
        # (n, d) for a head that reads descriptors
        features = descriptor_inputs(net, smiles if descriptors_of is None else descriptors_of).get("descriptors")
        for batch in batches:
            padded = tok.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            if features is not None:
                padded["descriptors"] = features[torch.as_tensor(batch, device=features.device)]
            with capture_input(head) as captured:
                out[batch] = net(**{k: v.to(self.device) for k, v in padded.items()}).logits.float().cpu().numpy()
            if captured:
                if pooled is None:
                    pooled = np.zeros((len(ids), captured["pooled"].shape[-1]), dtype=np.float32)
                pooled[batch] = captured["pooled"].float().cpu().numpy()
        return meta.layout.outputs(meta, out)[None], pooled

    def save_pretrained(self, folder: str | Path) -> Path:
        """A standard HF folder (safetensors weights, config, tokenizer) plus smilesformer.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():  # no "Writing model shards" bar for a file of a few MB
            self.model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
        self.meta.save(folder)
        readable_like_the_rest(folder)
        return folder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class Ensemble(Predictor):
    """Several fine-tuned transformers of one task (the members), one pass each."""

    def __init__(self, members: Sequence[Transformer]):
        if not members:
            raise SmilesformerError("an ensemble needs at least one member model")
        first = members[0].meta
        for k, m in enumerate(members[1:], 1):
            if (m.meta.task, m.meta.targets, m.meta.n_classes) != (first.task, first.targets, first.n_classes):
                raise SmilesformerError(f"member {k} predicts {m.meta.targets} ({m.meta.task.value}), "
                                        f"member 0 predicts {first.targets} ({first.task.value})")
        self._members = [m for member in members for m in member.members]
        self.meta = copy.deepcopy(first)
        self.meta.ensemble_size = len(self._members)

    @property
    def members(self) -> list[Transformer]:
        return self._members

    def forward(self, smiles, batch_size=128, progress=False, descriptors_of=None):
        done = [m.forward(smiles, batch_size, progress, descriptors_of) for m in self._members]
        return np.concatenate([passes for passes, _ in done]), done[0][1]

    def save_pretrained(self, folder: str | Path) -> Path:
        """``member_<k>/`` model folders, ``ensemble.json`` listing them, and the shared ``smilesformer.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for k, member in enumerate(self._members):
            member.save_pretrained(folder / f"member_{k}")
            names.append(f"member_{k}")
        (folder / ENSEMBLE_FILE).write_text(json.dumps({"members": names}, indent=2))
        self.meta.save(folder)
        return folder


class _Wrapper(Predictor):
    """A predictor around another one, whose ``meta`` adds what the wrapper does."""

    def __init__(self, inner: Predictor):
        self.inner = inner
        self.meta = copy.deepcopy(inner.meta)

    @property
    def members(self) -> list[Transformer]:
        return self.inner.members

    def forward(self, smiles, batch_size=128, progress=False, descriptors_of=None):
        return self.inner.forward(smiles, batch_size, progress, descriptors_of)

    def find(self, kind: type) -> Predictor | None:
        return self if isinstance(self, kind) else self.inner.find(kind)

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = self.inner.save_pretrained(folder)
        self.meta.save(folder)  # the outermost meta describes the whole folder
        return folder


class Augmented(_Wrapper):
    """Test-time augmentation: the inner predictor on each SMILES as written and on ``n`` randomized SMILES of it.

    Descriptors depend on the molecule, not its spelling: they are computed from the SMILES as given.
    """

    def __init__(self, inner: Predictor, n: int):
        if n < 1:
            raise SmilesformerError(f"test-time augmentation needs n >= 1 randomized SMILES, got {n}")
        super().__init__(inner)
        self.n = self.meta.tta = n

    def forward(self, smiles, batch_size=128, progress=False, descriptors_of=None):
        smiles = list(smiles)
        # each molecule's spellings are drawn from a seed of its own SMILES: its prediction does not depend on
        # which other molecules share its batch or where it stands in it
        randomized = [randomized_smiles([s], self.n, seed=zlib.crc32(s.encode()))[0] for s in smiles]
        variants = [smiles] + [[r[k] for r in randomized] for k in range(self.n)]
        descriptors_of = smiles if descriptors_of is None else descriptors_of
        done = [self.inner.forward(v, batch_size, progress, descriptors_of) for v in variants]
        return np.concatenate([passes for passes, _ in done]), done[0][1]  # the pooled vectors as written


class TreeBlend(_Wrapper):
    """The inner predictor's mean blended with gradient-boosted trees on RDKit descriptors (see ``trees``):
    ``w * inner + (1 - w) * trees`` per target. The spread stays the inner predictor's (the interval scale,
    fitted on the blended predictions' errors, sets its size)."""

    def __init__(self, inner: Predictor, trees: Trees, weights: Sequence[float]):
        super().__init__(inner)
        self.trees = trees
        self.meta.tree_weights = [float(w) for w in weights]

    def tree_outputs(self, smiles: Sequence[str]) -> np.ndarray:
        """(n, num_labels) outputs of the trees alone (NaN for a target without trees)."""
        return tree_outputs(self.trees, self.meta, smiles)

    def weights(self) -> np.ndarray:
        """The transformer's weight per output column."""
        return self.meta.layout.output_columns(self.meta, self.meta.tree_weights)

    def outputs(self, smiles, batch_size=128, progress=False) -> tuple[np.ndarray, np.ndarray | None]:
        mean, sd = self.inner.outputs(smiles, batch_size, progress)
        return self.blend(smiles, mean), sd

    def signals(self, smiles, batch_size=128, progress=False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.blend_signals(smiles, *self.inner.signals(smiles, batch_size, progress))

    def blend_signals(self, smiles: Sequence[str], inner_mean: np.ndarray,
                      inner_signals: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The blended outputs, and the inner signals with ``disagreement``: |transformer - trees| per output
        (0 for a target without trees), given the inner predictor's mean outputs and signals on ``smiles``."""
        trees = self.tree_outputs(smiles)
        disagreement = np.nan_to_num(np.abs(inner_mean - trees))
        w = self.weights()
        return w * inner_mean + (1.0 - w) * np.nan_to_num(trees), {**inner_signals, "disagreement": disagreement}

    def blend(self, smiles: Sequence[str], inner_mean: np.ndarray) -> np.ndarray:
        """The blended outputs, given the inner predictor's mean outputs on ``smiles``."""
        trees = np.nan_to_num(self.tree_outputs(smiles))  # a target without trees has weight 1
        w = self.weights()
        return w * inner_mean + (1.0 - w) * trees

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = super().save_pretrained(folder)
        save_trees(self.trees, folder)
        return folder


def fit_blend(predictor: Predictor, smiles: Sequence[str], labels: np.ndarray,
              valid_smiles: Sequence[str] | None = None, valid_labels: np.ndarray | None = None, seed: int = 0,
              batch_size: int = 128, valid_outputs: np.ndarray | None = None) -> TreeBlend:
    """Trees fitted on the training molecules, blended with ``predictor`` with weights chosen on the valid ones.

    ``valid_outputs``: the predictor's mean outputs on ``valid_smiles`` where the caller has them already (an
    ensemble or test-time augmentation makes them costly); computed here otherwise.
    """
    meta = predictor.meta
    # the trees read the descriptors the head reads (computed once for both), RDKit's whole set without a head
    network = predictor.members[0].model
    names = network.config.descriptor_names if uses_descriptors(network) else None
    trees = fit_trees(meta, smiles, labels, seed, names)
    y = outputs = trees_out = None
    if valid_smiles is not None and len(valid_smiles):
        y = np.asarray(valid_labels, dtype=float).reshape(len(valid_smiles), -1)
        outputs = valid_outputs
        if outputs is None:
            outputs, _ = predictor.outputs(list(valid_smiles), batch_size)
        trees_out = tree_outputs(trees, meta, valid_smiles)
    return TreeBlend(predictor, trees, choose_weights(meta, y, outputs, trees_out))


class Uncertain(_Wrapper):
    """The inner predictor's outputs with an uncertainty and a domain check fitted on the validation set (see
    ``uncertainty``): regression gets ``sd`` (and, through ``meta.interval_scale``, a 90% interval); classification
    gets calibrated probabilities; both get the similarity to the nearest training molecule."""

    def __init__(self, inner: Predictor, reference: Reference, fit: UncertaintyFit):
        super().__init__(inner)
        self.reference = reference
        self.fit = fit
        self.meta.uncertainty = fit.to_dict()

    def outputs(self, smiles, batch_size=128, progress=False) -> tuple[np.ndarray, np.ndarray | None]:
        report = self.report(smiles, batch_size, progress)
        return report.mean, report.sd

    def report(self, smiles, batch_size=128, progress=False) -> Report:
        smiles = list(smiles)
        meta = self.meta
        mean, signals = self.inner.signals(smiles, batch_size, progress)
        similarity, near = self.reference.signals(smiles, mean if meta.layout.has_interval else None,
                                                  signals.pop(POOLED, None))
        signals.update(near)
        if meta.layout.has_interval:
            sd = np.stack([predicted_sd(w, signal_matrix(signals, self.fit.signals, j))
                           for j, w in enumerate(self.fit.weights)], axis=1).astype(np.float32)
            return Report(mean, sd, similarity)
        mean = calibrate(mean, self.fit.calibration, meta.n_classes > 2)
        return Report(mean, signals.get("spread"), similarity)

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = super().save_pretrained(folder)
        self.reference.save(folder)
        return folder


def fit_uncertain(predictor: Predictor, smiles: Sequence[str], labels: np.ndarray, valid_smiles: Sequence[str],
                  valid_y: np.ndarray,
                  valid_signals: tuple[np.ndarray, dict[str, np.ndarray]] | None = None, seed: int = 0,
                  batch_size: int = 128) -> Uncertain:
    """``predictor`` with an uncertainty and a domain check fitted on the validation set (see ``uncertainty``).

    Args:
        smiles, labels: the training SMILES and (n, targets) labels (the reference of the domain check and of the
            neighbour signals).
        valid_y: (n, targets) validation labels, NaN where missing.
        valid_signals: the predictor's ``signals`` on ``valid_smiles``, where the caller has them already.
    """
    meta = predictor.meta
    regression = meta.layout.has_interval
    # the embedding signal is fitted for regression only (classification's calibration reads none): the training
    # molecules' pooled vectors cost one forward pass of the first member over them
    embed = (lambda batch: predictor.members[0].forward(batch, batch_size)[1]) if regression else None
    reference = Reference.from_smiles(smiles, labels if regression else None, seed, embed)
    mean, signals = valid_signals or predictor.signals(list(valid_smiles), batch_size)
    signals = dict(signals)
    similarity, near = reference.signals(list(valid_smiles), mean if regression else None, signals.pop(POOLED, None))
    signals.update(near)
    fit = UncertaintyFit(signals=[name for name in SIGNALS if name in signals and name in DEFAULT_SIGNALS],
                         reference_size=len(reference), n_valid=len(valid_smiles))
    if meta.layout.has_interval:
        fit.weights, scales = fit_regression(valid_y, mean, signals, fit.signals, seed)
        meta.interval_scale = scales
    else:
        fit.calibration = fit_calibration(valid_y, mean, meta.n_classes > 2)
        mean = calibrate(mean, fit.calibration, meta.n_classes > 2)
    fit.domain_threshold, fit.domain_choice = choose_domain_threshold(similarity, molecule_errors(meta, valid_y, mean))
    return Uncertain(predictor, reference, fit)


def predict_table(predictor: Predictor, smiles: Sequence[str], batch_size: int = 128,
                  progress: bool = False, limits: MoleculeLimits | None = None) -> pd.DataFrame:
    """Predictions for every input row, in input order, with the reason in ``error`` where a row fails.

    Columns: see ``tasks.prediction_columns``; with several passes per molecule (members or test-time
    augmentation) the spread columns are filled too. A molecule over ``limits`` (default: those in force,
    ``MoleculeLimits.current()``) is a failed row.
    """
    meta = predictor.meta
    clean, errors = validate_smiles(list(smiles), limits)
    rows = [i for i, s in enumerate(clean) if s is not None]
    table = pd.DataFrame(np.nan, index=range(len(clean)), columns=prediction_columns(meta))
    if rows:
        valid = [clean[i] for i in rows]
        first = predictor.members[0]
        warn_truncated(first.tokenizer, valid, meta.max_length)
        warn_unknown(first.tokenizer, valid)
        report = predictor.report(valid, batch_size, progress)
        sd = report.sd if meta.has_spread or meta.has_uncertainty else None
        meta.layout.write(table, rows, meta, report.mean, sd)
        if report.similarity is not None:
            table.loc[rows, "domain_similarity"] = report.similarity
            inside = pd.array([pd.NA] * len(table), dtype="boolean")  # NA: a failed row, not out of the domain
            inside[rows] = report.similarity >= meta.uncertainty["domain_threshold"]
            table["in_domain"] = inside
    table["error"] = errors
    return table


def descriptor_lists(predictor: Predictor) -> list[tuple[str, ...]]:
    """The RDKit descriptor lists a prediction computes (the head's, the trees'), each once; [] for none."""
    lists = [tuple(m.model.config.descriptor_names) for m in predictor.members if uses_descriptors(m.model)]
    blend = predictor.find(TreeBlend)
    if blend is not None:
        lists.append(tuple(blend.trees.descriptor_names))
    return list(dict.fromkeys(lists))


def load_predictor(path: str | Path) -> Predictor:
    """The predictor a fine-tuned model folder holds: a transformer or an ensemble (``ensemble.json``), with
    test-time augmentation (``tta`` in smilesformer.json) and a tree blend (``trees.skops``) around it.

    Raises:
        SmilesformerError: not a fine-tuned model folder, or a part of it is missing.
    """
    folder = Path(resolve_model_source(str(path)))
    if not folder.is_dir():  # a hub name: its files in the local cache
        folder = download_model(str(path))
    if (folder / ENSEMBLE_FILE).is_file():
        check_model_folder(folder)  # the ensemble's own files; load_finetuned checks each member's (and a single
        # model's folder, trees included) as it loads
        names = json.loads((folder / ENSEMBLE_FILE).read_text())["members"]
        predictor: Predictor = Ensemble([Transformer(*load_finetuned(folder / name, f"{path}/{name}"))
                                         for name in names])
    else:
        predictor = Transformer(*load_finetuned(folder, str(path)))
    meta = ModelMeta.load(folder)
    predictor.meta.tta, predictor.meta.tree_weights = 0, None  # the wrappers below add what the folder says
    if meta.tta:
        predictor = Augmented(predictor, meta.tta)
    if meta.tree_weights is not None:
        predictor = TreeBlend(predictor, load_trees(folder), meta.tree_weights)
    if meta.uncertainty is not None:
        predictor = Uncertain(predictor, Reference.load(folder), UncertaintyFit.from_dict(meta.uncertainty))
    else:
        logger.warning("%s carries no uncertainty or domain check (fine-tuned without a validation set, or by an "
                       "older smilesformer): its predictions come without <target>_sd, intervals and "
                       "in_domain; fine-tune it again with a validation set to get them", path)
    predictor.meta = meta
    return predictor
