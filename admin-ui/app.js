// The admin page: plain JavaScript over the JSON admin API. Signed in by
// a session cookie; every request that changes something sends the
// session's CSRF token. Routes: #/ (tenants), #/t/<id> (one tenant).
"use strict";

const $ = (id) => document.getElementById(id);

// ---- language: English and Indonesian, from the browser, switchable ----

const TEXT = {
  en: {
    "nav.dashboard": "Dashboard", "nav.tenants": "Tenants", "nav.signout": "Sign out", "nav.language": "Language",
    "signin.title": "Sign in", "signin.secret": "Admin token or password", "signin.token": "token",
    "signin.password": "password", "signin.submit": "Sign in",
    "dash.title": "Dashboard", "dash.sessions": "Sessions by state", "dash.lasthour": "Messages in the last hour",
    "dash.backlog": "Webhook deliveries waiting", "dash.node": "Webhook outcomes on this node",
    "dash.in": "in", "dash.out": "out", "dash.oldest": "oldest due for", "dash.none": "none",
    "dash.delivered": "delivered", "dash.retried": "retried", "dash.dead": "dead",
    "tenants.title": "Tenants", "tenants.newname": "new tenant name", "tenants.create": "Create tenant",
    "tenants.keyof": "The API key, shown only now, of", "tenants.search": "search by name",
    "tenants.nosessions": "no sessions yet",
    "copy": "Copy", "prev": "Previous", "next": "Next", "back": "← Tenants",
    "col.name": "name", "col.state": "state", "col.number": "number", "col.node": "node",
    "col.event": "event", "col.status": "status", "col.attempts": "attempts", "col.code": "last answer",
    "col.direction": "direction", "col.chat": "chat", "col.text": "text", "col.time": "time",
    "col.prefix": "prefix", "col.source": "source", "col.created": "created", "col.lastused": "last used",
    "session.title": "Session", "session.state": "State:", "session.pairqr": "Pair by QR code",
    "session.scan": "Scan in WhatsApp › Linked devices › Link a device. It is replaced as it expires.",
    "session.phone": "phone number, e.g. 62811…", "session.paircode": "Pair by phone code",
    "session.logout": "Log the number out",
    "session.entercode": "Enter {code} on the phone: WhatsApp › Linked devices › Link with phone number.",
    "session.confirmlogout": "Log this number out? The phone drops the linked device.",
    "hook.title": "Webhook", "hook.url": "URL", "hook.secret": "Signing secret (empty: keep the current one)",
    "hook.events": "Events", "hook.save": "Save", "hook.test": "Send a test event", "hook.deliveries": "Deliveries",
    "hook.none": "No webhook is set.", "hook.enabled": "Enabled; secret {secret}.",
    "hook.disabled": "Disabled: {reason}", "hook.saved": "Saved.", "hook.queued": "Test event queued.",
    "hook.replay": "Replay", "msg.title": "Recent messages", "msg.in": "in", "msg.out": "out",
    "keys.title": "API keys", "keys.add": "Add a key", "keys.new": "The new key, shown only now:",
    "keys.revoke": "Revoke", "keys.never": "never", "keys.revoked": "revoked {at}",
    "keys.confirmrevoke": "Revoke the key {prefix}…? Apps using it stop at once.",
    "danger.title": "Danger", "danger.delete": "Delete this tenant",
    "danger.confirm": "Type the tenant's name ({name}) to delete it, its keys, messages and linked device.",
  },
  id: {
    "nav.dashboard": "Dasbor", "nav.tenants": "Tenant", "nav.signout": "Keluar", "nav.language": "Bahasa",
    "signin.title": "Masuk", "signin.secret": "Token admin atau kata sandi", "signin.token": "token",
    "signin.password": "kata sandi", "signin.submit": "Masuk",
    "dash.title": "Dasbor", "dash.sessions": "Sesi menurut status", "dash.lasthour": "Pesan dalam satu jam terakhir",
    "dash.backlog": "Pengiriman webhook yang menunggu", "dash.node": "Hasil webhook di node ini",
    "dash.in": "masuk", "dash.out": "keluar", "dash.oldest": "tertua menunggu", "dash.none": "tidak ada",
    "dash.delivered": "terkirim", "dash.retried": "diulang", "dash.dead": "gagal total",
    "tenants.title": "Tenant", "tenants.newname": "nama tenant baru", "tenants.create": "Buat tenant",
    "tenants.keyof": "Kunci API, hanya ditampilkan sekarang, milik", "tenants.search": "cari menurut nama",
    "tenants.nosessions": "belum ada sesi",
    "copy": "Salin", "prev": "Sebelumnya", "next": "Berikutnya", "back": "← Tenant",
    "col.name": "nama", "col.state": "status", "col.number": "nomor", "col.node": "node",
    "col.event": "peristiwa", "col.status": "status", "col.attempts": "percobaan", "col.code": "jawaban terakhir",
    "col.direction": "arah", "col.chat": "obrolan", "col.text": "teks", "col.time": "waktu",
    "col.prefix": "awalan", "col.source": "sumber", "col.created": "dibuat", "col.lastused": "terakhir dipakai",
    "session.title": "Sesi", "session.state": "Status:", "session.pairqr": "Tautkan dengan kode QR",
    "session.scan": "Pindai di WhatsApp › Perangkat tertaut › Tautkan perangkat. Kode diganti saat kedaluwarsa.",
    "session.phone": "nomor telepon, mis. 62811…", "session.paircode": "Tautkan dengan kode telepon",
    "session.logout": "Keluarkan nomor ini",
    "session.entercode": "Masukkan {code} di telepon: WhatsApp › Perangkat tertaut › Tautkan dengan nomor telepon.",
    "session.confirmlogout": "Keluarkan nomor ini? Telepon akan melepas perangkat tertaut.",
    "hook.title": "Webhook", "hook.url": "URL", "hook.secret": "Rahasia tanda tangan (kosong: pakai yang sekarang)",
    "hook.events": "Peristiwa", "hook.save": "Simpan", "hook.test": "Kirim peristiwa uji", "hook.deliveries": "Pengiriman",
    "hook.none": "Belum ada webhook.", "hook.enabled": "Aktif; rahasia {secret}.",
    "hook.disabled": "Nonaktif: {reason}", "hook.saved": "Tersimpan.", "hook.queued": "Peristiwa uji diantrekan.",
    "hook.replay": "Kirim ulang", "msg.title": "Pesan terbaru", "msg.in": "masuk", "msg.out": "keluar",
    "keys.title": "Kunci API", "keys.add": "Tambah kunci", "keys.new": "Kunci baru, hanya ditampilkan sekarang:",
    "keys.revoke": "Cabut", "keys.never": "belum pernah", "keys.revoked": "dicabut {at}",
    "keys.confirmrevoke": "Cabut kunci {prefix}…? Aplikasi yang memakainya langsung berhenti.",
    "danger.title": "Bahaya", "danger.delete": "Hapus tenant ini",
    "danger.confirm": "Ketik nama tenant ({name}) untuk menghapusnya, beserta kunci, pesan dan perangkat tertautnya.",
  },
};

let lang = localStorage.getItem("wago.lang")
  || ((navigator.language || "en").toLowerCase().startsWith("id") ? "id" : "en");

function t(key, vars = {}) {
  const text = (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key;
  return text.replace(/\{(\w+)\}/g, (_, name) => vars[name] ?? "");
}

function applyLang() {
  document.documentElement.lang = lang;
  $("lang").value = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
}
let csrf = null;
let pageStack = [];      // `after` values of the pages before this one
let pageAfter = "";
let listTimer = null;
let events = null;       // the open session stream

function show(section) {
  for (const id of ["signin", "dashboard", "tenants", "tenant"]) $(id).hidden = id !== section;
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
    : t("tenants.nosessions");
  const rows = $("tenant-rows");
  rows.replaceChildren();
  for (const tenant of list.tenants) {
    const tr = document.createElement("tr");
    const name = cell(tr, "");
    const a = document.createElement("a");
    a.href = `#/t/${encodeURIComponent(tenant.id)}`;
    a.textContent = tenant.name;
    name.appendChild(a);
    cell(tr, tenant.session.state, `badge state-${tenant.session.state}`);
    cell(tr, number(tenant.session.jid));
    cell(tr, tenant.session.node);
    rows.appendChild(tr);
  }
  $("next-page").disabled = !list.next_after;
  $("next-page").dataset.after = list.next_after || "";
  $("prev-page").disabled = pageStack.length === 0;
}

// ---- dashboard ------------------------------------------------------------

async function loadDashboard() {
  let d;
  try {
    d = await api("GET", "/admin/dashboard");
  } catch (e) {
    $("dashboard-error").textContent = e.message;
    return;
  }
  $("dashboard-error").textContent = "";
  $("dash-sessions").textContent = d.sessions.length
    ? d.sessions.map((c) => `${c.state}: ${c.sessions}`).join(" · ")
    : t("dash.none");
  $("dash-lasthour").textContent = `${t("dash.in")} ${d.last_hour.received} · ${t("dash.out")} ${d.last_hour.sent}`;
  $("dash-backlog").textContent = d.webhook_waiting
    ? `${d.webhook_waiting} (${t("dash.oldest")} ${Math.round(d.webhook_oldest_due_secs)} s)`
    : "0";
  $("dash-node").textContent = `${t("dash.delivered")} ${d.node.webhook_delivered} · `
    + `${t("dash.retried")} ${d.node.webhook_retried} · ${t("dash.dead")} ${d.node.webhook_dead}`;
}

function showDashboard() {
  stopTimers();
  show("dashboard");
  loadDashboard();
  listTimer = setInterval(loadDashboard, 3000);
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
  let tenant;
  try {
    tenant = await api("GET", `/admin/tenants/${encodeURIComponent(id)}`);
  } catch (e) {
    $("tenant-error").textContent = e.message;
    return;
  }
  $("tenant-name").textContent = tenant.name;
  $("tenant-id").textContent = tenant.id;
  renderKeys(tenant);
  renderSession(tenant.session);
  loadWebhook(id);
  loadMessages(id);
  // Live: a new QR code, connected, logged out.
  events = new EventSource(`/admin/tenants/${encodeURIComponent(id)}/session/events`);
  events.addEventListener("session", (e) => renderSession(JSON.parse(e.data)));
  // Deliveries and messages follow while the page is open.
  listTimer = setInterval(() => { loadDeliveries(id); loadMessages(id); }, 3000);
}

const tenantPath = (id, rest = "") => `/admin/tenants/${encodeURIComponent(id)}${rest}`;

async function loadWebhook(id) {
  const hook = await act(() => api("GET", tenantPath(id, "/webhook")));
  if (!hook) return;
  $("hook-url").value = hook.url || "";
  $("hook-secret").value = "";
  const events = hook.url ? hook.events : ["message.received", "message.status", "session.status"];
  for (const box of document.querySelectorAll("#hook-events input")) box.checked = events.includes(box.value);
  $("hook-state").textContent = !hook.url ? t("hook.none")
    : hook.enabled ? t("hook.enabled", { secret: hook.secret || "—" })
    : t("hook.disabled", { reason: hook.disabled_reason || "" });
  loadDeliveries(id);
}

async function loadDeliveries(id) {
  let page;
  try {
    page = await api("GET", tenantPath(id, "/webhook/deliveries?limit=1000"));
  } catch (_) { return; }
  const rows = $("delivery-rows");
  rows.replaceChildren();
  for (const d of page.deliveries.slice(-20).reverse()) {
    const tr = document.createElement("tr");
    cell(tr, String(d.id));
    cell(tr, d.event);
    cell(tr, d.status, `badge delivery-${d.status}`);
    cell(tr, String(d.attempts));
    cell(tr, d.last_status_code ? String(d.last_status_code) : d.last_error || "");
    const td = cell(tr, "");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = t("hook.replay");
    b.dataset.delivery = String(d.id);
    b.addEventListener("click", async () => {
      await act(() => api("POST", tenantPath(id, `/webhook/deliveries/${d.id}/replay`)));
      loadDeliveries(id);
    });
    td.appendChild(b);
    rows.appendChild(tr);
  }
}

async function loadMessages(id) {
  let list;
  try {
    list = await api("GET", tenantPath(id, "/messages?limit=20"));
  } catch (_) { return; }
  const rows = $("message-rows");
  rows.replaceChildren();
  for (const m of list.messages) {
    const tr = document.createElement("tr");
    cell(tr, m.direction === "inbound" ? t("msg.in") : t("msg.out"));
    cell(tr, number(m.chat_id));
    cell(tr, m.text);
    cell(tr, m.status, `badge status-${m.status}`);
    cell(tr, m.timestamp);
    rows.appendChild(tr);
  }
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

function renderKeys(tenant) {
  const rows = $("key-rows");
  rows.replaceChildren();
  for (const k of tenant.keys) {
    const tr = document.createElement("tr");
    cell(tr, k.prefix + "…");
    cell(tr, k.source);
    cell(tr, k.created_at);
    cell(tr, k.revoked_at ? t("keys.revoked", { at: k.revoked_at }) : k.last_used_at || t("keys.never"));
    const td = cell(tr, "");
    if (!k.revoked_at) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = t("keys.revoke");
      b.addEventListener("click", async () => {
        if (!confirm(t("keys.confirmrevoke", { prefix: k.prefix }))) return;
        await act(() => api("DELETE", `/admin/tenants/${encodeURIComponent(tenant.id)}/keys/${encodeURIComponent(k.id)}`));
        showTenant(tenant.id);
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
  else if (location.hash === "#/dashboard") showDashboard();
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
      const made = await api("POST", "/admin/tenants", { name: $("new-name").value.trim() });
      $("new-key-tenant").textContent = made.name;
      $("new-key-value").textContent = made.api_key;
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
    if (answer) $("pair-code").textContent = t("session.entercode", { code: answer.code });
  });
  $("logout").addEventListener("click", async () => {
    if (!confirm(t("session.confirmlogout"))) return;
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
    if (prompt(t("danger.confirm", { name })) !== name) return;
    const done = await act(() => api("DELETE", `/admin/tenants/${encodeURIComponent(currentId())}`));
    if (done !== null) location.hash = "#/";
  });
  $("hook-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = currentId();
    const events = [...document.querySelectorAll("#hook-events input:checked")].map((b) => b.value);
    const body = { url: $("hook-url").value.trim(), events };
    if ($("hook-secret").value) body.secret = $("hook-secret").value;
    if (await act(() => api("PUT", tenantPath(id, "/webhook"), body))) {
      await loadWebhook(id);
      $("hook-state").textContent += " " + t("hook.saved");
    }
  });
  $("hook-test").addEventListener("click", async () => {
    const id = currentId();
    if (await act(() => api("POST", tenantPath(id, "/webhook/test")))) {
      $("hook-state").textContent = t("hook.queued");
      loadDeliveries(id);
    }
  });
  $("lang").addEventListener("change", () => {
    lang = $("lang").value;
    localStorage.setItem("wago.lang", lang);
    applyLang();
    route();
  });
  window.addEventListener("hashchange", route);
  applyLang();

  try {
    const me = await api("GET", "/admin/me");
    csrf = me.csrf_token;
    route();
  } catch (_) {
    show("signin");
  }
}

start();
