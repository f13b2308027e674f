"""A self-contained interactive attention page: head view and model view in one HTML file.

Like bertviz's head and model views, but the page loads no script, style sheet, font or image from
anywhere: the JavaScript and CSS are inline and the data (attention, tokens, their atoms, the RDKit
drawing) is embedded as JSON, so it opens offline and can be mailed as one file. Hovering a token also
lights up, on the molecule, the atoms it attends to (bertviz knows nothing of atoms).

In a notebook the same page is shown inside an ``<iframe srcdoc=...>`` (``attention_iframe``): the page's
script runs in its own document, so it needs no requirejs, no network and no notebook extension, several
views on one page cannot clash over element ids or styles, and Jupyter Notebook, JupyterLab and VS Code all
show it (in a trusted notebook: untrusted HTML outputs lose their iframes and scripts in every front end).
folium shows its maps in notebooks the same way.

The attention weights travel as one byte each (0..255 for 0..1, base64): a 12-layer, 12-head model on a
200-token molecule has 5.8 million of them, about 35 MB as decimal JSON and 7.7 MB this way. Lines are
drawn on canvases, batched by opacity, so a view of hundreds of tokens stays responsive.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np

from ..data import SmilesformerError
from .attention import MoleculeAttention
from .draw import MOLECULE_SIZE, draw_molecule_svg

__all__ = ["attention_html", "write_attention_html", "attention_iframe", "svg_for_html", "VIEWS"]

VIEWS = ("head", "model")

# Inline SVG in an HTML page needs no namespace declarations, and without them the file holds no URL at all.
_XMLNS = re.compile(r"""\s+xmlns(:\w+)?=(['"])[^'"]*\2""")

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 6px} code{font-size:14px;background:#f3f3f3;padding:1px 4px;word-break:break-all}
.caveat{font-size:12px;color:#555;max-width:900px} .hint{font-size:12px;color:#666;margin-left:12px}
.tabs button{border:1px solid #bbb;background:#f7f7f7;padding:4px 12px;cursor:pointer}
.tabs button.on{background:#fff;border-bottom-color:#fff;font-weight:600}
section{border-top:1px solid #bbb;padding-top:10px;margin-top:-1px}
.row{display:flex;align-items:flex-start;gap:0;margin-top:10px}
.col{display:flex;flex-direction:column} .tok{height:20px;line-height:20px;padding:0 6px;font-family:monospace;
font-size:13px;cursor:default;border-radius:3px;white-space:pre} #left .tok{text-align:right}
#lines{display:block}
.tok.nonatom{color:#888} .tok.on{outline:2px solid #d62728}
#mol{position:relative;margin-left:24px} #mol-overlay{position:absolute;left:0;top:0;overflow:visible}
#mol-svg{position:relative}
#mol-note{font-size:12px;color:#555;max-width:420px}
#grid{display:grid;gap:6px;margin-top:8px} .cell{font-size:11px;color:#444;text-align:center;cursor:pointer}
.cell canvas{border:1px solid #ddd;display:block} .cell:hover canvas{border-color:#d62728}
"""

_SCRIPT = r"""
(function () {
  const D = JSON.parse(document.getElementById('data').textContent);
  const T = D.tokens.length, L = D.layers, H = D.heads, ROW = 20, W = 200, RGB = '214,39,40';
  const raw = atob(D.attention_b64), Q = new Uint8Array(raw.length);  // (layers, heads, T, T), 255 = 1
  for (let k = 0; k < raw.length; k++) Q[k] = raw.charCodeAt(k);
  let layer = D.layer === null ? L - 1 : D.layer, head = D.head === null ? -1 : D.head;
  let hover = null, gridDrawn = false;
  const $ = (id) => document.getElementById(id);
  $('smiles').textContent = D.smiles;
  $('pred').textContent = D.prediction ? 'prediction: ' + Object.entries(D.prediction)
      .map(([k, v]) => k + ' = ' + (typeof v === 'number' ? v.toPrecision(4) : v)).join(', ') : '';
  const cache = {};
  function matrix(l, h) {  // (T, T) weights of one head, or (h < 0) the mean of the layer's heads
    const key = l + ',' + h;
    if (!cache[key]) {
      const m = Array.from({length: T}, () => new Float32Array(T));
      for (const hd of (h >= 0 ? [h] : [...Array(H).keys()])) {
        const base = (l * H + hd) * T * T, share = h >= 0 ? 1 : 1 / H;
        for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) m[i][j] += Q[base + i * T + j] / 255 * share;
      }
      cache[key] = m;
    }
    return cache[key];
  }
  function drawLines(ctx, A, x0, x1, y, keep, min) {
    // one path per opacity step (20 steps): a few strokes instead of one per line, for long molecules
    const paths = Array.from({length: 21}, () => []);
    for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
      if (A[i][j] < min || !keep(i, j)) continue;
      paths[Math.min(20, Math.round(A[i][j] * 20))].push(i, j);
    }
    paths.forEach((p, k) => {
      if (!p.length || k === 0) return;
      ctx.strokeStyle = 'rgba(' + RGB + ',' + (k / 20) + ')';
      ctx.beginPath();
      for (let n = 0; n < p.length; n += 2) { ctx.moveTo(x0, y(p[n])); ctx.lineTo(x1, y(p[n + 1])); }
      ctx.stroke();
    });
  }
  for (let l = 0; l < L; l++) $('layer').add(new Option(String(l), l));
  $('head').add(new Option('mean of heads', -1));
  for (let h = 0; h < H; h++) $('head').add(new Option(String(h), h));
  $('layer').value = layer; $('head').value = head;
  $('layer').onchange = (e) => { layer = +e.target.value; render(); };
  $('head').onchange = (e) => { head = +e.target.value; render(); };
  function column(side) {
    const col = $(side);
    D.tokens.forEach((t, i) => {
      const d = document.createElement('div');
      d.className = 'tok' + (D.token_atoms[i].length ? '' : ' nonatom');
      d.textContent = t;
      d.title = D.token_atoms[i].length ? 'atom(s) ' + D.token_atoms[i].join(', ') : 'no atom';
      d.onmouseenter = () => { hover = {side: side, i: i}; render(); };
      d.onmouseleave = () => { hover = null; render(); };
      col.appendChild(d);
    });
  }
  column('left'); column('right');
  $('lines').height = T * ROW; $('lines').width = W;
  $('mol-svg').innerHTML = D.svg;
  $('mol-overlay').setAttribute('width', D.svg_size[0]); $('mol-overlay').setAttribute('height', D.svg_size[1]);
  function toAtoms(values) {  // per-token values -> per-atom (a token over k atoms gives each 1/k)
    const out = new Array(D.atoms.length).fill(0);
    values.forEach((v, t) => { const a = D.token_atoms[t]; a.forEach((k) => { out[k] += v / a.length; }); });
    return out;
  }
  function render() {
    const A = matrix(layer, head), ctx = $('lines').getContext('2d');
    ctx.clearRect(0, 0, W, T * ROW);
    ctx.lineWidth = 2;
    const keep = (i, j) => !hover || (hover.side === 'left' ? i === hover.i : j === hover.i);
    drawLines(ctx, A, 0, W, (k) => k * ROW + ROW / 2, keep, 0.005);
    const left = $('left').children, right = $('right').children;
    for (let k = 0; k < T; k++) {
      left[k].style.background = right[k].style.background = '';
      left[k].classList.remove('on'); right[k].classList.remove('on');
    }
    let values, note;
    if (hover && hover.side === 'left') {
      left[hover.i].classList.add('on');
      for (let j = 0; j < T; j++) right[j].style.background = 'rgba(' + RGB + ',' + A[hover.i][j] + ')';
      values = Array.from(A[hover.i]);
      note = 'where token ' + hover.i + ' (' + D.tokens[hover.i] + ') attends, on atoms';
    } else if (hover) {
      right[hover.i].classList.add('on');
      for (let i = 0; i < T; i++) left[i].style.background = 'rgba(' + RGB + ',' + A[i][hover.i] + ')';
      values = D.tokens.map((_, t) => (t === hover.i ? 1 : 0));
      note = 'the atom(s) token ' + hover.i + ' (' + D.tokens[hover.i] + ') spells';
    } else {
      values = D.tokens.map((_, j) => A.reduce((acc, row) => acc + row[j], 0) / T);
      note = 'attention each atom receives, averaged over query tokens';
    }
    const atoms = toAtoms(values), top = Math.max(1e-9, ...atoms);
    $('mol-overlay').innerHTML = D.atoms.map((p, k) => '<circle cx="' + p[0] + '" cy="' + p[1] + '" r="' +
        D.atom_radius + '" fill="rgb(' + RGB + ')" fill-opacity="' + (0.75 * atoms[k] / top).toFixed(3) + '"/>')
        .join('');
    $('mol-note').textContent = 'Molecule: ' + note + ' (layer ' + layer + ', ' +
        (head < 0 ? 'mean of heads' : 'head ' + head) + '); the darkest disc is ' + top.toPrecision(2) + '.';
  }
  function drawGrid() {
    const grid = $('grid'), w = 90, h = Math.min(160, Math.max(60, T * 4));
    grid.style.gridTemplateColumns = 'repeat(' + H + ', ' + (w + 2) + 'px)';
    for (let l = 0; l < L; l++) for (let hd = 0; hd < H; hd++) {
      const cell = document.createElement('div'), c = document.createElement('canvas');
      cell.className = 'cell'; c.width = w; c.height = h;
      const ctx = c.getContext('2d'), step = h / T;
      ctx.lineWidth = 1;
      drawLines(ctx, matrix(l, hd), 8, w - 8, (k) => (k + 0.5) * step, () => true, 0.01);
      cache[l + ',' + hd] = undefined;  // the grid needs each head once: keep memory flat for long molecules
      cell.appendChild(c); cell.appendChild(document.createTextNode('L' + l + ' H' + hd));
      cell.onclick = () => {
        layer = l; head = hd; $('layer').value = l; $('head').value = hd; show('head'); render();
      };
      grid.appendChild(cell);
    }
    document.body.dataset.gridCells = String(L * H);
  }
  function show(which) {
    $('head-view').hidden = which !== 'head'; $('model-view').hidden = which !== 'model';
    $('tab-head').className = which === 'head' ? 'on' : ''; $('tab-model').className = which === 'model' ? 'on' : '';
    if (which === 'model' && !gridDrawn) { drawGrid(); gridDrawn = true; }
  }
  $('tab-head').onclick = () => show('head'); $('tab-model').onclick = () => show('model');
  render();
  show(D.view);
  document.body.dataset.rendered = D.view;  // for tests: the script ran to the end
})();
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head>
<body>
<h1>{title}: <code id="smiles"></code></h1>
<p id="pred"></p>
<p class="caveat">Attention shows where each token reads from, not why the model predicts what it does: different
attention can give the same prediction (Jain &amp; Wallace, NAACL 2019; Wiegreffe &amp; Pinter, EMNLP 2019).
For an explanation of the prediction, see the integrated-gradients attribution map and its completeness gap.</p>
<div class="tabs"><button id="tab-head" class="on">Head view</button><button id="tab-model">Model view</button></div>
<section id="head-view">
<label>Layer <select id="layer"></select></label> <label>Head <select id="head"></select></label>
<span class="hint">Hover a token on the left to see where it attends; on the right, to see who attends to it.
Grey tokens spell no atom.</span>
<div class="row"><div id="left" class="col"></div><canvas id="lines"></canvas><div id="right" class="col"></div>
<div id="mol"><svg id="mol-overlay"></svg><div id="mol-svg"></div><div id="mol-note"></div></div></div>
</section>
<section id="model-view" hidden>
<span class="hint">Every layer (rows) and head (columns); click one to open it in the head view.</span>
<div id="grid"></div>
</section>
<script type="application/json" id="data">{data}</script>
<script>{script}</script>
</body></html>
"""


def _atom_radius(result: MoleculeAttention, coords: list[tuple[float, float]]) -> float:
    """Disc radius: 40% of the median drawn bond length, wider than an atom label."""
    lengths = [np.hypot(coords[b.GetBeginAtomIdx()][0] - coords[b.GetEndAtomIdx()][0],
                        coords[b.GetBeginAtomIdx()][1] - coords[b.GetEndAtomIdx()][1])
               for b in result.molecule.mol.GetBonds()]
    return round(0.4 * float(np.median(lengths)), 1) if lengths else 20.0


def svg_for_html(svg: str) -> str:
    """An RDKit SVG made fit to sit inside an HTML page: no XML declaration, no namespace URLs."""
    return _XMLNS.sub("", svg.split("?>", 1)[-1])


def _quantized(weights: np.ndarray) -> str:
    """(layers, heads, T, T) weights in 0..1 as base64 bytes, 255 = 1 (rounding error at most 0.002)."""
    return base64.b64encode(np.rint(np.clip(weights, 0, 1) * 255).astype(np.uint8).tobytes()).decode("ascii")


def attention_html(result: MoleculeAttention, prediction: dict | None = None, title: str = "Attention",
                   view: str = "head", layer: int | None = None, head: int | None = None) -> str:
    """The page as a string.

    Args:
        result: one molecule's attention (``extract_attention``).
        prediction: shown at the top, e.g. {"logS_pred": -2.1}.
        title: page title.
        view: the tab the page opens on: ``head`` or ``model``.
        layer, head: the head view's first selection (default: the last layer, mean of its heads).
    """
    if view not in VIEWS:
        raise SmilesformerError(f"unknown attention view {view!r}; choose one of {', '.join(VIEWS)}")
    svg, coords = draw_molecule_svg(result.molecule.smiles)
    layers, heads = result.weights.shape[:2]
    data = {
        "smiles": result.molecule.smiles,
        "prediction": prediction,
        "tokens": result.tokens,
        "token_atoms": result.token_atoms,
        "layers": int(layers),
        "heads": int(heads),
        "attention_b64": _quantized(result.weights),  # (layers, heads, T, T), one byte per weight
        "atoms": [[round(x, 1), round(y, 1)] for x, y in coords],
        "atom_radius": _atom_radius(result, coords),
        "svg": svg_for_html(svg),
        "svg_size": list(MOLECULE_SIZE),
        "view": view,
        "layer": layer,
        "head": head,
    }
    # "</" inside a script element would end it early; JSON reads "<\\/" as "</".
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return _PAGE.format(title=html.escape(title), style=_STYLE, script=_SCRIPT, data=payload)


def write_attention_html(result: MoleculeAttention, path: str | Path, prediction: dict | None = None,
                         title: str = "Attention") -> Path:
    """Write the page to ``path`` (one file, works offline)."""
    path = Path(path)
    path.write_text(attention_html(result, prediction, title), encoding="utf-8")
    return path


def _frame_height(result: MoleculeAttention, view: str) -> int:
    """Pixels the iframe needs to show the view without scrolling, at most 900 (it scrolls inside beyond)."""
    layers, heads, n, _ = result.weights.shape
    if view == "head":
        body = max(n * 20, MOLECULE_SIZE[1] + 60)
    else:
        body = layers * (min(160, max(60, n * 4)) + 22)
    return min(900, 240 + body)


def attention_iframe(result: MoleculeAttention, prediction: dict | None = None, title: str = "Attention",
                     view: str = "head", layer: int | None = None, head: int | None = None) -> str:
    """The page inside an ``<iframe srcdoc=...>``: HTML that a notebook output shows as the interactive view.

    ``sandbox="allow-scripts"`` lets the page's own script run and nothing else (no access to the notebook,
    no storage). The caption under it stays when a front end strips the frame (an untrusted notebook).
    """
    page = attention_html(result, prediction, title, view, layer, head)
    caption = (f"{'Head' if view == 'head' else 'Model'} view of {result.molecule.smiles} "
               f"({result.weights.shape[0]} layers x {result.weights.shape[1]} heads, {len(result.tokens)} tokens). "
               "Blank above? Untrusted notebooks drop interactive output: run the cell or trust the notebook.")
    return (f'<iframe class="smilesformer-attention" srcdoc="{html.escape(page, quote=True)}" '
            f'sandbox="allow-scripts" style="width:100%;height:{_frame_height(result, view)}px;border:1px solid #ddd" '
            f'title="{html.escape(title)}"></iframe>'
            f'<div style="font-size:11px;color:#777;word-break:break-all">{html.escape(caption)}</div>')
