/**
 * The HTTP half of the error catalogue (src/http/problem-statuses.ts): every code of the domain
 * catalogue answers one status, the one clients were promised, and the problem+json renderer answers
 * with it. The table below is the promise: a status changes only by editing it on purpose.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import express from 'express';
import { AppError, ERROR_CATALOG, type ErrorCode } from '../../src/errors/app-error.js';
import { problemMiddleware, problemType } from '../../src/http/problem.js';
import { PROBLEM_STATUS, problemStatus } from '../../src/http/problem-statuses.js';
import { createLogger } from '../../src/logging/logger.js';

const CODES_BY_STATUS: Readonly<Record<number, readonly ErrorCode[]>> = {
  308: ['SHOPPER_MERGED'],
  400: ['VALIDATION_FAILED', 'MALFORMED_JSON', 'WEBHOOK_ID_INVALID'],
  401: [
    'WEBHOOK_SIGNATURE_MISSING',
    'WEBHOOK_SIGNATURE_INVALID',
    'WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE',
    'WEBHOOK_BASIC_AUTH_INVALID',
    'TOKEN_MISSING',
    'TOKEN_MALFORMED',
    'TOKEN_EXPIRED',
    'TOKEN_NOT_YET_VALID',
    'TOKEN_CLAIM_INVALID',
    'TOKEN_LIFETIME_TOO_LONG',
    'TOKEN_ISSUED_AT_MISSING',
    'TOKEN_ISSUED_IN_FUTURE',
    'TOKEN_SUBJECT_INVALID',
    'TOKEN_SUBJECT_RESERVED',
    'TOKEN_ALGORITHM_REJECTED',
    'TOKEN_SIGNATURE_INVALID',
    'TOKEN_KEY_UNKNOWN',
    'CLIENT_CERTIFICATE_REQUIRED',
    'CLIENT_CERTIFICATE_UNTRUSTED',
    'CLIENT_CERTIFICATE_EXPIRED',
    'CLIENT_CERTIFICATE_REVOKED',
    'CLIENT_CERTIFICATE_REVOCATIONS_INVALID',
    'UNSEAL_SUBMISSION_INVALID',
  ],
  403: [
    'DETOKENISATION_DISABLED',
    'DUAL_CONTROL_REQUIRED',
    'SINGLE_OPERATOR_REFUSED',
    'APPROVAL_INVALID',
    'APPROVAL_NOT_CONFIRMED',
    'WEBHOOK_PROVIDER_DISABLED',
    'INSUFFICIENT_SCOPE',
  ],
  404: ['ROUTE_NOT_FOUND', 'NOT_FOUND', 'KEY_NOT_FOUND', 'KEY_REQUEST_NOT_FOUND', 'CLIENT_CERTIFICATE_NOT_FOUND'],
  405: ['METHOD_NOT_ALLOWED'],
  409: [
    'CONFLICT',
    'IDENTIFIER_ALREADY_LINKED',
    'CARD_HAS_DIFFERENT_PAN',
    'CARD_HAS_NO_PAN',
    'KEY_OPERATION_INVALID',
    'KEY_VERSION_IN_USE',
    'KEY_INSTANCES_BEHIND',
    'APPROVAL_DUPLICATE',
    'KEY_REQUEST_NOT_PENDING',
    'KEY_REQUEST_MISMATCH',
    'CUSTODIAN_EXISTS',
    'CUSTODIANS_TOO_FEW',
    'KEY_REQUEST_EXPIRED',
    'KEY_REQUEST_TAMPERED',
    'DUAL_CONTROL_TAMPERED',
    'KEY_STATE_TAMPERED',
    'AUDIT_CHAIN_BROKEN',
    'INBOX_EVENT_NOT_REPLAYABLE',
    'CARD_UPDATE_OTHER_SHOPPER',
    'INSUFFICIENT_POINTS',
    'IDEMPOTENCY_KEY_REUSED',
    'MERGE_REQUIRES_ADMIN',
    'MEMBERSHIP_REQUIRED',
    'EXTERNAL_MEMBER_ID_TAKEN',
    'SUBSCRIPTION_EXISTS',
    'EVENT_NOT_REPLAYABLE',
    'SECRET_ROTATION_REPEATED',
    'MASTER_KEY_SPLIT_MISSING',
    'UNSEAL_NONCE_STALE',
    'UNSEAL_SHARE_DUPLICATE',
    'UNSEAL_KEY_MISMATCH',
    'VAULT_NOT_SEALED',
    'RETENTION_NOT_CONFIGURED',
    'CLAIM_PAYMENT_EARNED',
    'INSUFFICIENT_STORE_CREDIT',
    'RETURN_EXCEEDS_REFUNDABLE',
    'RETURN_REFUND_MISMATCH',
  ],
  410: ['CARD_PAN_PURGED'],
  413: ['PAYLOAD_TOO_LARGE'],
  415: ['UNSUPPORTED_MEDIA_TYPE'],
  422: [
    'PAN_INVALID',
    'EXPIRY_INVALID',
    'CARD_NUMBER_NOT_ALLOWED',
    'SENSITIVE_AUTHENTICATION_DATA',
    'REASON_INVALID',
    'CAMPAIGN_DEFINITION_INVALID',
    'CAMPAIGN_EFFECTIVE_IN_PAST',
    'REDEMPTION_ABOVE_LIMIT',
    'CUSTODIAN_INVALID',
    'AUDIT_EXPORT_INVALID',
    'AUDIT_REDACTION_INVALID',
    'CLIENT_CERTIFICATE_REQUEST_INVALID',
    'CLIENT_CERTIFICATE_SCOPE_REFUSED',
    'CARD_TOKEN_UNKNOWN',
    'PAYMENT_CURRENCY_MISMATCH',
    'ADYEN_REFERENCE_INVALID',
    'ADYEN_REFERENCE_IS_CARD_NUMBER',
    'ADYEN_SIGNED_FIELD_SEPARATOR',
    'ADYEN_EVENT_CODE_INVALID',
    'WALLET_PAYMENT_NEEDS_PAR',
    'CARD_UPDATE_UNKNOWN_CARD',
    'WEBHOOK_ENVIRONMENT_MISMATCH',
    'WEBHOOK_TARGET_REFUSED',
    'MASTER_KEY_SPLIT_INVALID',
    'MASTER_KEY_SHARE_INVALID',
    'UNSEAL_SHARE_REFUSED',
    'ADJUSTMENT_CAP_EXCEEDED',
    'ADJUSTMENT_INVALID',
    'TIER_POLICY_INVALID',
  ],
  429: ['TOO_MANY_REQUESTS', 'FIRST_SIGHTING_RATE_LIMITED', 'REDEMPTION_VELOCITY_EXCEEDED'],
  500: ['AUDIT_CHAIN_KEY_UNAVAILABLE', 'RESPONSE_CONTRACT_VIOLATION', 'INTERNAL'],
  503: [
    'AUTH_KEYS_UNAVAILABLE',
    'VAULT_SEALED',
    'NOT_READY',
    'DATABASE_UNAVAILABLE',
    'DATABASE_TIMEOUT',
    'KEY_RING_STALE',
    'MASTER_KEY_UNAVAILABLE',
    'DATA_FOLDER_IN_USE',
    'REFERENCE_KEY_MISSING',
  ],
};

const promised = new Map<string, number>(
  Object.entries(CODES_BY_STATUS).flatMap(([status, codes]) => codes.map((code) => [code, Number(status)] as const)),
);
const codes = Object.keys(ERROR_CATALOG) as ErrorCode[];

describe('HTTP layer: the status of every error code', () => {
  it('when the domain catalogue has a code, then http/ maps it to a status, and to nothing else', () => {
    expect(Object.keys(PROBLEM_STATUS).sort()).to.deep.equal([...codes].sort());
  });

  it('when the table of promised statuses is read, then it lists every code once', () => {
    const listed = Object.values(CODES_BY_STATUS).flat();
    expect(listed.length, 'a code listed twice').to.equal(new Set(listed).size);
    expect([...listed].sort()).to.deep.equal([...codes].sort());
  });

  for (const code of codes) {
    it(`when ${code} is raised, then it answers ${promised.get(code)}`, () => {
      expect(problemStatus(code)).to.equal(promised.get(code));
      expect(problemStatus(new AppError(code))).to.equal(promised.get(code));
    });
  }

  it('when the error reference (docs/reference/errors.md) lists a code under a status, then that is the status it answers', () => {
    const page = fs.readFileSync(new URL('../../docs/reference/errors.md', import.meta.url), 'utf8');
    let checked = 0;
    for (const row of page.matchAll(/^\| (\d{3})\s+\| `([A-Z][A-Z0-9_]+)`/gm)) {
      const code = row[2] as string;
      expect({ code, status: PROBLEM_STATUS[code as ErrorCode] }).to.deep.equal({ code, status: Number(row[1]) });
      checked += 1;
    }
    expect(checked, 'codes read from the error reference').to.equal(codes.length);
  });

  describe('when an error is rendered, then the response and the problem carry the mapped status', () => {
    let server: http.Server;
    let url: string;
    before(async () => {
      const app = express();
      app.get('/errors/:code', (req) => {
        throw new AppError(req.params['code'] as ErrorCode, { detail: 'Rendered by the status table test.' });
      });
      app.use(problemMiddleware(createLogger('silent')));
      server = http.createServer(app);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(() => new Promise<void>((resolve) => server.close(() => resolve())));

    it('then every code answers its promised status, in the header line and in the body', async () => {
      for (const code of codes) {
        const res = await fetch(`${url}/errors/${code}`, { redirect: 'manual' });
        const body = (await res.json()) as Record<string, unknown>;
        expect({ code, status: res.status }).to.deep.equal({ code, status: promised.get(code) });
        expect(body).to.include({
          type: problemType(code),
          title: ERROR_CATALOG[code].title,
          status: promised.get(code),
          code,
        });
      }
    });
  });
});
