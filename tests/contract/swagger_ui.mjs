// Swagger UI in a real browser: headless Chromium (Debian's package) opens /docs,
// authorizes with a key, runs "Try it out" on the enrich operation and must see a 200
// with data. Every asset must come from the server itself (the page works offline).
// A screenshot is written to $SCREENSHOT for people to look at.
//
// Environment: LEADLEX_URL, LEADLEX_KEY, SCREENSHOT.

import { chromium } from "playwright-core";

const base = process.env.LEADLEX_URL;
const key = process.env.LEADLEX_KEY;
const screenshot = process.env.SCREENSHOT;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1800 } });
  const foreign = [];
  page.on("request", (req) => {
    const url = req.url();
    if (!url.startsWith(base) && !url.startsWith("data:")) foreign.push(url);
  });
  await page.goto(`${base}/docs`, { waitUntil: "networkidle" });
  await page.waitForSelector(".swagger-ui .info .title", { timeout: 15000 });

  await page.click("button.authorize");
  await page.fill(".modal-ux input", key);
  await page.click(".modal-ux .auth-btn-wrapper button.authorize");
  await page.click(".modal-ux .auth-btn-wrapper button.btn-done");

  const op = page.locator("#operations-Enrichment-enrich_email_or_domain");
  await op.locator(".opblock-summary").click();
  // With tryItOutEnabled the operation opens ready to execute; only click when it is not.
  const tryOut = op.locator("button.try-out__btn");
  if ((await tryOut.textContent()).includes("Try it out")) await tryOut.click();
  await op.locator("button.execute").click();
  const status = op.locator(".live-responses-table .response .response-col_status");
  await status.first().waitFor({ timeout: 15000 });
  const code = (await status.first().textContent()).trim();
  const body = await op.locator(".live-responses-table .response-col_description pre").first().textContent();
  await op.locator(".opblock-summary").scrollIntoViewIfNeeded();
  await page.evaluate(() => document.querySelector("#operations-Enrichment-enrich_email_or_domain .live-responses-table")
    .scrollIntoView({ block: "center" }));
  await page.screenshot({ path: screenshot });

  if (!code.startsWith("200")) throw new Error(`Try it out answered ${code}: ${body}`);
  const data = JSON.parse(body).data;
  if (!data || typeof data.credits_remaining !== "number" || !data.person) throw new Error(`unexpected body ${body}`);
  if (foreign.length) throw new Error(`Swagger UI fetched assets from elsewhere: ${foreign.join(", ")}`);
  console.log(`swagger ui: Try it out answered 200 with ${data.person.full_name} (${data.source}); screenshot ${screenshot}`);
  console.log("swagger ui: 1 passed, 0 failed");
} catch (err) {
  failed = true;
  console.error(`swagger ui: ${err.message}`);
  console.log("swagger ui: 0 passed, 1 failed");
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
