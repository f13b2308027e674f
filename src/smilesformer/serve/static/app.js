// smilesformer page: plain JavaScript talking to this server's API (no framework, no build step, no network).
"use strict";

const EXAMPLES = [
  "CCO",
  "c1ccccc1O",
  "CC(=O)Oc1ccccc1C(=O)O",
  "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
  "ClC(Cl)(Cl)Cl",
];

const state = {
  model: null,        // GET /model
  columns: [],        // prediction columns
  rows: [],           // {row, smiles, predictions, error, warning}
  selected: null,     // index into rows
  explanation: null,  // POST /explain result for the selected row
  requestId: 0,       // to drop answers to clicks that were superseded
};

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// The server says what went wrong in `detail` (a string for our own 4xx, a list for validation errors).
async function callApi(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON: reported below */ }
  if (!response.ok) {
    let detail = data && data.detail !== undefined ? data.detail : response.statusText;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
}

// One SMILES per line; the first whitespace-separated field, so .smi files ("SMILES name") paste as they are.
function parseInput(text) {
  return text.split(/\r?\n/).map((line) => line.trim().split(/\s+/)[0]).filter((s) => s && s.length > 0);
}

function formatValue(value) {
  if (value === null || value === undefined) return "";
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 1000 || (Math.abs(value) < 0.001 && value !== 0) ? value.toExponential(3) : value.toFixed(3);
}

async function loadModel() {
  try {
    state.model = await callApi("/model");
    const m = state.model;
    const size = m.config && m.config.n_parameters ? `, ${(m.config.n_parameters / 1e6).toFixed(2)} M parameters` : "";
    $("model-line").textContent = `model ${m.name}: ${m.task} of ${m.targets.join(", ")}${size}`;
    state.columns = m.columns;
  } catch (err) {
    $("model-line").textContent = `cannot reach the model: ${err.message}`;
  }
}

async function predict() {
  const smiles = parseInput($("smiles-input").value);
  if (smiles.length === 0) {
    setStatus("Type or paste at least one SMILES.", true);
    return;
  }
  // Large inputs are sent in pieces of the server's per-request limit.
  const limit = (state.model && state.model.limits.max_smiles_per_request) || 1000;
  $("predict-button").disabled = true;
  const rows = [];
  try {
    for (let start = 0; start < smiles.length; start += limit) {
      setStatus(`Predicting ${Math.min(start + limit, smiles.length)} of ${smiles.length}\u2026`);
      const data = await callApi("/predict", { smiles: smiles.slice(start, start + limit) });
      state.columns = data.columns;
      for (const r of data.results) rows.push({ ...r, row: start + r.row });
    }
    state.rows = rows;
    const nBad = rows.filter((r) => r.error).length;
    setStatus(`${rows.length} molecule${rows.length === 1 ? "" : "s"}` + (nBad ? `, ${nBad} invalid` : ""));
    renderTable();
    hideDetail();
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    $("predict-button").disabled = false;
  }
}

function renderTable() {
  const table = $("results-table");
  const head = table.tHead;
  const body = table.tBodies[0];
  head.replaceChildren();
  body.replaceChildren();
  const headRow = head.insertRow();
  const intervals = intervalTargets();
  const hasDomain = state.rows.some((r) => r.domain);
  const names = ["#", "SMILES", ...state.columns, ...intervals.map((t) => `${t} 90% interval`),
                 ...(hasDomain ? ["domain"] : []), "error"];
  for (const name of names) {
    const th = document.createElement("th");
    th.textContent = name;
    headRow.appendChild(th);
  }
  const ranges = intervals.map((t) => intervalRange(t));
  state.rows.forEach((r, i) => {
    const tr = body.insertRow();
    tr.className = r.error ? "error-row" : "valid";
    tr.dataset.index = String(i);
    const cells = [[String(r.row + 1), "num"], [r.smiles, "smiles"]];
    for (const c of state.columns) cells.push([formatValue(r.predictions[c]), "num"]);
    for (const [text, cls] of cells) {
      const td = tr.insertCell();
      td.textContent = text;
      td.className = cls;
    }
    intervals.forEach((t, k) => tr.insertCell().appendChild(intervalBar(r, t, ranges[k])));
    if (hasDomain) tr.insertCell().appendChild(domainBadge(r.domain));
    const last = tr.insertCell();
    last.textContent = r.error || r.warning || "";
    last.className = r.error ? "error" : "warning";
    if (!r.error) tr.addEventListener("click", () => selectRow(i));
  });
  $("row-count").textContent = `(${state.rows.length})`;
  $("results-panel").hidden = false;
}

// Targets whose predictions come with a 90% interval (regression with an uncertainty).
function intervalTargets() {
  return state.columns.filter((c) => c.endsWith("_pi90_low")).map((c) => c.slice(0, -"_pi90_low".length));
}

// The span all rows' intervals share, so bars compare across rows.
function intervalRange(target) {
  let lo = Infinity, hi = -Infinity;
  for (const r of state.rows) {
    const a = r.predictions[`${target}_pi90_low`], b = r.predictions[`${target}_pi90_high`];
    if (a !== null && a !== undefined) lo = Math.min(lo, a);
    if (b !== null && b !== undefined) hi = Math.max(hi, b);
  }
  return hi > lo ? [lo, hi] : null;
}

// A bar from the interval's low to high end with a tick at the prediction; its title gives the numbers.
function intervalBar(r, target, range) {
  const box = document.createElement("div");
  box.className = "interval";
  const low = r.predictions[`${target}_pi90_low`], high = r.predictions[`${target}_pi90_high`];
  const mid = r.predictions[`${target}_pred`];
  if (!range || low === null || low === undefined || high === null || high === undefined) return box;
  const at = (v) => `${(100 * (v - range[0])) / (range[1] - range[0])}%`;
  const bar = document.createElement("span");
  bar.className = "interval-bar";
  bar.style.left = at(low);
  bar.style.width = `${(100 * (high - low)) / (range[1] - range[0])}%`;
  const tick = document.createElement("span");
  tick.className = "interval-mid";
  tick.style.left = at(mid);
  box.append(bar, tick);
  box.title = `${formatValue(mid)} (90% interval ${formatValue(low)} to ${formatValue(high)})`;
  return box;
}

// "in domain" / "out of domain" with the similarity to the nearest training molecule.
function domainBadge(domain) {
  const badge = document.createElement("span");
  if (!domain) return badge;
  badge.className = domain.in_domain ? "badge in-domain" : "badge out-of-domain";
  badge.textContent = `${domain.in_domain ? "in domain" : "out of domain"} (${domain.similarity.toFixed(2)})`;
  badge.title = `Tanimoto similarity to the nearest training molecule: ${formatValue(domain.similarity)}; ` +
    `below ${formatValue(domain.threshold)} the model's validation errors were clearly larger. Still predicted.`;
  return badge;
}

function hideDetail() {
  state.selected = null;
  state.explanation = null;
  $("detail-panel").hidden = true;
}

async function selectRow(index) {
  const r = state.rows[index];
  state.selected = index;
  state.explanation = null;
  for (const tr of $("results-table").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.index === String(index));
  $("detail-panel").hidden = false;
  $("detail-title").textContent = `Molecule ${r.row + 1}`;
  $("detail-smiles").textContent = r.smiles;
  $("detail-note").textContent = "";
  $("drawing").replaceChildren(document.createTextNode("Explaining\u2026"));
  const id = ++state.requestId;
  try {
    const ex = await callApi("/explain", { smiles: r.smiles });
    if (id !== state.requestId) return;
    if (ex.error) throw new Error(ex.error);
    state.explanation = ex;
    fillAttentionSelectors(ex.atom_attention);
    await redraw();
  } catch (err) {
    if (id !== state.requestId) return;
    $("drawing").replaceChildren(document.createTextNode(`Cannot explain this molecule: ${err.message}`));
  }
}

// `layers` and `heads` are counts (older answers may give lists of indices).
function count(value) {
  return Array.isArray(value) ? value.length : Number(value);
}

function fillAttentionSelectors(atomAttention) {
  const layerSelect = $("layer-select");
  const headSelect = $("head-select");
  layerSelect.replaceChildren();
  headSelect.replaceChildren();
  if (!atomAttention) return;
  const nLayers = count(atomAttention.layers);
  for (let i = 0; i < nLayers; i++) layerSelect.add(new Option(String(i), String(i)));
  layerSelect.selectedIndex = nLayers - 1;  // last layer: closest to the prediction
  headSelect.add(new Option("mean of heads", "mean"));
  for (let i = 0; i < count(atomAttention.heads); i++) headSelect.add(new Option(String(i), String(i)));
}

function currentMode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

// SVG comes from RDKit on our server; it is parsed as XML (never as HTML) and scripts are dropped anyway.
function showSvg(svgText) {
  const doc = new DOMParser().parseFromString(svgText, "image/svg+xml");
  const svg = doc.documentElement;
  if (!svg || svg.nodeName.toLowerCase() !== "svg") throw new Error("the server's drawing is not an SVG");
  for (const el of svg.querySelectorAll("script, foreignObject")) el.remove();
  $("drawing").replaceChildren(document.importNode(svg, true));
}

function headWeights(atomAttention, layerIndex, headValue) {
  const perHead = atomAttention.weights[layerIndex];  // [head][atom]
  if (headValue !== "mean") return perHead[Number(headValue)];
  return perHead[0].map((_, atom) => perHead.reduce((sum, h) => sum + h[atom], 0) / perHead.length);
}

async function redraw() {
  const ex = state.explanation;
  if (!ex) return;
  const mode = currentMode();
  $("layer-label").hidden = mode !== "attention";
  $("head-label").hidden = mode !== "attention";
  const id = ++state.requestId;
  try {
    if (mode === "attribution") {
      showSvg(ex.attribution_svg);
      const gap = ex.completeness_gap;
      const output = ex.attributed_output ? ` of ${ex.attributed_output}` : "";
      $("detail-note").textContent = `Integrated-gradients attribution${output} per atom (scale in the legend)`
        + (gap !== null && gap !== undefined ? `; completeness gap ${formatValue(gap)}.` : ".");
    } else {
      const att = ex.atom_attention;
      const layerIndex = Number($("layer-select").value);
      const headValue = $("head-select").value;
      const weights = headWeights(att, layerIndex, headValue);
      const headName = headValue === "mean" ? "mean of heads" : `head ${headValue}`;
      const legend = `attention, layer ${layerIndex}, ${headName}`;
      const drawing = await callApi("/draw", { smiles: ex.smiles, atom_weights: weights, legend });
      if (id !== state.requestId) return;
      showSvg(drawing.svg);
      $("detail-note").textContent = "Attention each atom receives in the chosen layer and head.";
    }
  } catch (err) {
    if (id !== state.requestId) return;
    $("drawing").replaceChildren(document.createTextNode(`Cannot draw: ${err.message}`));
  }
}

function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function downloadCsv() {
  const hasDomain = state.rows.some((r) => r.domain);
  const header = ["smiles", ...state.columns, ...(hasDomain ? ["domain_similarity", "in_domain"] : []), "error", "warning"];
  const lines = [header.map(csvField).join(",")];
  for (const r of state.rows) {
    const domain = hasDomain ? [r.domain ? r.domain.similarity : null, r.domain ? r.domain.in_domain : null] : [];
    lines.push([r.smiles, ...state.columns.map((c) => r.predictions[c]), ...domain, r.error, r.warning].map(csvField).join(","));
  }
  const blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "smilesformer_predictions.csv";
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function readFile(event) {
  const file = event.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    let text = String(reader.result);
    // a CSV: the column named smiles (any case), else the first; a plain split is enough as SMILES hold no commas
    if (/\.csv$/i.test(file.name)) {
      const lines = text.split(/\r?\n/);
      const header = lines[0].split(",").map((h) => h.trim().toLowerCase());
      const col = Math.max(0, header.indexOf("smiles"));
      text = lines.slice(1).map((l) => (l.split(",")[col] || "").trim()).join("\n");
    }
    $("smiles-input").value = text;
    setStatus(`Loaded ${file.name}; press Predict.`);
  };
  reader.readAsText(file);
  event.target.value = "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("predict-button").addEventListener("click", predict);
  $("example-button").addEventListener("click", () => { $("smiles-input").value = EXAMPLES.join("\n"); });
  $("clear-button").addEventListener("click", () => {
    $("smiles-input").value = "";
    state.rows = [];
    $("results-panel").hidden = true;
    hideDetail();
    setStatus("");
  });
  $("download-button").addEventListener("click", downloadCsv);
  $("file-input").addEventListener("change", readFile);
  $("smiles-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) predict();
  });
  for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", redraw);
  $("layer-select").addEventListener("change", redraw);
  $("head-select").addEventListener("change", redraw);
  loadModel();
});
