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
//   COOKIE_CACHE            session_data cookie: jwks | jwt | compact | jwe | off (default jwks)
//   COOKIE_CACHE_MAX_AGE    seconds a session_data cookie lives          (default 300)
//   SESSION_EXPIRES_IN      seconds a session lives                      (default 604800, 7 days)
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
// session.cookieCache: "jwks" is strategy "jwt" signed with the jwt plugin's key set
// (`jwt({ sessionCookieCache: true })`), verifiable with the public keys alone; "jwt",
// "compact" and "jwe" are Better Auth's secret-based strategies; "off" disables it.
const COOKIE_CACHE_STRATEGIES = ["jwks", "jwt", "compact", "jwe", "off"];
const COOKIE_CACHE = env("COOKIE_CACHE", "jwks");
if (!COOKIE_CACHE_STRATEGIES.includes(COOKIE_CACHE)) {
  fail(`COOKIE_CACHE must be one of ${COOKIE_CACHE_STRATEGIES.join(", ")}, got ${JSON.stringify(COOKIE_CACHE)}`);
}
const COOKIE_CACHE_MAX_AGE = seconds("COOKIE_CACHE_MAX_AGE") ?? 300;
// Better Auth reads 0 as "the default" (300 s): refuse it rather than surprise.
if (!Number.isInteger(COOKIE_CACHE_MAX_AGE) || COOKIE_CACHE_MAX_AGE < 1) fail("COOKIE_CACHE_MAX_AGE must be a whole number of seconds, at least 1");
const SESSION_EXPIRES_IN = seconds("SESSION_EXPIRES_IN");
if (SESSION_EXPIRES_IN !== undefined && (!Number.isInteger(SESSION_EXPIRES_IN) || SESSION_EXPIRES_IN < 1)) {
  fail("SESSION_EXPIRES_IN must be a whole number of seconds, at least 1");
}
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
    cookieCache: COOKIE_CACHE,
    cookieCacheMaxAge: COOKIE_CACHE === "off" ? null : COOKIE_CACHE_MAX_AGE,
    cookiePrefix: "better-auth",
    devEndpoints: DEV_ENDPOINTS,
    startupMs: Math.round(performance.now()), // since the process started
  };
  process.stdout.write(JSON.stringify(ready) + "\n");
});

function createAuth(baseURL) {
  const audience = list("JWT_AUDIENCE");
  const jwtOptions = {
    sessionCookieCache: COOKIE_CACHE === "jwks",
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
    session: {
      ...(SESSION_EXPIRES_IN !== undefined ? { expiresIn: SESSION_EXPIRES_IN } : {}),
      cookieCache:
        COOKIE_CACHE === "off"
          ? { enabled: false }
          : { enabled: true, strategy: COOKIE_CACHE === "jwks" ? "jwt" : COOKIE_CACHE, maxAge: COOKIE_CACHE_MAX_AGE },
    },
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

  if (DEV_ENDPOINTS && path === GET_SESSION_PATH) {
    recordGetSession(req, res);
    if (await injectGetSessionFault(res)) return;
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
    case "/dev/update-user":
      return updateUser(ctx, body, res);
    case "/dev/get-session-calls":
      return sendJSON(res, 200, getSessionCallsReport(body));
    case "/dev/get-session-fault":
      return setGetSessionFault(body, res);
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
// Adds "admin" to the caller's roles ("user" -> "user,admin"), and sets the caller a
// fresh session_data cookie: the one it holds still says the old role, and Better Auth
// answers /token and get-session from it until it expires.
async function makeMeAdmin(req, ctx, res) {
  const headers = fromNodeHeaders(req.headers);
  const session = await state.auth.api.getSession({ headers });
  if (!session) return sendJSON(res, 401, { message: "Unauthorized", code: "UNAUTHORIZED" });
  const roles = String(session.user.role || "user").split(",").map((r) => r.trim()).filter(Boolean);
  if (!roles.includes("admin")) roles.push("admin");
  const user = await ctx.internalAdapter.updateUser(session.user.id, { role: roles.join(",") });
  if (COOKIE_CACHE !== "off") {
    const fresh = await state.auth.api.getSession({ headers, query: { disableCookieCache: true }, returnHeaders: true });
    const cookies = fresh.headers.getSetCookie();
    if (cookies.length > 0) res.setHeader("set-cookie", cookies);
  }
  return sendJSON(res, 200, { user: { id: user.id, email: user.email, role: user.role } });
}

// POST /dev/update-user  {"userId": "...", "banned"?: bool, "banReason"?: string|null, "role"?: string}
// Writes the user row directly and leaves the user's sessions alone, unlike the admin
// plugin's ban-user (which deletes them): a live session whose user is banned, or a
// role change without any admin session.
async function updateUser(ctx, body, res) {
  if (typeof body.userId !== "string") return sendJSON(res, 400, { message: 'Body must name a "userId"' });
  const update = {};
  if (typeof body.banned === "boolean") update.banned = body.banned;
  if (body.banReason === null || typeof body.banReason === "string") update.banReason = body.banReason;
  if (typeof body.role === "string") update.role = body.role;
  if (Object.keys(update).length === 0) return sendJSON(res, 400, { message: 'Body must set "banned", "banReason" or "role"' });
  if (!(await ctx.internalAdapter.findUserById(body.userId))) return sendJSON(res, 404, { message: "No such user" });
  const user = await ctx.internalAdapter.updateUser(body.userId, { ...update, updatedAt: new Date() });
  return sendJSON(res, 200, {
    user: { id: user.id, email: user.email, role: user.role, banned: user.banned ?? false, banReason: user.banReason ?? null },
  });
}

// -- get-session calls: recorded, and faults injected on demand ------------------------
// Every request to {BASE_PATH}/get-session is recorded (DEV_ENDPOINTS=1 only), so a
// test can count the calls a verifier made and see what it sent. Recorded: which
// credential carried the session ("cookie", "bearer" or "none"), the raw session token
// (the part before the dot), whether it was signed, the cookie names and the header
// names of the request, and the status answered.

const GET_SESSION_PATH = `${BASE_PATH === "/" ? "" : BASE_PATH}/get-session`;
const MAX_RECORDED_CALLS = 10_000;
let getSessionCount = 0;
let getSessionCalls = [];
let getSessionFault = null; // { status, retryAfter, delayMs, remaining }

function parseCookies(header) {
  const cookies = [];
  for (const part of String(header || "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0) cookies.push([part.slice(0, eq).trim(), part.slice(eq + 1).trim()]);
  }
  return cookies;
}

function decode(value) {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function recordGetSession(req, res) {
  const cookies = parseCookies(req.headers.cookie);
  const sessionCookie = cookies.find(([name]) => /^(__Secure-)?better-auth\.session_token$/.test(name));
  const authorization = String(req.headers.authorization || "");
  let via = "none";
  let value = null;
  if (/^bearer /i.test(authorization)) {
    via = "bearer";
    value = authorization.slice(7).trim();
  } else if (sessionCookie) {
    via = "cookie";
    value = decode(sessionCookie[1]);
  }
  const call = {
    n: ++getSessionCount,
    at: Date.now(),
    method: req.method,
    via,
    token: value === null ? null : value.split(".")[0],
    signed: value !== null && value.includes("."),
    cookies: cookies.map(([name]) => name),
    headers: Object.keys(req.headers).sort(),
    status: null,
  };
  getSessionCalls.push(call);
  if (getSessionCalls.length > MAX_RECORDED_CALLS) getSessionCalls = getSessionCalls.slice(-MAX_RECORDED_CALLS);
  res.on("finish", () => {
    call.status = res.statusCode;
  });
}

// POST /dev/get-session-calls  {"reset"?: true}
// {"count": <calls since start or the last reset>, "calls": [...]}; with "reset" the
// record is cleared after it is read.
function getSessionCallsReport(body) {
  const report = { count: getSessionCount, calls: getSessionCalls };
  if (body.reset === true) {
    getSessionCount = 0;
    getSessionCalls = [];
  }
  return report;
}

// POST /dev/get-session-fault  {"status"?: 503, "retryAfter"?: "7", "delayMs"?: 0, "times"?: 1}
// The next `times` get-session requests (default 1; -1 for every one until cleared)
// wait `delayMs`, then answer `status` with `Retry-After: retryAfter` instead of the
// session, or, without a status, go on to Better Auth after the delay. `{}` clears it.
function setGetSessionFault(body, res) {
  const { status, retryAfter, delayMs = 0, times = 1 } = body;
  if (status === undefined && retryAfter === undefined && !delayMs) {
    getSessionFault = null;
    return sendJSON(res, 200, { fault: null });
  }
  if (status !== undefined && !(Number.isInteger(status) && status >= 200 && status <= 599)) {
    return sendJSON(res, 400, { message: '"status" must be an HTTP status 200-599' });
  }
  if (!(Number.isFinite(delayMs) && delayMs >= 0 && delayMs <= 600_000)) {
    return sendJSON(res, 400, { message: '"delayMs" must be 0-600000' });
  }
  if (!(Number.isInteger(times) && (times >= 1 || times === -1))) {
    return sendJSON(res, 400, { message: '"times" must be a positive integer or -1' });
  }
  getSessionFault = { status: status ?? null, retryAfter: retryAfter === undefined ? null : String(retryAfter), delayMs, remaining: times };
  return sendJSON(res, 200, { fault: getSessionFault });
}

// Answers a get-session request with the configured fault, if any: true when it did.
async function injectGetSessionFault(res) {
  const fault = getSessionFault;
  if (!fault) return false;
  if (fault.remaining > 0 && --fault.remaining === 0) getSessionFault = null;
  if (fault.delayMs) await new Promise((resolve) => setTimeout(resolve, fault.delayMs));
  if (fault.status === null) return false;
  const headers = { "content-type": "application/json", "cache-control": "no-store" };
  if (fault.retryAfter !== null) headers["retry-after"] = fault.retryAfter;
  if (!res.destroyed) res.writeHead(fault.status, headers).end(JSON.stringify({ message: "injected fault", code: "DEV_FAULT" }));
  return true;
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
