/**
 * The documentation's relative links lead somewhere: every `[text](path#anchor)` in the repository's
 * Markdown (README and the other top-level pages, docs/) names a file that exists and, when it has an
 * anchor into a Markdown page, a heading of that page (GitHub's slugs). Pages move (the README was
 * split into docs/); a link left pointing at the old place fails here instead of in a reader's browser.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { projectRoot } from '../../src/config/project-root.js';

const ROOT = projectRoot();

function markdownPages(): string[] {
  const top = fs.readdirSync(ROOT).filter((f) => f.endsWith('.md'));
  const docs = fs
    .readdirSync(path.join(ROOT, 'docs'), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.md'))
    .map((f) => path.join('docs', f));
  return [...top, ...docs].sort();
}

/** GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
export function headingSlugs(markdown: string): Set<string> {
  const slugs = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^(```|~~~)/.test(line)) fenced = !fenced;
    const match = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (match === null) continue;
    const base = (match[1] as string)
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    slugs.add(n === 0 ? base : `${base}-${n}`);
  }
  return slugs;
}

function links(markdown: string): { target: string; line: number }[] {
  const found: { target: string; line: number }[] = [];
  let fenced = false;
  markdown.split('\n').forEach((text, i) => {
    if (/^(```|~~~)/.test(text)) fenced = !fenced;
    if (fenced) return;
    for (const m of text.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)\)/g)) {
      found.push({ target: m[1] as string, line: i + 1 });
    }
  });
  return found;
}

describe('docs: every relative link in the Markdown pages leads to a file and heading that exist', function () {
  for (const page of markdownPages()) {
    it(page, function () {
      const text = fs.readFileSync(path.join(ROOT, page), 'utf8');
      const broken: string[] = [];
      for (const { target, line } of links(text)) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:
        const [file, anchor] = target.split('#') as [string, string | undefined];
        const resolved = file === '' ? path.join(ROOT, page) : path.resolve(ROOT, path.dirname(page), file);
        if (!fs.existsSync(resolved)) {
          broken.push(`${page}:${line}: ${target}: no such file`);
          continue;
        }
        if (anchor !== undefined && resolved.endsWith('.md')) {
          if (!headingSlugs(fs.readFileSync(resolved, 'utf8')).has(anchor)) {
            broken.push(`${page}:${line}: ${target}: no heading #${anchor}`);
          }
        }
      }
      expect(broken, broken.join('\n')).to.deep.equal([]);
    });
  }

  it('the slugs follow GitHub: punctuation dropped, repeats numbered', function () {
    const slugs = headingSlugs('## 10. The master key in a PKCS#11 token (HSM)\n## Rotate\n## Rotate\n');
    expect([...slugs]).to.deep.equal(['10-the-master-key-in-a-pkcs11-token-hsm', 'rotate', 'rotate-1']);
  });
});
