/**
 * The key-shares commands (MASTER_KEY_SOURCE=shares, docs/key-management.md "Key shares"):
 *
 * - `request split-master-key` / `shares split`: the dual-controlled split (and re-split) of the
 *   master key this CLI holds, one share file per custodian, each encrypted to that custodian.
 * - `shares status`: the active split (threshold, holders) and the id to pin in MASTER_KEY_SHARES_KEY_ID.
 * - `shares reveal`: a custodian opens their share file into a cleartext share file (mode 0600) for
 *   a key-CLI run under MASTER_KEY_SHARE_FILES; to be deleted after the ceremony.
 * - `unseal` / `seal` (no database, no master key: run by a custodian on their own machine): read each
 *   instance's status, open the share locally, submit it encrypted to that instance and signed.
 *
 * Never does any of them print, log or pass on the command line a share or a private key: files only,
 * by path, and the share files are created 0600 and never overwritten.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { AppError } from '../errors/app-error.js';
import { verifyRegister } from '../keys/custodian-provenance.js';
import { activeSplit, executeSplit, splitParams, verifySplitSeal } from '../keys/key-shares.js';
import { planToShares, rotateToShares, toSharesParams } from '../keys/master-rotation-shares.js';
import { clientCaHooks } from '../mtls/client-ca-hooks.js';
import type { RequestParams } from '../keys/request-payload.js';
import { instanceKeyFingerprint, type UnsealStatus } from '../keys/unseal.js';
import { clearShareFile, custodianKey, sealRequest, unsealSubmission } from '../keys/unseal-client.js';
import type { KeysContext, KeysIo } from './keys-context.js';
import { UsageError } from './usage-error.js';

type Out = (text: string) => void;

export const SHARES_USAGE = `  request split-master-key --threshold M (--custodian <name> ... | --all-custodians)
                                                  M-of-N split of the master key among custodians (dual control)
  shares split --threshold M (--custodian <name> ... | --all-custodians) --out <dir> --request <id>
                                                  runs the approved split: one 0600 share file per custodian,
                                                  encrypted to their key; supersedes the previous split
  shares status [--json]                          the active split and the master key id to pin
                                                  (MASTER_KEY_SHARES_KEY_ID)
  shares reveal --share <file> --key <custodian.pem> --out <file>
                                                  a cleartext share file (0600) for MASTER_KEY_SHARE_FILES
  unseal --url <instance> [--url …] --share <file> --key <custodian.pem> [--instance-key <fingerprint> …]
                                                  submits this custodian's share to each sealed instance
                                                  (only to the instance keys pinned, when given: the
                                                  fingerprint each instance logs when it seals)
  seal --url <instance> [--url …] --key <custodian.pem>
                                                  seals each instance (any one custodian may)`;

const SPLIT_OPTIONS = {
  threshold: { type: 'string' },
  custodian: { type: 'string', multiple: true },
  'all-custodians': { type: 'boolean', default: false },
} as const;

/** The split request's parameters: the named custodians' key thumbprints (verified register). */
export async function splitRequestParams(
  args: readonly string[],
  ctx: KeysContext,
): Promise<{ params: RequestParams; description: string }> {
  const { values } = parseArgs({ args: [...args], options: SPLIT_OPTIONS, strict: true });
  const { threshold, names } = splitOptions(values);
  return resolveSplit(ctx, threshold, names);
}

function splitOptions(values: {
  threshold?: string | undefined;
  custodian?: string[] | undefined;
  'all-custodians'?: boolean | undefined;
}): {
  threshold: number;
  names: string[] | 'all';
} {
  if (values.threshold === undefined || !/^\d{1,3}$/.test(values.threshold)) {
    throw new UsageError('--threshold M is required (a whole number, at least 2)');
  }
  const all = values['all-custodians'] === true;
  if (all === (values.custodian !== undefined))
    throw new UsageError('name the holders: --custodian <name> ... or --all-custodians');
  return { threshold: Number(values.threshold), names: all ? 'all' : (values.custodian ?? []) };
}

async function resolveSplit(
  ctx: KeysContext,
  threshold: number,
  names: string[] | 'all',
): Promise<{ params: RequestParams; description: string; thumbprints: string[]; names: string[] }> {
  const register = await verifyRegister(ctx.knex, ctx.masterKey);
  if (register.tampered !== undefined) throw new AppError('DUAL_CONTROL_TAMPERED', { detail: register.tampered });
  const custodians = [...register.trusted.values()];
  const chosen =
    names === 'all'
      ? custodians
      : names.map((name) => {
          const c = custodians.find((x) => x.name === name);
          if (c === undefined)
            throw new AppError('MASTER_KEY_SPLIT_INVALID', { detail: `${name} is not a registered custodian.` });
          return c;
        });
  const thumbprints = chosen.map((c) => c.keyThumbprint);
  const params = splitParams({ threshold, thumbprints, kekId: ctx.masterKey.keyId });
  const description =
    `Split the master key ${ctx.masterKey.keyId} ${threshold}-of-${chosen.length} among ` +
    `${chosen.map((c) => c.name).join(', ')}; each share is encrypted to its holder. ` +
    'Supersedes any earlier split: the service then accepts only these shares.';
  return { params, description, thumbprints, names: chosen.map((c) => c.name) };
}

/** What `request rotate --purpose master --to shares` and `rotate --purpose master --to shares` take. */
export interface ToSharesOptions {
  to?: string | undefined;
  threshold?: string | undefined;
  custodian?: string[] | undefined;
  'all-custodians'?: boolean | undefined;
  out?: string | undefined;
}

export const TO_SHARES_OPTIONS = {
  to: { type: 'string' },
  ...SPLIT_OPTIONS,
  'all-custodians': { type: 'boolean' },
  out: { type: 'string' },
} as const;

async function resolveToShares(values: ToSharesOptions, ctx: KeysContext) {
  if (values.to !== 'shares')
    throw new UsageError(
      '--to must be shares (rotating into another source: configure it, see docs/key-management.md §10)',
    );
  const { threshold, names } = splitOptions(values);
  const resolved = await resolveSplit(ctx, threshold, names);
  return { threshold, thumbprints: resolved.thumbprints, names: resolved.names };
}

/**
 * `request rotate --purpose master --to shares --threshold M (--custodian … | --all-custodians)`: the
 * request names the destination, the threshold and the exact holders, never a key id (there is none yet).
 */
export async function toSharesRequest(
  values: ToSharesOptions,
  ctx: KeysContext,
): Promise<{ params: RequestParams; description: string }> {
  const { threshold, thumbprints, names } = await resolveToShares(values, ctx);
  return {
    params: toSharesParams({ threshold, thumbprints }),
    description:
      `Rotate the master key ${ctx.masterKey.keyId} into custodians' shares: a fresh key, never written in clear, ` +
      `re-wraps every data key and seal and is split ${threshold}-of-${names.length} among ${names.join(', ')}, ` +
      'each share encrypted to its holder; supersedes any earlier split.',
  };
}

/** `rotate --purpose master --to shares … --out <dir> [--plan | --apply] --request <id>` (master-rotation-shares.ts). */
export async function rotateToSharesCommand(
  values: ToSharesOptions & { apply?: boolean | undefined; request?: string | undefined },
  ctx: KeysContext,
  out: Out,
): Promise<number> {
  const { threshold, thumbprints, names } = await resolveToShares(values, ctx);
  out(`master-key rotation plan (current master key ${ctx.masterKey.keyId} → a fresh key in custodians' shares):`);
  const steps = await planToShares(ctx.knex, ctx.masterKey, { threshold, names }, ctx.policy.singleOperator);
  steps.forEach((s, i) => out(`  ${i + 1}. ${s}`));
  if (values.apply !== true) {
    out('plan only: nothing changed. Run again with --apply (and --out <dir>) to do it.');
    return 0;
  }
  if (values.out === undefined) throw new UsageError('--out <dir> is required: where the share files are written');
  const done = await rotateToShares(
    {
      knex: ctx.knex,
      masterKey: ctx.masterKey,
      clientCa: clientCaHooks,
      actor: ctx.actor,
      singleOperator: ctx.policy.singleOperator,
      production: ctx.policy.production,
    },
    { threshold, thumbprints, requestId: values.request, outDir: values.out },
  );
  out(
    `done: ${done.rewrap.rewrapped.length} data key(s) rewrapped by master key ${done.kekId}, split ${done.split.split.id} ` +
      `${done.split.split.threshold}-of-${done.split.split.total}`,
  );
  for (const file of done.split.files) out(`  ${file}`);
  out("hand each file to its custodian only (each opens only with its holder's private key); delete the copies here");
  out(`then: MASTER_KEY_SOURCE=shares MASTER_KEY_SHARES_KEY_ID=${done.kekId} on every instance, restart, keys unseal`);
  return 0;
}

export async function sharesCommand(args: readonly string[], ctx: KeysContext, out: Out): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'split': {
      const { values } = parseArgs({
        args: rest,
        options: { ...SPLIT_OPTIONS, out: { type: 'string' }, request: { type: 'string' } },
        strict: true,
      });
      const { threshold, names } = splitOptions(values);
      if (values.out === undefined) throw new UsageError('--out <dir> is required: where the share files are written');
      const { thumbprints } = await resolveSplit(ctx, threshold, names);
      const result = await executeSplit(
        ctx.knex,
        {
          threshold,
          thumbprints,
          requestId: values.request,
          outDir: values.out,
          singleOperator: ctx.policy.singleOperator,
          production: ctx.policy.production,
        },
        { actor: ctx.actor, masterKey: ctx.masterKey },
      );
      out(
        `split ${result.split.id}: ${result.split.threshold}-of-${result.split.total} of master key ${result.split.kekId}`,
      );
      for (const file of result.files) out(`  ${file}`);
      out(
        "hand each file to its custodian only (each opens only with its holder's private key); delete the copies here",
      );
      out(`then: MASTER_KEY_SOURCE=shares MASTER_KEY_SHARES_KEY_ID=${result.split.kekId}`);
      return 0;
    }
    case 'status': {
      const { values } = parseArgs({
        args: rest,
        options: { json: { type: 'boolean', default: false } },
        strict: true,
      });
      const split = await activeSplit(ctx.knex);
      if (split === undefined) {
        out('no split: the master key is not in shares (keys request split-master-key)');
        return 1;
      }
      const sealVerifies = await verifySplitSeal(ctx.masterKey, split).catch(() => false);
      const view = {
        splitId: split.id,
        masterKeyId: split.kekId,
        threshold: split.threshold,
        total: split.total,
        holders: split.holders.map((h) => ({ custodian: h.name, keyThumbprint: h.keyThumbprint, index: h.index })),
        createdAt: split.createdAt.toISOString(),
        requestId: split.requestId,
        sealVerifies,
      };
      if (values.json) out(JSON.stringify(view, null, 2));
      else {
        out(
          `split ${view.splitId}: ${view.threshold}-of-${view.total}, master key ${view.masterKeyId}${sealVerifies ? '' : ' — SEAL DOES NOT VERIFY (altered, or another master key)'}`,
        );
        for (const h of view.holders) out(`  ${h.custodian} (key ${h.keyThumbprint}, share #${h.index})`);
      }
      return sealVerifies ? 0 : 1;
    }
    case 'reveal':
      return revealCommand(rest, out);
    default:
      throw new UsageError('shares split|status|reveal');
  }
}

/**
 * `keys shares reveal`, on the custodian's machine: no database, no master key (keys.ts runs it before
 * anything is opened, and before the argument pass, which would write the file).
 */
export async function revealCommand(args: readonly string[], out: Out): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: { share: { type: 'string' }, key: { type: 'string' }, out: { type: 'string' } },
    strict: true,
  });
  if (values.share === undefined || values.key === undefined || values.out === undefined) {
    throw new UsageError('shares reveal --share <file> --key <custodian.pem> --out <file>');
  }
  const text = await clearShareFile(
    fs.readFileSync(values.share, 'utf8'),
    custodianKey(fs.readFileSync(values.key, 'utf8')),
  );
  fs.writeFileSync(values.out, text, { mode: 0o600, flag: 'wx' });
  out(`cleartext share written to ${values.out} (mode 0600): delete it after the ceremony`);
  return 0;
}

/** What `unseal` and `seal` need from HTTP: the global fetch (tests reach their own service on loopback). */
export type Fetch = typeof fetch;

/**
 * `keys unseal` / `keys seal`, run by a custodian on their machine against each instance. No database
 * and no master key: only the custodian's key file and share file, read by path.
 */
export async function remoteCommand(
  command: 'unseal' | 'seal',
  args: readonly string[],
  io: Pick<KeysIo, 'stdout' | 'stderr'>,
  http: Fetch = fetch,
): Promise<number> {
  const out = (text: string): void => void io.stdout.write(`${text}\n`);
  const { values } = parseArgs({
    args: [...args],
    options: {
      url: { type: 'string', multiple: true },
      share: { type: 'string' },
      key: { type: 'string' },
      'instance-key': { type: 'string', multiple: true },
    },
    strict: true,
  });
  if (values.url === undefined || values.key === undefined || (command === 'unseal' && values.share === undefined)) {
    throw new UsageError(
      command === 'unseal'
        ? 'unseal --url <instance> [--url …] --share <file> --key <custodian.pem> [--instance-key <fingerprint> …]'
        : 'seal --url <instance> [--url …] --key <custodian.pem>',
    );
  }
  const key = custodianKey(fs.readFileSync(values.key, 'utf8'));
  const shareText = values.share === undefined ? undefined : fs.readFileSync(values.share, 'utf8');
  let failed = 0;
  for (const base of values.url) {
    const url = base.replace(/\/+$/, '');
    try {
      const status = await call<UnsealStatus>(http, `${url}/v1/admin/unseal`);
      if (command === 'unseal') {
        if (!status.sealed) {
          out(`${url}: already unsealed`);
          continue;
        }
        // The status is unauthenticated: a key in it that is not the instance's own would open the share.
        const fingerprint = status.instanceKey === null ? '-' : instanceKeyFingerprint(status.instanceKey);
        out(`${url}: instance key fingerprint ${fingerprint}`);
        // A pin written down before fingerprints carried `SHA256:` (the same digest) still matches.
        const pinned = values['instance-key']?.map((pin) => (/^[A-Za-z0-9_-]{22}$/.test(pin) ? `SHA256:${pin}` : pin));
        if (pinned !== undefined && !pinned.includes(fingerprint)) {
          throw new AppError('UNSEAL_SUBMISSION_INVALID', {
            detail: `the instance key ${fingerprint} is not one given by --instance-key (someone between you and the instance?): nothing was sent`,
          });
        }
        const submission = await unsealSubmission(status, shareText!, key);
        const after = await call<UnsealStatus>(http, `${url}/v1/admin/unseal`, { submission });
        out(
          after.sealed
            ? `${url}: share accepted, ${after.progress} of ${after.threshold ?? '?'}; still sealed`
            : `${url}: UNSEALED`,
        );
      } else {
        const after = await call<UnsealStatus>(http, `${url}/v1/admin/seal`, {
          request: await sealRequest(status, key),
        });
        out(after.sealed ? `${url}: sealed` : `${url}: NOT sealed`);
      }
    } catch (error) {
      failed += 1;
      io.stderr.write(
        `keys: ${url}: ${error instanceof AppError ? `${error.code}: ${error.detail ?? error.title}` : (error as Error).message}\n`,
      );
    }
  }
  return failed === 0 ? 0 : 1;
}

async function call<T>(http: Fetch, url: string, body?: unknown): Promise<T> {
  const response = await http(
    url,
    body === undefined
      ? {}
      : {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        },
  );
  const json = (await response.json().catch(() => ({}))) as Record<string, unknown>;
  if (!response.ok) {
    const text = (value: unknown): string => (typeof value === 'string' ? value : '');
    throw new Error(`${response.status} ${text(json['code'])}: ${text(json['detail']) || text(json['title'])}`);
  }
  return json as T;
}
