// A real OpenID provider (panva's oidc-provider) for berth's SSO integration tests.
//
//   node provider.mjs CONFIG.json
//
// Binds 127.0.0.1:<port> (0 = ephemeral), plain http; the issuer is
// http://127.0.0.1:PORT. When listening it prints exactly one JSON line on
// stdout, {"issuer":"http://127.0.0.1:PORT"}; every log goes to stderr.
// See README.md for the config shape and the /test/ control endpoints.
//
// The login page (/interaction/:uid) is our own: devInteractions accepts any
// login without a password, so it is disabled and replaced by a minimal page
// with the same form field names (`login`, `password`) that checks the
// password from the config. No page loads anything from outside (the
// library's default device-flow pages import a web font; they are replaced).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { once } from 'node:events';

// stdout carries exactly one line (the issuer); oidc-provider prints its
// notices with console.info, so send console's stdout methods to stderr
// before loading it.
console.log = console.error;
console.info = console.error;
console.debug = console.error;
const { default: Provider } = await import('oidc-provider');

const log = (...args) => console.error('[oidc]', ...args);

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node provider.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const deviceFlow = config.device_flow !== false;
const idTokenTtl = Number(config.id_token_ttl ?? 300);
const accessTokenTtl = Number(config.access_token_ttl ?? 300);

// ---- users (in memory, changed through /test/users/:id) ----------------

/** @type {Map<string, object>} */
const users = new Map(Object.entries(config.users ?? {}).map(([id, u]) => [id, { ...u }]));

function activeUser(id) {
  const u = users.get(id);
  return u && !u.disabled ? u : undefined;
}

function publicUser(id, u) {
  const { password, ...rest } = u;
  return { id, ...rest, disabled: Boolean(u.disabled), groups: u.groups ?? [] };
}

// Looked up on every use: at login, at the code / device_code exchange, at
// each refresh and at userinfo. A disabled or deleted user gives undefined,
// which the library turns into invalid_grant (refresh, code exchange) or
// invalid_token (userinfo). Claims are built from the current state, so a
// group change is visible at the next refresh.
async function findAccount(_ctx, sub) {
  if (!activeUser(sub)) return undefined;
  return {
    accountId: sub,
    async claims() {
      const u = activeUser(sub) ?? {};
      return {
        sub,
        preferred_username: u.preferred_username ?? sub,
        name: u.name ?? sub,
        email: u.email ?? `${sub}@example.com`,
        email_verified: u.email_verified ?? true,
        groups: Array.isArray(u.groups) ? [...u.groups] : [],
      };
    },
  };
}

// ---- clients -------------------------------------------------------------

const clients = (config.clients ?? []).map((c) => {
  const client = { response_types: ['code'], ...c };
  if (!deviceFlow && client.grant_types?.includes(DEVICE_GRANT)) {
    log(`client ${c.client_id}: device flow is off, dropping the device_code grant`);
    client.grant_types = client.grant_types.filter((g) => g !== DEVICE_GRANT);
  }
  return client;
});

// ---- keys: RS256 (used for ID tokens by default) and ES256 ---------------

function jwk(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  const key = privateKey.export({ format: 'jwk' });
  return { ...key, alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}` };
}
const jwks = {
  keys: [
    jwk('rsa', { modulusLength: 2048 }, 'RS256'),
    jwk('ec', { namedCurve: 'P-256' }, 'ES256'),
  ],
};

// ---- pages ---------------------------------------------------------------

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (ch) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[ch]));

const page = (title, body) => `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>${esc(title)}</title>
<style>body{font-family:sans-serif;margin:25px auto;width:300px}input,button{display:block;width:100%;margin:0 0 10px;padding:8px;box-sizing:border-box}.error{color:#b00020}</style>
</head>
<body>
<h1>${esc(title)}</h1>
${body}
</body>
</html>`;

function loginPage(uid, { error, login } = {}) {
  return page('Sign-in', `${error ? `<p class="error" id="error">${esc(error)}</p>\n` : ''}<form autocomplete="off" action="/interaction/${esc(uid)}" method="post">
<input type="hidden" name="prompt" value="login"/>
<input required type="text" name="login" placeholder="Username" value="${esc(login)}" ${login ? '' : 'autofocus'}>
<input required type="password" name="password" placeholder="Password" ${login ? 'autofocus' : ''}>
<button type="submit" class="login login-submit">Sign-in</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort">[ Cancel ]</a></p>`);
}

// ---- the provider ----------------------------------------------------------

function providerConfiguration() {
  return {
    clients,
    jwks,
    findAccount,
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
      // keep the library's defaults
      acr: null, sid: null, auth_time: null, iss: null,
    },
    // Put the scope-granted claims (groups, preferred_username, ...) into the
    // ID token too, not only into userinfo.
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    clientDefaults: {
      grant_types: ['authorization_code'],
      id_token_signed_response_alg: 'RS256',
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    pkce: {
      // S256 is the only method oidc-provider >= 8 supports; make it mandatory.
      required: () => true,
    },
    features: {
      devInteractions: { enabled: false }, // replaced by /interaction/:uid below
      deviceFlow: {
        enabled: deviceFlow,
        userCodeInputSource: async (ctx, form, _out, err) => {
          let msg = '<p>Enter the code displayed on your device</p>';
          if (err && (err.userCode || err.name === 'NoCodeError')) msg = '<p class="error">The code you entered is incorrect. Try again</p>';
          else if (err && err.name === 'AbortedError') msg = '<p class="error">The Sign-in request was interrupted</p>';
          else if (err) msg = '<p class="error">There was an error processing your request</p>';
          ctx.type = 'html';
          ctx.body = page('Device sign-in', `${msg}\n${form}\n<button type="submit" form="op.deviceInputForm">Continue</button>`);
        },
        userCodeConfirmSource: async (ctx, form, client, _deviceInfo, userCode) => {
          ctx.type = 'html';
          ctx.body = page('Confirm Device', `<p><strong>${esc(client.clientName || client.clientId)}</strong></p>
<p>The following code should be displayed on your device: <code id="user_code">${esc(userCode)}</code></p>
${form}
<button autofocus type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" value="yes" name="abort">[ Abort ]</button>`);
        },
        successSource: async (ctx) => {
          ctx.type = 'html';
          ctx.body = page('Sign-in Success', '<p id="device-approved">Your sign-in was successful, you can now close this page.</p>');
        },
      },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          ctx.type = 'html';
          ctx.body = page('Sign out', `${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.type = 'html';
          ctx.body = page('Signed out', '<p>Your sign-out was successful.</p>');
        },
      },
    },
    // A refresh token is issued on authorization_code and device_code grants
    // whenever the client is allowed the refresh_token grant, whether or not
    // offline_access was requested (and so without prompt=consent).
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    // Refresh tokens outlive the provider's browser session (the driver's
    // cookie jar is thrown away after sign-in).
    expiresWithSession: async () => false,
    // Rotate the refresh token on every use; the old one is then consumed and
    // replaying it revokes the whole grant (invalid_grant).
    rotateRefreshToken: true,
    // No consent screen: the grant covers whatever OIDC scopes and claims the
    // request asks for, so login is the only page.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
      if (grant && grant.accountId !== ctx.oidc.account.accountId) grant = undefined;
      if (!grant) {
        grant = new ctx.oidc.provider.Grant({
          accountId: ctx.oidc.account.accountId,
          clientId: ctx.oidc.client.clientId,
        });
      }
      const scope = [...ctx.oidc.requestParamOIDCScopes].join(' ');
      if (scope) grant.addOIDCScope(scope);
      const claims = [...ctx.oidc.requestParamClaims];
      if (claims.length) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    },
    ttl: {
      AccessToken: accessTokenTtl,
      AuthorizationCode: 60,
      ClientCredentials: accessTokenTtl,
      DeviceCode: 600,
      IdToken: idTokenTtl,
      Interaction: 3600,
      RefreshToken: 24 * 3600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
      BackchannelAuthenticationRequest: 600,
      PreAuthorizedCode: 600,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('oops! something went wrong',
        Object.entries(out).map(([k, v]) => `<pre><strong>${esc(k)}</strong>: ${esc(v)}</pre>`).join('\n'));
    },
    clientBasedCORS: () => false,
  };
}

// ---- request handling ------------------------------------------------------

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body, type = 'application/json') {
  res.statusCode = status;
  res.setHeader('Cache-Control', 'no-store');
  if (body === undefined) {
    res.end();
    return;
  }
  res.setHeader('Content-Type', type);
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function isLoopback(req) {
  const a = req.socket.remoteAddress ?? '';
  return a.startsWith('127.') || a === '::1' || a.startsWith('::ffff:127.');
}

// POST /test/users/:id, GET /test/users/:id
async function control(req, res, path) {
  if (!isLoopback(req)) return send(res, 403, { error: 'loopback only' });
  const m = /^\/test\/users\/([^/]+)$/.exec(path);
  if (!m) return send(res, 404, { error: 'not found' });
  const id = decodeURIComponent(m[1]);
  if (req.method === 'GET') {
    const u = users.get(id);
    return u ? send(res, 200, publicUser(id, u)) : send(res, 404, { error: 'no such user' });
  }
  if (req.method !== 'POST') return send(res, 405, { error: 'method not allowed' });
  let body;
  try {
    body = JSON.parse((await readBody(req)) || '{}');
  } catch {
    return send(res, 400, { error: 'body is not JSON' });
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return send(res, 400, { error: 'body must be a JSON object' });
  }
  if (body.groups !== undefined && !Array.isArray(body.groups)) {
    return send(res, 400, { error: 'groups must be an array' });
  }
  if (body.delete) {
    users.delete(id);
    log(`user ${id} deleted`);
  } else if (!users.has(id)) {
    users.set(id, { groups: [], ...body });
    log(`user ${id} created`);
  } else {
    Object.assign(users.get(id), body); // groups replaced, disabled set, ...
    log(`user ${id} updated: ${Object.keys(body).join(', ')}`);
  }
  return send(res, 204);
}

// GET /interaction/:uid, POST /interaction/:uid, GET /interaction/:uid/abort
async function interaction(provider, req, res, path) {
  const m = /^\/interaction\/([^/]+)(\/abort)?$/.exec(path);
  if (!m) return send(res, 404, 'not found', 'text/plain');
  const uid = decodeURIComponent(m[1]);
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    log('interaction lookup failed:', err.message);
    return send(res, 400, page('Sign-in', `<p class="error">${esc(err.message)}</p>`), 'text/html; charset=utf-8');
  }
  if (details.uid !== uid) return send(res, 400, page('Sign-in', '<p class="error">interaction mismatch</p>'), 'text/html; charset=utf-8');

  if (m[2]) {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  const { prompt } = details;
  if (prompt.name === 'consent') {
    // Should not happen (loadExistingGrant grants everything); consent silently.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    if (prompt.details.missingResourceScopes) {
      for (const [ind, scopes] of Object.entries(prompt.details.missingResourceScopes)) grant.addResourceScope(ind, scopes.join(' '));
    }
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }
  if (prompt.name !== 'login') return send(res, 501, `prompt ${prompt.name} not implemented`, 'text/plain');

  const html = (status, opts) => send(res, status, loginPage(uid, opts), 'text/html; charset=utf-8');
  if (req.method === 'GET') return html(200, { login: details.params.login_hint });
  if (req.method !== 'POST') return send(res, 405, 'method not allowed', 'text/plain');

  const form = new URLSearchParams(await readBody(req));
  const login = form.get('login') ?? '';
  const password = form.get('password') ?? '';
  const user = users.get(login);
  const ok = user && typeof user.password === 'string'
    && user.password.length === password.length
    && crypto.timingSafeEqual(Buffer.from(user.password), Buffer.from(password));
  if (!ok) {
    log(`login failed for ${JSON.stringify(login)}`);
    return html(401, { error: 'Invalid username or password.', login });
  }
  if (user.disabled) {
    log(`login refused for disabled ${login}`);
    return html(403, { error: 'This account is disabled.', login });
  }
  log(`login ok for ${login}`);
  return provider.interactionFinished(req, res, {
    login: { accountId: login, amr: ['pwd'] },
  }, { mergeWithLastSubmission: false });
}

// ---- start -----------------------------------------------------------------

let handle = (_req, res) => send(res, 503, { error: 'starting' });
const server = http.createServer((req, res) => {
  Promise.resolve(handle(req, res)).catch((err) => {
    log('handler error:', err);
    if (!res.headersSent) send(res, 500, { error: 'internal error' });
    else res.destroy();
  });
});
server.listen(Number(config.port ?? 0), '127.0.0.1');
await once(server, 'listening');
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, providerConfiguration());
provider.on('server_error', (_ctx, err) => log('server_error:', err));
provider.on('grant.error', (_ctx, err) => log('grant.error:', err.message, err.error_description ?? '', err.error_detail ?? ''));
provider.on('authorization.error', (_ctx, err) => log('authorization.error:', err.message, err.error_description ?? ''));
const callback = provider.callback();

handle = async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  if (path.startsWith('/test/')) return control(req, res, path);
  if (path.startsWith('/interaction/')) return interaction(provider, req, res, path);
  return callback(req, res);
};

// The parent may close its end of stdout after this line: ignore EPIPE.
process.stdout.on('error', () => {});
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
log(`listening, issuer ${issuer}`);

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
