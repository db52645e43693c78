/**
 * Attacks on who the caller is: forged and broken bearer tokens (each with its exact 401 code), a
 * replayed webhook outside the tolerance, and HTTP request smuggling over a raw socket.
 */
import { createHmac } from 'node:crypto';
import net from 'node:net';
import { expect } from 'chai';
import { exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import type { ErrorCode } from '../../src/errors/app-error.js';
import { TEST_AUDIENCE, TEST_ISSUER, signToken, testIssuer } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { paymentId, platformEvent, postPlatform } from '../support/webhooks.js';

type Json = Record<string, unknown>;

const b64url = (value: string | Buffer): string => Buffer.from(value).toString('base64url');

/** A compact JWS written by hand, so that every header and claim can be anything an attacker likes. */
async function es256(header: Json, claims: Json, key: CryptoKey): Promise<string> {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  // WebCrypto's ECDSA signature is r || s, exactly the JWS ES256 encoding.
  const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, Buffer.from(input));
  return `${input}.${b64url(Buffer.from(signature))}`;
}

function hs256(header: Json, claims: Json, secret: string): string {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

function claims(overrides: Json = {}): Json {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: TEST_ISSUER,
    aud: TEST_AUDIENCE,
    sub: 'attacker',
    iat: now,
    exp: now + 300,
    scope: 'loyalty:admin',
    ...overrides,
  };
}

interface Keys {
  readonly issuerKey: CryptoKey;
  readonly issuerKid: string;
  readonly publicJwk: JWK;
  readonly strangerKey: CryptoKey;
  readonly strangerJwk: JWK;
}

interface Attack {
  readonly name: string;
  readonly token: (keys: Keys) => Promise<string> | string;
  readonly code: ErrorCode;
}

const attacks: readonly Attack[] = [
  {
    name: 'alg "none" with an empty signature',
    token: () => `${b64url('{"alg":"none","typ":"JWT"}')}.${b64url(JSON.stringify(claims()))}.`,
    code: 'TOKEN_ALGORITHM_REJECTED',
  },
  {
    name: 'alg "none" with a signature left in place',
    token: async ({ issuerKey, issuerKid }) => {
      const signed = await es256({ alg: 'ES256', kid: issuerKid }, claims(), issuerKey);
      return `${b64url(`{"alg":"none","kid":"${issuerKid}"}`)}.${signed.split('.').slice(1).join('.')}`;
    },
    code: 'TOKEN_ALGORITHM_REJECTED',
  },
  {
    name: 'HS256 keyed with the public JWK as JSON (HS/RS confusion)',
    token: ({ publicJwk, issuerKid }) => hs256({ alg: 'HS256', kid: issuerKid }, claims(), JSON.stringify(publicJwk)),
    code: 'TOKEN_ALGORITHM_REJECTED',
  },
  {
    name: 'HS256 keyed with the public key coordinate x',
    token: ({ publicJwk, issuerKid }) => hs256({ alg: 'HS256', kid: issuerKid }, claims(), String(publicJwk.x)),
    code: 'TOKEN_ALGORITHM_REJECTED',
  },
  {
    name: 'an algorithm outside the allow-list (ES512)',
    token: ({ issuerKey, issuerKid }) => es256({ alg: 'ES512', kid: issuerKid }, claims(), issuerKey),
    code: 'TOKEN_ALGORITHM_REJECTED',
  },
  {
    name: 'kid path traversal (../../etc/passwd)',
    token: ({ issuerKey }) => es256({ alg: 'ES256', kid: '../../etc/passwd' }, claims(), issuerKey),
    code: 'TOKEN_KEY_UNKNOWN',
  },
  {
    name: "kid SQL injection (' or 1=1 --)",
    token: ({ issuerKey }) => es256({ alg: 'ES256', kid: "' or 1=1 --" }, claims(), issuerKey),
    code: 'TOKEN_KEY_UNKNOWN',
  },
  {
    name: 'a very long kid (4,000 characters, token under 8 KB)',
    token: ({ issuerKey }) => es256({ alg: 'ES256', kid: 'k'.repeat(4_000) }, claims(), issuerKey),
    code: 'TOKEN_KEY_UNKNOWN',
  },
  {
    name: 'expired (exp two minutes ago, beyond the 30 s tolerance)',
    token: () => signToken({ scope: 'loyalty:admin', expiresIn: -120 }),
    code: 'TOKEN_EXPIRED',
  },
  {
    name: 'not yet valid (nbf in an hour)',
    token: () => signToken({ scope: 'loyalty:admin', notBefore: 3_600 }),
    code: 'TOKEN_NOT_YET_VALID',
  },
  {
    name: 'wrong audience',
    token: () => signToken({ scope: 'loyalty:admin', audience: 'another-service' }),
    code: 'TOKEN_CLAIM_INVALID',
  },
  {
    name: 'wrong issuer',
    token: () => signToken({ scope: 'loyalty:admin', issuer: 'https://evil.example/' }),
    code: 'TOKEN_CLAIM_INVALID',
  },
  {
    name: 'no subject',
    token: ({ issuerKey, issuerKid }) =>
      es256({ alg: 'ES256', kid: issuerKid }, { ...claims(), sub: undefined }, issuerKey),
    code: 'TOKEN_CLAIM_INVALID',
  },
  {
    name: 'no expiry',
    token: ({ issuerKey, issuerKid }) =>
      es256({ alg: 'ES256', kid: issuerKid }, { ...claims(), exp: undefined }, issuerKey),
    code: 'TOKEN_CLAIM_INVALID',
  },
  {
    name: 'an unknown key (fresh key pair, unknown kid)',
    token: ({ strangerKey }) => es256({ alg: 'ES256', kid: 'stranger-1' }, claims(), strangerKey),
    code: 'TOKEN_KEY_UNKNOWN',
  },
  {
    name: 'an unknown key under the trusted kid',
    token: ({ strangerKey, issuerKid }) => es256({ alg: 'ES256', kid: issuerKid }, claims(), strangerKey),
    code: 'TOKEN_SIGNATURE_INVALID',
  },
  {
    name: 'an unknown key under the trusted kid, with that key embedded as a jwk header',
    token: ({ strangerKey, strangerJwk, issuerKid }) =>
      es256({ alg: 'ES256', kid: issuerKid, jwk: strangerJwk }, claims(), strangerKey),
    code: 'TOKEN_SIGNATURE_INVALID',
  },
  {
    name: 'claims changed after signing (scope raised)',
    token: async ({ issuerKey, issuerKid }) => {
      const [header, , signature] = (
        await es256({ alg: 'ES256', kid: issuerKid }, claims({ scope: 'tokens:read' }), issuerKey)
      ).split('.');
      return `${header}.${b64url(JSON.stringify(claims({ scope: 'tokens:detokenise loyalty:admin' })))}.${signature}`;
    },
    code: 'TOKEN_SIGNATURE_INVALID',
  },
  {
    name: 'oversized (more than 8 KB, validly signed)',
    token: () => signToken({ scope: 'loyalty:admin', extraClaims: { padding: 'p'.repeat(9_000) } }),
    code: 'TOKEN_MALFORMED',
  },
  { name: 'two parts only', token: () => `${b64url('{"alg":"ES256"}')}.${b64url('{}')}`, code: 'TOKEN_MALFORMED' },
  { name: 'characters outside base64url', token: () => 'eyJhbGciOi$$.e30.c2ln', code: 'TOKEN_MALFORMED' },
  { name: 'base64url that is not JSON', token: () => 'abc.def.ghi', code: 'TOKEN_MALFORMED' },
  {
    name: 'a crit header naming an extension the service does not implement',
    token: ({ issuerKey, issuerKid }) =>
      es256(
        { alg: 'ES256', kid: issuerKid, crit: ['urn:example:must-understand'], 'urn:example:must-understand': true },
        claims(),
        issuerKey,
      ),
    code: 'TOKEN_MALFORMED',
  },
  {
    name: 'a shopper_ref claim that is not a shopper reference',
    token: () => signToken({ scope: 'loyalty:read', shopperRef: "shp_' or 1=1 --" }),
    code: 'TOKEN_CLAIM_INVALID',
  },
  {
    name: 'a shopper_ref claim that is a card number',
    token: () => signToken({ scope: 'loyalty:read', shopperRef: '4111111111111111' }),
    code: 'TOKEN_CLAIM_INVALID',
  },
  {
    name: 'the scope claim as an array',
    token: () => signToken({ extraClaims: { scope: ['loyalty:admin', 'tokens:detokenise'] } }),
    code: 'TOKEN_CLAIM_INVALID',
  },
];

describe('Abuse: attacks on authentication', function () {
  this.timeout(60_000);
  let svc: TestService;
  let keys: Keys;

  before(async () => {
    svc = await startTestService();
    const issuer = await testIssuer();
    const stranger = await generateKeyPair('ES256', { extractable: true });
    keys = {
      issuerKey: issuer.privateKey,
      issuerKid: issuer.kid,
      publicJwk: issuer.publicJwk,
      strangerKey: stranger.privateKey,
      strangerJwk: await exportJWK(stranger.publicKey),
    };
  });
  after(() => svc?.close());

  it('when a genuine token is sent, then GET /v1/whoami answers 200 (the attacks below fail for their own reason)', async () => {
    const res = await svc.request('GET', '/v1/whoami', {
      token: await es256({ alg: 'ES256', kid: keys.issuerKid }, claims(), keys.issuerKey),
    });
    expect(res.status, res.text).to.equal(200);
    expect(res.body.subject).to.equal('attacker');
  });

  describe('forged and broken bearer tokens: 401 with the exact code and a Bearer challenge', () => {
    for (const attack of attacks) {
      it(`when the token is ${attack.name}, then 401 ${attack.code}`, async () => {
        const token = await attack.token(keys);
        const res = await svc.request('GET', '/v1/whoami', { token });
        expect(res.status, res.text).to.equal(401);
        expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
        expect(res.body.code).to.equal(attack.code);
        expect(res.headers.get('www-authenticate')).to.equal('Bearer error="invalid_token"');
        // An admin-only operation refuses it the same way: the failure is the token, not the scope.
        const admin = await svc.request('GET', '/v1/admin/webhooks/inbox', { token });
        expect(admin.status).to.equal(401);
        expect(admin.body.code).to.equal(attack.code);
      });
    }
  });

  describe('webhook replay', () => {
    async function inboxKeys(): Promise<string[]> {
      const res = await svc.request('GET', '/v1/admin/webhooks/inbox?provider=platform&limit=200', {
        token: await signToken({ scope: 'loyalty:admin' }),
      });
      expect(res.status, res.text).to.equal(200);
      return (res.body.items as { eventKey: string }[]).map((item) => item.eventKey);
    }

    for (const [name, offsetMs] of [
      ['301 s old', -301_000],
      ['301 s in the future', 301_000],
    ] as const) {
      it(`when a correctly signed platform delivery is ${name}, then 401 WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE and nothing is stored`, async () => {
        const id = `msg_replay_${offsetMs}_${Date.now().toString(36)}`;
        const event = platformEvent({ paymentId: paymentId('replay'), card: { pan: '4111111111111111' } });
        const res = await postPlatform(svc, event, { id, timestamp: new Date(Date.now() + offsetMs) });
        expect(res.status, res.text).to.equal(401);
        expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
        expect(res.body.code).to.equal('WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE');
        expect(await inboxKeys()).not.to.include(id);

        // The same delivery signed now is accepted: the refusal above was the timestamp alone.
        const fresh = await postPlatform(svc, event, { id });
        expect(fresh.status, fresh.text).to.equal(200);
        expect(await inboxKeys()).to.include(id);
      });
    }
  });

  describe('request smuggling over a raw socket', () => {
    let token: string;
    before(async () => {
      token = await signToken({ scope: 'tokens:write', subject: 'smuggler' });
    });

    /** Writes the bytes, then collects everything the server sends until it closes or goes quiet. */
    function exchange(bytes: string): Promise<{ text: string; closed: boolean }> {
      const { port } = new URL(svc.url);
      return new Promise((resolve, reject) => {
        const socket = net.connect(Number(port), '127.0.0.1');
        const chunks: Buffer[] = [];
        let closed = false;
        const finish = (): void => resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
        const quiet = setTimeout(() => {
          socket.destroy();
          finish();
        }, 1_500);
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.on('error', reject);
        socket.on('close', () => {
          closed = true;
          clearTimeout(quiet);
          finish();
        });
        socket.write(bytes);
      });
    }

    const statusLines = (text: string): string[] => text.match(/HTTP\/1\.[01] \d{3}/g) ?? [];
    const smuggled = (): string =>
      `GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n\r\n`;

    it('when two requests are pipelined honestly, then both are answered (the detection below works)', async () => {
      const { text } = await exchange(`${smuggled()}${smuggled()}`);
      expect(statusLines(text)).to.deep.equal(['HTTP/1.1 200', 'HTTP/1.1 200']);
    });

    const attacks: [string, (hidden: string) => string][] = [
      [
        'Content-Length and Transfer-Encoding: chunked together (CL.TE)',
        (hidden) => {
          const body = `0\r\n\r\n${hidden}`;
          return `POST /v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`;
        },
      ],
      [
        'Transfer-Encoding: chunked before a Content-Length that covers the hidden request (TE.CL)',
        (hidden) => {
          const body = `${(hidden.length + 2).toString(16)}\r\n{}${hidden}\r\n0\r\n\r\n`;
          return `POST /v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n${body}`;
        },
      ],
      [
        'two conflicting Content-Length headers',
        (hidden) =>
          `POST /v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: ${2 + hidden.length}\r\n\r\n{}${hidden}`,
      ],
      [
        'an obfuscated Transfer-Encoding (chunked, identity) with a Content-Length',
        (hidden) => {
          const body = `0\r\n\r\n${hidden}`;
          return `POST /v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked, identity\r\n\r\n${body}`;
        },
      ],
    ];
    for (const [name, build] of attacks) {
      it(`when a request has ${name}, then it is refused with 400 or the connection closed, and the hidden request is not answered`, async () => {
        const { text, closed } = await exchange(build(smuggled()));
        const lines = statusLines(text);
        expect(lines.length, text).to.be.at.most(1);
        if (lines.length === 1) expect(lines[0], text).to.equal('HTTP/1.1 400');
        else expect(closed, 'no answer and the connection left open').to.equal(true);
        expect(text).not.to.contain('smuggler');
        expect(closed, 'the connection must not stay open for more requests').to.equal(true);
      });
    }
  });
});
