// The EHR's authorization server for the token broker tests and the demo: npm oidc-provider
// (a certified OpenID/OAuth 2 server) configured for SMART Backend Services: the client
// credentials grant with private_key_jwt (ES384/RS384 assertions against each client's
// registered JWKS), token introspection (RFC 7662) for the EHR's nginx, and revocation
// (RFC 7009). Tokens are opaque and kept in memory, so a restart forgets them.
//
// OIDC_PROVIDER_MODULES=<node_modules> node auth_server.mjs CONFIG.json
//   { "host": "127.0.0.1", "port": 3000, "ttl": 30,
//     "clients": [ { "client_id": "...", "scope": "system/Patient.rs ...", "jwks": {...} } ],
//     "introspector": { "client_id": "ehr-nginx", "client_secret": "..." } }
// Prints "ready" once it listens.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// Imported from the directory npm installed it into.
const { default: Provider } = await import(
  pathToFileURL(path.join(process.env.OIDC_PROVIDER_MODULES, 'oidc-provider', 'lib', 'index.js')).href
);

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://${config.host}:${config.port}`;

const clients = config.clients.map((c) => ({
  client_id: c.client_id,
  token_endpoint_auth_method: 'private_key_jwt',
  jwks: c.jwks,
  scope: c.scope,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
}));
clients.push({
  client_id: config.introspector.client_id,
  client_secret: config.introspector.client_secret,
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: [],
  response_types: [],
  redirect_uris: [],
});

const scopes = new Set(config.clients.flatMap((c) => c.scope.split(' ')));

const provider = new Provider(issuer, {
  clients,
  scopes: [...scopes],
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    devInteractions: { enabled: false },
  },
  enabledJWA: {
    clientAuthSigningAlgValues: ['ES384', 'RS384'],
  },
  ttl: { ClientCredentials: config.ttl },
  // No interactive flows here: the client credentials grant has no end-user.
  findAccount: () => undefined,
});

provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description));
provider.on('introspection.error', (ctx, err) => console.error('introspection.error', err.message));
provider.on('revocation.error', (ctx, err) => console.error('revocation.error', err.message));

provider.listen(config.port, config.host, () => console.log('ready'));
