"""The cleaner's page served at ``GET /``: one self-contained HTML file over the JSON API.

Suspects by score, filters (issue, class, confused pair), each card with its thumbnail, given
and predicted label, probability, and keep / delete / relabel. Keys: j/k or arrows move,
space keeps, x deletes, r relabels to the predicted class, 1-9 relabel to the n-th class,
a applies, u undoes. Every decision is journalled by the server before the page shows it;
names and paths go in with ``textContent`` (never as HTML).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastcore-cv cleaner</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1rem 2rem; color: #222; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
  #summary, #note { color: #555; margin: .2rem 0; }
  #note { color: #8a5a00; }
  .bar { display: flex; gap: .8rem; align-items: center; flex-wrap: wrap; margin: .6rem 0; }
  #grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(15rem, 1fr));
          gap: .8rem; }
  .card { border: 1px solid #ccc; border-radius: 8px; padding: .5rem; background: #fafafa; }
  .card.selected { outline: 3px solid #2a7ae2; }
  .card.d-delete { background: #fde8e8; }
  .card.d-relabel { background: #e8f0fd; }
  .card.d-keep { background: #e9f7ea; }
  .card img { width: 100%; height: 10rem; object-fit: contain; background: #eee; }
  .path { font-size: .8rem; word-break: break-all; color: #444; }
  .issue { font-weight: 600; }
  .decision { font-weight: 600; min-height: 1.2em; }
  .actions { display: flex; gap: .3rem; flex-wrap: wrap; margin-top: .3rem; }
  #status { margin-left: 1rem; }
  #error { color: #b00020; }
  .keys { color: #666; font-size: .85rem; }
</style>
</head>
<body>
<h1>Clean the folder: the files the model finds hardest</h1>
<p id="summary"></p>
<p id="note"></p>
<div class="bar">
  <label>show <select id="f-issue">
    <option value="suspects">suspects</option><option value="label">label errors</option>
    <option value="duplicate">duplicates</option><option value="undecodable">undecodable</option>
    <option value="decided">decided</option><option value="all">every file</option>
  </select></label>
  <label>class <select id="f-class"><option value="">any</option></select></label>
  <label>confused pair <select id="f-pair"><option value="">any</option></select></label>
  <button id="apply">Apply decisions</button>
  <button id="undo">Undo last apply</button>
  <span id="status" role="status"></span>
</div>
<p class="keys">keys: j/k or arrows move, space keep, x delete, r relabel to predicted,
1-9 relabel to class n, a apply, u undo</p>
<div id="error" role="alert"></div>
<div id="grid"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const SHOWN = 300;
let items = [], classes = [], selected = 0, cards = [];

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function call(method, url, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(url, init);
  const answer = await r.json();
  if (!r.ok) throw new Error(answer.error || r.statusText);
  return answer;
}

async function load() {
  try {
    const data = await call("GET", "api/items");
    items = data.items;
    classes = data.classes;
    const s = data.summary;
    $("summary").textContent = s.files + " files in " + s.folder + ", " + classes.length +
      " classes; scored by " + s.model_name + " (" + s.features + ", " + s.folds +
      "-fold out-of-fold head); issues: " + s.issues.label + " label, " + s.issues.duplicate +
      " duplicate, " + s.issues.undecodable + " undecodable";
    $("note").textContent = s.honest ? "" : "Note: this .onnx file exposes no body " +
      "features, so the scores use the model's own probabilities: in-sample for the files " +
      "it was trained on (a memorised wrong label may hide). Use a checkpoint for honest scores.";
    fillFilters();
    render();
  } catch (e) { $("error").textContent = "Could not load the items: " + e.message; }
}

function fillFilters() {
  const fc = $("f-class"), fp = $("f-pair");
  const keepC = fc.value, keepP = fp.value;
  fc.replaceChildren(new Option("any", ""));
  for (const c of classes) fc.appendChild(new Option(c, c));
  const pairs = new Map();
  for (const i of items) {
    if (i.predicted && i.predicted !== i.label) {
      const k = i.label + " -> " + i.predicted;
      pairs.set(k, (pairs.get(k) || 0) + 1);
    }
  }
  fp.replaceChildren(new Option("any", ""));
  for (const [k, n] of [...pairs].sort((a, b) => b[1] - a[1])) {
    fp.appendChild(new Option(k + " (" + n + ")", k));
  }
  fc.value = keepC; fp.value = keepP;
}

function visible() {
  const f = $("f-issue").value, c = $("f-class").value, p = $("f-pair").value;
  return items.filter((i) =>
    (f === "all" || (f === "suspects" && (i.issue || i.decision)) ||
     (f === "decided" && i.decision) || i.issue === f) &&
    (!c || i.label === c) && (!p || i.label + " -> " + i.predicted === p)).slice(0, SHOWN);
}

function render() {
  const grid = $("grid");
  grid.replaceChildren();
  cards = [];
  for (const item of visible()) {
    const card = el("div", "card");
    card.dataset.path = item.path;
    const img = el("img");
    img.alt = item.issue === "undecodable" ? "cannot be decoded" : item.path;
    img.loading = "lazy";
    img.src = "api/image?path=" + encodeURIComponent(item.path);
    card.appendChild(img);
    card.appendChild(el("div", "path", item.path));
    card.appendChild(el("div", "given", "label: " + item.label));
    const pred = item.predicted === null ? "predicted: -" : "predicted: " + item.predicted +
      " (" + (100 * item.probability).toFixed(1) + "%)";
    card.appendChild(el("div", "predicted", pred));
    let issue = item.issue ? "issue: " + item.issue : "no issue";
    if (item.duplicate_of) issue += " of " + item.duplicate_of;
    card.appendChild(el("div", "issue", issue + " | score " + item.score.toFixed(3)));
    card.appendChild(el("div", "decision", describe(item.decision)));
    if (item.decision) card.classList.add("d-" + item.decision.action);
    const actions = el("div", "actions");
    const keep = el("button", "keep", "keep");
    keep.onclick = () => decide(item, "keep");
    const del = el("button", "delete", "delete");
    del.onclick = () => decide(item, "delete");
    const to = el("select", "relabel-to");
    for (const c of classes) to.appendChild(new Option(c, c));
    to.value = item.predicted || item.label;
    const rel = el("button", "relabel", "relabel");
    rel.onclick = () => decide(item, "relabel", to.value);
    actions.append(keep, del, to, rel);
    card.appendChild(actions);
    card.onclick = () => select(cards.indexOf(card));
    grid.appendChild(card);
    cards.push(card);
  }
  select(Math.min(selected, cards.length - 1));
}

function describe(d) {
  if (!d) return "";
  return d.action === "relabel" ? "decision: relabel to " + d.label : "decision: " + d.action;
}

function select(n) {
  if (n < 0 || n >= cards.length) return;
  cards.forEach((c) => c.classList.remove("selected"));
  selected = n;
  cards[n].classList.add("selected");
}

async function decide(item, action, label) {
  $("error").textContent = "";
  try {
    const d = await call("POST", "api/decisions", { path: item.path, action, label });
    item.decision = d;
    const card = cards.find((c) => c.dataset.path === item.path);
    if (card) {
      card.querySelector(".decision").textContent = describe(d);
      card.classList.remove("d-keep", "d-delete", "d-relabel");
      card.classList.add("d-" + action);
    }
    $("status").textContent = "saved: " + item.path + " " + describe(d);
  } catch (e) { $("error").textContent = "Not saved: " + e.message; }
}

async function applyAll() {
  $("error").textContent = "";
  try {
    const r = await call("POST", "api/apply");
    $("status").textContent = "applied: " + r.deleted + " moved to the trash, " +
      r.relabelled + " relabelled; " + r.csv + " lists " + r.kept + " files";
    await load();
  } catch (e) { $("error").textContent = "Not applied: " + e.message; }
}

async function undoLast() {
  $("error").textContent = "";
  try {
    const r = await call("POST", "api/undo");
    $("status").textContent = "undone: apply " + r.undone + ", " + r.moved_back +
      " file(s) moved back";
    await load();
  } catch (e) { $("error").textContent = "Not undone: " + e.message; }
}

$("apply").onclick = applyAll;
$("undo").onclick = undoLast;
for (const id of ["f-issue", "f-class", "f-pair"]) {
  $(id).onchange = () => { selected = 0; render(); };
}
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "SELECT" || e.ctrlKey || e.metaKey || e.altKey) return;
  const card = cards[selected];
  const item = card && items.find((i) => i.path === card.dataset.path);
  if (e.key === "j" || e.key === "ArrowRight" || e.key === "ArrowDown") select(selected + 1);
  else if (e.key === "k" || e.key === "ArrowLeft" || e.key === "ArrowUp") select(selected - 1);
  else if (e.key === " " && item) decide(item, "keep");
  else if (e.key === "x" && item) decide(item, "delete");
  else if (e.key === "r" && item && item.predicted) decide(item, "relabel", item.predicted);
  else if (/^[1-9]$/.test(e.key) && item && classes[+e.key - 1]) {
    decide(item, "relabel", classes[+e.key - 1]);
  } else if (e.key === "a") applyAll();
  else if (e.key === "u") undoLast();
  else return;
  e.preventDefault();
});
load();
</script>
</body>
</html>
"""
