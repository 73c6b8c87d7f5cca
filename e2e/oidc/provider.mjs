// The OpenID provider the e2e tests run: oidc-provider (pinned in
// package.json) with the device flow (RFC 8628) and its development login
// pages, where any login name and any password sign in and the login name
// becomes the account id. Only loopback.
//
// Configuration is one JSON object in the environment variable
// OIDC_PEER_CONFIG (every field optional):
//
//   host           listen address, 127.0.0.0/8 only (default 127.0.0.1)
//   port           listen port; 0 picks a free one (default 0)
//   redirect_uris  the poolgate client's redirect URIs (authorization code
//                  flow with PKCE); without any, it has the device flow only
//   clients        replaces the default poolgate client entirely
//   groups         {"alice": ["data-science"]}: the groups claim per account
//   overage        account ids that get an Entra-style groups overage
//                  (_claim_names/_claim_sources) instead of groups
//                  (default ["overage"])
//   deviceCodeTTL  seconds a device code lives (default 600)
//   deviceInterval seconds between polls to ask of the device (default:
//                  none sent, so RFC 8628's 5 s applies; Entra sends 5)
//
// Claims land in the ID token (conformIdTokenClaims off): scope profile
// gives name, preferred_username (<id>@example.test) and groups; scope
// email gives email and email_verified.
//
// Prints "ready http://HOST:PORT" on stdout once listening (the issuer),
// logs requests and errors on stderr, and exits on SIGTERM or SIGINT.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';

const cfg = JSON.parse(process.env.OIDC_PEER_CONFIG || '{}');
const host = cfg.host || '127.0.0.1';
if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)) {
  console.error(`refusing to listen on ${host}: loopback (127.0.0.0/8) only`);
  process.exit(2);
}
const groups = cfg.groups || {};
const overage = new Set(cfg.overage || ['overage']);

const log = (...args) => console.error(new Date().toISOString(), ...args);

// The issuer names the port, so the server listens first and the provider
// is made once the port is known.
let handler = (req, res) => { res.statusCode = 503; res.end(); };
const server = createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(cfg.port || 0, host, resolve);
});
const issuer = `http://${host}:${server.address().port}`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'e2e-rs256', alg: 'RS256', use: 'sig' };

const deviceCode = 'urn:ietf:params:oauth:grant-type:device_code';
const redirectUris = cfg.redirect_uris || [];
const clients = cfg.clients || [{
  client_id: 'poolgate',
  client_name: 'poolgate',
  application_type: 'web',
  token_endpoint_auth_method: 'none',
  grant_types: redirectUris.length ? [deviceCode, 'authorization_code'] : [deviceCode],
  response_types: redirectUris.length ? ['code'] : [],
  redirect_uris: redirectUris,
}];

function claimsOf(id) {
  const claims = {
    sub: id,
    name: id.charAt(0).toUpperCase() + id.slice(1),
    preferred_username: `${id}@example.test`,
    email: `${id}@example.test`,
    email_verified: true,
  };
  if (overage.has(id)) {
    // As Entra ID does when a user is in more groups than fit in a token.
    claims._claim_names = { groups: 'src1' };
    claims._claim_sources = { src1: { endpoint: `${issuer}/overage/${encodeURIComponent(id)}/getMemberObjects` } };
  } else {
    claims.groups = groups[id] || [];
  }
  return claims;
}

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username', 'groups'],
    email: ['email', 'email_verified'],
  },
  conformIdTokenClaims: false,
  features: {
    deviceFlow: { enabled: true },
    devInteractions: { enabled: true },
  },
  pkce: { required: () => true },
  ttl: { DeviceCode: cfg.deviceCodeTTL || 600 },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return claimsOf(id); } };
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><head><title>oops! something went wrong</title></head><body><h1>oops! something went wrong</h1><pre id="error">${escape(JSON.stringify(out, null, 2))}</pre></body></html>`;
  },
});

function escape(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// Log every request, and keep the browser on loopback: the built-in
// pages import a web font from the internet, which the tests must not
// reach, so the import is taken out of every HTML page.
provider.use(async (ctx, next) => {
  const start = Date.now();
  await next();
  if (cfg.deviceInterval && ctx.method === 'POST' && ctx.path === '/device/auth' && ctx.body && typeof ctx.body === 'object' && ctx.body.device_code) {
    ctx.body = { ...ctx.body, interval: cfg.deviceInterval };
  }
  if (typeof ctx.body === 'string' && ctx.response.is('html')) {
    ctx.body = ctx.body.replace(/@import url\(https?:[^)]*\);?/g, '');
  }
  log(ctx.method, ctx.path, ctx.status, `${Date.now() - start}ms`);
});

for (const ev of ['server_error', 'grant.error', 'authorization.error', 'device_authorization.error', 'backchannel.error', 'end_session.error']) {
  provider.on(ev, (ctx, err) => log(ev, err?.name, err?.message, err?.error_description || ''));
}
provider.on('grant.success', (ctx) => log('grant.success', ctx.oidc.params?.grant_type));

handler = provider.callback();
process.stdout.write(`ready ${issuer}\n`);

const stop = (sig) => {
  log(`${sig}: stopping`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
