// OpenID Connect identity provider peer for the control agent's web console
// and CLI sign-in tests, built on oidc-provider (panva) 9.x. It is a test
// fixture, not a deployment: accounts and passwords come from the config, the
// signing key and cookie keys are generated at start, and everything lives in
// memory.
//
// Usage: node tests/peers/oidc_idp.mjs CONFIG_JSON_PATH
//
// CONFIG_JSON_PATH names a JSON document:
//   {
//     "port": 0,                         // 0 = any free port on 127.0.0.1
//     "id_token_alg": "EdDSA",           // or "RS256"; key generated at start
//     "ttl": {"access": 600, "id": 600, "session": 3600},  // optional, seconds
//     "clients": [{"client_id": "warden-console",
//                  "client_secret": "s3cret-value",
//                  "redirect_uris": ["http://127.0.0.1:1234/console/oidc/callback"],
//                  "post_logout_redirect_uris": ["http://127.0.0.1:1234/console/login"],
//                  "device": true}],     // also allow the device authorization grant
//     "accounts": {"alice": {"password": "pw-alice",
//                            "claims": {"preferred_username": "alice",
//                                       "email": "alice@example.com",
//                                       "groups": ["warden-admins"]}}}
//   }
// ttl.session also bounds the Grant (consent) lifetime; a missing ttl entry
// keeps oidc-provider's default (1 h access and ID tokens, 14 d session).
// Optional, for a provider playing a SaaS people connect accounts at:
//   "extra_scopes": ["files.read"],  // scopes beyond the OIDC ones
//   "refresh": true,                 // a refresh token with every code
//                                    // grant, rotated at each use (a used
//                                    // one presented again is refused and
//                                    // ends the grant: reuse detection)
// Introspection (POST /token/introspection, RFC 7662) and revocation
// (POST /token/revocation, RFC 7009) are on for confidential clients.
//
// Once ready, the first (and only) stdout line is
//   listening on http://127.0.0.1:PORT
// and that URL, without a trailing slash, is the issuer. SIGTERM or SIGINT
// stops the server with exit status 0. Errors go to stderr.
//
// Endpoints (oidc-provider defaults unless noted):
//   GET  /.well-known/openid-configuration
//   GET  /jwks                   the signing key generated at start
//   GET  /auth                   authorization code flow; PKCE (S256) is
//                                required for every client, response_type code
//   POST /token                  authorization_code, refresh_token and, for
//                                clients with "device": true,
//                                urn:ietf:params:oauth:grant-type:device_code;
//                                client_secret_basic or client_secret_post
//   GET|POST /me                 userinfo
//   GET|POST /session/end        RP-initiated logout; its page has a submit
//                                button id="logout-confirm" (name logout=yes)
//   POST /device/auth            device authorization (RFC 8628)
//   GET|POST /device             user-code page: input id="user-code", submit
//                                button id="device-submit" (also on the
//                                confirm page; its abort button is
//                                id="device-abort")
//   GET  /interaction/:uid       this fixture: the login form (inputs
//                                username, password, checkbox mfa, button
//                                id="signin"), POSTed to
//   POST /interaction/:uid/login on a wrong password the form again, status
//                                401; consent is granted without a page
//   POST /test/accounts/:id      test-only: a JSON object of claims replacing
//                                those claims of the account; 204, or 404 for
//                                an unknown account
//   GET  /test/stats             test-only: {"logins", "failed_logins",
//                                "authorizations", "tokens", "userinfo",
//                                "logouts", "refreshes", "refresh_refused",
//                                "revocations"} counts
//
// sub is the account id. Scopes: openid, profile (preferred_username, name),
// email (email), groups (groups), offline_access (kept by oidc-provider only
// when the request has prompt=consent, OIDC Core 11; the device flow keeps
// it). Claims are read from the account when asked for, so a claim changed
// through /test/accounts shows on the next userinfo call (conformIdTokenClaims
// keeps profile, email and groups out of code-flow ID tokens). A login
// with the mfa box ticked gets acr urn:warden:test:mfa and amr [pwd, otp],
// otherwise urn:warden:test:pwd and [pwd]; every ID token carries auth_time,
// acr and amr. Logout ends the session (prompt=none then answers
// login_required) and revokes the client's grant, except one holding
// offline_access, whose refresh tokens outlive it (oidc-provider default).

import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import * as crypto from 'node:crypto';
import * as http from 'node:http';

import * as jose from 'jose';
import Provider from 'oidc-provider';

// oidc-provider prints development notices with console.info; stdout belongs
// to the readiness line alone, so route all console chatter to stderr.
for (const method of ['log', 'info', 'debug']) {
  console[method] = (...args) => console.error(...args);
}

const DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';
const ACR_PWD = 'urn:warden:test:pwd';
const ACR_MFA = 'urn:warden:test:mfa';
const ALGS = new Set(['EdDSA', 'RS256']);
const MAX_BODY = 64 * 1024;

function fail(message) {
  console.error(`oidc_idp: ${message}`);
  process.exit(2);
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isStringArray(value) {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

function loadConfig(path) {
  if (!path) fail('usage: node oidc_idp.mjs CONFIG_JSON_PATH');
  let cfg;
  try {
    cfg = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    fail(`cannot read config ${path}: ${err.message}`);
  }
  if (!isObject(cfg)) fail('config must be a JSON object');
  const port = cfg.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail('config.port must be an integer 0..65535');
  const alg = cfg.id_token_alg ?? 'EdDSA';
  if (!ALGS.has(alg)) fail('config.id_token_alg must be "EdDSA" or "RS256"');
  const ttl = cfg.ttl ?? {};
  if (!isObject(ttl)) fail('config.ttl must be an object');
  for (const key of ['access', 'id', 'session']) {
    if (ttl[key] !== undefined && (!Number.isInteger(ttl[key]) || ttl[key] <= 0)) {
      fail(`config.ttl.${key} must be a positive integer (seconds)`);
    }
  }
  if (!Array.isArray(cfg.clients) || cfg.clients.length === 0) fail('config.clients must be a non-empty array');
  for (const c of cfg.clients) {
    if (typeof c?.client_id !== 'string' || typeof c.client_secret !== 'string') {
      fail('each client needs a string client_id and a string client_secret');
    }
    if (!isStringArray(c.redirect_uris)) fail(`client ${c.client_id}: redirect_uris must be an array of strings`);
    if (c.post_logout_redirect_uris !== undefined && !isStringArray(c.post_logout_redirect_uris)) {
      fail(`client ${c.client_id}: post_logout_redirect_uris must be an array of strings`);
    }
    if (c.device !== undefined && typeof c.device !== 'boolean') fail(`client ${c.client_id}: device must be a boolean`);
    if (c.redirect_uris.length === 0 && !c.device) {
      fail(`client ${c.client_id}: needs redirect_uris, or "device": true`);
    }
  }
  if (!isObject(cfg.accounts)) fail('config.accounts must be an object keyed by account id');
  for (const [id, account] of Object.entries(cfg.accounts)) {
    if (typeof account?.password !== 'string') fail(`account ${id}: password must be a string`);
    if (account.claims !== undefined && !isObject(account.claims)) fail(`account ${id}: claims must be an object`);
  }
  return { ...cfg, port, alg, ttl };
}

const config = loadConfig(process.argv[2]);

// Accounts by id; claims are mutable through POST /test/accounts/:id.
const accounts = new Map(Object.entries(config.accounts).map(([id, a]) => [id, {
  password: a.password,
  claims: { ...(a.claims ?? {}) },
}]));

const stats = {
  logins: 0,
  failed_logins: 0,
  authorizations: 0,
  tokens: 0,
  userinfo: 0,
  logouts: 0,
  refreshes: 0,
  refresh_refused: 0,
  revocations: 0,
};

async function signingJwk(alg) {
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  jwk.kid = await jose.calculateJwkThumbprint(jwk);
  jwk.alg = alg;
  jwk.use = 'sig';
  return jwk;
}

function sha256(text) {
  return crypto.createHash('sha256').update(text, 'utf8').digest();
}

function htmlEscape(value) {
  return String(value)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>${htmlEscape(title)}</title>
</head>
<body>
<h1>${htmlEscape(title)}</h1>
${body}
</body>
</html>
`;
}

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, {
    'content-type': type,
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

function sendJson(res, status, value) {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));
}

function sendError(res, status, error, description) {
  sendJson(res, status, { error, error_description: description });
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw Object.assign(new Error('request body too large'), { status: 413 });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function loginForm(uid, { username = '', error } = {}) {
  const action = `/interaction/${encodeURIComponent(uid)}/login`;
  return page('Sign in', `${error ? `<p id="error" role="alert">${htmlEscape(error)}</p>\n` : ''}<form method="post" action="${htmlEscape(action)}" autocomplete="off">
<label for="username">Username</label>
<input type="text" id="username" name="username" value="${htmlEscape(username)}" autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password">
<label><input type="checkbox" id="mfa" name="mfa" value="yes"> Second factor</label>
<button type="submit" id="signin">Sign in</button>
</form>`);
}

// GET /interaction/:uid and POST /interaction/:uid/login.
async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    sendError(res, 400, 'invalid_request', 'interaction does not match the interaction cookie');
    return;
  }
  const { prompt, params } = details;

  if (action === undefined && req.method === 'GET') {
    if (prompt.name === 'login') {
      send(res, 200, 'text/html; charset=utf-8', loginForm(uid));
      return;
    }
    if (prompt.name === 'consent') {
      // Consent is given on the user's behalf: extend (or create) the Grant
      // with everything the request is missing.
      const { accountId } = details.session;
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId, clientId: params.client_id });
      if (!grant) {
        sendError(res, 400, 'invalid_request', 'grant not found');
        return;
      }
      const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
      if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
      if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
      if (missingResourceScopes) {
        for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
      }
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    sendError(res, 400, 'invalid_request', `unsupported prompt ${prompt.name}`);
    return;
  }

  if (action === 'login' && req.method === 'POST') {
    if (prompt.name !== 'login') {
      sendError(res, 400, 'invalid_request', `the interaction prompt is ${prompt.name}, not login`);
      return;
    }
    const form = new URLSearchParams(await readBody(req));
    const username = form.get('username') ?? '';
    const password = form.get('password') ?? '';
    const account = Object.hasOwn(config.accounts, username) ? accounts.get(username) : undefined;
    const ok = account !== undefined
      && crypto.timingSafeEqual(sha256(password), sha256(account.password));
    if (!ok) {
      stats.failed_logins += 1;
      send(res, 401, 'text/html; charset=utf-8', loginForm(uid, { username, error: 'Wrong username or password.' }));
      return;
    }
    const mfa = form.has('mfa');
    stats.logins += 1;
    await provider.interactionFinished(req, res, {
      login: {
        accountId: username,
        acr: mfa ? ACR_MFA : ACR_PWD,
        amr: mfa ? ['pwd', 'otp'] : ['pwd'],
        // A fresh login, so auth_time moves on every time the form is used.
        ts: Math.floor(Date.now() / 1000),
      },
    }, { mergeWithLastSubmission: false });
    return;
  }

  sendError(res, 405, 'invalid_request', 'method not allowed');
}

// Test-only endpoints, answered before the provider sees the request.
async function testEndpoint(req, res, path) {
  if (path === '/test/stats') {
    if (req.method !== 'GET') {
      sendError(res, 405, 'invalid_request', 'method not allowed');
      return;
    }
    sendJson(res, 200, { ...stats });
    return;
  }
  const match = /^\/test\/accounts\/([^/]+)$/.exec(path);
  if (match) {
    if (req.method !== 'POST') {
      sendError(res, 405, 'invalid_request', 'method not allowed');
      return;
    }
    let id;
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      sendError(res, 400, 'invalid_request', 'malformed account id');
      return;
    }
    if (!Object.hasOwn(config.accounts, id)) {
      sendError(res, 404, 'not_found', `unknown account ${id}`);
      return;
    }
    let claims;
    try {
      claims = JSON.parse(await readBody(req));
    } catch (err) {
      sendError(res, err.status ?? 400, 'invalid_request', `body must be a JSON object: ${err.message}`);
      return;
    }
    if (!isObject(claims)) {
      sendError(res, 400, 'invalid_request', 'body must be a JSON object of claims');
      return;
    }
    delete claims.sub;
    Object.assign(accounts.get(id).claims, claims);
    res.writeHead(204, { 'cache-control': 'no-store' });
    res.end();
    return;
  }
  sendError(res, 404, 'not_found', 'unknown test endpoint');
}

function userCodeInputSource(ctx, form, _out, err) {
  let message = 'Enter the code displayed on your device.';
  if (err && (err.userCode || err.name === 'NoCodeError')) message = 'The code you entered is incorrect. Try again.';
  else if (err && err.name === 'AbortedError') message = 'The sign-in request was interrupted.';
  else if (err) message = 'There was an error processing your request.';
  const input = form.replace('type="text" name="user_code"', 'type="text" id="user-code" name="user_code"');
  ctx.body = page('Device sign-in', `<p${err ? ' id="error" role="alert"' : ''}>${htmlEscape(message)}</p>
${input}
<button type="submit" id="device-submit" form="op.deviceInputForm">Continue</button>`);
}

function userCodeConfirmSource(ctx, form, client, _deviceInfo, userCode) {
  const display = client.clientName || client.clientId;
  ctx.body = page('Confirm device', `<p><strong>${htmlEscape(display)}</strong> asks to sign in. The device shows the code
<code id="confirm-user-code">${htmlEscape(userCode)}</code>.</p>
${form}
<button type="submit" id="device-submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" id="device-abort" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`);
}

function logoutSource(ctx, form) {
  ctx.body = page('Sign out', `<p>Sign out from ${htmlEscape(ctx.host)}?</p>
${form}
<button type="submit" id="logout-confirm" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button type="submit" id="logout-cancel" form="op.logoutForm">No, stay signed in</button>`);
}

async function main() {
  const server = http.createServer();
  server.listen(config.port, '127.0.0.1');
  await once(server, 'listening');
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const ttl = {};
  if (config.ttl.access) ttl.AccessToken = config.ttl.access;
  if (config.ttl.id) ttl.IdToken = config.ttl.id;
  if (config.ttl.session) {
    ttl.Session = config.ttl.session;
    ttl.Grant = config.ttl.session;
  }

  const provider = new Provider(issuer, {
    clients: config.clients.map((c) => {
      const code = c.redirect_uris.length > 0;
      return {
        client_id: c.client_id,
        client_secret: c.client_secret,
        // http://127.0.0.1 redirect URIs are fine for web clients in
        // oidc-provider 9 (only the implicit flow insists on https).
        application_type: 'web',
        redirect_uris: [...c.redirect_uris],
        post_logout_redirect_uris: [...(c.post_logout_redirect_uris ?? [])],
        response_types: code ? ['code'] : [],
        grant_types: [
          ...(code ? ['authorization_code'] : []),
          'refresh_token',
          ...(c.device ? [DEVICE_CODE] : []),
        ],
        // client_secret_post is accepted as well: oidc-provider treats the
        // two secret methods as interchangeable.
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: config.alg,
      };
    }),
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    clientDefaults: {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: config.alg,
      token_endpoint_auth_method: 'client_secret_basic',
    },
    responseTypes: ['code'],
    jwks: { keys: [await signingJwk(config.alg)] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', ...(config.extra_scopes ?? [])],
    ...(config.refresh ? {
      issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
      rotateRefreshToken: () => true,
    } : {}),
    claims: {
      acr: null,
      amr: null,
      auth_time: null,
      iss: null,
      sid: null,
      // auth_time, acr and amr in every ID token (oidc-provider otherwise
      // adds them only when max_age, acr_values or a claims request asks).
      openid: ['sub', 'auth_time', 'acr', 'amr'],
      profile: ['preferred_username', 'name'],
      email: ['email'],
      groups: ['groups'],
    },
    acrValues: [ACR_PWD, ACR_MFA],
    findAccount: (_ctx, id) => {
      if (!Object.hasOwn(config.accounts, id)) return undefined;
      return {
        accountId: id,
        // Read when the claims are asked for, so changes show at once.
        claims: () => ({ ...structuredClone(accounts.get(id).claims), sub: id }),
      };
    },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: true, logoutSource },
      deviceFlow: { enabled: true, userCodeInputSource, userCodeConfirmSource },
      introspection: { enabled: true },
      revocation: { enabled: true },
    },
    interactions: {
      url: (_ctx, interactionRecord) => `/interaction/${interactionRecord.uid}`,
    },
    ttl,
    renderError: (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  provider.on('authorization_code.saved', () => { stats.authorizations += 1; });
  provider.on('grant.success', (ctx) => {
    stats.tokens += 1;
    if (ctx.oidc?.params?.grant_type === 'refresh_token') stats.refreshes += 1;
  });
  provider.on('grant.error', (ctx) => {
    if (ctx.oidc?.params?.grant_type === 'refresh_token') stats.refresh_refused += 1;
  });
  provider.on('end_session.success', () => { stats.logouts += 1; });
  provider.on('server_error', (_ctx, err) => {
    console.error('oidc_idp: server_error', err);
  });

  provider.use(async (ctx, next) => {
    await next();
    if (
      ctx.path === '/me'
      && (ctx.method === 'GET' || ctx.method === 'POST')
      && ctx.status === 200
    ) {
      stats.userinfo += 1;
    }
    if (ctx.path === '/token/revocation' && ctx.method === 'POST' && ctx.status === 200) {
      stats.revocations += 1;
    }
  });

  const callback = provider.callback();
  server.on('request', (req, res) => {
    const { pathname } = new URL(req.url, issuer);
    let handler;
    if (pathname.startsWith('/test/')) {
      handler = testEndpoint(req, res, pathname);
    } else {
      const match = /^\/interaction\/([^/]+)(?:\/(login))?$/.exec(pathname);
      if (!match) {
        callback(req, res);
        return;
      }
      handler = interaction(provider, req, res, match[1], match[2]);
    }
    handler.catch((err) => {
      if (res.headersSent) {
        console.error('oidc_idp: error after the response started', err);
        res.destroy();
        return;
      }
      const status = err.statusCode ?? err.status ?? 500;
      if (status >= 500) console.error('oidc_idp: request failed', err);
      sendError(res, status, err.error ?? 'server_error', err.error_description ?? err.message);
    });
  });

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
  console.error('oidc_idp: failed to start:', err);
  process.exit(1);
});
