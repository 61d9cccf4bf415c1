// The demo page: Better Auth for signing in, the Python API for everything else.
// window.DEMO_CONFIG (from /config.js) says where both are:
//   {mode: "better-auth", authUrl, authBasePath, apiUrl, alg}
//   {mode: "dev-issuer", reason, issuerUrl, apiUrl, user, admin}   (ready-made tokens)
// With Better Auth the page calls the API one of two ways (the "transport"):
//   "jwt":    it fetches a JWT from /api/auth/token and sends it as Authorization: Bearer;
//   "cookie": it handles no token at all; fetch(..., {credentials: "include"}) lets the
//             browser send Better Auth's session cookies, which the API reads.
"use strict";

const config = window.DEMO_CONFIG;
const $ = (id) => document.getElementById(id);
let jwt = null;
let transport = "jwt";
let signedInUser = null;

// -- small helpers ---------------------------------------------------------------------------

function show(text, kind = "info") {
  const el = $("message");
  el.textContent = text;
  el.className = `message ${kind}`;
  el.hidden = !text;
}

function pretty(text) {
  try {
    return withTimes(JSON.stringify(JSON.parse(text), null, 2));
  } catch {
    return text;
  }
}

// Time claims (seconds since 1970) with a readable UTC time after them, in pretty JSON.
function withTimes(json) {
  return json.replace(
    /^(\s*"(?:iat|exp|nbf|auth_time)": )(\d+(?:\.\d+)?)(,?)$/gm,
    (line, key, seconds, comma) => {
      const time = new Date(Number(seconds) * 1000).toISOString();
      return `${key}${seconds}${comma} // ${time.slice(0, 10)} ${time.slice(11, 19)} UTC`;
    },
  );
}

function decodeSegment(segment) {
  const base64 = segment.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

async function betterAuth(path, { method = "GET", body } = {}) {
  const options = { method, credentials: "include", headers: {} };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(config.authUrl + path, options);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  return { response, data };
}

const api = (path, options) => betterAuth(config.authBasePath + path, options);

function failure(what, { response, data }) {
  const reason = (data && (data.message || data.code)) || response.statusText;
  return `${what} failed: ${response.status} ${reason}`;
}

async function busy(button, work) {
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    show(`${error.message || error}`, "error");
  } finally {
    button.disabled = false;
  }
}

// -- the session and its JWT -----------------------------------------------------------------

// The API results on screen were answered to the token shown: a new token (another user, a
// new role, signed out) clears them.
function clearResults() {
  for (const box of document.querySelectorAll(".call")) {
    delete box.dataset.status;
    box.querySelector(".status").textContent = "";
    box.querySelector(".status").className = "status";
    box.querySelector(".body").textContent = "";
  }
}

function setToken(token) {
  jwt = token;
  clearResults();
  if (!token) {
    $("jwt").textContent = "No token yet.";
    $("jwt-header").textContent = "{}";
    $("claims").textContent = "{}";
    $("expiry").textContent = "";
    return;
  }
  const [header, payload] = token.split(".");
  const claims = decodeSegment(payload);
  $("jwt").textContent = token;
  $("jwt-header").textContent = JSON.stringify(decodeSegment(header), null, 2);
  $("claims").textContent = withTimes(JSON.stringify(claims, null, 2));
  $("jwt").dataset.exp = claims.exp;
  tick();
}

function tick() {
  const exp = Number($("jwt").dataset.exp);
  if (!jwt || !exp) return;
  const left = Math.round(exp - Date.now() / 1000);
  const span =
    left >= 3600
      ? `${Math.floor(left / 3600)} h ${Math.floor((left % 3600) / 60)} min`
      : `${Math.floor(left / 60)} min ${left % 60} s`;
  $("expiry").textContent = left > 0 ? `expires in ${span}` : "expired: get a new JWT";
  $("expiry").classList.toggle("expired", left <= 0);
}
setInterval(tick, 1000);

function signedIn(user) {
  signedInUser = user;
  // After a reload the session may be another user's than the one last typed in.
  if (user.email) $("email").value = user.email;
  if (user.name) $("name").value = user.name;
  const role = user.role ? ` (role: ${user.role})` : "";
  $("who").textContent = `Signed in as ${user.email}${role}.`;
  $("who").classList.add("in");
}

function signedOut() {
  signedInUser = null;
  $("who").textContent = "Not signed in.";
  $("who").classList.remove("in");
  setToken(null);
}

async function fetchJwt() {
  const result = await api("/token");
  if (!result.response.ok) throw new Error(failure("Getting a JWT", result));
  setToken(result.data.token);
}

// After a sign-in or a role change: a new JWT, or, with cookies, nothing to do (Better Auth
// has set them); either way the answers on screen were given to the old credential.
async function refreshCredential() {
  if (transport === "jwt") {
    await fetchJwt();
  } else {
    clearResults();
  }
}

async function loadSession() {
  const result = await api("/get-session");
  if (result.response.ok && result.data && result.data.user) {
    signedIn(result.data.user);
    await refreshCredential();
  } else {
    signedOut();
  }
}

// The JWT card or the cookie card; a JWT is fetched only when the page sends one.
async function setTransport(value) {
  transport = value;
  for (const el of document.querySelectorAll("[data-transport]")) {
    el.hidden = el.dataset.transport !== transport;
  }
  setToken(null);
  if (transport === "jwt" && signedInUser) await fetchJwt();
}

function credentials() {
  return { email: $("email").value.trim(), password: $("password").value };
}

async function signUp() {
  const result = await api("/sign-up/email", {
    method: "POST",
    body: { name: $("name").value.trim() || "Demo User", ...credentials() },
  });
  if (!result.response.ok) throw new Error(failure("Sign-up", result));
  show(
    transport === "jwt"
      ? "Signed up. Better Auth set its session cookie; the page fetched a JWT with it."
      : "Signed up. Better Auth set its session cookies; the browser sends them to the API.",
    "ok",
  );
  signedIn(result.data.user);
  await refreshCredential();
}

async function signIn() {
  const result = await api("/sign-in/email", { method: "POST", body: credentials() });
  if (!result.response.ok) throw new Error(failure("Sign-in", result));
  show("Signed in.", "ok");
  signedIn(result.data.user);
  await refreshCredential();
}

async function signOut() {
  if (config.mode === "better-auth") {
    const result = await api("/sign-out", { method: "POST", body: {} });
    if (!result.response.ok) throw new Error(failure("Sign-out", result));
  }
  show("Signed out.", "info");
  signedOut();
}

async function makeAdmin() {
  if (config.mode === "dev-issuer") {
    useToken("admin");
    const role = decodeSegment(jwt.split(".")[1]).role;
    show(`Switched to the development issuer's admin token (role: ${role}).`, "ok");
    return;
  }
  const result = await betterAuth("/dev/make-me-admin", { method: "POST", body: {} });
  if (!result.response.ok) throw new Error(failure("Make me admin", result));
  signedIn(result.data.user);
  await refreshCredential();
  const carrier =
    transport === "jwt" ? "the page fetched a new JWT" : "Better Auth set a new session_data cookie";
  show(`Your role is now "${result.data.user.role}"; ${carrier} carrying it.`, "ok");
}

function useToken(kind) {
  const token = config[kind];
  const claims = decodeSegment(token.split(".")[1]);
  signedIn(claims);
  setToken(token);
}

// -- the Python API --------------------------------------------------------------------------

async function callApi(name, withToken, { method = "GET", body: payload } = {}) {
  const box = $(`result-${name}`);
  const status = box.querySelector(".status");
  const body = box.querySelector(".body");
  const options = { method, headers: {} };
  if (payload !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(payload);
  }
  if (withToken && transport === "cookie") {
    // No token in sight: the browser adds Better Auth's cookies, and the page's Origin.
    options.credentials = "include";
  } else if (withToken && jwt) {
    options.headers.authorization = `Bearer ${jwt}`;
  }
  let response;
  try {
    response = await fetch(`${config.apiUrl}/${name}`, options);
  } catch (error) {
    box.dataset.status = "error";
    status.textContent = "network error";
    status.className = "status bad";
    body.textContent = `${error}`;
    return;
  }
  const text = await response.text();
  box.dataset.status = String(response.status);
  status.textContent = `${response.status} ${response.statusText}`.trim();
  status.className = `status ${response.ok ? "good" : response.status < 500 ? "warn" : "bad"}`;
  const challenge = response.headers.get("www-authenticate");
  body.textContent = pretty(text) + (challenge ? `\n\nWWW-Authenticate: ${challenge}` : "");
}

// -- wiring ----------------------------------------------------------------------------------

function wire(id, work) {
  const button = $(id);
  button.addEventListener("click", () => busy(button, work));
}

function start() {
  wire("sign-up", signUp);
  wire("sign-in", signIn);
  wire("sign-out", signOut);
  wire("get-jwt", fetchJwt); // Better Auth only: the development issuer's tokens are ready-made
  wire("make-admin", makeAdmin);
  wire("call-public", () => callApi("public", false));
  wire("call-me", () => callApi("me", true));
  wire("call-admin", () => callApi("admin", true));
  wire("call-notes", () =>
    callApi("notes", true, { method: "POST", body: { note: `written at ${new Date().toISOString()}` } }),
  );
  for (const radio of document.querySelectorAll('input[name="transport"]')) {
    radio.addEventListener("change", () => {
      if (!radio.checked) return;
      show("");
      busy(radio, () => setTransport(radio.value));
    });
  }
  wire("use-user", async () => useToken("user"));
  wire("use-admin", async () => useToken("admin"));
  // Enter in the form signs in; the page never navigates.
  $("better-auth-account").addEventListener("submit", (event) => {
    event.preventDefault();
    $("sign-in").click();
  });

  // Each mode shows its own texts (data-mode="better-auth" or "dev-issuer").
  for (const el of document.querySelectorAll("[data-mode]")) {
    el.hidden = el.dataset.mode !== config.mode;
  }
  // A reload may keep the radio button last chosen: the page follows it.
  const chosen = document.querySelector('input[name="transport"]:checked');
  transport = config.mode === "better-auth" && chosen ? chosen.value : "jwt";
  for (const el of document.querySelectorAll("[data-transport]")) {
    el.hidden = el.dataset.transport !== transport;
  }
  if (config.mode === "better-auth") {
    $("where").textContent =
      `Better Auth (${config.alg}) at ${config.authUrl} · Python API at ${config.apiUrl}`;
    // A fresh address to sign up with; a session found below puts its own in its place.
    $("email").value = `user-${Math.random().toString(36).slice(2, 8)}@example.com`;
    busy($("get-jwt"), loadSession);
  } else {
    $("where").textContent =
      `Development issuer at ${config.issuerUrl} · Python API at ${config.apiUrl}`;
    $("dev-issuer-reason").textContent = config.reason;
  }
}

start();
