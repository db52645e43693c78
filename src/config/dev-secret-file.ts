/**
 * Development secrets generated into DATA_DIR: created once, atomically (written to a private temp
 * file, then hard-linked into place, which fails if another process won the race), mode 0600.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';

export async function readOrCreateSecretFile(
  file: string,
  create: () => Promise<string>,
): Promise<{ content: string; created: boolean }> {
  if (fs.existsSync(file)) return { content: fs.readFileSync(file, 'utf8'), created: false };
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const temp = `${file}.${randomUUID()}.tmp`;
  fs.writeFileSync(temp, await create(), { mode: 0o600, flag: 'wx' });
  try {
    fs.linkSync(temp, file);
    return { content: fs.readFileSync(file, 'utf8'), created: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return { content: fs.readFileSync(file, 'utf8'), created: false };
  } finally {
    fs.rmSync(temp, { force: true });
  }
}
