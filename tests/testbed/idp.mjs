// Test OpenID Provider on loopback, built on panva's oidc-provider (npm, v9, OpenID-certified).
// Environment: ISSUER, PORT, TLS_KEY, TLS_CERT, SIG_KEY, SIG_CERT, USERS (JSON file, re-read on every
// use so tests can change a user's groups), AT_TTL and RT_TTL (seconds), AUDIENCE.
import fs from 'node:fs';
import https from 'node:https';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const ISSUER = process.env.ISSUER;
const PORT = Number(process.env.PORT);
const AT_TTL = Number(process.env.AT_TTL || 600);
const RT_TTL = Number(process.env.RT_TTL || 86400);
const AUDIENCE = process.env.AUDIENCE || 'jupyterhub';
const users = () => JSON.parse(fs.readFileSync(process.env.USERS, 'utf8'));
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
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
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
  rotateRefreshToken: () => false,
  findAccount: async (ctx, id) => users()[id] && ({
    accountId: id,
    claims: async () => { const u = users()[id]; return { sub: id, preferred_username: id, name: id,
      email: u.email || `${id}@example.org`, groups: u.groups }; },
  }),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  loadExistingGrant: async (ctx) => ensureGrant(ctx.oidc.provider,
    ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId),
    ctx.oidc.session.accountId, ctx.oidc.client.clientId),
  renderError: async (ctx, out) => { ctx.type = 'json'; ctx.body = out; },
};

// First-party clients only: consent is implied.
async function ensureGrant(provider, grantId, accountId, clientId) {
  if (grantId) return provider.Grant.find(grantId);
  const grant = new provider.Grant({ clientId, accountId });
  grant.addOIDCScope(SCOPE);
  grant.addOIDCClaims(['groups', 'preferred_username', 'email', 'name']);
  grant.addResourceScope('urn:s3', SCOPE);
  await grant.save();
  return grant;
}

const provider = new Provider(ISSUER, configuration);
// Any http redirect back to loopback is fine for the test clients (hub ports are picked per run).
provider.Client.prototype.redirectUriAllowed = function (uri) {
  try { const u = new URL(uri); return u.protocol === 'http:' && ['127.0.0.1', 'localhost'].includes(u.hostname); }
  catch { return false; }
};

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
const readBody = (req) => new Promise((res) => { let b = ''; req.on('data', (c) => { b += c; }); req.on('end', () => res(b)); });
provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.prompt.name === 'consent') {
    const grant = await ensureGrant(provider, details.grantId, details.session.accountId, details.params.client_id);
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
