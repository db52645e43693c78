/**
 * `npm run docs:build`: the API reference of /docs as static files, for file:// or any static host:
 * docs-dist/index.html, init.js (the document and the renderer's options, as the service serves them)
 * and scalar.js (the renderer's bundle, copied from node_modules). The page carries the service's
 * /docs Content-Security-Policy as a meta tag (less frame-ancestors, which a meta tag cannot set).
 * docs-dist/ is ignored by git. `DOCS_OUT` writes elsewhere.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  API_REFERENCE_CSP,
  cspHeaderValue,
  documentTitle,
  initScript,
  referencePage,
  rendererBundlePath,
} from '../src/http/api-reference.js';
import { loadApiSpec } from '../src/http/openapi.js';
import { projectRoot } from '../src/config/project-root.js';

const out = path.resolve(process.env['DOCS_OUT'] ?? path.join(projectRoot(), 'docs-dist'));
const spec = loadApiSpec();
fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(
  path.join(out, 'index.html'),
  referencePage(documentTitle(spec.document), './', cspHeaderValue(API_REFERENCE_CSP, true)),
);
fs.writeFileSync(path.join(out, 'init.js'), initScript(spec.document));
fs.copyFileSync(rendererBundlePath(), path.join(out, 'scalar.js'));
fs.copyFileSync(path.join(projectRoot(), 'openapi.yaml'), path.join(out, 'openapi.yaml'));
console.log(`API reference written to ${path.relative(process.cwd(), out) || '.'}/index.html (open it in a browser)`);
