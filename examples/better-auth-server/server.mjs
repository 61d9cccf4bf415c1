// A real Better Auth server (Node, in-memory database) for starlette-betterauth's
// examples and integration tests.
//
//   npm ci && node server.mjs
//
// Everything is configured through environment variables (see README.md):
//
//   PORT                    port to listen on; 0 picks a free one       (default 3000)
//   BETTER_AUTH_URL         public base URL                             (default http://127.0.0.1:<actual port>)
//   BETTER_AUTH_SECRET      secret that encrypts private keys and signs cookies (default: a DEV-ONLY value)
//   BASE_PATH               Better Auth's basePath                       (default /api/auth)
//   JWT_ALG                 EdDSA | ES256 | ES512 | RS256 | PS256        (default EdDSA)
//   JWT_ISSUER              `iss` of issued JWTs                         (default: the base URL)
//   JWT_AUDIENCE            `aud`; comma-separated for a list            (default: the base URL)
//   JWT_EXPIRATION          e.g. "15m", "1h", "2s"                       (default 15m)
//   JWKS_PATH               key set path under BASE_PATH                 (default /jwks)
//   JWKS_ROTATION_INTERVAL  seconds a signing key lives                  (default: unset, no rotation)
//   JWKS_GRACE_PERIOD       seconds an expired key stays in the JWKS     (default: 2592000, 30 days)
//   TRUSTED_ORIGINS         comma-separated browser origins allowed to call with credentials (CORS)
//   ADMIN_EMAILS            comma-separated emails that get role "admin" at sign-up
//   DEV_ENDPOINTS           "1" enables the DEVELOPMENT-ONLY /dev/* endpoints
//   RATE_LIMIT              "1" enables Better Auth's rate limiter       (default off)
//   LOG_LEVEL               Better Auth's log level                      (default warn)
//   REDIS_URL               Redis for Better Auth's secondaryStorage    (default: unset, none)
//   REDIS_KEY_PREFIX        its key prefix (see secondary-storage.mjs)   (default better-auth:)
//
// stdout carries exactly one line, a JSON object, once the server is listening:
//   {"ready":true,"url":"http://127.0.0.1:41234","port":41234,"alg":"EdDSA","jwksUrl":"http://127.0.0.1:41234/api/auth/jwks",...}
// Every other log line goes to stderr.

import http from "node:http";

import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { fromNodeHeaders, toNodeHandler } from "better-auth/node";
import { admin } from "better-auth/plugins/admin";
import { bearer } from "better-auth/plugins/bearer";
import { createJwk, jwt } from "better-auth/plugins/jwt";

import { secondaryStorageFromEnv } from "./secondary-storage.mjs";

// Keep stdout for the single ready line: anything that logs through console.log /
// console.info / console.debug (Better Auth's logger included) goes to stderr.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

const HOST = "127.0.0.1";

function fail(message) {
  console.error(`[better-auth-server] ${message}`);
  process.exit(2);
}

function env(name, fallback = undefined) {
  const value = process.env[name];
  return value === undefined || value.trim() === "" ? fallback : value.trim();
}

function list(name) {
  const value = env(name);
  return value ? value.split(",").map((s) => s.trim()).filter(Boolean) : [];
}

function seconds(name) {
  const value = env(name);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) fail(`${name} must be a number of seconds, got ${JSON.stringify(value)}`);
  return n;
}

function stripSlash(url) {
  return url.replace(/\/+$/, "");
}

const PORT = Number(env("PORT", "3000"));
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) fail(`PORT must be an integer 0-65535, got ${process.env.PORT}`);

// DEVELOPMENT ONLY. This default secret is public (it is in this file): anyone who
// knows it can forge session cookies and decrypt the stored private signing keys.
// Always set BETTER_AUTH_SECRET (at least 32 random characters) for anything real.
const DEV_ONLY_SECRET = "dev-only-insecure-secret-do-not-use-in-production-0123456789";
const SECRET = env("BETTER_AUTH_SECRET", DEV_ONLY_SECRET);
if (SECRET === DEV_ONLY_SECRET) {
  console.error("[better-auth-server] WARNING: using the built-in DEVELOPMENT-ONLY secret; set BETTER_AUTH_SECRET");
}

const BASE_PATH = "/" + env("BASE_PATH", "/api/auth").replace(/^\/+|\/+$/g, "");

// jwks.keyPairConfig for each supported algorithm.
const KEY_PAIR_CONFIGS = {
  EdDSA: { alg: "EdDSA", crv: "Ed25519" },
  ES256: { alg: "ES256" }, // P-256
  ES512: { alg: "ES512" }, // P-521
  RS256: { alg: "RS256", modulusLength: 2048 },
  PS256: { alg: "PS256", modulusLength: 2048 },
};
const JWT_ALG = env("JWT_ALG", "EdDSA");
const keyPairConfig = KEY_PAIR_CONFIGS[JWT_ALG];
if (!keyPairConfig) fail(`JWT_ALG must be one of ${Object.keys(KEY_PAIR_CONFIGS).join(", ")}, got ${JWT_ALG}`);

const JWKS_PATH = env("JWKS_PATH", "/jwks");
if (!JWKS_PATH.startsWith("/")) fail("JWKS_PATH must start with '/'");
const JWT_EXPIRATION = env("JWT_EXPIRATION", "15m");
// The time-string grammar Better Auth accepts (better-auth/dist/utils/time.mjs); a
// leading "-" gives tokens that are already expired when issued.
if (!/^(\+|-)? ?(\d+|\d+\.\d+) ?(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d|weeks?|w|months?|mo|years?|yrs?|y)$/i.test(JWT_EXPIRATION)) {
  fail(`JWT_EXPIRATION must be a time string like "15m", "1h", "2s", got ${JSON.stringify(JWT_EXPIRATION)}`);
}
const ROTATION_INTERVAL = seconds("JWKS_ROTATION_INTERVAL");
const GRACE_PERIOD = seconds("JWKS_GRACE_PERIOD");
const TRUSTED_ORIGINS = list("TRUSTED_ORIGINS").map(stripSlash);
const ADMIN_EMAILS = new Set(list("ADMIN_EMAILS").map((e) => e.toLowerCase()));
const DEV_ENDPOINTS = env("DEV_ENDPOINTS") === "1";
const RATE_LIMIT = env("RATE_LIMIT") === "1";
const SECONDARY_STORAGE = await secondaryStorageFromEnv().catch((error) => fail(error.message));

// ---------------------------------------------------------------------------
// The HTTP server. It listens first, so that with PORT=0 the base URL (and with it
// the default `iss`/`aud`) can be derived from the port actually bound; the Better
// Auth instance is built right after, before the ready line is printed.
// ---------------------------------------------------------------------------

let state = null; // { auth, authHandler, baseURL, jwtOptions, corsOrigins }

const server = http.createServer((req, res) => {
  if (!state) {
    res.writeHead(503, { "content-type": "application/json" }).end('{"message":"starting"}');
    return;
  }
  handle(req, res).catch((error) => {
    console.error("[better-auth-server] unhandled error:", error);
    if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
    res.end('{"message":"Internal Server Error"}');
  });
});

server.on("error", (error) => fail(`cannot listen on ${HOST}:${PORT}: ${error.message}`));

server.listen(PORT, HOST, () => {
  const port = server.address().port;
  const baseURL = stripSlash(env("BETTER_AUTH_URL", `http://${HOST}:${port}`));
  state = createAuth(baseURL);
  const ready = {
    ready: true,
    url: baseURL,
    port,
    alg: JWT_ALG,
    jwksUrl: `${baseURL}${BASE_PATH === "/" ? "" : BASE_PATH}${JWKS_PATH}`,
    basePath: BASE_PATH,
    issuer: state.jwtOptions.jwt.issuer,
    audience: state.jwtOptions.jwt.audience,
    devEndpoints: DEV_ENDPOINTS,
    startupMs: Math.round(performance.now()), // since the process started
  };
  process.stdout.write(JSON.stringify(ready) + "\n");
});

function createAuth(baseURL) {
  const audience = list("JWT_AUDIENCE");
  const jwtOptions = {
    jwks: {
      keyPairConfig,
      jwksPath: JWKS_PATH,
      ...(ROTATION_INTERVAL !== undefined ? { rotationInterval: ROTATION_INTERVAL } : {}),
      ...(GRACE_PERIOD !== undefined ? { gracePeriod: GRACE_PERIOD } : {}),
    },
    jwt: {
      issuer: env("JWT_ISSUER", baseURL),
      audience: audience.length === 0 ? baseURL : audience.length === 1 ? audience[0] : audience,
      expirationTime: JWT_EXPIRATION,
    },
  };

  const auth = betterAuth({
    baseURL,
    basePath: BASE_PATH,
    secret: SECRET,
    // In-memory database: every restart starts empty (users, sessions, keys).
    database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
    emailAndPassword: { enabled: true },
    ...(SECONDARY_STORAGE ? { secondaryStorage: SECONDARY_STORAGE } : {}),
    trustedOrigins: TRUSTED_ORIGINS,
    rateLimit: { enabled: RATE_LIMIT },
    telemetry: { enabled: false },
    logger: {
      level: env("LOG_LEVEL", "warn"),
      log: (level, message, ...args) => console.error(`[better-auth ${level}]`, message, ...args),
    },
    databaseHooks: {
      user: {
        create: {
          // ADMIN_EMAILS bootstrap: these users are created with role "admin", so a
          // test can sign one up and then call the admin plugin's /admin/set-role.
          async before(user) {
            if (user.email && ADMIN_EMAILS.has(String(user.email).toLowerCase())) {
              return { data: { ...user, role: "admin" } };
            }
            return { data: user };
          },
        },
      },
    },
    plugins: [jwt(jwtOptions), admin(), bearer()],
  });

  return {
    auth,
    authHandler: toNodeHandler(auth),
    baseURL,
    jwtOptions,
    corsOrigins: new Set([new URL(baseURL).origin, ...TRUSTED_ORIGINS]),
  };
}

// ---------------------------------------------------------------------------
// Request handling: CORS, the dev endpoints, then Better Auth.
// ---------------------------------------------------------------------------

const EXPOSED_HEADERS = ["set-auth-jwt", "set-auth-token"];

async function handle(req, res) {
  const origin = req.headers.origin;
  const corsAllowed = typeof origin === "string" && state.corsOrigins.has(origin);
  const path = new URL(req.url, "http://x").pathname;

  // Better Auth sets no CORS headers itself: browsers on a TRUSTED_ORIGINS origin
  // need them to call this server with `credentials: "include"`.
  if (corsAllowed) {
    res.setHeader("Access-Control-Allow-Origin", origin);
    res.setHeader("Access-Control-Allow-Credentials", "true");
    res.setHeader("Access-Control-Expose-Headers", EXPOSED_HEADERS.join(", "));
  }
  res.setHeader("Vary", "Origin");
  // The jwt and bearer plugins set their own Access-Control-Expose-Headers, which
  // would replace ours: merge instead.
  const setHeader = res.setHeader.bind(res);
  res.setHeader = (name, value) => {
    if (String(name).toLowerCase() === "access-control-expose-headers") {
      const merged = new Set(
        [res.getHeader(name), value].flat().filter(Boolean).flatMap((v) => String(v).split(",")).map((v) => v.trim()).filter(Boolean),
      );
      value = [...merged].join(", ");
    }
    return setHeader(name, value);
  };

  // CORS preflight.
  if (req.method === "OPTIONS" && req.headers["access-control-request-method"]) {
    if (!corsAllowed) {
      res.writeHead(403, { "content-type": "application/json" }).end('{"message":"Origin not allowed"}');
      return;
    }
    res.writeHead(204, {
      "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
      "Access-Control-Allow-Headers": req.headers["access-control-request-headers"] || "Content-Type, Authorization",
      "Access-Control-Max-Age": "600",
    });
    res.end();
    return;
  }

  if (path === "/healthz") {
    sendJSON(res, 200, { ok: true });
    return;
  }

  if (path === "/dev" || path.startsWith("/dev/")) {
    if (!DEV_ENDPOINTS) {
      sendJSON(res, 404, { message: "Not Found" });
      return;
    }
    await handleDev(req, res, path, origin, corsAllowed);
    return;
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
// DEVELOPMENT-ONLY ENDPOINTS (DEV_ENDPOINTS=1). They let anyone rewrite the key
// store and let any signed-in user make themselves an admin. NEVER enable them on
// a server that holds real users.
// ===========================================================================

async function handleDev(req, res, path, origin, corsAllowed) {
  if (req.method !== "POST") {
    sendJSON(res, 405, { message: "Method Not Allowed" });
    return;
  }
  // A browser page on a foreign origin must not drive these with the user's cookie.
  if (origin !== undefined && !corsAllowed) {
    sendJSON(res, 403, { message: "Origin not allowed" });
    return;
  }
  const body = await readJSON(req);
  if (body === null) {
    sendJSON(res, 400, { message: "Body must be a JSON object" });
    return;
  }
  const ctx = await state.auth.$context;
  switch (path) {
    case "/dev/rotate-keys":
      return sendJSON(res, 200, await rotateKeys(ctx, body));
    case "/dev/drop-keys":
      return dropKeys(ctx, body, res);
    case "/dev/make-me-admin":
      return makeMeAdmin(req, ctx, res);
    default:
      return sendJSON(res, 404, { message: "Not Found" });
  }
}

async function allKeys(ctx) {
  const keys = (await ctx.adapter.findMany({ model: "jwks" })) ?? [];
  return keys.sort((a, b) => new Date(a.createdAt) - new Date(b.createdAt));
}

function describeKey(key) {
  return {
    kid: key.id,
    alg: key.alg ?? JWT_ALG,
    createdAt: new Date(key.createdAt).toISOString(),
    expiresAt: key.expiresAt ? new Date(key.expiresAt).toISOString() : null,
  };
}

// POST /dev/rotate-keys  {"expireOld"?: boolean}
// Mints a new key now. The signer always picks the newest live key, so the next JWT
// is signed with it. Older keys stay in the JWKS; with "expireOld": true their
// expiresAt is set to now, so they stay only for JWKS_GRACE_PERIOD seconds.
async function rotateKeys(ctx, body) {
  const before = await allKeys(ctx);
  // The signer orders keys by createdAt (millisecond resolution): make sure the new
  // key is strictly the newest.
  const newest = before.length ? new Date(before[before.length - 1].createdAt).getTime() : 0;
  while (Date.now() <= newest) await new Promise((r) => setTimeout(r, 1));
  if (body.expireOld === true) {
    const now = new Date();
    for (const key of before) {
      if (!key.expiresAt || new Date(key.expiresAt) > now) {
        await ctx.adapter.update({ model: "jwks", where: [{ field: "id", value: key.id }], update: { expiresAt: now } });
      }
    }
  }
  const created = await createJwk({ context: ctx }, state.jwtOptions);
  return {
    kid: created.id,
    previousKids: before.map((k) => k.id),
    keys: (await allKeys(ctx)).map(describeKey),
  };
}

// POST /dev/drop-keys  {"kid": "..."} | {"allButNewest": true} | {"all": true}
// Deletes keys from the key store (and so from the JWKS), to test tokens whose key
// left the key set. When no key is left, the next signing or JWKS read mints one.
async function dropKeys(ctx, body, res) {
  const keys = await allKeys(ctx);
  let drop;
  if (typeof body.kid === "string") {
    drop = keys.filter((k) => k.id === body.kid);
    if (drop.length === 0) return sendJSON(res, 404, { message: `No key with kid ${body.kid}` });
  } else if (body.allButNewest === true) {
    drop = keys.slice(0, -1);
  } else if (body.all === true) {
    drop = keys;
  } else {
    return sendJSON(res, 400, { message: 'Body must be {"kid": "..."}, {"allButNewest": true} or {"all": true}' });
  }
  for (const key of drop) {
    await ctx.adapter.delete({ model: "jwks", where: [{ field: "id", value: key.id }] });
  }
  return sendJSON(res, 200, {
    dropped: drop.map((k) => k.id),
    keys: (await allKeys(ctx)).map(describeKey),
  });
}

// POST /dev/make-me-admin  (session cookie, or Authorization: Bearer <session token>)
// Adds "admin" to the caller's roles ("user" -> "user,admin").
async function makeMeAdmin(req, ctx, res) {
  const session = await state.auth.api.getSession({ headers: fromNodeHeaders(req.headers) });
  if (!session) return sendJSON(res, 401, { message: "Unauthorized", code: "UNAUTHORIZED" });
  const roles = String(session.user.role || "user").split(",").map((r) => r.trim()).filter(Boolean);
  if (!roles.includes("admin")) roles.push("admin");
  const user = await ctx.internalAdapter.updateUser(session.user.id, { role: roles.join(",") });
  return sendJSON(res, 200, { user: { id: user.id, email: user.email, role: user.role } });
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

function shutdown(signal) {
  console.error(`[better-auth-server] ${signal}: shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
