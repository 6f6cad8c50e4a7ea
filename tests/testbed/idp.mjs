// Test OpenID Provider on loopback, built on panva's oidc-provider (npm, v9, OpenID-certified).
// Environment: ISSUER, PORT, TLS_KEY, TLS_CERT, SIG_KEY, SIG_CERT, USERS (JSON file, re-read on every
// use so tests can change a user's groups), AT_TTL and RT_TTL (seconds), AUDIENCE,
// SHAPE (default | keycloak | iam | egi: which real IdP the tokens look like, see shapeTokens),
// ROTATE (1: a new refresh token on every refresh, the old one refused), REFRESH_ID_TOKEN (0: refresh
// answers carry no id_token), FAULTS (JSON file, re-read on every request: {"/token": {"status": 503}}
// or {"/token": {"delay_ms": 15000}} to play an IdP in trouble; {"body": "...", "type": "json"} answers
// that text as it is, {"huge_mb": 30} a JSON document that large: a malformed or huge answer), EVENTS (JSON-lines file: one line per
// token endpoint answer, for tests that count refreshes).
import fs from 'node:fs';
import https from 'node:https';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const ISSUER = process.env.ISSUER;
const PORT = Number(process.env.PORT);
const AT_TTL = Number(process.env.AT_TTL || 600);
const RT_TTL = Number(process.env.RT_TTL || 86400);
const AUDIENCE = process.env.AUDIENCE || 'jupyterhub';
const SHAPE = process.env.SHAPE || 'default';
const ROTATE = process.env.ROTATE === '1';
const REFRESH_ID_TOKEN = process.env.REFRESH_ID_TOKEN !== '0';
const users = () => JSON.parse(fs.readFileSync(process.env.USERS, 'utf8'));
const faults = () => { try { return JSON.parse(fs.readFileSync(process.env.FAULTS, 'utf8')); } catch { return {}; } };
const logEvent = (e) => { if (process.env.EVENTS) fs.appendFileSync(process.env.EVENTS, JSON.stringify({ t: Date.now() / 1000, ...e }) + '\n'); };
const SCOPE = 'openid offline_access profile email groups';

// Signing key as a JWK carrying x5c: Ceph RGW 16.x only accepts JWKS keys that have it.
const sigKey = crypto.createPrivateKey(fs.readFileSync(process.env.SIG_KEY));
const x5c = fs.readFileSync(process.env.SIG_CERT, 'utf8').replace(/-----(BEGIN|END) CERTIFICATE-----|\s/g, '');
const jwk = { ...sigKey.export({ format: 'jwk' }), kid: 'sig-1', alg: 'RS256', use: 'sig', x5c: [x5c] };

const grantTypes = ['authorization_code', 'refresh_token', 'client_credentials',
  'urn:ietf:params:oauth:grant-type:device_code'];
const configuration = {
  clients: [
    { client_id: 'jupyterhub', client_secret: 'jupyterhub-secret', redirect_uris: ['http://127.0.0.1/hub/oauth_callback'],
      grant_types: grantTypes, response_types: ['code'], token_endpoint_auth_method: 'client_secret_basic' },
    { client_id: 'sts-wire', client_secret: 'sts-wire-secret', redirect_uris: ['http://127.0.0.1/cb'],
      grant_types: grantTypes, response_types: ['code'], token_endpoint_auth_method: 'client_secret_post' },
    { client_id: 'sts-wire-public', redirect_uris: ['http://127.0.0.1/cb'],
      grant_types: grantTypes, response_types: ['code'], token_endpoint_auth_method: 'none' },
  ],
  jwks: { keys: [jwk] },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', 'wlcg.groups', 'eduperson_entitlement'],
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], email: ['email'], groups: ['groups'] },
  conformIdTokenClaims: false, // scope claims (groups) go into the ID token too
  pkce: { required: () => false },
  ttl: { AccessToken: AT_TTL, IdToken: AT_TTL, RefreshToken: RT_TTL, Interaction: 600, Session: 3600,
    Grant: 86400, AuthorizationCode: 60, ClientCredentials: AT_TTL, DeviceCode: 600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    deviceFlow: { enabled: true },
    // JWT access tokens (RFC 9068), as INDIGO IAM and Keycloak issue them.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:s3',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({ scope: SCOPE, audience: AUDIENCE, accessTokenFormat: 'jwt',
        accessTokenTTL: AT_TTL, jwt: { sign: { alg: 'RS256' } } }),
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const u = token.accountId && users()[token.accountId];
    return u ? { groups: u.groups, preferred_username: token.accountId } : undefined;
  },
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  rotateRefreshToken: () => ROTATE,
  extraParams: ['audience'], // INDIGO IAM's way to ask for an access-token audience
  findAccount: async (ctx, id) => users()[id] && ({
    accountId: id,
    claims: async () => idTokenClaims(id, users()[id]),
  }),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  loadExistingGrant: async (ctx) => ensureGrant(ctx.oidc.provider,
    ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId),
    ctx.oidc.session.accountId, ctx.oidc.client.clientId, ctx.oidc.params?.scope),
  renderError: async (ctx, out) => { ctx.type = 'json'; ctx.body = out; },
};

// First-party clients only: consent is implied, for every scope the client asks for (a scope
// missing from the grant would send the browser back to consent, forever).
async function ensureGrant(provider, grantId, accountId, clientId, requested) {
  const existing = grantId && await provider.Grant.find(grantId);
  const grant = existing || new provider.Grant({ clientId, accountId });
  const scope = [SCOPE, requested || ''].join(' ').trim();
  grant.addOIDCScope(scope);
  grant.addOIDCClaims(['groups', 'preferred_username', 'email', 'name']);
  grant.addResourceScope('urn:s3', scope);
  await grant.save();
  return grant;
}

const provider = new Provider(ISSUER, configuration);
// Any http redirect back to loopback is fine for the test clients (hub ports are picked per run).
provider.Client.prototype.redirectUriAllowed = function (uri) {
  try { const u = new URL(uri); return u.protocol === 'http:' && ['127.0.0.1', 'localhost'].includes(u.hostname); }
  catch { return false; }
};

// --- Shapes of real IdPs --------------------------------------------------------------------------
// oidc-provider issues the tokens; this layer shapes them as each real IdP does and signs them again
// with the same key (JWT access tokens are self-contained: nothing else has to know).
//   default:  access-token aud AUDIENCE; `groups` (plain names) in access token, ID token, userinfo.
//   keycloak: access-token aud `account` (AT_AUD overrides, AT_AUD=- leaves it out), azp, typ Bearer;
//             `groups` as full paths ('/physics') in access token, ID token and userinfo; the groups
//             also as roles in `realm_access.roles`; refresh tokens rotated (ROTATE, on by default).
//   iam:      groups only in the access token's `wlcg.groups` ('/physics'); no aud unless the client
//             asks for one (`audience` in the authorization or token request); ID token and
//             userinfo without groups; a refresh token only with offline_access.
//   egi:      no groups in any token; the userinfo endpoint gives `eduperson_entitlement` URNs
//             (urn:mace:egi.eu:group:<group>:role=member#aai.egi.eu); access-token aud = client id.
// The userinfo endpoint (/me) answers for the provider's own JWT access tokens, as real IdPs' do.
const sigPub = crypto.createPublicKey(sigKey);
const AT_AUD = process.env.AT_AUD;
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const unb64 = (s) => JSON.parse(Buffer.from(s, 'base64url').toString());
const paths = (groups) => (groups || []).map((g) => `/${g}`);
const entitlements = (groups) => (groups || []).map((g) => `urn:mace:egi.eu:group:${g}:role=member#aai.egi.eu`);
const audByCode = new Map(); // authorization code -> audience asked for (iam)
const audByRT = new Map();   // refresh token -> audience asked for (iam), carried over on rotation

function resign(token, reshape) {
  const [h, p] = token.split('.');
  const input = `${h}.${b64(reshape(unb64(p)))}`;
  return `${input}.${crypto.sign('sha256', Buffer.from(input), sigKey).toString('base64url')}`;
}

function verifyOwn(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return null;
  try {
    if (!crypto.verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), sigPub, Buffer.from(parts[2], 'base64url'))) return null;
    const p = unb64(parts[1]);
    return p.iss === ISSUER && p.exp > Date.now() / 1000 ? p : null;
  } catch { return null; }
}

function baseClaims(id, u) {
  return { sub: id, preferred_username: id, name: id, email: u.email || `${id}@example.org` };
}

function idTokenClaims(id, u) {
  const c = baseClaims(id, u);
  if (SHAPE === 'default') c.groups = u.groups;
  if (SHAPE === 'keycloak') c.groups = paths(u.groups);
  return c;
}

function userinfoClaims(id, u) {
  const c = baseClaims(id, u);
  if (SHAPE === 'default') c.groups = u.groups;
  if (SHAPE === 'keycloak') c.groups = paths(u.groups);
  if (SHAPE === 'egi') c.eduperson_entitlement = entitlements(u.groups);
  return c;
}

function setAud(p, aud) {
  if (aud === '-' || aud === undefined || aud === null) delete p.aud; else p.aud = aud;
}

function shapeAccessToken(p, clientId, audience) {
  const u = users()[p.sub];
  const groups = u ? u.groups : [];
  delete p.groups;
  switch (SHAPE) {
    case 'keycloak':
      p.groups = paths(groups);
      p.realm_access = { roles: ['offline_access', 'uma_authorization', 'default-roles-test', ...groups] };
      p.azp = clientId;
      p.typ = 'Bearer';
      setAud(p, AT_AUD ?? 'account');
      break;
    case 'iam':
      p['wlcg.groups'] = paths(groups);
      setAud(p, audience ?? AT_AUD);
      break;
    case 'egi':
      setAud(p, AT_AUD ?? clientId);
      break;
    default:
      if (u) p.groups = groups;
      if (AT_AUD !== undefined) setAud(p, AT_AUD);
  }
  return p;
}

provider.use(async (ctx, next) => {
  const fault = faults()[ctx.path];
  if (fault?.delay_ms) await new Promise((r) => { setTimeout(r, fault.delay_ms); });
  if (fault && (fault.body !== undefined || fault.huge_mb)) {
    logEvent({ path: ctx.path, fault: 'body' });
    ctx.status = fault.status || 200; ctx.type = fault.type || 'json';
    ctx.body = fault.huge_mb ? Buffer.from(`{"pad": "${'x'.repeat(fault.huge_mb * 1048576)}"}`) : fault.body;
    return;
  }
  if (fault?.status) {
    logEvent({ path: ctx.path, fault: fault.status });
    ctx.status = fault.status; ctx.type = 'json'; ctx.body = { error: 'temporarily_unavailable' };
    return;
  }
  if (ctx.path === '/me') {
    const m = (ctx.get('authorization') || '').match(/^Bearer\s+(\S+)$/i);
    if (m && m[1].split('.').length === 3) {
      const p = verifyOwn(m[1]);
      const u = p && users()[p.sub];
      logEvent({ path: '/me', sub: p?.sub, status: u ? 200 : 401 });
      if (!u) { ctx.status = 401; ctx.set('WWW-Authenticate', 'Bearer error="invalid_token"'); ctx.type = 'json'; ctx.body = { error: 'invalid_token' }; return; }
      ctx.type = 'json'; ctx.body = userinfoClaims(p.sub, u);
      return;
    }
    return next();
  }
  await next();
  const loc = ctx.response.get('location');
  if (loc && ctx.oidc?.params?.audience) {
    try { const code = new URL(loc).searchParams.get('code'); if (code) audByCode.set(code, ctx.oidc.params.audience); } catch { /* not a URL */ }
  }
  if (ctx.path !== '/token' || ctx.method !== 'POST') return;
  const body = ctx.oidc?.body || {};
  const clientId = ctx.oidc?.client?.clientId;
  if (ctx.status !== 200 || !ctx.body?.access_token) {
    logEvent({ path: '/token', grant: body.grant_type, client: clientId, status: ctx.status, error: ctx.body?.error });
    return;
  }
  const audience = body.audience || audByCode.get(body.code) || audByRT.get(body.refresh_token);
  if (audience && ctx.body.refresh_token) audByRT.set(ctx.body.refresh_token, audience);
  ctx.body.access_token = resign(ctx.body.access_token, (p) => shapeAccessToken(p, clientId, audience));
  if (body.grant_type === 'refresh_token' && !REFRESH_ID_TOKEN) delete ctx.body.id_token;
  logEvent({ path: '/token', grant: body.grant_type, client: clientId, status: 200,
    sub: unb64(ctx.body.access_token.split('.')[1]).sub, rotated: body.grant_type === 'refresh_token' && ctx.body.refresh_token !== body.refresh_token });
});

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
const readBody = (req) => new Promise((res) => { let b = ''; req.on('data', (c) => { b += c; }); req.on('end', () => res(b)); });
provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.prompt.name === 'consent') {
    const grant = await ensureGrant(provider, details.grantId, details.session.accountId, details.params.client_id,
      details.params.scope);
    await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId: grant.jti || await grant.save() } },
      { mergeWithLastSubmission: true });
    return;
  }
  if (ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = `<html><body><h1>Test IdP login</h1><form method="post" action="/interaction/${esc(details.uid)}">
<input name="login" placeholder="username" autofocus><input name="password" type="password" placeholder="password">
<button type="submit">Sign in</button></form></body></html>`;
    return;
  }
  if (ctx.method === 'POST') {
    const body = Object.fromEntries(new URLSearchParams(await readBody(ctx.req)));
    const u = users()[body.login];
    if (!u || u.password !== body.password) { ctx.status = 401; ctx.type = 'html'; ctx.body = '<p>bad credentials</p>'; return; }
    await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: body.login } }, { mergeWithLastSubmission: false });
    return;
  }
  return next();
});

const server = https.createServer({ key: fs.readFileSync(process.env.TLS_KEY), cert: fs.readFileSync(process.env.TLS_CERT) },
  provider.callback());
server.listen(PORT, '127.0.0.1', () => console.log(`oidc-provider ${ISSUER} listening on 127.0.0.1:${PORT}`));
process.on('SIGTERM', () => { server.close(); process.exit(0); });
