/**
 * What the package's bins run (package.json "bin"): in a checkout, the TypeScript itself through tsx
 * (always the current code, nothing to build first: `npx loyalty-vault-keys --help` right after
 * `npm ci`); where only the build is installed (the production image: no src/, no tsx), dist/.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/** Runs the CLI `name` (src/cli/<name>.ts) with this process's arguments; sets the exit code. */
export async function launch(name, programExport) {
  const source = path.join(root, 'src', 'cli', `${name}.ts`);
  const built = path.join(root, 'dist', 'src', 'cli', `${name}.js`);
  let file = built;
  if (fs.existsSync(source)) {
    try {
      const { register } = await import('tsx/esm/api');
      register();
      file = source;
    } catch {
      // No tsx (dependencies installed without the dev ones): the build, if there is one.
    }
  }
  if (!fs.existsSync(file)) {
    process.stderr.write(`${name}: ${path.relative(process.cwd(), built)} is missing: run npm run build first\n`);
    process.exitCode = 1;
    return;
  }
  const cli = await import(pathToFileURL(file).href);
  const { runProgram } = await import(
    pathToFileURL(path.join(path.dirname(file), 'cli-program' + path.extname(file))).href
  );
  process.exitCode = await runProgram(cli[programExport](), process.argv.slice(2));
}
