/**
 * `npm run keys -- audit …`: verify the keyed trail (alone or against a signed checkpoint kept
 * outside the database), write checkpoints, export a period signed for an assessor, verify an
 * export offline, print the audit-signing public key, and redact an entry's details.
 *
 * Reading the trail is itself recorded (PCI DSS 10.2.1.3): `verify` appends `audit.verified` with
 * its outcome and finding, after the verdict on exactly what was stored. Exit codes as every key
 * command: 0 done, 1 refused or a finding, 2 usage.
 */
import { createPublicKey } from 'node:crypto';
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { createCheckpoint, verifyAgainstCheckpoint } from '../audit/audit-checkpoint.js';
import { exportAudit, publicKeyThumbprint, verifyAuditExport } from '../audit/audit-export.js';
import { auditSigner } from '../keys/audit-signer.js';
import { appendAuditEvent, convertAuditChainIfNeeded, redactAuditEntry, verifyAuditChain } from '../audit/audit-log.js';
import { auditSigningPublicKey } from '../audit/audit-store.js';
import { describeKeyStateFinding, reconcileKeyStates } from '../keys/key-state-reconciliation.js';
import type { KeysContext } from './keys-context.js';
import { UsageError } from './usage-error.js';

export const AUDIT_USAGE = `  audit verify [--checkpoint <file> (--public-key <pem> | --public-key-thumbprint <t>)]
                                                  walks the keyed chain; with a checkpoint, proves the trail
                                                  extends it (the key from outside the database); checks
                                                  every key version's state against the trail's key
                                                  entries; exits 1 on any finding
  audit checkpoint --out <file>                   signed (JWS) head sequence and MAC, to keep outside the database
  audit export --from <iso> --to <iso> --out <file>     one period: <file> (JSON) and <file>.jws (detached JWS)
  audit verify-export <file> --public-key <pem> [--signature <file>.jws]
  audit public-key [--version N] [--out <file>]   the audit-signing public key (PEM) and its thumbprint to pin
  audit redact --seq N --reason <text>            replaces the details of an entry holding card data by a
                                                  tombstone (audited)`;

export async function auditCommand(
  args: readonly string[],
  ctx: KeysContext,
  out: (t: string) => void,
): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'verify':
      return verify(rest, ctx, out);
    case 'checkpoint': {
      const { values } = parseArgs({ args: rest, options: { out: { type: 'string' } }, strict: true });
      if (values.out === undefined) throw new UsageError('audit checkpoint needs --out <file>');
      await convertAuditChainIfNeeded(ctx.knex);
      const { jws, claims } = await createCheckpoint(ctx.knex, () => auditSigner(ctx.knex, ctx.ring), ctx.actor);
      fs.writeFileSync(values.out, `${jws}\n`);
      out(
        `wrote checkpoint of entry ${claims.seq} (${claims.createdAt}, audit-signing v${claims.signingKey.version}, kid ${claims.signingKey.kid}) to ${values.out}`,
      );
      out('keep it outside the database (WORM storage, a ticket, the assessor); verify later with');
      out(`  npm run keys -- audit verify --checkpoint ${values.out} --public-key-thumbprint ${claims.signingKey.kid}`);
      out('with the thumbprint (or the PEM) taken from your own pinned copy, never from the database');
      return 0;
    }
    case 'export':
      return exportPeriod(rest, ctx, out);
    case 'verify-export': {
      const { values, positionals } = parseArgs({
        args: rest,
        options: { 'public-key': { type: 'string' }, signature: { type: 'string' } },
        allowPositionals: true,
        strict: true,
      });
      const [file] = positionals;
      if (file === undefined || values['public-key'] === undefined || positionals.length > 1)
        throw new UsageError('audit verify-export <file> --public-key <pem>');
      const verdict = await verifyAuditExport(
        fs.readFileSync(file),
        fs.readFileSync(values.signature ?? `${file}.jws`, 'utf8'),
        fs.readFileSync(values['public-key'], 'utf8'),
      );
      if (verdict.ok) {
        out(
          `export verifies: ${verdict.entries} entries from ${verdict.from} to ${verdict.to}, signed by audit-signing v${verdict.keyVersion}, chain intact`,
        );
        return 0;
      }
      out(`export does NOT verify: ${verdict.reason}`);
      return 1;
    }
    case 'public-key':
      return publicKey(rest, ctx, out);
    case 'redact': {
      const { values } = parseArgs({
        args: rest,
        options: { seq: { type: 'string' }, reason: { type: 'string' } },
        strict: true,
      });
      if (values.seq === undefined || !/^[1-9]\d{0,15}$/.test(values.seq) || values.reason === undefined) {
        throw new UsageError('audit redact --seq N --reason <text>');
      }
      await convertAuditChainIfNeeded(ctx.knex);
      const entry = await redactAuditEntry(ctx.knex, { seq: Number(values.seq), reason: values.reason }, ctx.actor);
      out(`redacted the details of entry ${values.seq}; the redaction is entry ${entry.seq}; the chain still verifies`);
      return 0;
    }
    default:
      throw new UsageError('audit verify | checkpoint | export | verify-export | public-key | redact');
  }
}

async function verify(args: readonly string[], ctx: KeysContext, out: (t: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: {
      checkpoint: { type: 'string' },
      'public-key': { type: 'string' },
      'public-key-thumbprint': { type: 'string' },
    },
    strict: true,
  });
  const pem = values['public-key'];
  const thumbprint = values['public-key-thumbprint'];
  if ((pem !== undefined || thumbprint !== undefined) && values.checkpoint === undefined) {
    throw new UsageError('--public-key and --public-key-thumbprint go with --checkpoint');
  }
  // The signing key is trusted only from outside the database: a writer could plant one there.
  if (values.checkpoint !== undefined && (pem === undefined) === (thumbprint === undefined)) {
    throw new UsageError(
      'audit verify --checkpoint needs --public-key <pem> or --public-key-thumbprint <t> (one, from your own pinned copy)',
    );
  }
  await convertAuditChainIfNeeded(ctx.knex);
  let ok: boolean;
  let finding: string | undefined;
  let checkpointSeq: number | undefined;
  if (values.checkpoint === undefined) {
    const verdict = await verifyAuditChain(ctx.knex);
    ok = verdict.ok;
    if (verdict.ok) {
      out(
        `audit chain intact: ${verdict.checked} entries, head at ${verdict.headSeq}, every MAC verified` +
          (verdict.redacted > 0 ? `, ${verdict.redacted} redacted entr${verdict.redacted === 1 ? 'y' : 'ies'}` : ''),
      );
      if (verdict.converted !== undefined) {
        // Always said: entries before it were keyed at conversion, from a chain anyone could recompute.
        out(
          `converted from the plain chain at entry ${verdict.converted.seq} on ${verdict.converted.at}: ` +
            `entries 1..${verdict.converted.entries} were written under a plain SHA-256 chain and keyed then`,
        );
      }
    } else {
      finding = verdict.reason;
      out(
        `audit chain BROKEN at entry ${verdict.brokenAtSeq}: ${verdict.reason} (${verdict.checked} entries verified before it)`,
      );
    }
  } else {
    const verdict = await verifyAgainstCheckpoint(
      ctx.knex,
      fs.readFileSync(values.checkpoint, 'utf8'),
      pem !== undefined ? { publicKeyPem: fs.readFileSync(pem, 'utf8') } : { thumbprint: thumbprint as string },
    );
    ok = verdict.ok;
    checkpointSeq = verdict.checkpoint?.seq;
    if (verdict.ok) {
      out(
        `audit chain intact and extends the checkpoint of ${verdict.checkpoint.createdAt} (entry ${verdict.checkpoint.seq}): ` +
          `head at ${verdict.headSeq}, ${verdict.extendedBy} entries since`,
      );
    } else {
      finding = verdict.reason;
      out(`audit chain does NOT extend the checkpoint: ${verdict.reason}`);
    }
  }
  // Every key version's state against the trail's key entries (key-state-reconciliation.ts).
  const keyStates = await checkKeyStates(ctx, out);
  if (keyStates.summary !== undefined) {
    ok = false;
    // A broken chain stays the finding (the first one); the key states are recorded beside it.
    finding ??= keyStates.summary;
  }
  // Reading the trail is an audited action (PCI DSS 10.2.1.3), with what it found.
  try {
    await ctx.knex.transaction((trx) =>
      appendAuditEvent(trx, {
        ...ctx.actor,
        action: 'audit.verified',
        outcome: ok ? 'success' : 'failure',
        resource: 'audit:chain',
        details: {
          ...(finding === undefined ? {} : { finding }),
          ...(keyStates.recorded.length === 0 ? {} : { keyStates: keyStates.recorded }),
          ...(checkpointSeq === undefined ? {} : { checkpointSeq }),
        },
      }),
    );
  } catch (error) {
    out(`(the verification could not be recorded in the trail: ${error instanceof Error ? error.message : 'error'})`);
    return 1;
  }
  return ok ? 0 : 1;
}

/** Every key version's state against the trail (key-state-reconciliation.ts): printed, and what to record. */
async function checkKeyStates(
  ctx: KeysContext,
  out: (t: string) => void,
): Promise<{ summary: string | undefined; recorded: Record<string, unknown>[] }> {
  const findings = await reconcileKeyStates(ctx.knex, { referenceKey: ctx.masterKey });
  if (findings.length === 0) {
    out('key states agree with the audit trail');
    return { summary: undefined, recorded: [] };
  }
  for (const f of findings) out(`KEY STATE TAMPERED ${describeKeyStateFinding(f)}`);
  return {
    summary: `key states contradict the audit trail: ${findings.map(describeKeyStateFinding).join(' | ')}`,
    recorded: findings.map((f) => ({
      key: `${f.purpose}:v${f.version}`,
      rowState: f.rowState,
      trailState: f.trailState,
      problem: f.problem,
    })),
  };
}

async function exportPeriod(args: readonly string[], ctx: KeysContext, out: (t: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: { from: { type: 'string' }, to: { type: 'string' }, out: { type: 'string' } },
    strict: true,
  });
  if (values.from === undefined || values.to === undefined || values.out === undefined) {
    throw new UsageError('audit export needs --from, --to and --out');
  }
  const from = new Date(values.from);
  const to = new Date(values.to);
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime()))
    throw new UsageError('--from and --to must be ISO 8601 dates');
  await convertAuditChainIfNeeded(ctx.knex);
  const result = await exportAudit(ctx.knex, () => auditSigner(ctx.knex, ctx.ring), { from, to }, ctx.actor);
  fs.writeFileSync(values.out, result.document);
  fs.writeFileSync(`${values.out}.jws`, `${result.detachedJws}\n`);
  out(
    `wrote ${result.entries} entries to ${values.out} and its detached signature to ${values.out}.jws (audit-signing v${result.keyVersion})`,
  );
  out(
    `verify offline: npm run keys -- audit verify-export ${values.out} --public-key <audit-signing-v${result.keyVersion}.pem>`,
  );
  return 0;
}

async function publicKey(args: readonly string[], ctx: KeysContext, out: (t: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: { version: { type: 'string' }, out: { type: 'string' } },
    strict: true,
  });
  if (values.version !== undefined && !/^[1-9]\d{0,8}$/.test(values.version)) {
    throw new UsageError('--version must be a positive whole number');
  }
  const row = await auditSigningPublicKey(ctx.knex, values.version === undefined ? undefined : Number(values.version));
  if (row === undefined) throw new UsageError('no such audit-signing version');
  const thumbprint = await publicKeyThumbprint(createPublicKey(row.public_key_pem));
  if (values.out !== undefined) {
    fs.writeFileSync(values.out, row.public_key_pem);
    out(`wrote audit-signing v${row.version} public key to ${values.out}`);
  } else {
    out(row.public_key_pem);
  }
  // Read from the database: pin it out of band now (the assessor's copy, a ticket) and compare later.
  out(`thumbprint (RFC 7638, the checkpoints' and exports' kid): ${thumbprint}`);
  out('pin it outside the database now; verify checkpoints with --public-key-thumbprint against your pinned copy');
  return 0;
}
