// The demo feed: plain DOM and fetch, no build step. Reads the same API a client would.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let current = null; // the response shown
let polling = null;

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function render(body, previous) {
  const p = body.provenance;
  const facts = {
    layer: p.layer, variant: p.variant, model: p.model_version ?? "—",
    computed: p.computed_at ?? "—", watermark: p.watermark ?? "—", "fresh merged": p.fresh_merged,
  };
  $("provenance").replaceChildren(...Object.entries(facts).flatMap(([name, value]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = value;
    dd.id = "provenance-" + name.replace(" ", "-");
    return [dt, dd];
  }));
  const before = new Set((previous?.items ?? []).map((item) => item.article_id));
  $("items").replaceChildren(...body.items.map((item) => {
    const row = document.createElement("tr");
    row.dataset.articleId = item.article_id;
    if (previous && !before.has(item.article_id)) row.className = "changed";
    const link = document.createElement("a");
    link.href = "#";
    link.textContent = item.title;
    link.addEventListener("click", (event) => { event.preventDefault(); view(item); });
    const title = document.createElement("td");
    title.append(link);
    row.append(cell(item.rank, "num"), title, cell(`${item.category} / ${item.subcategory}`),
      cell(item.score.toFixed(3), "num"), cell(p.layer, "layer layer-" + p.layer),
      cell(item.source, "source source-" + item.source));
    return row;
  }));
}

async function feed(user) {
  const response = await fetch(`/v1/users/${encodeURIComponent(user)}/recommendations?k=10`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error?.message ?? response.statusText);
  return body;
}

async function show() {
  clearInterval(polling);
  const user = $("user").value.trim();
  try {
    current = await feed(user);
    render(current, null);
    $("status").textContent = `${current.items.length} items for ${user}.`;
  } catch (error) {
    $("status").textContent = `Could not load the feed: ${error.message}`;
  }
}

function changed(a, b) {
  return a.provenance.watermark !== b.provenance.watermark || a.provenance.layer !== b.provenance.layer
    || a.items.map((i) => i.article_id).join() !== b.items.map((i) => i.article_id).join();
}

async function view(item) {
  const user = current.user_id;
  const response = await fetch("/v1/events", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-API-Key": $("key").value },
    body: JSON.stringify({ user_id: user, article_id: item.article_id, impression_id: current.request_id }),
  });
  const body = await response.json();
  if (!response.ok) {
    $("status").textContent = `The view was refused: ${body.error?.message ?? response.status}`;
    return;
  }
  $("status").textContent = `View of "${item.title}" recorded (event ${body.event_id.slice(0, 8)}); `
    + "waiting for the speed layer to update the list…";
  const shown = current, started = Date.now();
  clearInterval(polling);
  polling = setInterval(async () => {
    const next = await feed(user).catch(() => null);
    if (next && changed(shown, next)) {
      clearInterval(polling);
      current = next;
      render(next, shown);
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      $("status").textContent = `The ${next.provenance.layer} layer updated the list after ${seconds} s.`;
    } else if (Date.now() - started > 120000) {
      clearInterval(polling);
      $("status").textContent = "No new list after 2 minutes: is the speed layer running?";
    }
  }, 1000);
}

$("users").replaceChildren(...Array.from({ length: 20 }, (_, i) => {
  const option = document.createElement("option");
  option.value = "u" + String(i + 1).padStart(6, "0");
  return option;
}));
$("key").value = params.get("key") ?? "";
if (params.get("user")) $("user").value = params.get("user");
$("pick").addEventListener("submit", (event) => { event.preventDefault(); show(); });
show();
