// imgidx web page: plain DOM, no framework, no network beyond this server (works offline).
// Every piece of text from the index (titles, owners) goes in through textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const THUMB = 240;

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function say(id, text, isError = false) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

function safeLink(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch (e) { return null; }
}

// One photo card: thumbnail, a badge (score, rank or label), attribution.
function card(photo, badge, extra = []) {
  const img = el("img", {
    class: "thumb", loading: "lazy", src: `/photos/${photo.id}/image?size=${THUMB}`,
    alt: photo.title || photo.source_id || `photo ${photo.id}`,
  });
  const caption = el("figcaption");
  caption.append(el("span", { class: "title", text: photo.title || photo.source_id || `#${photo.id}` }));
  const who = [photo.owner && `by ${photo.owner}`, photo.license].filter(Boolean).join(" · ");
  if (who) caption.append(el("span", { class: "meta", text: who }));
  const page = safeLink(photo.page_url || "");
  if (page) {
    caption.append(el("a", { href: page, target: "_blank", rel: "noopener noreferrer", text: "photo page" }));
  } else {
    caption.append(el("span", { class: "meta", text: photo.source_id || "" }));
  }
  const colls = (photo.collections || []).join(", ");
  if (colls) caption.append(el("span", { class: "meta", text: `in ${colls}` }));
  for (const node of extra) caption.append(node);
  const more = el("button", { class: "more", type: "button", text: "more like this" });
  more.addEventListener("click", () => { showTab("similar"); similarById(photo.id); });
  caption.append(more);
  return el("figure", { class: "card", "data-id": String(photo.id) }, img, el("span", { class: "badge", text: badge }), caption);
}

// ---- tabs ------------------------------------------------------------------------------------------------
function showTab(name) {
  for (const button of document.querySelectorAll("nav button")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== `tab-${name}`;
}

// ---- similar ---------------------------------------------------------------------------------------------
function similarQuery() {
  const params = new URLSearchParams({ k: $("k").value || "12" });
  if ($("similar-collection").value) params.set("collection", $("similar-collection").value);
  if ($("include-flagged").checked) params.set("include_flagged", "true");
  return params.toString();
}

let lastQuery = null;

function showHits(result, label) {
  const grid = $("results");
  grid.replaceChildren(...result.hits.map((hit, i) => card(hit, `${i + 1} · ${hit.score.toFixed(3)}`)));
  say("similar-message", `${result.hits.length} nearest to ${label}`);
}

async function similarToFile(file) {
  lastQuery = { file };
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").textContent = file.name;
  say("similar-message", `searching for photos like ${file.name}…`);
  const form = new FormData();
  form.append("file", file);
  try {
    showHits(await api(`/similar?${similarQuery()}`, { method: "POST", body: form }), file.name);
  } catch (e) {
    $("results").replaceChildren();
    say("similar-message", e.message, true);
  }
}

async function similarById(id) {
  lastQuery = { id };
  $("preview").hidden = false;
  $("preview").src = `/photos/${id}/image?size=${THUMB}`;
  $("drop-text").textContent = `indexed photo #${id}`;
  say("similar-message", `searching for photos like #${id}…`);
  try {
    const body = JSON.stringify({ id });
    const headers = { "content-type": "application/json" };
    showHits(await api(`/similar?${similarQuery()}`, { method: "POST", body, headers }), `#${id}`);
  } catch (e) {
    $("results").replaceChildren();
    say("similar-message", e.message, true);
  }
}

function rerunSimilar() {
  if (lastQuery && lastQuery.file) similarToFile(lastQuery.file);
  else if (lastQuery && lastQuery.id !== undefined) similarById(lastQuery.id);
}

function setUpDrop() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => { if (event.target.files[0]) similarToFile(event.target.files[0]); });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (event) => {
    const file = event.dataTransfer.files[0];
    if (file) similarToFile(file);
  });
  for (const id of ["k", "similar-collection", "include-flagged"]) $(id).addEventListener("change", rerunSimilar);
  $("similar-options").addEventListener("submit", (event) => { event.preventDefault(); rerunSimilar(); });
}

// ---- collections: the clean ranking, duplicates and audit views, and the review of their flags -------------
let currentCollection = null;

async function showClean(name) {
  currentCollection = name;
  for (const chip of $("collection-list").children) chip.setAttribute("aria-pressed", String(chip.dataset.name === name));
  const view = $("review-view").value;
  say("clean-message", `${view === "clean" ? "ranking" : `looking for ${view} in`} ${name}…`);
  try {
    const cards = view === "duplicates" ? await duplicateCards(name) : view === "audit" ? await auditCards(name)
      : view === "next" ? await nextCards(name) : await cleanCards(name);
    $("ranking").replaceChildren(...cards);
    await showReviews(name);
  } catch (e) {
    $("ranking").replaceChildren();
    say("clean-message", e.message, true);
  }
}

// Each view's cards say whether the automatic check proposes a flag (data-proposed) and why.
async function cleanCards(name) {
  const params = new URLSearchParams({ k_mad: $("k-mad").value || "3", iterations: $("iterations").value || "5" });
  const result = await api(`/collections/${encodeURIComponent(name)}/clean?${params}`);
  say("clean-message", `${result.collection}: ${result.photos} photos, most typical first; ` +
    `${result.outliers} outliers (distance > ${result.cutoff.toFixed(3)}) marked in red`);
  return result.items.map((item) => {
    const node = card(item, item.outlier ? `outlier · #${item.rank}` : `#${item.rank}`,
      [el("span", { class: "meta", text: `distance ${item.distance.toFixed(3)} · z ${item.z.toFixed(2)}` })]);
    if (item.outlier) node.classList.add("outlier");
    node.dataset.proposed = String(item.outlier);
    return node;
  });
}

// The review queue: the unreviewed photos whose decisions teach the clean cut most (GET /collections/{name}/next).
// Each decision re-judges the rest; when every card of the queue is decided, the next batch is asked for.
const QUEUE = 12;

async function nextCards(name) {
  const result = await api(`/collections/${encodeURIComponent(name)}/next?n=${QUEUE}`);
  say("clean-message", `${name}: ${result.photos.length} photos to review next (${result.reviewed} reviewed so far); ` +
    "each decision teaches the clean ranking");
  return result.photos.map((item) => {
    const node = card(item, `${item.flagged ? "flag?" : "keep?"} · p ${item.p_flag.toFixed(2)}`,
      [el("span", { class: "meta reason", text: item.reason })]);
    if (item.flagged) node.classList.add("outlier");
    node.dataset.proposed = String(item.flagged);
    return node;
  });
}

async function duplicateCards(name) {
  const result = await api(`/collections/${encodeURIComponent(name)}/duplicates`);
  const cards = [];
  result.groups.forEach((group, g) => {
    for (const item of group.items) {
      const badge = item.keep ? `group ${g + 1} · keep` : `group ${g + 1} · duplicate of #${item.duplicate_of}`;
      const node = card(item, badge, [el("span", { class: "meta", text: `${group.kind} · distance ≤ ${group.max_distance.toFixed(3)}` })]);
      if (!item.keep) node.classList.add("outlier");
      node.dataset.proposed = String(!item.keep);
      cards.push(node);
    }
  });
  say("clean-message", `${name}: ${result.groups.length} groups of the same picture; the duplicates to flag are marked in red`);
  return cards;
}

async function auditCards(name) {
  const result = await api(`/collections/${encodeURIComponent(name)}/audit`);
  say("clean-message", `${name}: ${result.items.length} photos look like ${result.against.join(", ")} more than ${name}`);
  return result.items.map((item) => {
    const node = card(item, `looks like ${item.suggested}`,
      [el("span", { class: "meta", text: `margin ${item.margin.toFixed(3)} · ${item.reasons.join(", ")}` })]);
    node.classList.add("outlier");
    node.dataset.proposed = "true";
    return node;
  });
}

// ---- review: keyboard through the grid; decisions go to POST /reviews (JSON, same origin) ----------------
const review = { cursor: -1, undo: [] };

function reviewerName() {
  let name = localStorage.getItem("imgidx-reviewer");
  if (name === null) {  // asked once, then kept
    name = (window.prompt("Your name, stored with your review decisions:", "") || "").trim() || "anonymous";
    localStorage.setItem("imgidx-reviewer", name);
    $("reviewer").value = name;
  }
  return name;
}

function reviewCards() { return Array.from($("ranking").querySelectorAll(".card")); }

function markCard(node, decision, flagged) {
  if (!node) return;
  node.classList.toggle("decided-flag", !!decision && decision.decision === "flag");
  node.classList.toggle("decided-keep", !!decision && decision.decision === "keep");
  node.classList.toggle("flagged", !!flagged);
  let note = node.querySelector(".review");
  if (!note) {
    note = el("span", { class: "review" });
    node.querySelector("figcaption").prepend(note);
  }
  note.textContent = decision ? `${decision.decision === "flag" ? "flagged" : "kept"} by ${decision.reviewer}` : "";
  node.dataset.decision = decision ? decision.decision : "";
}

async function showReviews(name) {
  const result = await api(`/collections/${encodeURIComponent(name)}/reviews`);
  const decisions = new Map(result.reviews.map((r) => [r.photo_id, r]));
  const flagged = new Set(result.flagged);
  for (const node of reviewCards()) {
    const id = Number(node.dataset.id);
    markCard(node, decisions.get(id), flagged.has(id));
  }
  review.undo = [];
  moveTo(reviewCards().length ? 0 : -1);
  say("review-message", `${result.reviews.length} of these photos reviewed so far`);
}

function moveTo(index) {
  const cards = reviewCards();
  if (!cards.length) { review.cursor = -1; return; }
  review.cursor = Math.max(0, Math.min(cards.length - 1, index));
  cards.forEach((node, i) => node.classList.toggle("current", i === review.cursor));
  cards[review.cursor].scrollIntoView({ block: "nearest" });
}

function perRow() {
  const cards = reviewCards();
  const top = cards.length ? cards[0].offsetTop : 0;
  const n = cards.filter((node) => node.offsetTop === top).length;
  return Math.max(1, n);
}

async function decide(decision) {
  const node = reviewCards()[review.cursor];
  if (!node || !currentCollection) return;
  const id = Number(node.dataset.id);
  const view = $("review-view").value;
  const source = view === "next" ? "clean" : view;  // the queue is the clean ranking's
  const body = JSON.stringify({ collection: currentCollection, id, decision, source, reviewer: reviewerName() });
  try {
    const result = await api("/reviews", { method: "POST", body, headers: { "content-type": "application/json" } });
    markCard(node, result.review, result.flagged);
    review.undo.push(id);
    say("review-message", `photo ${id} ${decision === "flag" ? "flagged" : "kept"} by ${result.review.reviewer}`);
    if (view === "next" && reviewCards().every((card) => card.dataset.decision)) {
      await refillQueue();
      return;
    }
    moveTo(review.cursor + 1);
  } catch (e) {
    say("review-message", e.message, true);
  }
}

async function refillQueue() {
  const name = currentCollection;
  try {
    const cards = await nextCards(name);
    if (name !== currentCollection) return;
    $("ranking").replaceChildren(...cards);  // the undo stack stays: u withdraws the last decision still
    moveTo(cards.length ? 0 : -1);
    say("review-message", cards.length ? "next batch: the decisions so far re-judged the rest" : "every photo is reviewed");
  } catch (e) {
    say("review-message", e.message, true);
  }
}

async function undoDecision() {
  const id = review.undo.pop();
  if (id === undefined || !currentCollection) return;
  const body = JSON.stringify({ collection: currentCollection, id });
  try {
    const result = await api("/reviews/undo", { method: "POST", body, headers: { "content-type": "application/json" } });
    const cards = reviewCards();
    const index = cards.findIndex((node) => Number(node.dataset.id) === id);
    markCard(cards[index], result.review, result.flagged);
    if (index >= 0) moveTo(index);
    say("review-message", `photo ${id}: decision withdrawn`);
  } catch (e) {
    say("review-message", e.message, true);
  }
}

function onReviewKey(event) {
  if ($("tab-collections").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA")) return;
  const moves = { ArrowRight: 1, j: 1, l: 1, ArrowLeft: -1, k: -1, h: -1, ArrowDown: perRow(), ArrowUp: -perRow() };
  if (event.key in moves) { moveTo(review.cursor + moves[event.key]); event.preventDefault(); }
  else if (event.key === "a") { decide("flag"); event.preventDefault(); }
  else if (event.key === "r") { decide("keep"); event.preventDefault(); }
  else if (event.key === "u") { undoDecision(); event.preventDefault(); }
}

function setUpReview() {
  const stored = localStorage.getItem("imgidx-reviewer");
  if (stored !== null) $("reviewer").value = stored;
  $("reviewer").addEventListener("change", () => {
    localStorage.setItem("imgidx-reviewer", $("reviewer").value.trim() || "anonymous");
  });
  $("review-view").addEventListener("change", () => { if (currentCollection) showClean(currentCollection); });
  $("ranking").addEventListener("click", (event) => {
    const node = event.target.closest(".card");
    if (node) moveTo(reviewCards().indexOf(node));
  });
  document.addEventListener("keydown", onReviewKey);
}

function fillCollections(collections) {
  const chips = collections.map((c) => {
    const chip = el("button", { type: "button", "data-name": c.name, "aria-pressed": "false" },
      c.name, el("span", { class: "count", text: String(c.photos) }));
    chip.addEventListener("click", () => showClean(c.name));
    return chip;
  });
  $("collection-list").replaceChildren(...chips);
  for (const id of ["similar-collection", "classify-collection"]) {
    const select = $(id);
    const first = id === "similar-collection" ? [el("option", { value: "", text: "all collections" })] : [];
    select.replaceChildren(...first, ...collections.map((c) => el("option", { value: c.name, text: `${c.name} (${c.photos})` })));
  }
  for (const id of ["k-mad", "iterations"]) {
    $(id).addEventListener("change", () => { if (currentCollection) showClean(currentCollection); });
  }
  $("clean-options").addEventListener("submit", (event) => { event.preventDefault(); });
}

// ---- classify --------------------------------------------------------------------------------------------
function showPredictions(result, label) {
  const cards = result.predictions.filter((p) => p.id !== undefined).map((p) =>
    card(p, `${p.label} · ${(100 * p.probability).toFixed(0)}%`,
      [el("span", { class: "meta" }, "predicted ", el("span", { class: "label", text: p.label }))]));
  $("predictions").replaceChildren(...cards);
  const counts = {};
  for (const p of result.predictions) counts[p.label] = (counts[p.label] || 0) + 1;
  const summary = Object.entries(counts).map(([k, n]) => `${k}: ${n}`).join(", ");
  say("classify-message", `${result.model} (${result.kind}, classes ${result.classes.join(", ")}) on ${label} → ${summary}`);
}

async function classify(event) {
  if (event) event.preventDefault();
  const model = $("classifier").value;
  if (!model) return;
  const collection = $("classify-collection").value;
  say("classify-message", `predicting ${collection} with ${model}…`);
  try {
    const body = JSON.stringify({ collection });
    const headers = { "content-type": "application/json" };
    showPredictions(await api(`/classify/${encodeURIComponent(model)}`, { method: "POST", body, headers }), collection);
  } catch (e) {
    $("predictions").replaceChildren();
    say("classify-message", e.message, true);
  }
}

async function classifyFile(file) {
  const model = $("classifier").value;
  if (!model || !file) return;
  const form = new FormData();
  form.append("file", file);
  say("classify-message", `predicting ${file.name} with ${model}…`);
  try {
    const result = await api(`/classify/${encodeURIComponent(model)}`, { method: "POST", body: form });
    const p = result.predictions[0];
    const img = el("img", { class: "thumb", src: URL.createObjectURL(file), alt: file.name });
    const badge = el("span", { class: "badge", text: `${p.label} · ${(100 * p.probability).toFixed(0)}%` });
    const caption = el("figcaption", {}, el("span", { class: "title", text: file.name }),
      el("span", { class: "meta" }, "predicted ", el("span", { class: "label", text: p.label })));
    $("predictions").replaceChildren(el("figure", { class: "card upload" }, img, badge, caption));
    say("classify-message", `${model}: ${file.name} is "${p.label}" (probability ${(100 * p.probability).toFixed(1)}%)`);
  } catch (e) {
    say("classify-message", e.message, true);
  }
}

function fillClassifiers(names) {
  const select = $("classifier");
  select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
  if (!names.length) say("classify-message", "No classifiers yet: train one with `imgidx train`.");
}

// ---- start -----------------------------------------------------------------------------------------------
async function start() {
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  setUpDrop();
  setUpReview();
  $("classify-form").addEventListener("submit", classify);
  $("classify-file").addEventListener("change", (event) => classifyFile(event.target.files[0]));
  try {
    const [health, collections, classifiers] = await Promise.all([
      api("/healthz"), api("/collections"), api("/classifiers"),
    ]);
    $("status").textContent = `${health.photos} photos in ${health.collections} collections · ${health.model || "no model"}`;
    fillCollections(collections.collections);
    fillClassifiers(classifiers.classifiers);
    document.body.dataset.ready = "true";
  } catch (e) {
    $("status").textContent = `cannot reach the index: ${e.message}`;
  }
}

document.addEventListener("DOMContentLoaded", start);
