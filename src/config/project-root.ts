/**
 * Files that ship beside the code (openapi.yaml, migrations) are found relative to the directory
 * holding package.json, so the same lookup works from `src/` under tsx and from `dist/src/` compiled.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

export function projectRoot(): string {
  if (root !== undefined) return root;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('package.json not found above the running code');
    dir = parent;
  }
  root = dir;
  return dir;
}

/** A path inside the running build: `dist/<rel>` when compiled, `<root>/<rel>` under tsx. */
export function projectPath(relative: string): string {
  const here = fileURLToPath(import.meta.url);
  const compiled = here.includes(`${path.sep}dist${path.sep}`);
  return compiled ? path.join(projectRoot(), 'dist', relative) : path.join(projectRoot(), relative);
}
