// The web page: search by a dropped photo, open an item, review duplicate groups, collection stats.
// Plain JavaScript against the server's HTTP/JSON API (POST /simclr.v1.ImageSearch/<Method>);
// nothing is loaded from the internet.
"use strict";

const API = "/simclr.v1.ImageSearch/";
const $ = (id) => document.getElementById(id);
const state = { groups: [], keepers: {} };

function headers(extra = {}) {
  const token = $("token").value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

async function call(method, body) {
  const response = await fetch(API + method, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) {
    let error = { code: response.status, message: text };
    try { error = JSON.parse(text); } catch (_) { /* not JSON: keep the text */ }
    throw new Error(`${error.code}: ${error.message}`);
  }
  return text;
}

async function callJSON(method, body) {
  return JSON.parse(await call(method, body));
}

async function callStream(method, body) {
  const lines = (await call(method, body)).split("\n").filter((l) => l.trim());
  const messages = lines.map((l) => JSON.parse(l));
  const failed = messages.find((m) => m.error);
  if (failed) throw new Error(`${failed.error.code}: ${failed.error.message}`);
  return messages;
}

function collection() {
  return $("collection").value;
}

async function imageURL(id, size = 256) {
  const query = new URLSearchParams({ id, collection: collection(), size: String(size) });
  const response = await fetch(`/v1/image?${query}`, { headers: headers() });
  if (!response.ok) return null;
  return URL.createObjectURL(await response.blob());
}

function fileToBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function card(id, lines, badge) {
  const div = document.createElement("div");
  div.className = "hit";
  div.dataset.id = id;
  const img = document.createElement("img");
  img.alt = id;
  div.appendChild(img);
  if (badge) {
    const b = document.createElement("span");
    b.className = `badge ${badge.className}`;
    b.textContent = badge.text;
    div.appendChild(b);
  }
  for (const line of lines) {
    const p = document.createElement("p");
    p.textContent = line;
    div.appendChild(p);
  }
  imageURL(id).then((url) => {
    if (url) img.src = url;
    else img.classList.add("missing");
  });
  div.addEventListener("click", () => openItem(id));
  return div;
}

// -- search ---------------------------------------------------------------------------------------
async function search(file) {
  say(`searching with ${file.name} ...`);
  const preview = document.createElement("img");
  preview.src = URL.createObjectURL(file);
  preview.alt = "query";
  $("query").replaceChildren(preview);
  try {
    const data = await fileToBase64(file);
    const k = Number($("k").value) || 12;
    const answer = await callJSON("Search", { collection: collection(), image: { data }, k });
    const hits = answer.hits || [];
    $("results").replaceChildren(
      ...hits.map((h) => {
        const probability = h.copy_probability >= 0 ? ` · p ${h.copy_probability.toFixed(2)}` : "";
        const badge = h.is_copy
          ? { className: "badge-copy", text: "copy" }
          : { className: "badge-similar", text: "similar" };
        return card(h.id, [h.id, `score ${h.score.toFixed(3)}${probability}`], badge);
      }),
    );
    const copies = hits.filter((h) => h.is_copy).length;
    say(`${hits.length} hits, ${copies} called copies of the query`);
  } catch (error) {
    say(String(error.message || error), true);
  }
}

function pick(files) {
  if (files && files.length) search(files[0]);
}

// -- one item --------------------------------------------------------------------------------------
async function openItem(id) {
  try {
    const answer = await callJSON("Get", { collection: collection(), ids: [id] });
    const item = answer.items[0];
    const fields = $("item-fields");
    fields.replaceChildren();
    for (const [name, value] of [
      ["id", item.id],
      ["uri", item.uri || "(none)"],
      ["sha256", item.content_sha256 || "(none)"],
      ["metadata", item.metadata_json || "{}"],
    ]) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      fields.append(dt, dd);
    }
    $("item-image").src = (await imageURL(id, 768)) || "";
    $("item-panel").hidden = false;
  } catch (error) {
    say(String(error.message || error), true);
  }
}

// -- duplicates ------------------------------------------------------------------------------------
function keepersKey() {
  return `simclr-keepers:${collection()}`;
}

function renderGroups() {
  const groups = state.groups;
  $("groups").replaceChildren(
    ...groups.map((g, n) => {
      const div = document.createElement("div");
      div.className = "group";
      div.dataset.group = String(n);
      const title = document.createElement("h3");
      title.textContent = `group ${n + 1}: ${g.copies.length + 1} images, ${g.reason}`;
      div.appendChild(title);
      const row = document.createElement("div");
      row.className = "grid";
      const keeper = state.keepers[n] || g.keep.id;
      const members = [{ ...g.keep, copy_probability: 1 }, ...g.copies];
      for (const m of members) {
        const size = m.width ? `${m.width}x${m.height}` : "";
        const what = m.exact ? "identical file" : `p ${Number(m.copy_probability).toFixed(2)}`;
        const c = card(m.id, [m.id, [size, what].filter(Boolean).join(" · ")], m.id === keeper
          ? { className: "badge-keep", text: "keep" } : null);
        c.classList.add("member");
        if (m.id === keeper) c.classList.add("keeper");
        const toggle = document.createElement("button");
        toggle.className = "keep-toggle";
        toggle.textContent = m.id === keeper ? "kept" : "keep this one";
        toggle.disabled = m.id === keeper;
        toggle.addEventListener("click", (event) => {
          event.stopPropagation();
          state.keepers[n] = m.id;
          localStorage.setItem(keepersKey(), JSON.stringify(state.keepers));
          renderGroups();
        });
        c.appendChild(toggle);
        row.appendChild(c);
      }
      div.appendChild(row);
      return div;
    }),
  );
  $("download-keepers").disabled = groups.length === 0;
}

async function findDuplicates() {
  say("comparing the collection ...");
  try {
    state.groups = await callStream("FindDuplicates", {
      collection: collection(),
      exact_only: $("exact-only").checked,
    });
    state.keepers = JSON.parse(localStorage.getItem(keepersKey()) || "{}");
    renderGroups();
    const copies = state.groups.reduce((n, g) => n + g.copies.length, 0);
    $("duplicates-summary").textContent = `${state.groups.length} groups, ${copies} copies`;
    say("");
  } catch (error) {
    say(String(error.message || error), true);
  }
}

function downloadKeepers() {
  const decisions = state.groups.map((g, n) => {
    const keep = state.keepers[n] || g.keep.id;
    const all = [g.keep.id, ...g.copies.map((c) => c.id)];
    return { keep, copies: all.filter((id) => id !== keep) };
  });
  const blob = new Blob([JSON.stringify({ collection: collection(), groups: decisions }, null, 2)],
    { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "keepers.json";
  a.click();
}

// -- collection stats ------------------------------------------------------------------------------
async function loadInfo() {
  try {
    const info = await callJSON("GetInfo", {});
    const select = $("collection");
    const chosen = select.value || info.default_collection;
    select.replaceChildren(
      ...info.collections.map((c) => new Option(`${c.name} (${c.count})`, c.name)),
    );
    select.value = chosen;
    const manifest = JSON.parse(info.manifest_json || "{}");
    const current = info.collections.find((c) => c.name === select.value) || {};
    const rows = [
      ["server", info.server_version],
      ["model", (manifest.model && manifest.model.name) || ""],
      ["embedding", `${info.embedding_dim} dimensions`],
      ["collection", current.name || ""],
      ["items", String(current.count || 0)],
      ["index", current.index_kind || ""],
      ["metric", current.metric || ""],
      ["providers", (info.providers || []).join(", ")],
    ];
    $("stats").replaceChildren(
      ...rows.map(([k, v]) => {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        th.textContent = k;
        const td = document.createElement("td");
        td.textContent = v;
        tr.append(th, td);
        return tr;
      }),
    );
  } catch (error) {
    say(String(error.message || error), true);
  }
}

// -- wiring ----------------------------------------------------------------------------------------
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== tab.dataset.panel;
    if (tab.id === "tab-stats") loadInfo();
  });
}
$("file-input").addEventListener("change", (e) => pick(e.target.files));
const zone = $("drop-zone");
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  pick(e.dataTransfer.files);
});
$("find-duplicates").addEventListener("click", findDuplicates);
$("download-keepers").addEventListener("click", downloadKeepers);
$("close-item").addEventListener("click", () => { $("item-panel").hidden = true; });
$("collection").addEventListener("change", loadInfo);
$("token").value = localStorage.getItem("simclr-token") || "";
$("token").addEventListener("change", () => {
  localStorage.setItem("simclr-token", $("token").value.trim());
  loadInfo();
});
loadInfo();
