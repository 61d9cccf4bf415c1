// A minimal Better Auth server with the jwt plugin, for starlette-betterauth's
// compatibility matrix: one Better Auth line per folder (1.5/, 1.6/, 1.7/), each
// with its own package.json and lockfile, each running this same file through its
// own server.mjs, which passes in the Better Auth modules it imported from its own
// node_modules (Node resolves imports relative to the importing file, so this file
// cannot import them itself).
//
//   cd examples/better-auth-server/versions/1.6 && npm ci && node server.mjs
//
// Environment: PORT (0 picks a free port; default 0), JWT_ALG (EdDSA, ES256, ES512,
// RS256, PS256; default EdDSA), BETTER_AUTH_SECRET (default a DEVELOPMENT-ONLY value).
// In-memory database, email and password sign-up, plugins jwt, admin and bearer,
// 127.0.0.1 only. stdout carries exactly one JSON line once listening:
//   {"ready":true,"url":"http://127.0.0.1:41234","alg":"EdDSA","jwksUrl":"...","version":"1.6.34"}

import http from "node:http";

const HOST = "127.0.0.1";
const KEY_PAIR_CONFIGS = {
  EdDSA: { alg: "EdDSA", crv: "Ed25519" },
  ES256: { alg: "ES256" },
  ES512: { alg: "ES512" },
  RS256: { alg: "RS256", modulusLength: 2048 },
  PS256: { alg: "PS256", modulusLength: 2048 },
};
// DEVELOPMENT ONLY: this default secret is public. Set BETTER_AUTH_SECRET for anything real.
const DEV_ONLY_SECRET = "dev-only-insecure-secret-do-not-use-in-production-0123456789";

function fail(message) {
  console.error(`[jwt-server] ${message}`);
  process.exit(2);
}

export function serve({ version, betterAuth, memoryAdapter, toNodeHandler, jwt, admin, bearer }) {
  // Keep stdout for the ready line.
  console.log = console.error;
  console.info = console.error;
  console.debug = console.error;

  const port = Number(process.env.PORT || "0");
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`PORT must be 0-65535, got ${process.env.PORT}`);
  const alg = process.env.JWT_ALG || "EdDSA";
  const keyPairConfig = KEY_PAIR_CONFIGS[alg];
  if (!keyPairConfig) fail(`JWT_ALG must be one of ${Object.keys(KEY_PAIR_CONFIGS).join(", ")}, got ${alg}`);
  const secret = process.env.BETTER_AUTH_SECRET || DEV_ONLY_SECRET;

  let handler = null;
  const server = http.createServer((req, res) => {
    if (!handler) {
      res.writeHead(503, { "content-type": "application/json" }).end('{"message":"starting"}');
      return;
    }
    handler(req, res);
  });
  server.on("error", (error) => fail(`cannot listen on ${HOST}:${port}: ${error.message}`));
  server.listen(port, HOST, () => {
    const bound = server.address().port;
    const baseURL = `http://${HOST}:${bound}`;
    const auth = betterAuth({
      baseURL,
      secret,
      database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
      emailAndPassword: { enabled: true },
      rateLimit: { enabled: false },
      telemetry: { enabled: false },
      logger: { level: "warn", log: (level, message, ...args) => console.error(`[better-auth ${level}]`, message, ...args) },
      plugins: [jwt({ jwks: { keyPairConfig } }), admin(), bearer()],
    });
    handler = toNodeHandler(auth);
    const ready = { ready: true, url: baseURL, port: bound, alg, jwksUrl: `${baseURL}/api/auth/jwks`, version };
    process.stdout.write(JSON.stringify(ready) + "\n");
  });

  const shutdown = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
}
