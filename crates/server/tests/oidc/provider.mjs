// A real OpenID Provider (oidc-provider 9, a certified implementation) for fieldvault-server's
// tests only: HTTPS on 127.0.0.1, one confidential native client, dev login and consent pages
// (any login name signs in, sub = that name), and test-only admin endpoints that make the
// provider lie the way a compromised or broken provider would. Started by the Rust harness
// (crates/server/tests/it/idp.rs); see README.md here.
//
//   node provider.mjs --cert CERT.pem --key KEY.pem --port 0 \
//     --client-id ID --client-secret-file FILE
//
// Prints `READY https://127.0.0.1:PORT` (the issuer, exactly) once it listens.
//
// Admin endpoints (no authentication: a loopback test provider, never deployed):
//   POST /__test/mode {"mode": "none" | one of MODES}   how the provider answers from now on
//   POST /__test/accounts/SUB {"groups": [...], "disabled": bool}
//   GET  /__test/state                                   mode, accounts, published key ids

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    cert: { type: 'string' },
    key: { type: 'string' },
    port: { type: 'string', default: '0' },
    'client-id': { type: 'string' },
    'client-secret-file': { type: 'string' },
  },
});
for (const name of ['cert', 'key', 'client-id', 'client-secret-file']) {
  if (!args[name]) {
    process.stderr.write(`provider.mjs: --${name} is required\n`);
    process.exit(2);
  }
}

// How the provider answers. `none` is honest; every other mode rewrites one kind of answer.
const MODES = new Set([
  'none',
  'other_issuer', // id_token iss changed, signed with the real key
  'other_audience', // id_token aud changed, signed with the real key
  'expired', // id_token iat and exp more than an hour in the past
  'future_iat', // id_token iat an hour ahead
  'alg_none', // header alg none, empty signature
  'hmac_public_key', // HS256 keyed with the real public key's SPKI PEM (key confusion)
  'unknown_key', // signed by an RSA key that no JWKS publishes (its own kid)
  'rotate', // a new key, published from now on beside the old one, signs from now on
  'wrong_nonce', // id_token nonce changed, signed with the real key
  'fixed_jti', // every id_token carries the same jti, signed with the real key
  'replay', // the previous honest id_token again
  'oversized', // a properly signed id_token over 1 MiB
  'lying_discovery', // discovery's issuer is not the URL it was fetched from
  'no_id_token', // the token answer without id_token
  'garbage', // the token endpoint answers 200 with a body that is not JSON
]);

let mode = 'none';
/** sub -> { groups: string[], disabled: boolean } */
const accounts = new Map();
/** The last id_token the provider issued honestly (before any rewriting), for `replay`. */
let lastHonestIdToken;

function newRsaKey(kid) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
  const publicJwk = { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
  return { kid, privateKey, publicKey, jwk, publicJwk };
}

// The provider's own key, made at start so this script can re-sign tampered tokens with it.
const realKey = newRsaKey(`real-${crypto.randomBytes(4).toString('hex')}`);
// Keys added by `rotate`, newest last; published beside the real key from then on.
const rotatedKeys = [];
// A key no JWKS ever publishes.
const strangerKey = newRsaKey(`stranger-${crypto.randomBytes(4).toString('hex')}`);

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function decodeJwt(jwt) {
  const [h, p] = jwt.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString('utf8')),
  };
}

function encodeJwt(header, payload, sign) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  return `${input}.${sign(Buffer.from(input, 'ascii'))}`;
}

function signRs256(key, header, payload) {
  return encodeJwt({ ...header, alg: 'RS256', kid: key.kid }, payload, (input) =>
    b64url(crypto.sign('sha256', input, key.privateKey)),
  );
}

// Rewrites an honest id_token as the current mode says.
function tamper(idToken) {
  const { header, payload } = decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'other_issuer':
      return signRs256(realKey, header, { ...payload, iss: 'https://other-issuer.invalid' });
    case 'other_audience':
      return signRs256(realKey, header, { ...payload, aud: 'someone-else' });
    case 'expired':
      return signRs256(realKey, header, { ...payload, iat: now - 7200, exp: now - 3700, auth_time: now - 7200 });
    case 'future_iat':
      return signRs256(realKey, header, { ...payload, iat: now + 3600, exp: now + 7200 });
    case 'alg_none': {
      const { kid: _kid, ...rest } = header;
      return encodeJwt({ ...rest, alg: 'none' }, payload, () => '');
    }
    case 'hmac_public_key': {
      const pem = realKey.publicKey.export({ type: 'spki', format: 'pem' });
      return encodeJwt({ ...header, alg: 'HS256', kid: realKey.kid }, payload, (input) =>
        b64url(crypto.createHmac('sha256', pem).update(input).digest()),
      );
    }
    case 'unknown_key':
      return signRs256(strangerKey, header, payload);
    case 'rotate':
      return signRs256(rotatedKeys.at(-1), header, payload);
    case 'wrong_nonce':
      return signRs256(realKey, header, { ...payload, nonce: b64url(crypto.randomBytes(32)) });
    case 'fixed_jti':
      // Every token carries the same jti (otherwise honest, this sign-in's nonce kept): the
      // second one is a replayed identifier.
      return signRs256(realKey, header, { ...payload, jti: 'the-same-jti-every-time' });
    case 'oversized':
      // 1.5 MiB of base64url text: the JWT is well over 1 MiB, and properly signed.
      return signRs256(realKey, header, { ...payload, padding: b64url(crypto.randomBytes(1179648)) });
    default:
      return idToken;
  }
}

async function readText(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 65536) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function readJson(req) {
  const text = await readText(req);
  return text ? JSON.parse(text) : {};
}

// The server must exist before the provider (the issuer names the port it got), so the
// request handler is installed once both are known.
let handler = (_req, res) => {
  res.writeHead(503).end();
};
const server = https.createServer(
  { cert: fs.readFileSync(args.cert), key: fs.readFileSync(args.key) },
  (req, res) => handler(req, res),
);
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
const issuer = `https://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: args['client-id'],
      // From a file, never the command line (which every process on the machine can read).
      client_secret: fs.readFileSync(args['client-secret-file'], 'utf8').trim(),
      // native: an http://127.0.0.1 redirect URI matches whatever port the request names
      // (RFC 8252 section 7.3); the registered URI's own port is ignored.
      application_type: 'native',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
  ],
  responseTypes: ['code'],
  jwks: { keys: [realKey.jwk] },
  // oidc-provider 9 knows S256 only; required for every client, not only public ones.
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'offline_access'],
  claims: {
    openid: ['sub', 'groups'],
    profile: ['preferred_username'],
  },
  // Put the granted scopes' claims (preferred_username, groups) in the ID token itself, not
  // only behind the userinfo endpoint.
  conformIdTokenClaims: false,
  // A refresh token whenever the client may refresh and offline_access was granted (the
  // default rule, spelled out; oidc-provider drops offline_access unless prompt=consent).
  issueRefreshToken: async (_ctx, client, code) =>
    client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  features: {
    devInteractions: { enabled: true },
  },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  async findAccount(_ctx, sub) {
    const account = accounts.get(sub) ?? { groups: [], disabled: false };
    if (account.disabled) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, preferred_username: sub, groups: [...account.groups] };
      },
    };
  },
});

// Test-only admin endpoints and the rewriting of answers.
provider.use(async (ctx, next) => {
  if (ctx.path.startsWith('/__test/')) {
    try {
      if (ctx.method === 'GET' && ctx.path === '/__test/state') {
        ctx.body = {
          mode,
          accounts: Object.fromEntries(accounts),
          keys: [realKey.kid, ...rotatedKeys.map((k) => k.kid)],
        };
        return;
      }
      if (ctx.method === 'POST' && ctx.path === '/__test/mode') {
        const body = await readJson(ctx.req);
        if (!MODES.has(body.mode)) {
          ctx.status = 400;
          ctx.body = { error: `unknown mode ${JSON.stringify(body.mode)}`, modes: [...MODES] };
          return;
        }
        if (body.mode === 'rotate') {
          rotatedKeys.push(newRsaKey(`rotated-${rotatedKeys.length + 1}-${crypto.randomBytes(4).toString('hex')}`));
        }
        mode = body.mode;
        ctx.body = { mode };
        return;
      }
      const match = /^\/__test\/accounts\/([^/]+)$/u.exec(ctx.path);
      if (ctx.method === 'POST' && match) {
        const sub = decodeURIComponent(match[1]);
        const body = await readJson(ctx.req);
        const groups = body.groups ?? [];
        if (!Array.isArray(groups) || !groups.every((g) => typeof g === 'string')) {
          ctx.status = 400;
          ctx.body = { error: 'groups must be an array of strings' };
          return;
        }
        accounts.set(sub, { groups, disabled: body.disabled === true });
        ctx.body = { sub, ...accounts.get(sub) };
        return;
      }
      ctx.status = 404;
      ctx.body = { error: 'no such test endpoint' };
    } catch (err) {
      ctx.status = 400;
      ctx.body = { error: String(err.message ?? err) };
    }
    return;
  }

  // A disabled account's login ends the sign-in with access_denied on the redirect back
  // (left alone, oidc-provider would render a 500 page when it cannot find the account).
  if (ctx.method === 'POST' && /^\/interaction\/[^/]+$/u.test(ctx.path)) {
    const raw = await readText(ctx.req);
    const form = new URLSearchParams(raw);
    if (form.get('prompt') === 'login' && accounts.get(form.get('login'))?.disabled) {
      await provider.interactionFinished(
        ctx.req,
        ctx.res,
        { error: 'access_denied', error_description: 'this account is disabled' },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    // The body is read: hand it on the way oidc-provider takes an upstream parser's.
    ctx.req.body = raw;
  }

  await next();

  if (ctx.path === '/.well-known/openid-configuration' && ctx.status === 200 && mode === 'lying_discovery') {
    ctx.body = { ...ctx.body, issuer: `${issuer}/lying` };
  } else if (ctx.path === '/jwks' && ctx.status === 200) {
    ctx.body = { keys: [...ctx.body.keys, ...rotatedKeys.map((k) => k.publicJwk)] };
  } else if (ctx.path === '/token' && ctx.method === 'POST' && ctx.status === 200 && ctx.body) {
    const honest = ctx.body.id_token;
    if (mode === 'garbage') {
      ctx.type = 'application/json';
      ctx.body = '<html><body>502 Bad Gateway</body></html>';
      return;
    }
    if (mode === 'no_id_token') {
      const { id_token: _dropped, ...rest } = ctx.body;
      ctx.body = rest;
    } else if (mode === 'replay') {
      if (!lastHonestIdToken) {
        ctx.status = 500;
        ctx.body = { error: 'server_error', error_description: 'replay mode: no earlier id_token to replay' };
        return;
      }
      ctx.body = { ...ctx.body, id_token: lastHonestIdToken };
    } else if (honest) {
      ctx.body = { ...ctx.body, id_token: tamper(honest) };
    }
    if (honest && mode !== 'replay') lastHonestIdToken = honest;
  }
});

handler = provider.callback();
process.stdout.write(`READY ${issuer}\n`);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}

// The harness holds stdin open; when it goes away (even killed), so does the provider.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
