"""Explanations as results and as folders of files: one molecule (``explain_molecule``,
``write_molecule_explanation``) or a data set (``explain_dataset``); ``run_explain`` is the CLI's entry.

Every function takes any model ``loading.load_explainable`` reads. A fine-tuned model gets everything; an
encoder without a head (a pretrained checkpoint) gets attention, atom attention, entropy, attention on bonds
and head importance on its masked-LM loss where its checkpoint keeps that head, and ``None`` (or no file) where
a prediction or an attribution would be.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data import SmilesformerError, _guess_smiles_col, parse_smiles, read_table, require_columns
from ..predictors import TreeBlend
from .atoms import tokens_to_atoms
from .attention import (
    MoleculeAttention,
    atom_attention,
    attention_rollout,
    bertviz_format,
    check_layer_head,
    extract_attention,
)
from .attribution import Attribution, integrated_gradients
from .bertology import (
    bond_attention_share,
    head_entropy,
    head_importance,
    least_important_heads,
    masked_lm_head_importance,
    pruning_effect,
)
from .draw import draw_atom_heatmap, plot_head_grid, write_heatmap
from .html import svg_for_html, write_attention_html
from .loading import Explainable, has_head, load_explainable, load_masked_lm, predict_one, require_head

__all__ = ["Explanation", "explain_molecule", "write_molecule_explanation", "explain_dataset", "run_explain"]

logger = logging.getLogger(__name__)


def _selected_atom_attention(result: MoleculeAttention, layer: int | None, head: int | None) -> tuple[np.ndarray, str]:
    """Per-atom attention for a choice of layer/head, and its legend.

    No layer and no head: rollout over all layers, read from ``<s>`` (what the classifier sees). A layer
    without a head: the mean over that layer's heads. A head without a layer: that head of the last layer.
    """
    if layer is None and head is None:
        rollout = attention_rollout(result.weights)[0]  # (T,): row of <s>
        return tokens_to_atoms(rollout, result.token_atoms, result.molecule.n_atoms), "attention rollout from <s>"
    per_head = atom_attention(result)  # (layers, heads, atoms)
    layer = per_head.shape[0] - 1 if layer is None else layer
    if head is None:
        return per_head[layer].mean(axis=0), f"attention received, layer {layer}, mean of heads"
    return per_head[layer, head], f"attention received, layer {layer}, head {head}"


def _blend(model, smiles: str, target: int) -> dict | None:
    """With trees blended in: the prediction is ``transformer_weight * output_value + (1 - w) * trees_output``,
    and the attribution explains the transformer's part only."""
    blend = model.find(TreeBlend)
    if blend is None:
        return None
    weight = float(blend.weights()[target])
    trees = float(blend.tree_outputs([smiles.strip()])[0, target])
    return {"transformer_weight": weight, "trees_output": None if np.isnan(trees) else trees,
            "note": "the prediction blends the transformer's output with gradient-boosted trees on RDKit "
                    "descriptors; the attribution explains the transformer's part"}


def _attribution_legend(attr: Attribution) -> str:
    return (f"IG of {attr.output} = {attr.value:.3g} (baseline {attr.baseline_value:.3g}), "
            f"completeness gap {attr.completeness_gap:.1e}")


class Explanation(dict):
    """``explain_molecule``'s result: a plain JSON-ready dict that a notebook shows as its atom heat maps."""

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        # IPython's plain-text form (beside the HTML one): a summary, not every weight and drawing
        head = (f"{self['attributed_output']}: prediction {self['prediction']}, completeness gap "
                f"{self['completeness_gap']:.1e}" if self.get("attributed_output") is not None
                else "encoder without a head: attention only")
        printer.text(f"Explanation({self['smiles']!r}, {self['n_atoms']} atoms, {len(self['tokens'])} tokens; {head}; "
                     f"keys: {', '.join(self)})")

    def _repr_html_(self) -> str:
        # Static SVG and text only (no script), so it shows in every notebook front end, trusted or not,
        # and on GitHub.
        figures = []
        if self.get("attribution_svg"):
            figures.append(("integrated gradients: what moved the prediction", self["attribution_svg"]))
        figures.append(("attention (a description of the mechanics, not an explanation)", self["attention_svg"]))
        lines = [f"<b>{html.escape(self['smiles'])}</b>"]
        if self.get("prediction"):
            prediction = self["prediction"]
            values = ", ".join(f"{html.escape(k)} = {v:.4g}" for k, v in prediction.items()
                               if k not in ("domain_similarity", "in_domain"))
            lines.append(f"prediction: {values}")
            if prediction.get("domain_similarity") is not None:
                where = "in the model's domain" if prediction["in_domain"] else \
                    "<b>out of the model's domain</b> (still predicted; expect a larger error)"
                lines.append(f"{where}: Tanimoto similarity {prediction['domain_similarity']:.2f} to the nearest "
                             "training molecule")
        if self.get("attributed_output") is not None:
            lines.append(f"attributed: {html.escape(self['attributed_output'])}, f(x) = {self['output_value']:.4g}, "
                         f"f(baseline) = {self['baseline_value']:.4g}, completeness gap "
                         f"{self['completeness_gap']:.1e}")
        else:
            lines.append("an encoder without a prediction head: attention only (no prediction, no attribution)")
        if self.get("blend"):
            lines.append(f"transformer weight in the blend: {self['blend']['transformer_weight']:.2f} "
                         "(the attribution explains the transformer's part)")
        cells = "".join(f'<figure style="margin:0 12px 0 0"><div>{svg_for_html(svg)}</div>'
                        f'<figcaption style="font-size:12px">{html.escape(caption)}</figcaption></figure>'
                        for caption, svg in figures)
        return (f'<div class="smilesformer-explanation"><div>{"<br>".join(lines)}</div>'
                f'<div style="display:flex;flex-wrap:wrap">{cells}</div></div>')


def explain_molecule(model, smiles: str, layer: int | None = None, head: int | None = None, target: int = 0,
                     n_steps: int = 50) -> Explanation:
    """Attention and integrated-gradients attribution of one molecule, as JSON-ready data.

    Args:
        model: a fine-tuned ``SmilesModel``, or any model ``load_explainable`` reads (a name or folder too);
            an encoder without a head gives ``None`` for the prediction and every attribution entry.
        smiles: one SMILES.
        layer, head: which attention ``attention_svg`` draws (see ``_selected_atom_attention``); the
            ``attention`` and ``atom_attention`` entries always hold every layer and head.
        target: the output explained by integrated gradients (a regression target, or a class).
        n_steps: integration steps.

    Returns:
        ``smiles``, ``prediction`` (column -> value, as ``model.predict``), ``tokens`` (specials included),
        ``token_atoms`` (atom indices per token, [] for a non-atom token), ``n_atoms``, ``atom_attributions``,
        ``token_attributions``, ``attributed_output``, ``output_value``, ``baseline_value``,
        ``completeness_gap``, ``blend`` (None, or the trees' weight and output where the model blends them in),
        ``attribution_svg``, ``attention`` ({"layers", "heads", "weights":
        [layer][head][T][T]}), ``atom_attention`` ({"layers", "heads", "weights": [layer][head][n_atoms]},
        the attention each atom receives averaged over query tokens), ``attention_svg`` and ``error`` (None).
        An ``Explanation``: a dict that a notebook shows as its heat maps.

    Raises:
        SmilesformerError: an invalid SMILES (with RDKit's reason), or a layer/head/target out of range.
    """
    return _explain(load_explainable(model), smiles, layer, head, target, n_steps)[0]


def _explain(model: Explainable, smiles: str, layer: int | None, head: int | None, target: int,
             n_steps: int) -> tuple[Explanation, MoleculeAttention, Attribution | None]:
    if not isinstance(smiles, str):
        raise SmilesformerError(f"expected one SMILES string, got {type(smiles).__name__}")
    result = extract_attention(model, smiles)[0]
    check_layer_head(result.weights, layer, head)
    attr = integrated_gradients(model, smiles, target, n_steps=n_steps) if has_head(model) else None
    layers, heads = result.weights.shape[:2]
    selected, legend = _selected_atom_attention(result, layer, head)
    data = Explanation({
        "smiles": result.molecule.smiles,
        "prediction": predict_one(model, smiles) if attr is not None else None,
        "tokens": result.tokens,
        "token_atoms": result.token_atoms,
        "n_atoms": result.molecule.n_atoms,
        "atom_attributions": [float(a) for a in attr.atom_attributions] if attr is not None else None,
        "token_attributions": [float(a) for a in attr.token_attributions] if attr is not None else None,
        "attributed_output": attr.output if attr is not None else None,
        "output_value": attr.value if attr is not None else None,
        "baseline_value": attr.baseline_value if attr is not None else None,
        "completeness_gap": attr.completeness_gap if attr is not None else None,
        "blend": _blend(model, smiles, target) if attr is not None else None,
        "attribution_svg": (draw_atom_heatmap(smiles, attr.atom_attributions, "svg", legend=_attribution_legend(attr))
                            if attr is not None else None),
        "attention": {"layers": int(layers), "heads": int(heads), "layer": layer, "head": head,
                      "weights": np.round(result.weights.astype(float), 4).tolist()},
        "atom_attention": {"layers": int(layers), "heads": int(heads),
                           "weights": np.round(atom_attention(result), 4).tolist()},
        "attention_svg": draw_atom_heatmap(smiles, selected, "svg", legend=legend),
        "error": None,
    })
    return data, result, attr


def write_molecule_explanation(model, smiles: str, out_dir: str | Path, layer: int | None = None,
                               head: int | None = None, target: int = 0, n_steps: int = 50) -> dict:
    """Write every view of one molecule to a folder.

    Files: ``attention.html`` (head and model views, offline), ``attention_bertviz.pt`` (``torch.load`` it
    and call ``bertviz.head_view(d["attention"], d["tokens"])``), atom heat maps as SVG + PNG
    (``attention_L{l}_H{h}``, ``attention_L{l}_mean``, ``attention_rollout``, ``attribution``), ``tokens.csv``,
    ``atoms.csv``, ``head_entropy.png``, ``head_bond_share.png``, ``head_importance.png`` and
    ``explanation.json`` (``explain_molecule``'s result). An encoder without a head gets no ``attribution``
    maps and no attribution columns; its ``head_importance.png`` reads the masked-LM loss, where it has that head.

    Args:
        model: any model ``load_explainable`` reads (a fine-tuned one, an encoder, a name or folder).
        layer, head: the layer and head drawn as a heat map (default: last layer, head 0).

    Returns:
        ``explain_molecule``'s result plus ``files``: the paths written.
    """
    model = load_explainable(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data, result, attr = _explain(model, smiles, layer, head, target, n_steps)
    layers, heads = result.weights.shape[:2]
    layer = layers - 1 if layer is None else layer
    head = 0 if head is None else head
    smiles = data["smiles"]
    files = [write_attention_html(result, out / "attention.html", data["prediction"], title="Attention")]
    attention, tokens = bertviz_format(result)
    torch.save({"attention": attention, "tokens": tokens}, out / "attention_bertviz.pt")
    files.append(out / "attention_bertviz.pt")
    per_atom = {
        f"attention_L{layer}_H{head}": _selected_atom_attention(result, layer, head),
        f"attention_L{layer}_mean": _selected_atom_attention(result, layer, None),
        "attention_rollout": _selected_atom_attention(result, None, None),
    }
    for stem, (weights, legend) in per_atom.items():
        files += write_heatmap(smiles, weights, out / stem, legend)
    tokens = pd.DataFrame({
        "token": result.tokens,
        "start": [o[0] for o in result.molecule.offsets],
        "end": [o[1] for o in result.molecule.offsets],
        "atoms": [" ".join(map(str, a)) for a in result.token_atoms],
    })
    mol = result.molecule.mol
    atoms = pd.DataFrame({
        "symbol": [a.GetSymbol() for a in mol.GetAtoms()],
        "aromatic": [a.GetIsAromatic() for a in mol.GetAtoms()],
        "rollout": per_atom["attention_rollout"][0],
        f"attention_L{layer}_H{head}": per_atom[f"attention_L{layer}_H{head}"][0],
    })
    if attr is not None:
        attribution = np.asarray(data["atom_attributions"])
        files += write_heatmap(smiles, attribution, out / "attribution", _attribution_legend(attr))
        tokens["attribution"] = data["token_attributions"]
        atoms.insert(2, "attribution", attribution)
    tokens.to_csv(out / "tokens.csv", index_label="token_index")
    atoms.to_csv(out / "atoms.csv", index_label="atom_index")
    files += [out / "tokens.csv", out / "atoms.csv"]
    stats = _head_statistics(model, [result], [smiles], None)
    files += _plot_head_statistics(stats, out)
    (out / "explanation.json").write_text(json.dumps(data))
    files.append(out / "explanation.json")
    data["files"] = [str(f) for f in files]
    return data


def _head_statistics(model: Explainable, results: Sequence[MoleculeAttention], smiles: Sequence[str],
                     labels: np.ndarray | None) -> dict:
    """Entropy and attention on bonds for any model; importance from the task (a head), else from the masked-LM
    loss where the checkpoint keeps its pretraining head, else none."""
    entropy = head_entropy(results)
    share, chance = bond_attention_share(results)
    importance, objective = None, None
    if has_head(model):
        importance, objective = head_importance(model, smiles, labels)
    elif (masked_lm := load_masked_lm(model)) is not None:
        importance = masked_lm_head_importance(masked_lm, model.tokenizer, smiles, model.max_length)
        objective = "masked_lm_loss"
    return {"entropy": entropy, "bond_share": share, "bond_share_chance": chance, "importance": importance,
            "objective": objective}


def _plot_head_statistics(stats: dict, out: Path) -> list[Path]:
    files = [
        plot_head_grid(stats["entropy"], out / "head_entropy.png", "attention entropy per head", "nats"),
        plot_head_grid(stats["bond_share"], out / "head_bond_share.png",
                       f"share of atom attention on bonded atoms (chance {stats['bond_share_chance']:.2f})", "share"),
    ]
    if stats["importance"] is not None:
        what = {"loss": "training loss", "masked_lm_loss": "masked-LM loss"}.get(stats["objective"], "summed output")
        files.append(plot_head_grid(stats["importance"], out / "head_importance.png",
                                    f"head importance |d {what} / d gate| (Michel et al. 2019)", "importance"))
    return files


def explain_dataset(model, smiles: Sequence[str], out_dir: str | Path, labels: np.ndarray | None = None,
                    target: int = 0, n_steps: int = 50, prune: int = 0, batch_size: int = 32) -> dict:
    """Attribution and attention statistics over a set of molecules, written to a folder.

    Files: ``molecules.csv`` (every input row, in order: prediction, explained output, completeness gap,
    share of |attribution| on non-atom tokens, ``error``), ``atoms.csv`` (one row per atom of each valid
    molecule: attribution, rollout and mean received attention), ``elements.csv`` (attribution statistics
    per element and aromaticity), ``heads.csv`` (entropy, bond share and importance per layer and head),
    the three ``head_*.png`` grids, ``summary.json``, and with ``prune`` > 0 ``pruned_model/``. An encoder
    without a head gets the attention columns (no prediction or attribution), importance on the masked-LM loss.

    Args:
        model: a fine-tuned ``SmilesModel``, or any model ``load_explainable`` reads.
        smiles: the molecules; invalid ones keep their row in ``molecules.csv`` with the reason.
        labels: (n, targets) labels: head importance then uses the training loss, and pruning reports the
            metrics before and after; without labels, importance uses the output and pruning reports how far
            the predictions move.
        target: the output explained by integrated gradients.
        prune: silence this many least-important heads (``bertology.prune_heads``) and save that model.
    """
    model = load_explainable(model)
    if prune:
        require_head(model, "pruning (--prune)")
    head = has_head(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    smiles = [s.strip() if isinstance(s, str) else s for s in smiles]
    errors = [parse_smiles(s)[1] for s in smiles]
    valid = [i for i, e in enumerate(errors) if not e]
    if not valid:
        raise SmilesformerError(f"none of the {len(smiles)} SMILES is valid; first problem: {errors[0]}")
    results = extract_attention(model, [smiles[i] for i in valid], batch_size)

    molecules = pd.DataFrame({"smiles": smiles})
    columns = ["n_atoms", "n_tokens"]
    if head:
        predictions = model.predict(smiles, batch_size=batch_size)
        molecules = pd.concat([molecules, predictions.drop(columns="error")], axis=1)
        molecules["attributed_output"] = ""
        columns = ["output_value", "baseline_value", "completeness_gap", "non_atom_share", *columns]
    for col in columns:
        molecules[col] = np.nan
    atom_rows = []
    for i, result in zip(valid, results):
        attr = integrated_gradients(model, smiles[i], target, n_steps=n_steps) if head else None
        counts = [result.molecule.n_atoms, len(result.tokens)]
        if attr is None:
            molecules.loc[i, columns] = counts
        else:
            molecules.loc[i, columns] = [attr.value, attr.baseline_value, attr.completeness_gap,
                                         attr.non_atom_share, *counts]
            molecules.loc[i, "attributed_output"] = attr.output
        rollout, _ = _selected_atom_attention(result, None, None)
        received = atom_attention(result).mean(axis=(0, 1))  # (atoms,): mean over layers and heads
        for atom in result.molecule.mol.GetAtoms():
            k = atom.GetIdx()
            row = {"row": i, "smiles": smiles[i], "atom_index": k, "symbol": atom.GetSymbol(),
                   "aromatic": atom.GetIsAromatic(), "rollout": rollout[k], "attention_received": received[k]}
            if attr is not None:
                row["attribution"] = attr.atom_attributions[k]
            atom_rows.append(row)
    molecules[["n_atoms", "n_tokens"]] = molecules[["n_atoms", "n_tokens"]].astype("Int64")
    molecules["error"] = [f"invalid SMILES: {e}" if e else "" for e in errors]
    molecules.to_csv(out / "molecules.csv", index_label="row")
    atoms = pd.DataFrame(atom_rows)
    atoms.to_csv(out / "atoms.csv", index=False)
    per_element = {"n": ("rollout", "size"), "mean_rollout": ("rollout", "mean"),
                   "mean_attention_received": ("attention_received", "mean")}
    if head:
        atoms["abs_attribution"] = atoms["attribution"].abs()
        per_element = {"n": ("attribution", "size"), "mean_attribution": ("attribution", "mean"),
                       "std_attribution": ("attribution", "std"), "mean_abs_attribution": ("abs_attribution", "mean"),
                       "mean_rollout": ("rollout", "mean")}
    elements = (atoms.groupby(["symbol", "aromatic"]).agg(**per_element)
                .reset_index().sort_values("n", ascending=False))
    elements.to_csv(out / "elements.csv", index=False)

    valid_labels = None if labels is None else np.asarray(labels, dtype=float).reshape(len(smiles), -1)[valid]
    stats = _head_statistics(model, results, [smiles[i] for i in valid], valid_labels)
    layers, heads = stats["entropy"].shape
    table = {"layer": np.repeat(np.arange(layers), heads), "head": np.tile(np.arange(heads), layers),
             "entropy": stats["entropy"].ravel(), "bond_share": stats["bond_share"].ravel()}
    if stats["importance"] is not None:
        table["importance"] = stats["importance"].ravel()
    pd.DataFrame(table).to_csv(out / "heads.csv", index=False)
    _plot_head_statistics(stats, out)

    summary = {
        "n_rows": len(smiles), "n_valid": len(valid), "n_invalid": len(smiles) - len(valid),
        "head_importance_objective": stats["objective"], "bond_share_chance": stats["bond_share_chance"],
    }
    if head:
        gaps = molecules["completeness_gap"].to_numpy(float)
        summary.update({
            "attributed_output": molecules.loc[valid[0], "attributed_output"],
            "completeness_gap_mean": float(np.nanmean(gaps)), "completeness_gap_max": float(np.nanmax(gaps)),
            "non_atom_attribution_share_mean": float(molecules["non_atom_share"].mean()),
        })
    else:
        summary["note"] = ("an encoder without a prediction head: attention statistics and (with a masked-LM head) "
                           "head importance; fine-tune it for predictions, attributions and pruning")
    if prune:
        chosen = least_important_heads(stats["importance"], prune)
        report, pruned = pruning_effect(model, [smiles[i] for i in valid], chosen, valid_labels)
        pruned.save_pretrained(out / "pruned_model")
        summary["pruning"] = {**report, "model_dir": str(out / "pruned_model")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_explain(model_dir: str | Path, out: str | Path, smiles: str | None = None, data: str | Path | None = None,
                smiles_col: str | None = None, layer: int | None = None, head: int | None = None, target: int = 0,
                n_steps: int = 50, limit: int | None = None, prune: int = 0) -> dict:
    """The ``explain`` command: one molecule (``smiles``) or a file of molecules (``data``).

    ``model_dir`` is any model ``load_explainable`` reads: a fine-tuned folder (every view), or the bundled
    pretrained model, a Hugging Face folder or a hub name (attention views and statistics). With ``data``,
    a fine-tuned model's target columns, when the table has them, serve as labels for head importance and
    pruning metrics.
    """
    if (smiles is None) == (data is None):
        raise SmilesformerError("give either --smiles for one molecule or --data for a file of molecules")
    model = load_explainable(model_dir)
    if prune:
        require_head(model, "pruning (--prune)")
    if smiles is not None:
        return write_molecule_explanation(model, smiles, out, layer, head, target, n_steps)
    table = read_table(data)
    known = model.meta.smiles_col if has_head(model) else None
    col = smiles_col or (known if known in table.columns else _guess_smiles_col(table))
    require_columns(table, [col], data)
    if limit:
        table = table.head(limit)
    labels = None
    if has_head(model) and all(t in table.columns for t in model.meta.targets):
        labels = table[model.meta.targets].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    return explain_dataset(model, table[col].tolist(), out, labels, target, n_steps, prune)
