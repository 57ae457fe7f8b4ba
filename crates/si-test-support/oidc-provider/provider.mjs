// A real OpenID provider (the `oidc-provider` package) for the gateway's single
// sign-on tests: authorization code flow with PKCE, ID tokens and JWT access tokens
// for one resource server, signed with RS256, ES256 or EdDSA. The login page is a
// form a test fills in by account id; logging in also grants consent.
//
// Configured by environment variables:
//   PORT       port on 127.0.0.1 to listen on; 0 (the default) picks a free one.
//   USERS      JSON object {accountId: {"preferred_username", "name", "email",
//              "groups": [..], "location"}}. `preferred_username`, `name`, `groups`
//              and `location` are released under the `profile` scope, `email`
//              under `email`, in the ID token as well as from userinfo.
//   CLIENTS    JSON array of clients {"client_id", "client_secret",
//              "redirect_uris": [..], "token_endpoint_auth_method"
//              (default client_secret_basic)}; code flow only, PKCE S256 required.
//   AUDIENCE   the resource server's audience: the `aud` of every access token
//              (default si-gateway).
//   RESOURCE   the resource indicator (RFC 8707) that stands for AUDIENCE; an
//              absolute URI. Default: AUDIENCE if that is one, else
//              `urn:si-audience:AUDIENCE`. It is also the default resource, so
//              every access token is a JWT for AUDIENCE carrying the user's
//              `preferred_username`, `groups` and `location`.
//   ALG        RS256 (default), ES256 or EdDSA: signs ID and access tokens.
//   KEYS_FILE  a private JWKS (JSON). Loaded if it exists; otherwise one key per
//              algorithm (RS256, ES256, EdDSA), each with a fresh kid, is written
//              there. Default: keys.json in the working directory.
//   MINT       1 adds POST /test/mint: a JSON claims object in, a JWS signed with
//              the current ALG key (header alg, kid, typ at+jwt; `?typ=` overrides
//              typ) out, so that tests can hold tokens the provider would not
//              issue, such as expired ones. Off otherwise.
//
// Once it answers it prints two lines on stdout, `resource <RESOURCE>` and then
// `listening <issuer>` (issuer http://127.0.0.1:<port>); its errors and the
// package's warnings go to stderr.
//
// Routes besides the provider's own (discovery at /.well-known/openid-configuration):
//   GET  /interaction/:uid        a login form; a pending consent is granted at once.
//   POST /interaction/:uid/login  form field login=<accountId>: logs in and grants
//                                 what was asked for, 303 back to the authorization
//                                 endpoint; 400 for an unknown account.

import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { exportJWK, generateKeyPair, importJWK, SignJWT } from 'jose';
import Provider from 'oidc-provider';

const ALGS = ['RS256', 'ES256', 'EdDSA'];

function fail(message) {
  console.error(`provider.mjs: ${message}`);
  process.exit(64);
}

function jsonVariable(name, fallback) {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  try {
    return JSON.parse(text);
  } catch (error) {
    return fail(`${name} is not JSON: ${error.message}`);
  }
}

function settings() {
  const alg = process.env.ALG || 'RS256';
  if (!ALGS.includes(alg)) fail(`ALG must be one of ${ALGS.join(', ')}, not ${alg}`);
  const port = Number(process.env.PORT || 0);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`PORT is not a port: ${process.env.PORT}`);
  const users = jsonVariable('USERS', {});
  if (users === null || typeof users !== 'object' || Array.isArray(users)) fail('USERS must be a JSON object');
  const clients = jsonVariable('CLIENTS', []);
  if (!Array.isArray(clients)) fail('CLIENTS must be a JSON array');
  const audience = process.env.AUDIENCE || 'si-gateway';
  const resource = process.env.RESOURCE
    || (URL.parse(audience) ? audience : `urn:si-audience:${audience}`);
  if (!URL.parse(resource)) fail(`RESOURCE must be an absolute URI, not ${resource}`);
  return {
    alg,
    port,
    users,
    clients,
    audience,
    resource,
    keysFile: process.env.KEYS_FILE || 'keys.json',
    mint: process.env.MINT === '1',
  };
}

async function freshKey(alg) {
  const options = alg === 'EdDSA' ? { extractable: true, crv: 'Ed25519' } : { extractable: true };
  const { privateKey } = await generateKeyPair(alg, options);
  return { ...await exportJWK(privateKey), kid: randomUUID(), alg, use: 'sig' };
}

async function loadOrWriteKeys(file) {
  if (existsSync(file)) {
    try {
      return JSON.parse(readFileSync(file, 'utf8'));
    } catch (error) {
      return fail(`KEYS_FILE ${file}: ${error.message}`);
    }
  }
  const jwks = { keys: await Promise.all(ALGS.map(freshKey)) };
  writeFileSync(file, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
  return jwks;
}

function signingKey(jwks, alg) {
  const key = jwks.keys.find((candidate) => candidate.alg === alg && candidate.use !== 'enc');
  if (!key) fail(`KEYS_FILE has no key with "alg": "${alg}"`);
  return key;
}

// What the `profile` scope releases (`email` releases `email`).
const PROFILE = ['preferred_username', 'name', 'groups', 'location'];

function configuration(options, jwks) {
  const { users, clients, audience, resource, alg } = options;
  const user = (accountId) => Object.hasOwn(users, accountId) ? users[accountId] : undefined;
  return {
    clients: clients.map((client) => ({
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...client,
    })),
    jwks,
    clientDefaults: { id_token_signed_response_alg: alg },
    enabledJWA: { idTokenSigningAlgValues: [alg] },
    claims: { openid: ['sub'], profile: PROFILE, email: ['email'] },
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      Grant: 3600,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
    },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    async findAccount(_ctx, accountId) {
      const claims = user(accountId);
      if (!claims) return undefined;
      return { accountId, claims: async () => ({ ...claims, sub: accountId }) };
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => resource,
        // The code exchange yields an access token for the resource even when it
        // does not name one: what an Entra ID or Keycloak client gets.
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx, indicator) {
          if (indicator !== resource) throw new Provider.errors.InvalidTarget();
          return {
            scope: '',
            audience,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    async extraTokenClaims(_ctx, token) {
      const claims = token.accountId ? user(token.accountId) : undefined;
      if (!claims) return undefined;
      const { preferred_username, groups, location } = claims;
      return { preferred_username, groups, location };
    },
  };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function answer(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// Grants everything the authorization request asked for: the OIDC scopes, any
// claims requested by name, and the resource's scopes.
async function grantAll(provider, details, accountId, resource) {
  const { params, grantId } = details;
  const grant = (grantId && await provider.Grant.find(grantId))
    || new provider.Grant({ accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  if (params.claims) {
    const requested = JSON.parse(params.claims);
    grant.addOIDCClaims([
      ...Object.keys(requested.id_token || {}),
      ...Object.keys(requested.userinfo || {}),
    ]);
  }
  const missing = details.prompt?.details?.missingResourceScopes || {};
  for (const [indicator, scopes] of Object.entries(missing)) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  grant.addResourceScope(resource, '');
  return grant.save();
}

async function interaction(provider, options, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return answer(res, 400, 'text/plain', 'interaction mismatch\n');
  if (action === undefined && req.method === 'GET') {
    if (details.prompt.name === 'consent') {
      const grantId = await grantAll(provider, details, details.session.accountId, options.resource);
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    return answer(res, 200, 'text/html; charset=utf-8', `<!doctype html>
<title>Sign in</title>
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Account <input name="login" autofocus></label>
<button type="submit">Sign in</button>
</form>
`);
  }
  if (action === 'login' && req.method === 'POST') {
    const form = new URLSearchParams(await readBody(req));
    const accountId = form.get('login') || '';
    if (!Object.hasOwn(options.users, accountId)) {
      return answer(res, 400, 'text/plain', `unknown account: ${accountId}\n`);
    }
    const grantId = await grantAll(provider, details, accountId, options.resource);
    return provider.interactionFinished(req, res, {
      login: { accountId },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  }
  return answer(res, 405, 'text/plain', 'method not allowed\n');
}

async function mint(options, jwks, req, res, url) {
  let claims;
  try {
    claims = JSON.parse(await readBody(req));
  } catch (error) {
    return answer(res, 400, 'text/plain', `claims are not JSON: ${error.message}\n`);
  }
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) {
    return answer(res, 400, 'text/plain', 'claims must be a JSON object\n');
  }
  const jwk = signingKey(jwks, options.alg);
  const key = await importJWK(jwk, options.alg);
  const typ = url.searchParams.get('typ') || 'at+jwt';
  const token = await new SignJWT(claims)
    .setProtectedHeader({ alg: options.alg, kid: jwk.kid, typ })
    .sign(key);
  return answer(res, 200, 'application/jwt', token);
}

async function route(provider, callback, options, jwks, req, res) {
  const url = new URL(req.url, provider.issuer);
  const parts = url.pathname.split('/');
  if (parts[1] === 'interaction' && parts[2] && parts.length <= 4) {
    return interaction(provider, options, req, res, parts[2], parts[3]);
  }
  if (options.mint && url.pathname === '/test/mint' && req.method === 'POST') {
    return mint(options, jwks, req, res, url);
  }
  return callback(req, res);
}

async function main() {
  const options = settings();
  const jwks = await loadOrWriteKeys(options.keysFile);
  signingKey(jwks, options.alg);
  let handle = (_req, res) => answer(res, 503, 'text/plain', 'starting\n');
  const server = createServer((req, res) => {
    Promise.resolve(handle(req, res)).catch((error) => {
      console.error(error);
      if (!res.headersSent) answer(res, 500, 'text/plain', `${error.message}\n`);
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration(options, jwks));
  provider.on('server_error', (_ctx, error) => console.error('server_error', error));
  const callback = provider.callback();
  handle = (req, res) => route(provider, callback, options, jwks, req, res);
  process.stdout.write(`resource ${options.resource}\nlistening ${issuer}\n`);
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
}

main().catch((error) => fail(error.stack || error.message));
