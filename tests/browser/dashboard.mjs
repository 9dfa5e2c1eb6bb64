// The dashboard in Debian's headless chromium, driven by playwright-core:
//
//   node tests/browser/dashboard.mjs ADMIN_URL SCREENSHOT.png [TOKEN]
//
// Loads the page, gives the admin token when the page asks for it, waits for
// the backends of the live stream, clicks "Drain" on backend `b` (a press
// held across a redraw), waits for
// the row and the event log to say so, and takes a screenshot. Prints one
// JSON line; exits non-zero on any failure or script error in the page.
import { chromium } from "playwright-core";

const [admin, screenshot, token] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // This machine's network is closed: no background traffic, no sandbox (root in CI).
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.on("pageerror", (error) => errors.push(String(error)));
  // Before the token is given, the page's first read is refused with 401: expected.
  let authorized = !token;
  page.on("console", (message) => { if (authorized && message.type() === "error") errors.push(message.text()); });
  await page.goto(`${admin}/`);
  if (token) {
    await page.waitForSelector("#token-form", { state: "visible", timeout: 10000 });
    await page.fill("#token", token);
    authorized = true;
    await page.click("#token-form button");
  }
  await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, { timeout: 15000 });
  await page.waitForSelector('tr[data-backend="b"]', { timeout: 15000 });
  const backends = await page.$$eval("tr[data-backend]", (rows) => rows.map((row) => row.dataset.backend));
  // A few seconds of charts for the screenshot (longer for the README's).
  await page.waitForTimeout(Number(process.env.VEER_DASHBOARD_WAIT_MS || 4000));
  // A slow click, held across a redraw of the table (one a second): it must still count.
  await page.hover('tr[data-backend="b"] button[data-action="drain"]');
  await page.mouse.down();
  await page.waitForTimeout(1500);
  await page.mouse.up();
  await page.waitForSelector('tr[data-backend="b"] td.state-drained', { timeout: 10000 });
  await page.waitForFunction(() => document.getElementById("events").textContent.includes("b: drained"), null, { timeout: 10000 });
  await page.screenshot({ path: screenshot });
  console.log(JSON.stringify({ ok: errors.length === 0, backends, errors }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error), errors }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
if (errors.length) process.exitCode = 1;
