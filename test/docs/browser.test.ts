/**
 * The API reference at /docs, in a real browser: Debian's chromium (scripts/ensure-chromium.sh,
 * run by pretest and .ci/run) driven by playwright-core against the real service on port 0. The page
 * must render every operation of openapi.yaml (looped over the document, not a list kept here: each
 * operation's section is scrolled into view, as the renderer fills sections in lazily, and must hold
 * its summary), under its Content-Security-Policy, with no console error and no CSP violation; a full-page screenshot is
 * left in test-results/docs.png (ignored by git) for a person to look at.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { expect } from 'chai';
import { chromium, type Browser, type Page } from 'playwright-core';
import { projectRoot } from '../../src/config/project-root.js';
import { API_REFERENCE_CSP, cspHeaderValue } from '../../src/http/api-reference.js';
import { HTTP_METHODS } from '../../src/http/openapi.js';
import { startTestService, type TestService } from '../support/harness.js';

const SCREENSHOT = path.join(projectRoot(), 'test-results', 'docs.png');

function chromiumPath(): string {
  const candidates = [process.env['CHROMIUM_PATH'], '/usr/bin/chromium', '/usr/bin/chromium-browser'];
  const found = candidates.find((c) => c !== undefined && c !== '' && fs.existsSync(c));
  if (found === undefined)
    throw new Error('chromium not found: run sh scripts/ensure-chromium.sh (or set CHROMIUM_PATH)');
  return found;
}

interface DocumentedOperation {
  readonly operationId: string;
  readonly summary: string;
  /** Scalar's section id ends with it: `GET/v1/tokens/{token}`. */
  readonly anchor: string;
}

function documentedOperations(document: Readonly<Record<string, unknown>>): DocumentedOperation[] {
  const out: DocumentedOperation[] = [];
  for (const [p, item] of Object.entries(document['paths'] as Record<string, Record<string, unknown>>)) {
    for (const method of HTTP_METHODS) {
      const op = item[method] as { operationId: string; summary?: string } | undefined;
      if (op === undefined) continue;
      out.push({ operationId: op.operationId, summary: op.summary ?? '', anchor: `${method.toUpperCase()}${p}` });
    }
  }
  return out;
}

/** Opens the page, waits for the reference to render, and collects what went wrong on the way. */
async function openReference(page: Page, url: string, origin: string, firstAnchor: string): Promise<string[]> {
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text().slice(0, 300)}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message.slice(0, 300)}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url().slice(0, 200)}`));
  page.on('request', (r) => {
    if (!r.url().startsWith(origin) && !r.url().startsWith('data:'))
      problems.push(`request out of the origin: ${r.url()}`);
  });
  // Runs before the page's own scripts (and outside its CSP): records every violation report. Strings,
  // not functions: they run in the page, and the tests are compiled without the DOM's types.
  await page.addInitScript({
    content: `window.cspViolations = [];
      document.addEventListener('securitypolicyviolation', (e) => {
        window.cspViolations.push(e.effectiveDirective + ' blocked ' + (e.blockedURI || '(inline)'));
      });`,
  });
  const response = await page.goto(url, { waitUntil: 'load' });
  if (url.startsWith('http')) expect(response?.status()).to.equal(200);
  // The page has started rendering: the first operation's section is there.
  await page.waitForSelector(`[id$="/${firstAnchor}"]`, { state: 'attached', timeout: 15_000 });
  return problems;
}

/**
 * Whether the operation is rendered: its section (id ending in METHOD/path) holds its summary. The
 * renderer fills sections in as they come into view, so each is scrolled to first; then it stays.
 */
async function rendersOperation(page: Page, op: DocumentedOperation): Promise<boolean> {
  // Locators, not waitForFunction: a string predicate is compiled in the page, which its CSP refuses.
  const section = page.locator(`section[id$="/${op.anchor}"]`).filter({ hasText: op.summary });
  // Sections above it may still be filling in and push it back out of view: scroll again, a few times.
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await page.locator(`[id$="/${op.anchor}"]`).first().scrollIntoViewIfNeeded({ timeout: 2_000 });
      await section.first().waitFor({ state: 'attached', timeout: 1_500 });
      return true;
    } catch {
      // not yet
    }
  }
  return false;
}

/** The CSP violations the page reported (recorded by the init script). */
async function cspViolations(page: Page): Promise<string[]> {
  const violations = (await page.evaluate('window.cspViolations')) as string[];
  return violations.map((v) => `CSP violation: ${v}`);
}

describe('API reference at /docs (chromium)', function () {
  this.timeout(120_000);
  let app: TestService;
  let browser: Browser;

  before(async () => {
    app = await startTestService();
    browser = await chromium.launch({
      executablePath: chromiumPath(),
      headless: true,
      // Chromium's sandbox refuses to start as root (CI runs as root).
      args: process.getuid?.() === 0 ? ['--no-sandbox'] : [],
    });
  });
  after(async () => {
    await browser?.close();
    await app?.close();
  });

  it('when / is asked for, then it redirects to /docs, which is public and under its own CSP while the API keeps its own', async () => {
    const root = await app.request('GET', '/');
    expect(root.status).to.equal(302);
    expect(root.headers.get('location')).to.equal('/docs');
    const docs = await app.request('GET', '/docs');
    expect(docs.status).to.equal(200);
    expect(docs.headers.get('content-type')).to.match(/^text\/html/);
    expect(docs.headers.get('content-security-policy')).to.equal(cspHeaderValue(API_REFERENCE_CSP));
    const api = await app.request('GET', '/healthz');
    expect(api.headers.get('content-security-policy')).to.equal("default-src 'none';frame-ancestors 'none'");
    const unknown = await app.request('GET', '/docs/other.js');
    expect(unknown.status).to.equal(404);
    expect(unknown.headers.get('content-security-policy')).to.equal("default-src 'none';frame-ancestors 'none'");
  });

  /** Every operation not rendered (by section id and summary), and the screenshot when asked for. */
  async function checkRendering(url: string, origin: string, screenshot?: string): Promise<void> {
    const operations = documentedOperations(app.service.spec.document);
    expect(operations.length).to.be.greaterThan(30);
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    try {
      const problems = await openReference(page, url, origin, (operations[0] as DocumentedOperation).anchor);
      const missing: string[] = [];
      for (const op of operations) if (!(await rendersOperation(page, op))) missing.push(op.operationId);
      problems.push(...(await cspViolations(page)));
      if (screenshot !== undefined) {
        fs.mkdirSync(path.dirname(screenshot), { recursive: true });
        await page.screenshot({ path: screenshot, fullPage: true });
      }
      expect(missing, 'operations not rendered').to.deep.equal([]);
      expect(problems).to.deep.equal([]);
    } finally {
      await page.close();
    }
  }

  it('when /docs is opened, then every operation of openapi.yaml is rendered with no console error and no CSP violation', async () => {
    await checkRendering(`${app.url}/docs`, app.url, SCREENSHOT);
  });

  it('when the static build (npm run docs:build) is opened from file://, then it renders every operation the same way', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'lv-docs-'));
    try {
      execFileSync(process.execPath, ['--import', 'tsx', path.join(projectRoot(), 'scripts', 'build-docs.ts')], {
        env: { ...process.env, DOCS_OUT: out },
        stdio: 'pipe',
      });
      const index = pathToFileURL(path.join(out, 'index.html')).href;
      await checkRendering(index, pathToFileURL(out).href);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
