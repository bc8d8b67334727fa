// The admin page: plain JavaScript over the JSON admin API. Signed in by
// a session cookie; every request that changes something sends the
// session's CSRF token. Routes: #/ (tenants), #/t/<id> (one tenant).
"use strict";

const $ = (id) => document.getElementById(id);
let csrf = null;
let pageStack = [];      // `after` values of the pages before this one
let pageAfter = "";
let listTimer = null;
let events = null;       // the open session stream

function show(section) {
  for (const id of ["signin", "tenants", "tenant"]) $(id).hidden = id !== section;
  $("nav").hidden = section === "signin";
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (res.status === 401 && path !== "/admin/login") {
    signedOut();
    throw new Error("signed out");
  }
  const text = await res.text();
  const json = text ? JSON.parse(text) : {};
  if (!res.ok) throw new Error(json && json.message ? json.message : `HTTP ${res.status}`);
  return json;
}

function signedOut() {
  csrf = null;
  stopTimers();
  show("signin");
}

function stopTimers() {
  if (listTimer) clearInterval(listTimer);
  listTimer = null;
  if (events) events.close();
  events = null;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function number(jid) {
  return jid ? "+" + jid.split("@")[0].split(":")[0] : "";
}

// ---- tenants -------------------------------------------------------------

async function loadTenants() {
  const q = $("search").value.trim();
  const params = new URLSearchParams({ limit: "50" });
  if (q) params.set("q", q);
  if (pageAfter) params.set("after", pageAfter);
  let list;
  try {
    list = await api("GET", `/admin/tenants?${params}`);
  } catch (e) {
    $("tenants-error").textContent = e.message;
    return;
  }
  $("tenants-error").textContent = "";
  $("counts").textContent = list.counts.length
    ? list.counts.map((c) => `${c.state}: ${c.sessions}`).join(" · ")
    : "no sessions yet";
  const rows = $("tenant-rows");
  rows.replaceChildren();
  for (const t of list.tenants) {
    const tr = document.createElement("tr");
    const name = cell(tr, "");
    const a = document.createElement("a");
    a.href = `#/t/${encodeURIComponent(t.id)}`;
    a.textContent = t.name;
    name.appendChild(a);
    cell(tr, t.session.state, `badge state-${t.session.state}`);
    cell(tr, number(t.session.jid));
    cell(tr, t.session.node);
    rows.appendChild(tr);
  }
  $("next-page").disabled = !list.next_after;
  $("next-page").dataset.after = list.next_after || "";
  $("prev-page").disabled = pageStack.length === 0;
}

function showTenants() {
  stopTimers();
  show("tenants");
  loadTenants();
  // The list follows the sessions while it is open.
  listTimer = setInterval(loadTenants, 3000);
}

// ---- one tenant ----------------------------------------------------------

async function showTenant(id) {
  stopTimers();
  show("tenant");
  $("tenant-error").textContent = "";
  $("pair-code").textContent = "";
  $("qr-box").hidden = true;
  $("added-key").hidden = true;
  let t;
  try {
    t = await api("GET", `/admin/tenants/${encodeURIComponent(id)}`);
  } catch (e) {
    $("tenant-error").textContent = e.message;
    return;
  }
  $("tenant-name").textContent = t.name;
  $("tenant-id").textContent = t.id;
  renderKeys(t);
  renderSession(t.session);
  // Live: a new QR code, connected, logged out.
  events = new EventSource(`/admin/tenants/${encodeURIComponent(id)}/session/events`);
  events.addEventListener("session", (e) => renderSession(JSON.parse(e.data)));
}

function renderSession(s) {
  const state = $("session-state");
  state.textContent = s.state;
  state.className = `badge state-${s.state}`;
  $("session-who").textContent = s.jid
    ? `${number(s.jid)}${s.push_name ? " (" + s.push_name + ")" : ""}`
    : "";
  const paired = ["connecting", "connected", "disconnected"].includes(s.state);
  $("pairing").hidden = paired;
  $("logout").hidden = !paired;
  const qr = $("qr");
  if (!paired && s.qr) {
    if (qr.dataset.qr !== s.qr) {
      qr.dataset.qr = s.qr;
      const id = encodeURIComponent($("tenant-id").textContent);
      qr.src = `/admin/tenants/${id}/session/qr?format=svg&v=${encodeURIComponent(s.qr.slice(0, 16))}`;
    }
    $("qr-box").hidden = false;
  } else {
    $("qr-box").hidden = true;
    delete qr.dataset.qr;
  }
}

function renderKeys(t) {
  const rows = $("key-rows");
  rows.replaceChildren();
  for (const k of t.keys) {
    const tr = document.createElement("tr");
    cell(tr, k.prefix + "…");
    cell(tr, k.source);
    cell(tr, k.created_at);
    cell(tr, k.revoked_at ? `revoked ${k.revoked_at}` : k.last_used_at || "never");
    const td = cell(tr, "");
    if (!k.revoked_at) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "Revoke";
      b.addEventListener("click", async () => {
        if (!confirm(`Revoke the key ${k.prefix}…? Apps using it stop at once.`)) return;
        await act(() => api("DELETE", `/admin/tenants/${encodeURIComponent(t.id)}/keys/${encodeURIComponent(k.id)}`));
        showTenant(t.id);
      });
      td.appendChild(b);
    }
    rows.appendChild(tr);
  }
}

async function act(f) {
  try {
    return await f();
  } catch (e) {
    $("tenant-error").textContent = e.message;
    return null;
  }
}

function currentId() {
  return $("tenant-id").textContent;
}

// ---- wiring --------------------------------------------------------------

function route() {
  if (!csrf) return;
  const m = location.hash.match(/^#\/t\/(.+)$/);
  if (m) showTenant(decodeURIComponent(m[1]));
  else showTenants();
}

async function start() {
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const kind = document.querySelector("input[name=kind]:checked").value;
    try {
      const session = await api("POST", "/admin/login", { [kind]: $("secret").value });
      csrf = session.csrf_token;
      $("secret").value = "";
      $("signin-error").textContent = "";
      route();
    } catch (err) {
      $("signin-error").textContent = err.message;
    }
  });
  $("sign-out").addEventListener("click", async () => {
    try { await api("POST", "/admin/logout"); } catch (_) { /* signed out anyway */ }
    signedOut();
  });
  $("create-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const t = await api("POST", "/admin/tenants", { name: $("new-name").value.trim() });
      $("new-key-tenant").textContent = t.name;
      $("new-key-value").textContent = t.api_key;
      $("new-key").hidden = false;
      $("new-name").value = "";
      $("tenants-error").textContent = "";
      loadTenants();
    } catch (err) {
      $("tenants-error").textContent = err.message;
    }
  });
  $("copy-key").addEventListener("click", () => navigator.clipboard.writeText($("new-key-value").textContent));
  $("copy-added-key").addEventListener("click", () => navigator.clipboard.writeText($("added-key-value").textContent));
  $("search-form").addEventListener("submit", (e) => e.preventDefault());
  $("search").addEventListener("input", () => { pageStack = []; pageAfter = ""; loadTenants(); });
  $("next-page").addEventListener("click", () => {
    pageStack.push(pageAfter);
    pageAfter = $("next-page").dataset.after;
    loadTenants();
  });
  $("prev-page").addEventListener("click", () => {
    pageAfter = pageStack.pop() || "";
    loadTenants();
  });
  $("pair-qr").addEventListener("click", () =>
    act(() => api("GET", `/admin/tenants/${encodeURIComponent(currentId())}/session/qr`)));
  $("pair-code-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const answer = await act(() => api("POST", `/admin/tenants/${encodeURIComponent(currentId())}/session/pair-code`,
      { phone: $("pair-phone").value.trim() }));
    if (answer) $("pair-code").textContent = `Enter ${answer.code} on the phone: WhatsApp › Linked devices › Link with phone number.`;
  });
  $("logout").addEventListener("click", async () => {
    if (!confirm("Log this number out? The phone drops the linked device.")) return;
    await act(() => api("POST", `/admin/tenants/${encodeURIComponent(currentId())}/session/logout`));
  });
  $("add-key").addEventListener("click", async () => {
    const id = currentId();
    const key = await act(() => api("POST", `/admin/tenants/${encodeURIComponent(id)}/keys`));
    if (!key) return;
    await showTenant(id);
    $("added-key-value").textContent = key.api_key;
    $("added-key").hidden = false;
  });
  $("delete-tenant").addEventListener("click", async () => {
    const name = $("tenant-name").textContent;
    if (prompt(`Type the tenant's name (${name}) to delete it, its keys, messages and linked device.`) !== name) return;
    const done = await act(() => api("DELETE", `/admin/tenants/${encodeURIComponent(currentId())}`));
    if (done !== null) location.hash = "#/";
  });
  window.addEventListener("hashchange", route);

  try {
    const me = await api("GET", "/admin/me");
    csrf = me.csrf_token;
    route();
  } catch (_) {
    show("signin");
  }
}

start();
