"""The upload page served at ``GET /``: one self-contained HTML file (no external assets).

Choose or drop a photo; it is POSTed to ``/predict`` and the top classes come back as bars
with the latency. An answer below the model's confidence threshold reads "Not sure", its best
guess beside it. The model's id (export/metadata.py) is shown under the title. Class names
are inserted with ``textContent`` (never as HTML).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastcore-cv classifier</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto;
         padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  .sub { color: #666; margin-top: 0; }
  #drop { display: block; border: 2px dashed #999; border-radius: 10px; padding: 1.5rem;
          text-align: center;
          cursor: pointer; background: #fafafa; }
  #drop.over { border-color: #2a7ae2; background: #eef5ff; }
  #preview { max-width: 100%; max-height: 16rem; margin-top: 1rem; display: none;
             border-radius: 6px; }
  #label { font-size: 1.6rem; font-weight: 600; margin: 1rem 0 .3rem; }
  #label.unsure { color: #a05a00; }
  #modelid { color: #888; font-size: .8rem; margin-top: 0; word-break: break-all; }
  .row { display: grid; grid-template-columns: 9rem 1fr 4rem; gap: .5rem;
         align-items: center; margin: .25rem 0; }
  .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar { background: #e5e5e5; border-radius: 4px; height: 1rem; }
  .fill { background: #2a7ae2; border-radius: 4px; height: 100%; }
  .pct { text-align: right; font-variant-numeric: tabular-nums; }
  #latency { color: #666; margin-top: .6rem; }
  #error { color: #b00020; margin-top: 1rem; }
</style>
</head>
<body>
<h1>What is in this photo?</h1>
<p class="sub" id="model"></p>
<p id="modelid"></p>
<label id="drop" for="file">
  <div>Drop a photo here, or <u>choose one</u></div>
  <input type="file" id="file" name="file" accept="image/*" hidden>
</label>
<img id="preview" alt="the photo sent">
<div id="result" hidden>
  <div id="label"></div>
  <div id="bars"></div>
  <div id="latency"></div>
</div>
<div id="error" role="alert"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
fetch("metadata").then((r) => r.json()).then((m) => {
  $("model").textContent = m.model + ": " + m.classes.length + " classes";
  $("modelid").textContent = "model id " + (m.model_id || "unknown (exported before model ids)");
}).catch(() => {});

async function send(file) {
  $("error").textContent = "";
  $("result").hidden = true;
  const preview = $("preview");
  preview.src = URL.createObjectURL(file);
  preview.style.display = "block";
  const body = new FormData();
  body.append("file", file);
  try {
    // The page's own query (?threshold=0.9&top_k=3) goes to /predict as it is.
    const response = await fetch("predict" + window.location.search, { method: "POST", body });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    show(answer);
  } catch (e) {
    $("error").textContent = "Could not classify this file: " + e.message;
  }
}

function show(answer) {
  const sure = answer.accepted !== false;
  $("label").textContent = sure ? answer.label
    : "Not sure (best guess: " + answer.label + ", below the " +
      (100 * answer.threshold).toFixed(1) + "% threshold)";
  $("label").className = sure ? "" : "unsure";
  const bars = $("bars");
  bars.replaceChildren();
  for (const item of answer.top_k) {
    const row = document.createElement("div");
    row.className = "row";
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = item.label;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = (100 * item.probability).toFixed(1) + "%";
    bar.appendChild(fill);
    const pct = document.createElement("div");
    pct.className = "pct";
    pct.textContent = (100 * item.probability).toFixed(1) + "%";
    row.append(name, bar, pct);
    bars.appendChild(row);
  }
  $("latency").textContent = "answered in " + answer.latency_ms.toFixed(1) +
    " ms (decode to label, on the server's CPU)";
  $("result").hidden = false;
}

$("file").addEventListener("change", (e) => {
  if (e.target.files.length) send(e.target.files[0]);
});
const drop = $("drop");
for (const kind of ["dragenter", "dragover"]) {
  drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const kind of ["dragleave", "drop"]) {
  drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => {
  if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""
