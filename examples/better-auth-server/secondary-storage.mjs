// Better Auth's secondaryStorage on Redis, for server.mjs, when REDIS_URL is set.
//
//   REDIS_URL          e.g. redis://127.0.0.1:6379/0: sessions (and revocation marks) live in Redis
//   REDIS_KEY_PREFIX   prefix of every key                    (default "better-auth:", the package's)
//
// With it, Better Auth keeps each session under its raw token as JSON
// {"session": {...}, "user": {...}}, a user's tokens under active-sessions-<userId>, and
// writes revoked-sessions-before-<userId> when it revokes a user's sessions: an API using
// starlette-betterauth's RedisStore reads the same keys instead of calling get-session.
//
// Commands fail at once while Redis is unreachable (no offline queue), so Better Auth
// answers 500 then rather than hanging; the client reconnects by itself.

import { redisStorage } from "@better-auth/redis-storage";
import { Redis } from "ioredis";

const CONNECT_TIMEOUT_MS = 5000;

export async function secondaryStorageFromEnv(env = process.env) {
  const url = env.REDIS_URL?.trim();
  if (!url) return undefined;
  const client = new Redis(url, {
    connectTimeout: 2000,
    commandTimeout: 2000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: (attempt) => Math.min(attempt * 50, 500),
  });
  let reported = false;
  client.on("error", (error) => {
    if (!reported) console.error(`[better-auth-server] redis: ${error.message}`);
    reported = true;
  });
  client.on("ready", () => {
    if (reported) console.error("[better-auth-server] redis: connected again");
    reported = false;
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no Redis at ${url} within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
    client.once("ready", () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return redisStorage({ client, keyPrefix: env.REDIS_KEY_PREFIX ?? "better-auth:" });
}
