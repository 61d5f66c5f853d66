"""The attention export's HTML page: one self-contained file with a layer and head selector per attention map.

Nothing is fetched (no script, style or font from the network): the data travels inside the page as JSON, with
each map's title and description, so the page names maps exactly as the terminal view does.
"""

from __future__ import annotations

import html
import json

from gbcli.render.attention import map_direction, map_title


def _script_json(value: dict) -> str:
    """JSON that is safe inside a <script> element: no '</script>' or '<!--' can appear."""
    return (
        json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def with_titles(document: dict) -> dict:
    """The export document with a `title` and `description` on every map, for the page to show as they are."""
    models = []
    for entry in document["models"]:
        entry = dict(
            entry,
            title=map_title(entry["family"], entry["model"], entry["map"]),
            description=map_direction(entry["map"], entry["causal"]),
        )
        if "other_maps" in entry:
            entry["other_maps"] = [
                dict(
                    m,
                    title=map_title(entry["family"], entry["model"], m["name"]),
                    description=map_direction(m["name"], m["causal"]),
                )
                for m in entry["other_maps"]
            ]
        models.append(entry)
    return dict(document, models=models)


def attention_html(text: str, document: dict) -> str:
    """The page for an export document (`gbcli.render.export.html_data`): the text, and one panel per map."""
    title = "gbcli attention: " + (text if len(text) <= 80 else text[:77] + "…")
    return (
        HTML_TEMPLATE.replace("{{TITLE}}", html.escape(title))
        .replace("{{TEXT}}", html.escape(text))
        .replace("{{DATA}}", _script_json(with_titles(document)))
    )


HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1b1b1f; background: #fff; }
  h1 { font-size: 1.1rem; font-weight: 600; }
  .text { font-family: ui-monospace, monospace; background: #f4f4f6; padding: .4rem .6rem; border-radius: 4px; }
  .models { display: flex; flex-wrap: wrap; gap: 2rem; align-items: flex-start; margin-top: 1rem; }
  .model h2 { font-size: 1rem; margin: 0 0 .3rem 0; }
  .model .what { color: #555; font-size: .85rem; margin-bottom: .5rem; }
  .controls { margin-bottom: .6rem; font-size: .9rem; }
  .controls select { margin-right: 1rem; }
  table.heatmap { border-collapse: collapse; font-family: ui-monospace, monospace; font-size: 12px; }
  table.heatmap td.cell { width: 18px; height: 18px; padding: 0; border: 1px solid #fff; }
  table.heatmap th { font-weight: normal; padding: 0 4px; white-space: nowrap; }
  table.heatmap th.key { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; padding: 4px 0; }
  table.heatmap th.query { text-align: right; }
  .special { color: #a0309a; }
  .legend { display: flex; align-items: center; gap: .5rem; font-size: .85rem; margin-top: 1rem; }
  .legend .bar { width: 200px; height: 12px; border: 1px solid #ccc; }
  .readout { font-family: ui-monospace, monospace; font-size: .85rem; min-height: 1.2em; margin-top: .4rem; }
</style>
</head>
<body>
<h1>{{TITLE}}</h1>
<div class="text">{{TEXT}}</div>
<div class="legend">weight 0 <div class="bar" id="legend-bar"></div> 1
  <span>&nbsp;rows: query tokens (attending) · columns: key tokens (attended to) · colour on a square-root
  scale · grey: masked (a causal model never attends to the right)</span>
</div>
<div class="models" id="models"></div>
<script type="application/json" id="gbcli-attention-data">{{DATA}}</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("gbcli-attention-data").textContent);

function colour(weight) {
  // white → deep blue, on a square-root scale so that weak links stay visible
  const t = Math.sqrt(Math.max(0, Math.min(1, weight)));
  const from = [255, 255, 255], to = [8, 48, 107];
  const c = from.map((f, i) => Math.round(f + (to[i] - f) * t));
  return "rgb(" + c.join(",") + ")";
}

function matrix(model, layer, head) {
  const heads = model.attention[layer];
  if (head !== "mean") return heads[Number(head)];
  const n = heads[0].length, m = heads[0][0].length;
  const out = [];
  for (let q = 0; q < n; q++) {
    const row = new Array(m).fill(0);
    for (const h of heads) for (let k = 0; k < m; k++) row[k] += h[q][k] / heads.length;
    out.push(row);
  }
  return out;
}

function option(select, value, label) {
  const o = document.createElement("option");
  o.value = value; o.textContent = label; select.appendChild(o);
}

function tokenCell(tag, token, cls) {
  const th = document.createElement(tag);
  th.className = cls + (token.special ? " special" : "");
  th.textContent = token.label;
  th.title = "#" + token.index + " " + token.piece + (token.special ? " (special)" : "");
  return th;
}

function draw(model, table, layer, head, readout) {
  const weights = matrix(model, layer, head);
  table.textContent = "";
  const header = document.createElement("tr");
  header.appendChild(document.createElement("th"));
  for (const token of model.keys) header.appendChild(tokenCell("th", token, "key"));
  table.appendChild(header);
  model.queries.forEach((query, q) => {
    const tr = document.createElement("tr");
    tr.appendChild(tokenCell("th", query, "query"));
    model.keys.forEach((key, k) => {
      const td = document.createElement("td");
      const w = weights[q][k];
      const masked = model.causal && k > q;
      td.className = "cell";
      td.style.background = masked ? "#e4e4e8" : colour(w);
      td.title = query.label + " → " + key.label + ": " + (masked ? "masked (0)" : w.toFixed(6));
      td.onmouseenter = () => { readout.textContent = td.title; };
      tr.appendChild(td);
    });
    table.appendChild(tr);
  });
}

function build(model) {
  const box = document.createElement("section");
  box.className = "model";
  const h2 = document.createElement("h2");
  h2.textContent = model.title;
  const what = document.createElement("div");
  what.className = "what";
  what.textContent = model.description;
  const controls = document.createElement("div");
  controls.className = "controls";
  const layer = document.createElement("select");
  // Layers are numbered 1..L, as every gbcli command numbers them (0 is the embeddings).
  for (let l = 0; l < model.layers; l++) option(layer, l, "layer " + (l + 1));
  layer.value = String(model.layers - 1);
  const head = document.createElement("select");
  option(head, "mean", "mean of " + model.heads + " heads");
  for (let h = 0; h < model.heads; h++) option(head, h, "head " + h);
  const l1 = document.createElement("label"); l1.textContent = "Layer "; l1.appendChild(layer);
  const l2 = document.createElement("label"); l2.textContent = "Head "; l2.appendChild(head);
  controls.append(l1, l2);
  const table = document.createElement("table");
  table.className = "heatmap";
  const readout = document.createElement("div");
  readout.className = "readout";
  const redraw = () => draw(model, table, Number(layer.value), head.value, readout);
  layer.onchange = redraw;
  head.onchange = redraw;
  box.append(h2, what, controls, table, readout);
  redraw();
  return box;
}

const bar = document.getElementById("legend-bar");
bar.style.background = "linear-gradient(to right, " +
  [0, 0.1, 0.25, 0.5, 0.75, 1].map(w => colour(w) + " " + (100 * w) + "%").join(", ") + ")";
// One panel per attention map: GPT and BERT have one; an encoder-decoder (BART) has encoder, decoder and cross.
// Titles and descriptions come with the data, worded as on the terminal.
function panels(model) {
  const main = {title: model.title, description: model.description, causal: model.causal,
                queries: model.tokens, keys: model.tokens, attention: model.attention,
                layers: model.layers, heads: model.heads};
  const others = (model.other_maps || []).map(m => ({
    title: m.title, description: m.description, causal: m.causal, queries: m.queries, keys: m.keys,
    attention: m.attention, layers: m.attention.length, heads: m.attention[0].length}));
  return [main, ...others];
}

const root = document.getElementById("models");
for (const model of DATA.models) for (const panel of panels(model)) root.appendChild(build(panel));
</script>
</body>
</html>
"""
