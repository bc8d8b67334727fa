// The admin page in a real browser (Debian's Chromium, driven by
// playwright-core): sign in, create a tenant, pair its number by QR with
// the sandbox's phone, and watch the page turn to "connected" without a
// reload. Run by tests/admin_ui.rs, which starts the server and the
// sandbox and passes their addresses.
import { createServer } from "node:http";
import { chromium } from "playwright-core";

const { BASE_URL, SANDBOX_URL, ADMIN_TOKEN, PHONE, FRIEND, SCREENSHOT } = process.env;
const step = (what) => console.log(`admin_ui: ${what}`);

// A webhook receiver: counts what it gets, by event name.
const received = [];
const receiver = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => { body += c; });
  req.on("end", () => { received.push(JSON.parse(body)); res.writeHead(200); res.end(); });
});
await new Promise((ok) => receiver.listen(0, "127.0.0.1", ok));
const hookUrl = `http://127.0.0.1:${receiver.address().port}/hook`;
async function until(what, check) {
  const deadline = Date.now() + 20000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`never: ${what}`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // 401s are expected (before signing in, a wrong token, after signing
  // out); anything else the console reports is a fault.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().includes("status of 401")) errors.push(m.text());
  });

  await page.goto(`${BASE_URL}/admin`);
  await page.locator("#signin").waitFor();
  step("a wrong token is refused");
  await page.fill("#secret", "not-the-admin-token");
  await page.click("#signin-form button[type=submit]");
  await page.locator("#signin-error", { hasText: "wrong" }).waitFor();

  step("a wrong password is refused");
  await page.check("input[name=kind][value=password]");
  await page.fill("#secret", "not the password at all");
  await page.click("#signin-form button[type=submit]");
  await page.locator("#signin-error", { hasText: "wrong" }).waitFor();
  await page.check("input[name=kind][value=token]");

  step("sign in with the admin token");
  await page.fill("#secret", ADMIN_TOKEN);
  await page.click("#signin-form button[type=submit]");
  await page.locator("#tenants").waitFor();

  step("create a tenant: its key is shown once");
  await page.fill("#new-name", "shop");
  await page.click("#create-form button[type=submit]");
  await page.locator("#new-key").waitFor();
  const key = await page.textContent("#new-key-value");
  if (!key.startsWith("wago_")) throw new Error(`no key shown: ${key}`);

  step("open the tenant and pair by QR");
  await page.click("#tenant-rows a:text('shop')");
  await page.locator("#tenant").waitFor();
  await page.locator("#session-state", { hasText: "unpaired" }).waitFor();
  await page.click("#pair-qr");
  const qr = await page.locator("#qr[data-qr]").getAttribute("data-qr", { timeout: 20000 });
  await page.locator("#qr-box").waitFor();
  const drawn = await page.locator("#qr").evaluate((img) => img.complete && img.naturalWidth > 0);
  if (!drawn) {
    await page.waitForFunction(() => document.getElementById("qr").naturalWidth > 0);
  }
  if (SCREENSHOT) await page.screenshot({ path: `${SCREENSHOT}/admin-pairing.png`, fullPage: true });

  step("the phone scans it; the page turns to connected by itself");
  const tenantId = await page.textContent("#tenant-id");
  const linked = await fetch(`${SANDBOX_URL}/phones/${PHONE}/link`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ qr }),
  });
  if (!linked.ok) throw new Error(`link: ${linked.status} ${await linked.text()}`);
  await page.locator("#session-state", { hasText: "connected" }).waitFor({ timeout: 20000 });
  await page.locator("#session-who", { hasText: `+${PHONE}` }).waitFor();
  if (!(await page.locator("#qr-box").isHidden())) throw new Error("the QR code is still shown");
  if (SCREENSHOT) await page.screenshot({ path: `${SCREENSHOT}/admin-connected.png`, fullPage: true });
  // An app sends with the tenant's key; the page lists it.
  const sent = await fetch(`${BASE_URL}/send-text`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-API-Key": key },
    body: JSON.stringify({ to: FRIEND, text: "halo from the test", queue: true }),
  });
  if (!sent.ok) throw new Error(`send: ${sent.status} ${await sent.text()} (${tenantId})`);

  step("set the webhook, send a test event, replay it");
  await page.fill("#hook-url", hookUrl);
  await page.click("#hook-form button[type=submit]");
  await page.locator("#hook-state", { hasText: "Enabled" }).waitFor();
  await page.click("#hook-test");
  await until("the test event arrives", () => received.some((e) => e.event === "webhook.test"));
  const row = page.locator("#delivery-rows tr", { hasText: "webhook.test" });
  await row.locator("td.delivery-delivered").waitFor();
  await row.locator("button").click();
  await until("the replay arrives", () => received.filter((e) => e.event === "webhook.test").length === 2);

  step("the send shows among the recent messages");
  await page.locator("#message-rows tr", { hasText: "halo from the test" }).waitFor({ timeout: 20000 });

  step("add a key");
  await page.click("#add-key");
  await page.locator("#added-key").waitFor();
  if (!(await page.textContent("#added-key-value")).startsWith("wago_")) throw new Error("no new key");

  step("in Indonesian");
  await page.selectOption("#lang", "id");
  await page.locator("#sign-out", { hasText: "Keluar" }).waitFor();
  await page.locator("h2", { hasText: "Pesan terbaru" }).waitFor();
  await page.selectOption("#lang", "en");

  step("the dashboard");
  await page.click("a[href='#/dashboard']");
  await page.locator("#dash-sessions", { hasText: "connected: 1" }).waitFor();
  await page.locator("#dash-node", { hasText: "delivered" }).waitFor();
  if (SCREENSHOT) await page.screenshot({ path: `${SCREENSHOT}/admin-dashboard.png`, fullPage: true });

  step("on a phone screen");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click("a[href='#/']");
  await page.locator("#tenant-rows td.state-connected").waitFor();
  if (SCREENSHOT) await page.screenshot({ path: `${SCREENSHOT}/admin-phone.png`, fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });

  step("the tenant page and back");
  await page.click("#tenant-rows a:text('shop')");
  await page.locator("#session-state", { hasText: "connected" }).waitFor();
  await page.click("#back");
  await page.locator("#tenant-rows td.state-connected").waitFor();

  step("sign out");
  await page.click("#sign-out");
  await page.locator("#signin").waitFor();
  await page.reload();
  await page.locator("#signin").waitFor();

  if (errors.length) throw new Error(`the page reported errors: ${errors.join("; ")}`);
  step("done");
} finally {
  await browser.close();
  receiver.close();
}
