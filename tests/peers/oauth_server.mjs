// OAuth 2.0 authorization server peer for the gateway's integration tests,
// built on oidc-provider (panva) 9.x. It is a test fixture, not a deployment.
//
// Usage: node tests/peers/oauth_server.mjs CONFIG_JSON_PATH
//
// CONFIG_JSON_PATH names a JSON document:
//   {
//     "port": 0,                       // 0 = any free port on 127.0.0.1
//     "ttl": 5,                        // access token lifetime, seconds
//     "clients": [{"client_id": "...", "client_secret": "...",
//                  "grant_types": ["client_credentials",
//                                  "urn:ietf:params:oauth:grant-type:token-exchange"]}],
//     "resources": {"http://127.0.0.1:1234/mcp": {"scope": "tools"}},
//     "subject": {"issuer": "https://idp.example",
//                 "audience": "http://127.0.0.1/gw/mcp",
//                 "jwks": {"keys": [...]}}
//   }
//
// Once ready, the first (and only) stdout line is
//   listening on http://127.0.0.1:PORT
// and that URL, without a trailing slash, is the issuer. SIGTERM or SIGINT
// stops the server with exit status 0. Errors go to stderr.
//
// Endpoints (oidc-provider defaults unless noted):
//   GET  /.well-known/openid-configuration
//   GET  /jwks                   the Ed25519 (EdDSA) key generated at start
//   POST /token                  client_credentials (RFC 6749 4.4, RFC 8707)
//                                and token exchange (RFC 8693); clients
//                                authenticate with client_secret_basic or
//                                client_secret_post
//   POST /token/introspection
//   GET  /stats                  test-only: {"client_credentials": N,
//                                "token_exchange": M}, successful issuances
//
// Every access token is a JWT (typ at+jwt) signed with EdDSA whose aud is the
// requested resource. Token exchange verifies the subject token against
// config.subject and issues a token whose sub is the subject's sub, with
// act.sub = the calling client (RFC 8693 section 4.1) and the subject's
// tenant claim copied when present.

import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import * as crypto from 'node:crypto';
import * as http from 'node:http';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';

// oidc-provider prints development notices with console.info; stdout belongs
// to the readiness line alone, so route all console chatter to stderr.
for (const method of ['log', 'info', 'debug']) {
  console[method] = (...args) => console.error(...args);
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const SUBJECT_TOKEN_TYPES = new Set([ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE]);

function fail(message) {
  console.error(`oauth_server: ${message}`);
  process.exit(2);
}

function loadConfig(path) {
  if (!path) fail('usage: node oauth_server.mjs CONFIG_JSON_PATH');
  let cfg;
  try {
    cfg = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    fail(`cannot read config ${path}: ${err.message}`);
  }
  const port = cfg.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail('config.port must be an integer 0..65535');
  if (!Number.isInteger(cfg.ttl) || cfg.ttl <= 0) fail('config.ttl must be a positive integer (seconds)');
  if (!Array.isArray(cfg.clients)) fail('config.clients must be an array');
  for (const c of cfg.clients) {
    if (typeof c?.client_id !== 'string' || typeof c.client_secret !== 'string' || !Array.isArray(c.grant_types)) {
      fail('each client needs string client_id, string client_secret and a grant_types array');
    }
  }
  if (!cfg.resources || typeof cfg.resources !== 'object' || Array.isArray(cfg.resources)) {
    fail('config.resources must be an object keyed by resource URL');
  }
  const { subject } = cfg;
  if (typeof subject?.issuer !== 'string' || typeof subject.audience !== 'string' || !Array.isArray(subject.jwks?.keys)) {
    fail('config.subject needs string issuer, string audience and a jwks {"keys": [...]}');
  }
  return { ...cfg, port };
}

const config = loadConfig(process.argv[2]);
const ttl = config.ttl;

// Resource servers known to this AS (RFC 8707 resource indicators). Each gets
// JWT access tokens signed with the provider's EdDSA key.
const resources = new Map(Object.entries(config.resources).map(([id, rs]) => [id, {
  scope: typeof rs?.scope === 'string' ? rs.scope : '',
  audience: id,
  accessTokenTTL: ttl,
  accessTokenFormat: 'jwt',
  jwt: { sign: { alg: 'EdDSA' } },
}]));

function resourceServerInfo(identifier) {
  const info = resources.get(identifier);
  if (!info) throw new errors.InvalidTarget(`unknown resource ${identifier}`);
  return { ...info, jwt: { sign: { ...info.jwt.sign } } };
}

const subjectKeys = jose.createLocalJWKSet(config.subject.jwks);

// Extra JWT claims for token-exchange tokens, handed to extraTokenClaims
// (oidc-provider recomputes token.extra from that hook when it saves a token).
const delegationClaims = new WeakMap();

const stats = { client_credentials: 0, token_exchange: 0 };

async function signingJwk() {
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  jwk.kid = await jose.calculateJwkThumbprint(jwk);
  jwk.alg = 'EdDSA';
  jwk.use = 'sig';
  return jwk;
}

function asList(value) {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

function rejectSubject(reason) {
  const err = new errors.InvalidGrant(reason);
  err.error_description = `subject_token rejected: ${reason}`;
  return err;
}

// RFC 8693 token exchange. Registered via provider.registerGrantType, so it
// runs after client authentication and the client's grant_types check.
async function tokenExchange(provider, ctx) {
  const { params, client } = ctx.oidc;

  for (const name of ['subject_token', 'subject_token_type']) {
    if (!params[name]) throw new errors.InvalidRequest(`missing required parameter '${name}'`);
  }
  if (!SUBJECT_TOKEN_TYPES.has(params.subject_token_type)) {
    throw new errors.InvalidRequest('unsupported subject_token_type');
  }
  if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest('unsupported requested_token_type');
  }

  // `resource` and `audience` both name the target service; together they
  // must resolve to exactly one configured resource.
  const targets = new Set([...asList(params.resource), ...asList(params.audience)]);
  if (targets.size !== 1) {
    throw new errors.InvalidTarget('exactly one resource or audience must be requested');
  }
  const [target] = targets;
  const info = resourceServerInfo(target);

  let subject;
  try {
    ({ payload: subject } = await jose.jwtVerify(params.subject_token, subjectKeys, {
      issuer: config.subject.issuer,
      audience: config.subject.audience,
      requiredClaims: ['exp', 'sub'],
    }));
  } catch (err) {
    throw rejectSubject(err.code ? `${err.code}: ${err.message}` : 'malformed token');
  }
  if (typeof subject.sub !== 'string' || !subject.sub) throw rejectSubject('sub must be a non-empty string');

  const allowed = new Set(info.scope.split(' ').filter(Boolean));
  const scope = [...ctx.oidc.requestParamScopes].filter((s) => allowed.has(s)).join(' ') || undefined;

  // A Grant ties the subject (accountId) and this client to the resource
  // scope, the same shape the built-in grants produce.
  const grant = new provider.Grant({ accountId: subject.sub, clientId: client.clientId });
  if (scope) grant.addResourceScope(target, scope);
  const grantId = await grant.save();

  // accountId becomes the JWT `sub` (the jwt format falls back to the client
  // id only when there is no accountId).
  const token = new provider.AccessToken({
    accountId: subject.sub,
    client,
    grantId,
    gty: TOKEN_EXCHANGE,
    scope,
    resourceServer: new provider.ResourceServer(target, info),
  });
  const extra = { act: { sub: client.clientId } };
  if (subject.tenant !== undefined) extra.tenant = subject.tenant;
  delegationClaims.set(token, extra);

  ctx.oidc.entity('AccessToken', token);
  const accessToken = await token.save();

  ctx.body = {
    access_token: accessToken,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: token.tokenType,
    expires_in: token.expiration,
    ...(scope ? { scope } : {}),
  };
}

async function main() {
  const server = http.createServer();
  server.listen(config.port, '127.0.0.1');
  await once(server, 'listening');
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const provider = new Provider(issuer, {
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: [...c.grant_types],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    clientDefaults: {
      grant_types: [],
      response_types: [],
      id_token_signed_response_alg: 'EdDSA',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    jwks: { keys: [await signingJwk()] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    findAccount: (_ctx, accountId) => ({ accountId, claims: () => ({ sub: accountId }) }),
    extraTokenClaims: (_ctx, token) => delegationClaims.get(token),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // No implicit audience: a token request without `resource` would
        // otherwise get an opaque token, so insist on an explicit one.
        defaultResource: (_ctx, _client, oneOf) => {
          if (oneOf) return oneOf;
          throw new errors.InvalidTarget('a resource parameter naming a configured resource is required');
        },
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, identifier) => resourceServerInfo(identifier),
      },
    },
    ttl: {
      AccessToken: ttl,
      ClientCredentials: ttl,
      Grant: ttl,
    },
    renderError: (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  provider.registerGrantType(
    TOKEN_EXCHANGE,
    (ctx) => tokenExchange(provider, ctx),
    ['subject_token', 'subject_token_type', 'requested_token_type', 'resource', 'audience', 'scope'],
    ['resource', 'audience'],
  );

  provider.on('grant.success', (ctx) => {
    const grantType = ctx.oidc.params.grant_type;
    if (grantType === 'client_credentials') stats.client_credentials += 1;
    else if (grantType === TOKEN_EXCHANGE) stats.token_exchange += 1;
  });
  provider.on('server_error', (_ctx, err) => {
    console.error('oauth_server: server_error', err);
  });

  provider.use(async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path === '/stats') {
      ctx.set('cache-control', 'no-store');
      ctx.body = { ...stats };
      return;
    }
    await next();
    // oidc-provider reports a grant type missing from the client's
    // grant_types as invalid_request; RFC 6749 section 5.2 names that
    // unauthorized_client.
    if (
      ctx.path === '/token'
      && ctx.status === 400
      && ctx.body?.error === 'invalid_request'
      && ctx.body.error_description === 'requested grant type is not allowed for this client'
    ) {
      ctx.body = { ...ctx.body, error: 'unauthorized_client' };
    }
  });

  server.on('request', provider.callback());

  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);

  process.stdout.write(`listening on ${issuer}\n`);
}

main().catch((err) => {
  console.error('oauth_server: failed to start:', err);
  process.exit(1);
});
