// The server's API as the console calls it: the admin key from session storage in a header, errors in the
// server's OpenAI error shape turned into one exception.
const KEY_STORAGE = "tkr-embed.admin-key";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || null;
    this.param = error.param || null;
  }
}

export const session = {
  get key() { return sessionStorage.getItem(KEY_STORAGE); },
  set key(value) {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  },
};

// The server's root, so that the console works behind a path prefix too (/prefix/console).
export function apiUrl(path) {
  const base = window.location.pathname.replace(/\/console\/?$/, "");
  return `${base}${path}`;
}

export async function call(method, path, { body, key, signal } = {}) {
  const headers = { Authorization: `Bearer ${key || session.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(apiUrl(path), {
    method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit", cache: "no-store",
  });
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

export const api = {
  get: (path, options) => call("GET", path, options),
  post: (path, body, options) => call("POST", path, { ...options, body }),
  patch: (path, body, options) => call("PATCH", path, { ...options, body }),
  delete: (path, options) => call("DELETE", path, options),
};
