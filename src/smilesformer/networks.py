"""Building and loading the Hugging Face networks: bundled, local or hub checkpoints, and random weights.

Heads are configured, not written: ``AutoModelForSequenceClassification`` with the task layout's
``num_labels`` and ``problem_type`` (regression MSE, one logit per binary target, or k classes). The one
head we add reads RDKit descriptors beside the encoder (``descriptors``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
)
from transformers.utils import logging as hf_logging

from .config import DEFAULT_MODEL
from .data import SmilesformerError
from .descriptors import DESCRIPTOR_SETS, ENCODER_TYPES, descriptor_model_from_config, with_descriptor_head
from .tasks import ENSEMBLE_FILE, META_FILE, ModelMeta
from .tokenization import build_regex_tokenizer, load_tokenizer

__all__ = ["PRESETS", "BUNDLED_DIR", "bundled_model_path", "resolve_model_source", "download_model", "hub_reachable",
           "offline_error", "check_model_folder", "loading", "quiet_transformers", "report_loading", "make_config",
           "seeded", "load_finetuned", "network_with_new_head", "random_network"]

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).parent / "models"
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # a hub repository id: name or owner/name

# RoBERTa shapes. `small` has the layers, width and heads of ChemBERTa-2's smallest (3 layers, hidden 384,
# 12 heads; feed-forward 2x hidden to keep the shipped weights under 25 MB), the bundled model's;
# `medium` is the largest shape whose weights still fit 25 MB in fp16 (6 layers, hidden 512, 8 heads of 64,
# feed-forward 1.75x hidden; 12.3M parameters, 3.2x small's), for a GPU window that can afford it;
# `base` is ChemBERTa's (6 layers, hidden 768); `tiny` is for tests.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "small": dict(hidden_size=384, num_hidden_layers=3, num_attention_heads=12, intermediate_size=768),
    "medium": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=896),
    "base": dict(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072),
}


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path | None:
    """Folder of a model shipped inside the package, or None if it is not there."""
    if not name or Path(name).name != name:  # a path, not a name (BUNDLED_DIR / "/abs" would be "/abs")
        return None
    path = BUNDLED_DIR / name
    return path if (path / "config.json").is_file() else None


def _looks_like_path(name: str) -> bool:
    """A name that can only be a local path: a hub id is ``name`` or ``owner/name`` of letters, digits, ``-_.``."""
    return (name.startswith((".", "/", "~")) or name.endswith("/") or "\\" in name or name.count("/") > 1
            or not HUB_ID.fullmatch(name))


def resolve_model_source(name: str) -> str:
    """Turn a model name into something ``from_pretrained`` can load: bundled name, local folder or hub name.

    A run folder (``smilesformer finetune --out``) stands for its ``model/``. A path that does not exist, and
    cannot be a hub name, is reported as missing rather than looked up on the hub.
    """
    bundled = bundled_model_path(name)
    if bundled is not None:
        return str(bundled)
    if name == DEFAULT_MODEL:
        raise SmilesformerError(
            f"the bundled model {DEFAULT_MODEL!r} is not in this installation ({BUNDLED_DIR}); "
            "pass --model random:small to start from random weights, or a checkpoint path"
        )
    path = Path(name).expanduser()
    if path.is_file():
        raise SmilesformerError(f"{name!r} is a file; give the model folder that holds it ({path.parent})")
    if path.is_dir():
        weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin")) or (path / ENSEMBLE_FILE).is_file()
        if not weights and (path / "model" / "config.json").is_file():  # a run folder: its model is in model/
            return str(path / "model")
        if (path / "config.json").is_file() or (path / ENSEMBLE_FILE).is_file():
            return str(path)
        raise SmilesformerError(f"{name!r} is a folder but not a model folder (no config.json in it); give the "
                                "folder a model was saved to (a fine-tuning run keeps it in <run>/model)")
    if _looks_like_path(name):
        raise SmilesformerError(f"no such folder: {name!r}; check the path (a fine-tuning run keeps its model in "
                                f"<run>/model), or give a hub name such as 'owner/model'")
    _go_offline_if_hub_unreachable()
    return name


def download_model(name: str) -> Path:
    """A hub model's folder in the local Hugging Face cache (downloaded when reachable and not cached)."""
    from huggingface_hub import snapshot_download

    with loading(name, name):
        return Path(snapshot_download(name))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint (``HF_ENDPOINT``) accepts a TCP connection within ``timeout`` seconds."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


_WENT_OFFLINE = False  # set when this process turned offline mode on itself


def _go_offline_if_hub_unreachable() -> None:
    """Without a network the hub client retries for about a minute before it falls back to its cache; one quick
    connection test instead turns on offline mode for this process, so a cached model loads at once and a
    missing one gets ``offline_error`` at once."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or hub_reachable():
        return
    global _WENT_OFFLINE
    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    _WENT_OFFLINE = True


def offline_error(name: str, exc: Exception) -> SmilesformerError:
    """The error for a model that is neither here nor reachable, saying what to do."""
    from huggingface_hub import constants

    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    why = ("the Hugging Face hub could not be reached" if _WENT_OFFLINE or not offline
           else "HF_HUB_OFFLINE=1 is set")
    return SmilesformerError(
        f"cannot load model {name!r}: there is no folder of that name here, it is not a bundled model, and as a "
        f"Hugging Face hub name it is not in the cache ({constants.HF_HUB_CACHE}) and {why}. Download it where "
        f"there is network (`hf download {name}`) and copy the cache (HF_HOME) here, pass a local folder, or use "
        f"the bundled model {DEFAULT_MODEL!r}. ({type(exc).__name__}: {exc})"
    )


def check_model_folder(folder: Path) -> None:
    """Read the header of every file a model folder holds (not its subfolders: an ensemble's members are checked
    as each loads), so a damaged one is named instead of surfacing as a library's traceback (a JSON parser's
    "line 1 column 35", a safetensors or zip error).

    Raises:
        SmilesformerError: naming the first damaged file and what to do.
    """
    from safetensors import safe_open

    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.suffix not in (".json", ".safetensors", ".skops"):
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    f.keys()
            elif not zipfile.is_zipfile(path):  # skops files are zip archives
                raise ValueError("not a zip archive")
        except (ValueError, OSError, SafetensorError) as exc:  # JSONDecodeError and UnicodeDecodeError too
            raise SmilesformerError(
                f"model file {path} is damaged or incomplete ({type(exc).__name__}: {exc}); copy or download the "
                "model folder again, or save the model again") from exc


@contextlib.contextmanager
def quiet_transformers(logs: bool = True) -> Iterator[None]:
    """transformers without its file progress bars ("Loading weights", "Writing model shards": files of a few MB)
    and, with ``logs``, without its LOAD REPORT table: the weights left out or added are read from
    ``output_loading_info`` and said in one line (``report_loading``)."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    if logs:
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


HEAD_WEIGHTS = ("classifier.", "descriptor_", "lm_head.", "pooler.", "mtr_head.")
"""Weight names of heads: a checkpoint's pretraining head left out, or a new task head, are expected."""


def report_loading(name: str, info: dict, new_head: bool) -> None:
    """Say in one line what loading ``name`` did with its weights; warn only about encoder weights."""
    missing, unused = info.get("missing_keys", []), info.get("unexpected_keys", [])
    mismatched = [k for k, *_ in info.get("mismatched_keys", [])]
    # a new head explains head weights; a fine-tuned folder should load every weight as saved
    unexplained = [k for k in [*missing, *unused, *mismatched] if not (new_head and k.startswith(HEAD_WEIGHTS))]
    if unexplained:
        logger.warning("loading %s: %d weight(s) missing, unused or of another shape, beyond a task head: %s",
                       name, len(unexplained), ", ".join(unexplained[:8]))
    elif new_head:
        logger.info("loaded the encoder of %s under a new task head (random weights: %d tensors); its own "
                    "pretraining head (%d tensors) is left out", name, len(missing) + len(mismatched), len(unused))


@contextlib.contextmanager
def loading(name: str, source: str | Path) -> Iterator[None]:
    """Turn a failure to load ``source`` into an error that says what is wrong: the damaged file of a local
    folder (checked before loading), or, for a hub name, that it is neither cached nor reachable."""
    local = Path(source).is_dir()
    if local:
        check_model_folder(Path(source))
    try:
        with quiet_transformers():
            yield
    except SmilesformerError:
        raise
    except OSError as exc:
        if not local:
            raise offline_error(name, exc) from exc
        raise SmilesformerError(f"cannot load the model in {source}: {exc}; copy or save the model folder "
                                "again") from exc
    except (ValueError, TypeError, KeyError) as exc:  # a config or tokenizer with wrong contents
        raise SmilesformerError(f"cannot load model {name!r} ({source}): {type(exc).__name__}: {exc}; it is not a "
                                "model folder smilesformer or transformers can read") from exc


def make_config(preset: str, vocab_size: int, max_length: int, pad_token_id: int, **overrides) -> RobertaConfig:
    """A RoBERTa config of a named size."""
    if preset not in PRESETS:
        raise SmilesformerError(f"unknown size preset {preset!r}; known: {', '.join(PRESETS)}")
    return RobertaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_length + 2,  # RoBERTa offsets positions by padding_idx + 1
        pad_token_id=pad_token_id,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
        **PRESETS[preset],
        **overrides,
    )


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Random weights drawn from ``seed`` without touching the caller's random state: torch's global generator
    is restored on exit, so creating a model does not reseed the rest of a notebook."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def head_input_layer(model: torch.nn.Module) -> torch.nn.Module | None:
    """The layer whose input is the head's pooled vector: RoBERTa's (and the descriptor head's)
    ``classifier.out_proj``, BERT's ``classifier`` (which reads the pooler's output); None without a head."""
    classifier = getattr(model, "classifier", None)
    if classifier is None:
        return None
    return getattr(classifier, "out_proj", classifier)


@contextlib.contextmanager
def capture_input(module: torch.nn.Module | None) -> Iterator[dict]:
    """Record the input of ``module`` (None: nothing) on each forward pass under ``"pooled"``: a hook, so the
    head's own code computes it and the forward pass costs nothing more."""
    captured: dict[str, torch.Tensor] = {}
    if module is None:
        yield captured
        return

    def hook(_module, args):
        captured["pooled"] = args[0]  # (batch, hidden)

    handle = module.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def check_descriptors(kind: str) -> None:
    if kind != "auto" and kind not in DESCRIPTOR_SETS:
        raise SmilesformerError(f"unknown descriptor set {kind!r}; choose auto or one of {', '.join(DESCRIPTOR_SETS)}")


def _resolve_descriptors(kind: str, config) -> str:
    """``auto``: the RDKit descriptor head where it can go (a RoBERTa encoder), else none."""
    if kind != "auto":
        return kind
    return "rdkit" if config.model_type in ENCODER_TYPES else "none"


def load_finetuned(folder: Path, name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelMeta]:
    """A fine-tuned model folder's network, tokenizer and meta (``smilesformer.json``)."""
    if not (folder / META_FILE).is_file():
        raise SmilesformerError(f"{name} is not a fine-tuned smilesformer model (no {META_FILE}); "
                                "give task and targets to put a new head on it")
    with loading(name, folder):
        tokenizer = load_tokenizer(str(folder))
        network, info = AutoModelForSequenceClassification.from_pretrained(str(folder), output_loading_info=True)
        meta = ModelMeta.load(folder)
    report_loading(name, info, new_head=False)
    return network, tokenizer, meta


def network_with_new_head(name: str, meta: ModelMeta, max_length: int | None, descriptors: str,
                          seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A pretrained encoder (bundled, local or hub) with a new head for ``meta``'s task, initialized from ``seed``.

    Sets ``meta.max_length`` to ``max_length`` within the checkpoint's position limit (the limit itself, at
    most 512, when None).
    """
    check_descriptors(descriptors)
    source = resolve_model_source(name)
    with loading(name, source):
        tokenizer = load_tokenizer(source)
        config = AutoConfig.from_pretrained(source)
        limit = min(getattr(config, "max_position_embeddings", 514) - 2, 512)
        meta.max_length = min(max_length or limit, limit)
        descriptors = _resolve_descriptors(descriptors, config)
        with seeded(seed):
            if descriptors != "none":
                network, info = with_descriptor_head(source, descriptors, output_loading_info=True,
                                                     num_labels=meta.num_labels, problem_type=meta.problem_type)
            else:
                # ignore_mismatched_sizes: an MTR-pretrained head (one output per descriptor) is replaced
                network, info = AutoModelForSequenceClassification.from_pretrained(
                    source, num_labels=meta.num_labels, problem_type=meta.problem_type, ignore_mismatched_sizes=True,
                    output_loading_info=True)
    report_loading(name, info, new_head=True)
    return network, tokenizer


def random_network(preset: str, meta: ModelMeta, tokenizer: PreTrainedTokenizerBase | None,
                   vocab_smiles: Sequence[str] | None, descriptors: str,
                   seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A network with random weights: a size in ``PRESETS``, or any checkpoint's architecture (weights not).

    The tokenizer, when not given, is the checkpoint's, else the bundled model's, else a regex tokenizer
    built from ``vocab_smiles``.
    """
    check_descriptors(descriptors)
    if preset in PRESETS:
        if tokenizer is None:
            bundled = bundled_model_path()
            if bundled is not None:
                tokenizer = load_tokenizer(bundled)
            elif vocab_smiles is not None:
                tokenizer = build_regex_tokenizer(vocab_smiles, model_max_length=meta.max_length)
            else:
                raise SmilesformerError("a random model needs a tokenizer or SMILES to build its vocabulary")
        config = make_config(preset, len(tokenizer), meta.max_length, tokenizer.pad_token_id,
                             num_labels=meta.num_labels, problem_type=meta.problem_type)
    else:
        source = resolve_model_source(preset)
        with loading(preset, source):
            tokenizer = tokenizer or load_tokenizer(source)
            config = AutoConfig.from_pretrained(source, num_labels=meta.num_labels, problem_type=meta.problem_type)
        meta.max_length = min(meta.max_length, config.max_position_embeddings - 2)
    descriptors = _resolve_descriptors(descriptors, config)
    with seeded(seed):
        if descriptors != "none":
            network = descriptor_model_from_config(config, descriptors)
        else:
            network = AutoModelForSequenceClassification.from_config(config)
    return network, tokenizer
