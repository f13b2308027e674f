"""Atom heat maps on the 2D structure (RDKit ``rdMolDraw2D``) and layer x head heat maps (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np  # noqa: E402

# Figures are matplotlib.figure.Figure objects written straight to files: no pyplot, so importing this
# module leaves a notebook's or GUI's matplotlib backend as it was, and no window ever opens.
from matplotlib.figure import Figure  # noqa: E402
from rdkit.Chem import rdDepictor  # noqa: E402
from rdkit.Chem.Draw import rdMolDraw2D  # noqa: E402

from ..data import SmilesformerError  # noqa: E402
from .atoms import parse_molecule  # noqa: E402

__all__ = ["draw_atom_heatmap", "draw_molecule_svg", "write_heatmap", "plot_head_grid"]

# Signed values (attributions) on a diverging map centred at 0, blue < 0 < red; non-negative values
# (attention) on a sequential map from white.
SIGNED_CMAP, POSITIVE_CMAP = "coolwarm", "Reds"
MOLECULE_SIZE = (420, 320)  # the HTML view's drawing, in pixels


def _atom_colors(weights: np.ndarray) -> tuple[dict[int, tuple], bool]:
    signed = bool((weights < 0).any())
    top = float(np.abs(weights).max()) or 1.0
    if signed:
        cmap, scaled = matplotlib.colormaps[SIGNED_CMAP], 0.5 + 0.5 * weights / top
    else:
        cmap, scaled = matplotlib.colormaps[POSITIVE_CMAP], 0.8 * weights / top  # the darkest reds hide labels
    return {i: tuple(float(c) for c in cmap(v)[:3]) for i, v in enumerate(scaled)}, signed


def _scale_note(weights: np.ndarray, signed: bool) -> str:
    top = float(np.abs(weights).max())
    return f"blue -{top:.3g} .. red +{top:.3g}" if signed else f"white 0 .. red {top:.3g}"


def draw_atom_heatmap(smiles: str, atom_weights: Sequence[float], fmt: str = "svg", size: tuple[int, int] = (400, 300),
                      legend: str = "") -> str | bytes:
    """Draw a molecule with each atom highlighted in the colour of its weight.

    Negative weights (attributions) use a blue-white-red scale centred at 0, non-negative ones (attention) a
    white-red scale; the legend gets the scale's ends.

    Args:
        smiles: the molecule; atoms in SMILES order, explicit [H] kept (as ``map_tokens`` numbers them).
        atom_weights: one value per atom.
        fmt: ``svg`` (text) or ``png`` (bytes).
        size: width, height in pixels.
        legend: text under the drawing.

    Returns:
        SVG text or PNG bytes.
    """
    mol = parse_molecule(smiles)
    weights = np.asarray(atom_weights, dtype=float)
    if weights.shape != (mol.GetNumAtoms(),):
        raise SmilesformerError(f"{smiles!r} has {mol.GetNumAtoms()} atoms but {weights.size} weights were given")
    weights = np.nan_to_num(weights)
    if fmt == "svg":
        drawer = rdMolDraw2D.MolDraw2DSVG(*size)
    elif fmt == "png":
        drawer = rdMolDraw2D.MolDraw2DCairo(*size)
    else:
        raise SmilesformerError(f"unknown image format {fmt!r}; use svg or png")
    colors, signed = _atom_colors(weights)
    bond_colors = {}
    for bond in mol.GetBonds():
        a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        bond_colors[bond.GetIdx()] = tuple((x + y) / 2 for x, y in zip(colors[a], colors[b]))
    note = _scale_note(weights, signed)
    rdDepictor.Compute2DCoords(mol)
    rdMolDraw2D.PrepareAndDrawMolecule(
        drawer, mol, legend=f"{legend}  ({note})" if legend else note,
        highlightAtoms=list(colors), highlightAtomColors=colors, highlightAtomRadii={i: 0.45 for i in colors},
        highlightBonds=list(bond_colors), highlightBondColors=bond_colors,
    )
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


def draw_molecule_svg(smiles: str, size: tuple[int, int] = MOLECULE_SIZE) -> tuple[str, list[tuple[float, float]]]:
    """A plain SVG drawing of the molecule and each atom's (x, y) in it (for the HTML view's overlays)."""
    mol = parse_molecule(smiles)
    rdDepictor.Compute2DCoords(mol)
    drawer = rdMolDraw2D.MolDraw2DSVG(*size)
    drawer.drawOptions().clearBackground = False  # transparent, so the page's atom discs show underneath
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    coords = [drawer.GetDrawCoords(i) for i in range(mol.GetNumAtoms())]
    return drawer.GetDrawingText(), [(float(p.x), float(p.y)) for p in coords]


def write_heatmap(smiles: str, atom_weights: Sequence[float], stem: str | Path, legend: str = "",
                  size: tuple[int, int] = (500, 380)) -> list[Path]:
    """Write ``stem.svg`` and ``stem.png`` atom heat maps; returns both paths."""
    stem = Path(stem)
    svg, png = stem.with_suffix(".svg"), stem.with_suffix(".png")
    svg.write_text(draw_atom_heatmap(smiles, atom_weights, "svg", size, legend))
    png.write_bytes(draw_atom_heatmap(smiles, atom_weights, "png", size, legend))
    return [svg, png]


def plot_head_grid(values: np.ndarray, path: str | Path, title: str, label: str, cmap: str = "viridis") -> Path:
    """A layer x head heat map of one statistic, values written in the cells.

    Args:
        values: (layers, heads).
        path: PNG file to write.
        title: figure title.
        label: colour-bar label.
    """
    layers, heads = values.shape
    fig = Figure(figsize=(1.2 + 0.6 * heads, 1.2 + 0.5 * layers))
    ax = fig.subplots()
    image = ax.imshow(values, cmap=cmap, aspect="auto")
    for i in range(layers):
        for j in range(heads):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2g}", ha="center", va="center", fontsize=7,
                        color="white" if image.norm(values[i, j]) < 0.5 else "black")
    ax.set(xlabel="head", ylabel="layer", title=title, xticks=range(heads), yticks=range(layers))
    fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)
