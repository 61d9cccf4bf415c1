// A real Better Auth OAuth 2.1 / OpenID Connect provider (Node, in-memory database) for
// starlette-betterauth's access-token examples and integration tests: better-auth with the
// jwt and bearer plugins and @better-auth/oauth-provider.
//
//   npm ci && node oauth-server.mjs
//
// Configured through environment variables:
//
//   PORT                    port to listen on; 0 picks a free one          (default 3000)
//   BETTER_AUTH_URL         public base URL                                (default http://127.0.0.1:<actual port>)
//   BETTER_AUTH_SECRET      secret that signs cookies and encrypts keys    (default: a DEV-ONLY value)
//   BASE_PATH               Better Auth's basePath                         (default /api/auth)
//   JWT_ALG                 EdDSA | ES256 | ES512 | RS256 | PS256          (default EdDSA)
//   RESOURCES               comma-separated resource identifiers (RFC 8707) the provider issues
//                           JWT access tokens for                          (default http://127.0.0.1:8000)
//   SCOPES                  comma-separated scopes besides openid, profile, email and
//                           offline_access                                 (default reports:read,reports:write)
//   DEV_ENDPOINTS           "1" enables the DEVELOPMENT-ONLY /dev/* endpoints
//   LOG_LEVEL               Better Auth's log level                        (default warn)
//
// stdout carries exactly one line, a JSON object, once the server is listening:
//   {"ready":true,"url":"http://127.0.0.1:41234","issuer":"http://127.0.0.1:41234/api/auth",...}
// Every other log line goes to stderr.
//
// DEV_ENDPOINTS=1 adds POST /dev/oauth-clients, which registers an OAuth client owned by the
// signed-in caller (session cookie, or Authorization: Bearer <session token>; the body is
// the admin create-client body: redirect_uris, grant_types, token_endpoint_auth_method,
// skip_consent, dpop_bound_access_tokens, client_credentials_scopes, ...) and answers its
// client_id and client_secret. NEVER enable it on a server that holds real users.

import http from "node:http";

import { oauthProvider } from "@better-auth/oauth-provider";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { fromNodeHeaders, toNodeHandler } from "better-auth/node";
import { bearer } from "better-auth/plugins/bearer";
import { jwt } from "better-auth/plugins/jwt";

// Keep stdout for the single ready line.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

const HOST = "127.0.0.1";

function fail(message) {
  console.error(`[oauth-server] ${message}`);
  process.exit(2);
}

function env(name, fallback = undefined) {
  const value = process.env[name];
  return value === undefined || value.trim() === "" ? fallback : value.trim();
}

function list(name, fallback) {
  const value = env(name, fallback);
  return value ? value.split(",").map((s) => s.trim()).filter(Boolean) : [];
}

function stripSlash(url) {
  return url.replace(/\/+$/, "");
}

const PORT = Number(env("PORT", "3000"));
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) fail(`PORT must be an integer 0-65535, got ${process.env.PORT}`);

// DEVELOPMENT ONLY: this default secret is public. Set BETTER_AUTH_SECRET for anything real.
const DEV_ONLY_SECRET = "dev-only-insecure-secret-do-not-use-in-production-0123456789";
const SECRET = env("BETTER_AUTH_SECRET", DEV_ONLY_SECRET);
if (SECRET === DEV_ONLY_SECRET) {
  console.error("[oauth-server] WARNING: using the built-in DEVELOPMENT-ONLY secret; set BETTER_AUTH_SECRET");
}

const BASE_PATH = "/" + env("BASE_PATH", "/api/auth").replace(/^\/+|\/+$/g, "");
const KEY_PAIR_CONFIGS = {
  EdDSA: { alg: "EdDSA", crv: "Ed25519" },
  ES256: { alg: "ES256" },
  ES512: { alg: "ES512" },
  RS256: { alg: "RS256", modulusLength: 2048 },
  PS256: { alg: "PS256", modulusLength: 2048 },
};
const JWT_ALG = env("JWT_ALG", "EdDSA");
const keyPairConfig = KEY_PAIR_CONFIGS[JWT_ALG];
if (!keyPairConfig) fail(`JWT_ALG must be one of ${Object.keys(KEY_PAIR_CONFIGS).join(", ")}, got ${JWT_ALG}`);
const RESOURCES = list("RESOURCES", "http://127.0.0.1:8000");
const SCOPES = ["openid", "profile", "email", "offline_access", ...list("SCOPES", "reports:read,reports:write")];
const DEV_ENDPOINTS = env("DEV_ENDPOINTS") === "1";

let state = null; // { auth, authHandler, baseURL }

const server = http.createServer((req, res) => {
  if (!state) {
    res.writeHead(503, { "content-type": "application/json" }).end('{"message":"starting"}');
    return;
  }
  handle(req, res).catch((error) => {
    console.error("[oauth-server] unhandled error:", error);
    if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
    res.end('{"message":"Internal Server Error"}');
  });
});

server.on("error", (error) => fail(`cannot listen on ${HOST}:${PORT}: ${error.message}`));

server.listen(PORT, HOST, () => {
  const port = server.address().port;
  const baseURL = stripSlash(env("BETTER_AUTH_URL", `http://${HOST}:${port}`));
  state = createAuth(baseURL);
  const apiBase = `${baseURL}${BASE_PATH === "/" ? "" : BASE_PATH}`;
  const ready = {
    ready: true,
    url: baseURL,
    port,
    alg: JWT_ALG,
    basePath: BASE_PATH,
    issuer: apiBase,
    jwksUrl: `${apiBase}/jwks`,
    discoveryUrl: `${apiBase}/.well-known/oauth-authorization-server`,
    resources: RESOURCES,
    scopes: SCOPES,
    devEndpoints: DEV_ENDPOINTS,
  };
  process.stdout.write(JSON.stringify(ready) + "\n");
});

function createAuth(baseURL) {
  const auth = betterAuth({
    baseURL,
    basePath: BASE_PATH,
    secret: SECRET,
    database: memoryAdapter({
      user: [],
      session: [],
      account: [],
      verification: [],
      jwks: [],
      oauthClient: [],
      oauthResource: [],
      oauthClientResource: [],
      oauthRefreshToken: [],
      oauthAccessToken: [],
      oauthConsent: [],
      oauthClientAssertion: [],
    }),
    emailAndPassword: { enabled: true },
    rateLimit: { enabled: false },
    telemetry: { enabled: false },
    logger: {
      level: env("LOG_LEVEL", "warn"),
      log: (level, message, ...args) => console.error(`[better-auth ${level}]`, message, ...args),
    },
    // The provider signs its JWTs (access and ID tokens) with the jwt plugin's keys.
    plugins: [
      jwt({ jwks: { keyPairConfig } }),
      bearer(),
      oauthProvider({
        loginPage: "/sign-in",
        consentPage: "/consent",
        scopes: SCOPES,
        resources: RESOURCES,
        enforcePerClientResources: false,
        // Any signed-in user may register clients here (a development server).
        clientPrivileges: () => true,
        // The harness drives many flows per second from one address.
        rateLimit: { token: false, authorize: false, introspect: false, revoke: false, register: false, userinfo: false },
      }),
    ],
  });
  return { auth, authHandler: toNodeHandler(auth), baseURL };
}

async function handle(req, res) {
  const path = new URL(req.url, "http://x").pathname;
  if (path === "/healthz") return sendJSON(res, 200, { ok: true });
  if (path === "/dev" || path.startsWith("/dev/")) {
    if (!DEV_ENDPOINTS) return sendJSON(res, 404, { message: "Not Found" });
    return handleDev(req, res, path);
  }
  await state.authHandler(req, res);
}

function sendJSON(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

async function readJSON(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString("utf8").trim();
  if (!text) return {};
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

// ===========================================================================
// DEVELOPMENT-ONLY ENDPOINTS (DEV_ENDPOINTS=1).
// ===========================================================================

async function handleDev(req, res, path) {
  if (req.method !== "POST") return sendJSON(res, 405, { message: "Method Not Allowed" });
  if (req.headers.origin !== undefined) return sendJSON(res, 403, { message: "Origin not allowed" });
  const body = await readJSON(req);
  if (body === null) return sendJSON(res, 400, { message: "Body must be a JSON object" });
  if (path === "/dev/oauth-clients") {
    try {
      // The client belongs to the signed-in caller (session cookie or bearer session token).
      const client = await state.auth.api.adminCreateOAuthClient({ body, headers: fromNodeHeaders(req.headers) });
      return sendJSON(res, 200, client);
    } catch (error) {
      return sendJSON(res, error?.statusCode ?? 400, { message: String(error?.message ?? error), body: error?.body });
    }
  }
  return sendJSON(res, 404, { message: "Not Found" });
}

function shutdown(signal) {
  console.error(`[oauth-server] ${signal}: shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
