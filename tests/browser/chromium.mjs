// What the browser scripts of tests/browser.rs share: their environment, Debian's Chromium (never a downloaded
// browser) in a throwaway profile, a page that records what must never happen (a CSP refusal, a page error, the
// credential in a URL or on the console), and polling with a deadline.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** An environment variable, or `fallback`; throws when neither is there. */
export function env(name, fallback) {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
}

export function check(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

/**
 * Starts Chromium with one page. `problems` collects what must never happen while `token` is in use; `close` ends
 * the browser and removes its profile.
 */
export async function openBrowser({ token, log, acceptDownloads = false }) {
  const profile = mkdtempSync(join(tmpdir(), 'camhub-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: env('CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    viewport: { width: 1366, height: 768 },
    acceptDownloads,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--allow-loopback-in-peer-connection',
      // Host candidates as addresses, not mDNS names, so camhub's ICE agent can reach them.
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  const problems = [];
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (msg) => {
    const text = msg.text();
    if (text.includes(token)) problems.push('the credential was written to the console');
    if (/Content.Security.Policy|Refused to/i.test(text)) problems.push(`CSP: ${text}`);
    if (msg.type() === 'error') log('console error:', text);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('request', (req) => {
    if (req.url().includes(token)) problems.push(`the credential was put in a URL: ${req.method()} ${req.url().slice(0, 60)}`);
  });
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { page, problems, close };
}

/** Polls `fn` every 50 ms until it returns something truthy; resolves with the milliseconds that took. */
export async function waitFor(page, what, fn, timeoutMs) {
  const started = Date.now();
  for (;;) {
    const value = await fn();
    if (value) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await page.waitForTimeout(50);
  }
}

/** Signs in by typing `token` into the form, as a person would. */
export async function signIn(page, url, token) {
  await page.goto(url);
  await page.waitForSelector('#signin-form', { state: 'visible' });
  await page.fill('#credential', token);
  await page.click('#signin-button');
  await page.waitForSelector('#app-view', { state: 'visible', timeout: 10000 });
}

/**
 * What a script does when it fails: a screenshot of the page at the failure (when `screenshot` names a file), the
 * error and any problems on stderr, exit status 1.
 */
export async function failed(page, e, { log, problems = [], screenshot = '' }) {
  if (screenshot) {
    try {
      await page.screenshot({ path: screenshot });
      log('the page at the failure:', screenshot);
    } catch {}
  }
  log(e.stack || String(e));
  if (problems.length) log('also:', problems.join('; '));
  process.exitCode = 1;
}
