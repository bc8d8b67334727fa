// The admin page in a real browser (Debian's Chromium, driven by
// playwright-core): sign in, create a tenant, pair its number by QR with
// the sandbox's phone, and watch the page turn to "connected" without a
// reload. Run by tests/admin_ui.rs, which starts the server and the
// sandbox and passes their addresses.
import { chromium } from "playwright-core";

const { BASE_URL, SANDBOX_URL, ADMIN_TOKEN, PHONE, SCREENSHOT } = process.env;
const step = (what) => console.log(`admin_ui: ${what}`);

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

  step("add a key");
  await page.click("#add-key");
  await page.locator("#added-key").waitFor();
  if (!(await page.textContent("#added-key-value")).startsWith("wago_")) throw new Error("no new key");

  step("back to the list: the tenant is connected there too");
  await page.click("a:text('← Tenants')");
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
}
