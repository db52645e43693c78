/**
 * The browsable API reference: `openapi.yaml` rendered in the browser by Scalar's standalone bundle
 * (`@scalar/api-reference`, served from node_modules: no CDN). The service serves it at `/docs`
 * (`GET /` redirects there) and `npm run docs:build` writes the same page to `docs-dist/` for file://.
 *
 * The page is public, like `/openapi.yaml`: it documents the API and holds no data. It runs under a
 * Content-Security-Policy of its own ({@link API_REFERENCE_CSP}) instead of the API's
 * `default-src 'none'`: scripts from this origin only (the bundle and the init script, no inline
 * script, no eval), and inline styles, which the renderer injects as `<style>` elements at run time
 * (a nonce is not enough: its theme and toasts add style elements without one). Nothing else: no
 * connections (the document is in the init script), images, fonts, frames or forms. Every option that
 * would reach outside (fonts, the AI agent, the request client, the developer toolbar) is off. See
 * docs/adr/0009-api-reference-at-docs.md.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type { RequestHandler, Router } from 'express';
import express from 'express';
import helmet from 'helmet';

/** The renderer's self-contained browser bundle (UMD: defines `window.Scalar`). */
export function rendererBundlePath(): string {
  const entry = createRequire(import.meta.url).resolve('@scalar/api-reference');
  return path.join(path.dirname(entry), 'browser', 'standalone.js');
}

/** What /docs may load and do, and nothing more (see the module comment). */
export const API_REFERENCE_CSP: Readonly<Record<string, readonly string[]>> = {
  defaultSrc: ["'none'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'", "'unsafe-inline'"],
  baseUri: ["'none'"],
  formAction: ["'none'"],
  frameAncestors: ["'none'"],
};

/** The policy as a header value (and the static build's meta tag, where frame-ancestors is ignored). */
export function cspHeaderValue(directives: Readonly<Record<string, readonly string[]>>, forMeta = false): string {
  return Object.entries(directives)
    .filter(([name]) => !(forMeta && name === 'frameAncestors'))
    .map(([name, values]) => `${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${values.join(' ')}`)
    .join(';');
}

/**
 * Not `api-reference`: the bundle mounts a second reference, with its defaults (fonts from Scalar's
 * servers among them), on any element of that id.
 */
const MOUNT_ID = 'reference';

/** The renderer's configuration: everything that would call out of the page is off. */
const RENDERER_OPTIONS = {
  withDefaultFonts: false,
  hideClientButton: true,
  hideTestRequestButton: true,
  showDeveloperTools: 'never',
  agent: { disabled: true },
  defaultOpenAllTags: true,
  hideDarkModeToggle: false,
  documentDownloadType: 'yaml',
} as const;

/**
 * The script that hands the document to the renderer: JSON in a script file (no inline script, no
 * fetch). It runs before the bundle: it turns off zod's code generation first (`jitless`: the bundle's
 * zod otherwise probes `Function('')`, which the CSP refuses and reports), then starts the renderer once
 * the page has loaded.
 */
export function initScript(document: unknown): string {
  const config = { ...RENDERER_OPTIONS, content: document };
  // `<` escaped so that no `</script>` or `<!--` in a description can end anything.
  const json = JSON.stringify(config).replace(/</g, '\\u003c');
  return [
    'globalThis.__zod_globalConfig = Object.assign(globalThis.__zod_globalConfig || {}, { jitless: true });',
    "document.addEventListener('DOMContentLoaded', function () {",
    `  Scalar.createApiReference('#${MOUNT_ID}', ${json});`,
    '});',
    '',
  ].join('\n');
}

/** The page: a mount point, the bundle and the init script, from `assetBase` (`/docs/` or `./`). */
export function referencePage(title: string, assetBase: string, metaCsp?: string): string {
  const escape = (s: string): string =>
    s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
  return [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    ...(metaCsp === undefined ? [] : [`<meta http-equiv="Content-Security-Policy" content="${escape(metaCsp)}">`]),
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<meta name="referrer" content="no-referrer">',
    `<title>${escape(title)} API reference</title>`,
    '</head>',
    '<body>',
    `<div id="${MOUNT_ID}"></div>`,
    `<script src="${assetBase}init.js"></script>`,
    `<script src="${assetBase}scalar.js"></script>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

/** The title the page shows: the document's `info.title`. */
export function documentTitle(document: Readonly<Record<string, unknown>>): string {
  const info = document['info'] as { title?: unknown } | undefined;
  return typeof info?.title === 'string' ? info.title : 'API';
}

/**
 * `GET /` (redirect), `GET /docs`, `/docs/scalar.js` and `/docs/init.js`, with the reference's own
 * CSP; the app's helmet (`default-src 'none'`) skips exactly {@link API_REFERENCE_PATHS}.
 */
export function apiReferenceRouter(document: Readonly<Record<string, unknown>>): Router {
  const router = express.Router({ strict: true });
  const page = referencePage(documentTitle(document), '/docs/');
  const init = initScript(document);
  const bundle = rendererBundlePath();
  const headers = helmet({
    contentSecurityPolicy: { useDefaults: false, directives: API_REFERENCE_CSP as Record<string, string[]> },
    crossOriginResourcePolicy: { policy: 'same-origin' },
    referrerPolicy: { policy: 'no-referrer' },
  });
  const send =
    (type: string, body: () => string | Buffer): RequestHandler =>
    (_req, res) => {
      res.type(type).send(body());
    };
  router.get('/', (_req, res) => res.redirect(302, '/docs'));
  router.get('/docs/', (_req, res) => res.redirect(301, '/docs'));
  router.get(
    '/docs',
    headers,
    send('html', () => page),
  );
  router.get(
    '/docs/init.js',
    headers,
    send('text/javascript', () => init),
  );
  // Streamed from node_modules when asked (4.8 MB): not kept in memory by a service nobody browses.
  router.get('/docs/scalar.js', headers, (_req, res, next) => {
    res.type('text/javascript').sendFile(bundle, { etag: false, lastModified: false }, (error) => {
      if (error !== undefined) next(error);
    });
  });
  return router;
}

/** The paths {@link apiReferenceRouter} answers with its own headers (the API's helmet skips them). */
export const API_REFERENCE_PATHS: ReadonlySet<string> = new Set(['/docs', '/docs/init.js', '/docs/scalar.js']);
