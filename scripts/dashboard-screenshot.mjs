#!/usr/bin/env node
// Screenshot of a running dashboard (for docs/dashboard.png): headless Debian chromium via
// puppeteer-core (dev dependency). usage: node scripts/dashboard-screenshot.mjs URL OUT.png [WAIT_MS]
// Not: a test (test/dashboard.test.ts drives the page and checks what it draws).
import puppeteer from "puppeteer-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const [url, out, wait = "3000"] = process.argv.slice(2);
if (!url || !out) {
  console.error("usage: node scripts/dashboard-screenshot.mjs URL OUT.png [WAIT_MS]");
  process.exit(2);
}
const profile = mkdtempSync(path.join(tmpdir(), "moe-shot-profile-"));
const browser = await puppeteer.launch({
  executablePath: "/usr/bin/chromium", userDataDir: profile, headless: true,
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 1000 });
  await page.goto(url);
  await new Promise((r) => setTimeout(r, Number(wait)));
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
