"""Fine-tuning through the Hugging Face Trainer. The only module that builds ``Trainer`` or
``TrainingArguments``: their argument names change between transformers releases (tested on 5.x)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from torch.utils.data import Dataset
from transformers import (
    EarlyStoppingCallback,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from .budget import BudgetSchedule, TimeBudget
from .config import Objective, Precision, PretrainConfig, TrainConfig
from .data import SmilesformerError, randomized_smiles
from .descriptors import ENCODER_TYPES, compute_descriptors, descriptor_names, uses_descriptors
from .evaluate import calibrate_interval
from .networks import bundled_model_path, quiet_transformers
from .objectives import MTR_HEAD_FILE, MlmMtrCollator, MtrCollator, mtr_model
from .predictors import Augmented, Ensemble, Predictor, Transformer, fit_blend, fit_uncertain
from .tasks import layout_of_problem
from .tokenization import warn_truncated, warn_unknown

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["finetune", "fit_predictor", "adapt_mtr", "run_pretraining", "training_arguments", "distributed_state",
           "EncodedDataset", "MaskedLossTrainer", "PretrainTrainer"]

logger = logging.getLogger(__name__)


class EncodedDataset(Dataset):
    """Tokenized SMILES with their (scaled) labels, and RDKit descriptors for a model whose head reads them;
    lengths vary, padding happens per batch."""

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray, descriptors: np.ndarray | None = None):
        self.input_ids = input_ids
        self.labels = labels  # (n, targets) float, NaN = missing; or (n,) class ids
        self.descriptors = descriptors  # (n, d) raw values, or None

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.input_ids[i], "labels": self.labels[i]}
        if self.descriptors is not None:
            item["descriptors"] = self.descriptors[i]
        return item

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), np.int64, len(self.input_ids))


class AugmentedDataset(Dataset):
    """Each molecule in several spellings (its SMILES and randomized ones); an item is one of them, drawn
    afresh each time it is read, so every epoch sees each molecule written a new way (SMILES enumeration)."""

    def __init__(self, variants: list[list[list[int]]], labels: np.ndarray, seed: int,
                 descriptors: np.ndarray | None = None):
        self.variants = variants  # per molecule, the token ids of each spelling
        self.labels = labels
        self.descriptors = descriptors  # per molecule: descriptors do not depend on the spelling
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.variants)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(options[0]) for options in self.variants), np.int64, len(self.variants))

    def __getitem__(self, i: int) -> dict:
        options = self.variants[i]
        item = {"input_ids": options[self.rng.integers(len(options))], "labels": self.labels[i]}
        if self.descriptors is not None:
            item["descriptors"] = self.descriptors[i]
        return item


def layerwise_param_groups(net: torch.nn.Module, learning_rate: float, decay: float,
                           weight_decay: float) -> list[dict]:
    """AdamW parameter groups with layer-wise learning-rate decay (LLRD).

    The head trains at ``learning_rate``, encoder layer L-1 at ``learning_rate * decay``, ..., the
    embeddings at ``learning_rate * decay**(L+1)``: the lower layers, whose pretrained features are the
    most general, move least. Biases and LayerNorm weights get no weight decay, as in the Trainer.
    """
    n_layers = net.config.num_hidden_layers
    groups: dict[tuple[float, float], list] = {}
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        if ".layer." in name and ".encoder." in name:
            depth = int(name.split(".layer.")[1].split(".")[0]) + 1
        elif ".embeddings." in name:
            depth = 0
        else:  # the head (and a pooler, if any)
            depth = n_layers + 1
        lr = learning_rate * decay ** (n_layers + 1 - depth)
        wd = 0.0 if name.endswith(".bias") or "LayerNorm" in name else weight_decay
        groups.setdefault((lr, wd), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]


class PadCollator:
    """Pads input ids to the longest in the batch (dynamic padding) and stacks the labels (and descriptors)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, label_dtype: torch.dtype, pad_to: int | None = None):
        self.tokenizer = tokenizer
        self.label_dtype = label_dtype
        self.pad_to = pad_to  # fixed-length padding, only to measure what dynamic padding saves

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        padding = {"padding": "max_length", "max_length": self.pad_to} if self.pad_to else {}
        batch = self.tokenizer.pad({"input_ids": [f["input_ids"] for f in features]}, return_tensors="pt", **padding)
        batch["labels"] = torch.as_tensor(np.stack([f["labels"] for f in features]), dtype=self.label_dtype)
        if "descriptors" in features[0]:
            batch["descriptors"] = torch.as_tensor(np.stack([f["descriptors"] for f in features]), dtype=torch.float32)
        return dict(batch)


class SortedBatchSampler(torch.utils.data.Sampler[int]):
    """Indices in batches of molecules of about one length, the batches in random order: each epoch the molecules
    are shuffled, sorted by length (the shuffle breaks the many ties), cut into batches, and the batches shuffled.

    transformers' ``LengthGroupedSampler`` sorts only within mega-batches of 4 to 50 batches, and finds the lengths
    by reading every item: on the demo's 798 molecules (6 batches a mega-batch) its batches held 1.6x their real
    tokens once padded, a full sort 1.1x (ChemBERTa-shaped BPE tokenizer; benchmarks/phases.py), and for a corpus of
    1.58M molecules the reading cost seconds of a GPU window that a token cache's offsets give at once.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer's call: a resumed run draws the epoch's order again
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        order = order[np.argsort(self.lengths[order], kind="stable")]
        starts = np.arange(0, len(order), self.batch_size)
        for start in rng.permutation(starts):
            yield from order[start:start + self.batch_size].tolist()


class PretrainTrainer(Trainer):
    """Trainer whose learning rate follows a ``BudgetSchedule`` (``schedule``) that a time budget can re-fit while
    training runs (the Trainer's own schedules are fixed at the start), and whose length-grouped batches come from
    ``SortedBatchSampler`` where the dataset knows its lengths."""

    schedule: BudgetSchedule | None = None

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.schedule is not None and self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.schedule)
        return super().create_scheduler(num_training_steps, optimizer)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "lengths"):
            return SortedBatchSampler(dataset.lengths, self.args.train_batch_size, self.args.seed)
        return super()._get_train_sampler(train_dataset)


class MaskedLossTrainer(PretrainTrainer):
    """Trainer whose loss is the task layout's (``tasks.Layout.loss``): missing labels (NaN) are left out, so
    multi-task data with gaps trains as is.

    HF heads compute MSE / BCE over every label; a NaN would poison the batch. This is the one
    subclass we keep: everything else is configured through ``TrainingArguments``.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        problem = getattr(model, "module", model).config.problem_type  # under DDP, `model` wraps the HF model
        loss = layout_of_problem(problem).loss(outputs.logits.float(), labels)
        return (loss, outputs) if return_outputs else loss


def _precision_flags(precision: Precision) -> dict[str, bool]:
    cuda = torch.cuda.is_available()
    if precision is Precision.auto:
        precision = Precision.bf16 if cuda and torch.cuda.is_bf16_supported() else Precision.fp32
    if precision is not Precision.fp32 and not cuda:
        logger.warning("%s needs a GPU; training in fp32 on the CPU", precision.value)
        precision = Precision.fp32
    return {"bf16": precision is Precision.bf16, "fp16": precision is Precision.fp16}


def training_arguments(
    output_dir: Path, config: TrainConfig, n_train: int, has_valid: bool, **overrides
) -> TrainingArguments:
    """TrainingArguments for a fine-tuning or pretraining run (warm-up given as a fraction of all steps)."""
    if _world_size() > 1:  # torchrun / accelerate launch: one process per device or CPU worker
        world = _world_size()
    else:  # one process: the Trainer spreads a batch over every visible GPU
        world = max(torch.cuda.device_count(), 1) if torch.cuda.is_available() else 1
    steps_per_epoch = math.ceil(n_train / (config.batch_size * world))
    strategy = "epoch" if has_valid else "no"
    kwargs = dict(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=int(config.warmup_fraction * steps_per_epoch * config.epochs),
        lr_scheduler_type="linear",
        eval_strategy=strategy,
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=has_valid,
        metric_for_best_model="eval_loss" if has_valid else None,
        greater_is_better=False if has_valid else None,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=not config.progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Several processes without a GPU: the Trainer runs DDP over gloo only when told it is on the CPU.
        use_cpu=_world_size() > 1 and not torch.cuda.is_available(),
        # With this on, the Trainer multiplies each process's loss by the number of processes, expecting the
        # model to divide by the tokens of all of them; RoBERTa's MLM loss is a per-process mean, so loss and
        # gradients would come out world-size times too large. DDP's gradient averaging is already right.
        average_tokens_across_devices=False,
        **_precision_flags(config.precision),
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _label_matrix(labels, n: int, n_targets: int) -> np.ndarray:
    values = labels.to_numpy(float) if isinstance(labels, (pd.DataFrame, pd.Series)) else np.asarray(labels, float)
    if values.size != n * n_targets:
        raise SmilesformerError(f"got {values.size} label values for {n} molecules and {n_targets} target(s)")
    return values.reshape(n, n_targets)


def finetune(
    model: Transformer,
    smiles: Sequence[str],
    labels,
    valid_smiles: Sequence[str] | None,
    valid_labels,
    config: TrainConfig,
    output_dir: str | Path | None,
) -> list[dict]:
    """Fine-tune one transformer in place; returns the Trainer's log history (losses per step and epoch).

    The labels are scaled as the task layout says (regression: standardized with the training mean and
    standard deviation, stored in ``model.meta`` and undone at predict time). With a valid set, the best epoch
    by validation loss is kept and training stops early after ``config.early_stopping_patience`` epochs without
    improvement. With ``config.resume`` and checkpoints in ``output_dir``, training continues from the last one.
    """
    meta, layout = model.meta, model.meta.layout
    y = _label_matrix(labels, len(smiles), len(meta.targets))
    layout.fit_scaling(meta, y)
    with_descriptors = uses_descriptors(model.model)

    def tokenize(smi: Sequence[str]) -> list[list[int]]:
        return model.tokenizer(list(smi), truncation=True, max_length=meta.max_length)["input_ids"]

    def features(smi: Sequence[str]) -> np.ndarray | None:
        return compute_descriptors(smi, model.model.config.descriptor_names) if with_descriptors else None

    warn_truncated(model.tokenizer, smiles, meta.max_length)
    warn_unknown(model.tokenizer, smiles)
    train_features = features(smiles)
    if with_descriptors:
        model.model.fit_scaling(train_features)
    if config.augment:
        spellings = [[s, *r] for s, r in zip(smiles, randomized_smiles(smiles, config.augment, seed=config.seed))]
        flat = tokenize([v for options in spellings for v in options])
        width = config.augment + 1
        train_set = AugmentedDataset([flat[i * width:(i + 1) * width] for i in range(len(smiles))],
                                     layout.training_labels(meta, y), config.seed, train_features)
    else:
        train_set = EncodedDataset(tokenize(smiles), layout.training_labels(meta, y), train_features)
    valid_set = None
    if valid_smiles is not None and len(valid_smiles):
        valid_y = _label_matrix(valid_labels, len(valid_smiles), len(meta.targets))
        valid_set = EncodedDataset(tokenize(valid_smiles), layout.training_labels(meta, valid_y),
                                   features(valid_smiles))

    tmp = None
    if output_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="smilesformer-")
        output_dir = tmp.name
    output_dir = Path(output_dir)
    args = training_arguments(output_dir, config, len(train_set), valid_set is not None)
    callbacks = [EarlyStoppingCallback(config.early_stopping_patience)] if valid_set is not None else []
    optimizer = None
    if config.layer_lr_decay < 1:
        groups = layerwise_param_groups(model.model, config.learning_rate, config.layer_lr_decay,
                                        config.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    trainer = MaskedLossTrainer(
        model=model.model,
        args=args,
        train_dataset=train_set,
        eval_dataset=valid_set,
        data_collator=PadCollator(model.tokenizer, layout.label_dtype,
                                  meta.max_length if config.pad_to_max_length else None),
        processing_class=model.tokenizer,
        callbacks=callbacks,
        optimizers=(optimizer, None),  # None: the Trainer builds its AdamW and, always, the schedule
    )
    # The Trainer prints each log dict under its bar (or, without bars, alone); fine-tuning keeps them in the
    # history (history.json, training_curve.png) instead, so a fit prints bars and the metrics table only.
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarsWithoutLogs)
    last = _checkpoint_to_resume(output_dir, _run_fingerprint(model, smiles, y, valid_smiles, valid_labels, config),
                                 config.resume)
    if last:
        logger.warning("resuming from %s", last)
    elif config.adapt == "mtr":  # a checkpoint already holds the adapted encoder
        adapt_mtr(model, smiles, config, output_dir / "adapt")
    with quiet_transformers(logs=False):  # checkpoints are saved without a bar of their own
        trainer.train(resume_from_checkpoint=last)
    model.model = trainer.model
    if tmp is not None:
        tmp.cleanup()
    return trainer.state.log_history


class BarsWithoutLogs(ProgressCallback):
    """The Trainer's progress bars, without the dicts of losses it writes under them."""

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        pass


FINGERPRINT_FILE = "run_fingerprint.json"
_NOT_SETTINGS = ("resume", "progress", "logging_steps", "uncertainty")  # TrainConfig fields that do not change
# the network a checkpoint holds


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray) else json.dumps(part).encode())
    return h.hexdigest()[:16]


def _run_fingerprint(model: Transformer, smiles, y: np.ndarray, valid_smiles, valid_labels,
                     config: TrainConfig) -> dict:
    """What a checkpoint was trained on: the data, the settings and the starting model."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_SETTINGS}
    valid = None
    if valid_smiles is not None and len(valid_smiles):
        valid = _digest(list(valid_smiles), np.asarray(valid_labels, dtype=float))
    return {"training data": _digest(list(smiles), y.astype(float)), "validation data": valid,
            "model": model.meta.base_model, "task": model.meta.task.value, "targets": list(model.meta.targets),
            "settings": json.loads(json.dumps(settings, default=str))}


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for key, value in new.items():
        if key == "settings":
            out += [f"setting {k} was {old.get(key, {}).get(k)!r}, now {v!r}" for k, v in value.items()
                    if old.get(key, {}).get(k) != v]
        elif old.get(key) != value:
            out.append(f"{key} differs" if key.endswith("data") else f"{key} was {old.get(key)!r}, now {value!r}")
    return out


def _checkpoint_to_resume(output_dir: Path, fingerprint: dict, resume: bool) -> str | None:
    """The checkpoint to continue from: the last one in ``output_dir`` when it was written by the same run (same
    data, settings and model). Checkpoints of another run are refused, naming the difference, unless ``resume``
    is off, which deletes them and starts over. The fingerprint is written for the run about to start."""
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    path = output_dir / FINGERPRINT_FILE
    if last and not resume:
        logger.warning("starting over: deleting the checkpoints in %s", output_dir)
        for old in output_dir.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
        last = None
    if last:
        differences = (_differences(json.loads(path.read_text()), fingerprint) if path.is_file()
                       else ["data and settings (no record of them: written by an older smilesformer)"])
        if differences:
            raise SmilesformerError(
                f"{output_dir.parent} holds checkpoints of another run ({last}): {'; '.join(differences)}. "
                "Resuming would mix two runs: pass another --out, or --fresh (TrainConfig(resume=False)) to delete "
                "those checkpoints and start over")
    output_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fingerprint, indent=2))
    return last


def fit_predictor(make_member: Callable[[int], Transformer], smiles: Sequence[str], labels,
                  valid_smiles: Sequence[str] | None, valid_labels, config: TrainConfig,
                  output_dir: str | Path | None) -> tuple[Predictor, list[list[dict]]]:
    """The whole fine-tuning recipe that ``TrainConfig`` describes, shared by the Python API and the CLI.

    ``config.ensemble`` transformers (member k made by ``make_member(seed + k)``) are fine-tuned; several become
    an ``Ensemble``; ``config.tta`` wraps them in ``Augmented``; ``config.trees`` blends gradient-boosted trees
    in (weights chosen on the valid set); a predictor with a spread gets its 90% interval scale calibrated on
    the valid set (regression).

    Returns:
        (the predictor, each member's training log history).
    """
    members, histories = [], []
    for k in range(config.ensemble):  # a seed ensemble: member k starts from seed + k
        member_config = dataclasses.replace(config, seed=config.seed + k)
        member = make_member(member_config.seed)
        checkpoints = None
        if output_dir is not None:
            checkpoints = Path(output_dir) / (f"member_{k}" if config.ensemble > 1 else "")
        histories.append(finetune(member, smiles, labels, valid_smiles, valid_labels, member_config, checkpoints))
        members.append(member)
    predictor: Predictor = members[0] if len(members) == 1 else Ensemble(members)
    if config.tta:
        predictor = Augmented(predictor, config.tta)
    meta = predictor.meta
    has_valid = valid_smiles is not None and len(valid_smiles) > 0
    blend = config.trees == "gbm" or (config.trees == "auto" and meta.layout.trees_by_default)
    valid_y = _label_matrix(valid_labels, len(valid_smiles), len(meta.targets)) if has_valid else None
    # the valid set's outputs and uncertainty signals, taken once for the blend weights, the uncertainty and the
    # interval (an ensemble with test-time augmentation runs members x spellings passes over it)
    valid_signals = predictor.signals(list(valid_smiles), config.eval_batch_size) if has_valid else None
    if blend:
        y = _label_matrix(labels, len(smiles), len(meta.targets))
        predictor = fit_blend(predictor, smiles, y, valid_smiles if has_valid else None, valid_y,
                              seed=config.seed, batch_size=config.eval_batch_size,
                              valid_outputs=valid_signals[0] if valid_signals else None)
        if valid_signals:
            valid_signals = predictor.blend_signals(valid_smiles, *valid_signals)
    if has_valid and config.uncertainty:
        y = _label_matrix(labels, len(smiles), len(meta.targets))
        predictor = fit_uncertain(predictor, smiles, y, valid_smiles, valid_y, valid_signals, config.seed,
                                  config.eval_batch_size)
    elif has_valid and meta.has_spread and meta.layout.has_interval:
        mean, signals = valid_signals
        predictor.meta.interval_scale = calibrate_interval(valid_y, mean, signals["spread"])
    return predictor, histories


ADAPT_DESCRIPTORS = "fast"  # for an encoder that ships no MTR head of its own


def _pretrained_mtr(base_model: str) -> tuple[dict, dict] | None:
    """The MTR head and descriptor statistics a pretraining run left beside its encoder, if any."""
    from safetensors.torch import load_file

    folder = bundled_model_path(base_model) or Path(base_model)
    stats_path, head_path = folder / "descriptor_stats.json", folder / MTR_HEAD_FILE
    if not (stats_path.is_file() and head_path.is_file()):
        return None
    stats = json.loads(stats_path.read_text())
    return (load_file(str(head_path)), stats) if stats.get("names") else None


def adapt_mtr(model: Transformer, smiles: Sequence[str], config: TrainConfig, output_dir: Path) -> list[dict]:
    """Domain adaptation before fine-tuning: regress the RDKit descriptors of the training SMILES for
    ``config.adapt_epochs`` passes (Sultan et al. 2025), then keep the adapted encoder in ``model``.

    Only the training molecules are read: descriptors need no labels, but validation and test molecules stay
    unseen so their figures stay honest. The pretrained MTR head and its descriptor standardization are reused
    when the base model ships them (``mtr_head.safetensors``); otherwise a new head learns descriptors
    standardized on the training set.

    Returns:
        The adaptation's log history.
    """
    encoder = model.model.base_model
    if getattr(model.model.config, "model_type", "") not in ENCODER_TYPES:
        raise SmilesformerError(f"adapt='mtr' is built for RoBERTa encoders; this model is a "
                                f"{model.model.config.model_type!r} model. Use adapt='none'")
    pretrained = _pretrained_mtr(model.meta.base_model)  # its own descriptors, when the encoder ships its head
    names = pretrained[1]["names"] if pretrained is not None else descriptor_names(ADAPT_DESCRIPTORS)
    raw = compute_descriptors(list(smiles), names).astype(np.float64)
    if pretrained is not None:
        head_state, stats = pretrained
        mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
    else:
        head_state = None
        with np.errstate(invalid="ignore"):
            mean, std = np.nanmean(raw, axis=0), np.nanstd(raw, axis=0)
        mean, std = np.nan_to_num(mean), np.where(np.isfinite(std) & (std > 0), std, 1.0)
    targets = np.clip((raw - mean) / std, -10, 10).astype(np.float32)  # NaN stays NaN: masked in the loss
    adapter = mtr_model(model.model.config, len(names))
    adapter.roberta.load_state_dict(encoder.state_dict(), strict=False)  # strict=False: a pooler, if any, stays out
    if head_state is not None:
        adapter.mtr_head.load_state_dict(head_state)
    ids = model.tokenizer(list(smiles), truncation=True, max_length=model.meta.max_length)["input_ids"]
    dataset = [{"input_ids": i, "descriptors": t} for i, t in zip(ids, targets)]
    step_config = dataclasses.replace(config, epochs=config.adapt_epochs, early_stopping_patience=1)
    args = training_arguments(output_dir, step_config, len(dataset), has_valid=False, save_strategy="no")
    trainer = Trainer(model=adapter, args=args, train_dataset=dataset, data_collator=MtrCollator(model.tokenizer))
    trainer.train()
    encoder.load_state_dict(adapter.roberta.state_dict(), strict=False)
    shutil.rmtree(output_dir, ignore_errors=True)
    logger.info("adapted the encoder on the descriptors of %d training SMILES (%d epochs)", len(smiles),
                config.adapt_epochs)
    return trainer.state.log_history


class ThroughputCallback(TrainerCallback):
    """Adds tokens/s and molecules/s (this process, since the last log) to every training log line, and keeps
    totals up to the end of training however it ends (a budget or a callback may stop it between log lines).

    Tokens are the molecules times the corpus's mean tokens per molecule: counting them batch by batch would need
    the batches, which a GPU run collates in worker processes, or a device sync per step.
    """

    def __init__(self, batch_size: int, tokens_per_molecule: float):
        self.batch_size = batch_size
        self.tokens_per_molecule = tokens_per_molecule
        self.last = (time.perf_counter(), 0)
        self.totals = {"tokens": 0.0, "molecules": 0, "seconds": 0.0}

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = (time.perf_counter(), state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        rates = self._add(state.global_step)
        if rates:
            logs.update(rates)

    def on_train_end(self, args, state, control, **kwargs):
        self._add(state.global_step)

    def _add(self, step: int) -> dict | None:
        now = time.perf_counter()
        t0, step0 = self.last
        self.last = (now, step)
        if now <= t0 or step <= step0:
            return None
        molecules = (step - step0) * self.batch_size
        self.totals["molecules"] += molecules
        self.totals["tokens"] += molecules * self.tokens_per_molecule
        self.totals["seconds"] += now - t0
        return {"tokens_per_second": round(molecules * self.tokens_per_molecule / (now - t0), 1),
                "molecules_per_second": round(molecules / (now - t0), 1)}


BUDGET_RESERVE = (10.0, 0.03)  # seconds, and share of the budget, kept after training to write the model


def run_pretraining(model, tokenizer, dataset, config: PretrainConfig, output_dir: Path,
                    started: float | None = None) -> tuple[list[dict], dict]:
    """Train ``model`` on ``dataset`` (a token cache) with MLM or MTR; resumes from the last checkpoint.

    Several GPUs or nodes need no change here: launched with ``torchrun`` or ``accelerate launch``,
    the Trainer runs data-parallel (DDP) on its own. With ``config.max_minutes`` training ends so that the whole
    command, begun at ``started`` (a ``time.time()``), ends within the budget (see ``budget``).

    Returns:
        (log history, summary: mean tokens/s and molecules/s, steps, epochs, molecules presented, and the budget).
    """
    output_dir = Path(output_dir)
    if config.objective in (Objective.mlm, Objective.both):
        # RoBERTa-style dynamic masking: a fresh share of tokens is masked in every batch.
        collator = MlmMtrCollator(tokenizer, config.mlm_probability, config.seed)
        trainer_cls = PretrainTrainer
    else:
        collator = PadCollator(tokenizer, torch.float32)
        trainer_cls = MaskedLossTrainer
    train_config = TrainConfig(epochs=max(1, math.ceil(config.epochs)), batch_size=config.batch_size,
                               learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                               warmup_fraction=config.warmup_fraction, max_length=config.max_length,
                               seed=config.seed, precision=config.precision, logging_steps=config.logging_steps,
                               progress=config.progress)
    per_step = config.batch_size * config.grad_accum * _world_size()
    steps = config.max_steps if config.max_steps > 0 else math.ceil(config.epochs * len(dataset) / per_step)
    args = training_arguments(
        output_dir, train_config, len(dataset), has_valid=False,
        num_train_epochs=config.epochs, max_steps=steps, warmup_steps=int(config.warmup_fraction * steps),
        gradient_accumulation_steps=config.grad_accum, save_strategy="steps", save_steps=config.save_steps,
        lr_scheduler_type="linear", optim="adamw_torch_fused",  # one kernel per step, CPU and GPU
        save_total_limit=config.keep_checkpoints or None,
        # A small model on a GPU waits for batches: collate them in worker processes there.
        dataloader_num_workers=min(8, (os.cpu_count() or 1) // 2) if torch.cuda.is_available() else 0,
        # a corpus still being written has no lengths yet (and reading them would wait for all of it)
        **({"train_sampling_strategy": "random"} if getattr(dataset, "growing", False) else {}),
    )
    tokens_per_molecule = getattr(dataset, "tokens_per_molecule", 0.0)
    throughput = ThroughputCallback(per_step, tokens_per_molecule)
    schedule = BudgetSchedule(steps, config.warmup_fraction)  # the Trainer's linear schedule, re-fittable
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    callbacks: list[TrainerCallback] = [throughput]
    budget = None
    if config.max_minutes:
        started = started or time.time()
        seconds = config.max_minutes * 60
        reserve = max(BUDGET_RESERVE[0], BUDGET_RESERVE[1] * seconds)
        budget = TimeBudget(started + seconds, reserve, schedule, steps, resumed=last is not None)
        callbacks.append(budget)
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, data_collator=collator,
                          processing_class=tokenizer, callbacks=callbacks)
    trainer.schedule = schedule
    if last:
        logger.warning("resuming pretraining from %s", last)
    trainer.train(resume_from_checkpoint=last)
    seconds = throughput.totals["seconds"]
    done = trainer.state.global_step
    summary = {"tokens_per_second": round(throughput.totals["tokens"] / seconds, 1) if seconds else None,
               "molecules_per_second": round(throughput.totals["molecules"] / seconds, 1) if seconds else None,
               "measured_over": f"{seconds:.1f} s of training" if seconds else None,
               "world_size": _world_size(), "resumed_from": last, "steps": done, "planned_steps": steps,
               "molecules_presented": done * per_step, "epochs": round(done * per_step / len(dataset), 3),
               "budget": budget.summary(config.max_minutes * 60, started) if budget else None}
    return trainer.state.log_history, summary


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed_state() -> PartialState:
    """This process's place in a ``torchrun`` / ``accelerate launch`` run (one process: rank 0 of 1).

    Run folders are written by the main process only (``is_main_process``); shared caches are built by it
    first while the others wait (``main_process_first()``), then reused by them.
    """
    return PartialState(cpu=_world_size() > 1 and not torch.cuda.is_available())
