// This line's Better Auth, from this folder's node_modules, served by ../jwt-server.mjs.
import { readFileSync } from "node:fs";

import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { admin } from "better-auth/plugins/admin";
import { bearer } from "better-auth/plugins/bearer";
import { jwt } from "better-auth/plugins/jwt";

import { serve } from "../jwt-server.mjs";

const { version } = JSON.parse(
  readFileSync(new URL("./node_modules/better-auth/package.json", import.meta.url), "utf8"),
);
serve({ version, betterAuth, memoryAdapter, toNodeHandler, jwt, admin, bearer });
