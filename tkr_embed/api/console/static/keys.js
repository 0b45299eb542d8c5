// The Keys page: list, create (the secret shown once), edit, rotate and revoke.
import { api } from "./api.js";
import { keyBody, keyFields } from "./key_form.js";
import { $, copyText, formatTime, h, setStatus, showError } from "./dom.js";

let keys = [];
let editing = null;

function showSecret(title, secret) {
  $("#secret-title").textContent = title;
  $("#secret-value").textContent = secret;
  const panel = $("#secret-panel");
  panel.hidden = false;
  panel.focus();
}

function statusBadge(key) {
  if (key.revoked_at) return h("span", { class: "badge off" }, "revoked");
  if (!key.active) return h("span", { class: "badge off" }, "expired");
  return h("span", { class: "badge ok" }, "active");
}

function keyRow(key) {
  const actions = key.revoked_at ? [] : [
    h("button", { type: "button", class: "secondary", "aria-label": `Edit ${key.name}`, onclick: () => openEdit(key) }, "Edit"),
    h("button", { type: "button", class: "secondary", "aria-label": `Rotate ${key.name}`, onclick: () => openRotate(key) }, "Rotate"),
    h("button", { type: "button", class: "secondary", "aria-label": `Revoke ${key.name}`, onclick: () => openRevoke(key) }, "Revoke"),
  ];
  const rotation = key.rotation && key.rotation.previous_key_hint
    ? h("div", { class: "note" }, `previous ${key.rotation.previous_key_hint} until ${formatTime(key.rotation.previous_expires_at)}`)
    : null;
  return h("tr", { dataset: { keyId: key.id } },
    h("th", { scope: "row" }, key.name),
    h("td", {}, h("code", {}, key.key_hint), h("div", { class: "note" }, key.id), rotation),
    h("td", {}, key.permissions.join(", ")),
    h("td", { class: "key-status" }, statusBadge(key)),
    h("td", {}, formatTime(key.last_used_at)),
    h("td", {}, h("div", { class: "row" }, actions)));
}

export async function loadKeys() {
  const includeRevoked = $("#show-revoked").checked;
  const list = await api.get(`/admin/api-keys?include_revoked=${includeRevoked}`);
  keys = list.data;
  const empty = h("tr", {}, h("td", { colspan: 6, class: "note" }, "No keys yet: create one above."));
  $("#keys-table tbody").replaceChildren(...(keys.length ? keys.map(keyRow) : [empty]));
  return keys;
}

function resetCreateForm() {
  $("#create-form").replaceChildren(...keyFields("create", null),
    h("p", { id: "create-error", class: "error", role: "alert" }),
    h("button", { type: "submit" }, "Create key"));
}

async function createKey(event) {
  event.preventDefault();
  const form = event.target;
  try {
    const created = await api.post("/admin/api-keys", keyBody(form, "create", { creating: true }));
    resetCreateForm();
    $("#create-key").open = false;
    showSecret(`New secret for ${created.name}`, created.api_key);
    setStatus(`Key ${created.name} created`);
    await loadKeys();
  } catch (error) {
    showError($("#create-error"), error);
  }
}

function openEdit(key) {
  editing = key;
  $("#key-dialog-title").textContent = `Edit ${key.name}`;
  $("#edit-fields").replaceChildren(...keyFields("edit", key));
  showError($("#edit-error"), null);
  $("#key-dialog").showModal();
}

async function saveEdit(event) {
  event.preventDefault();
  try {
    await api.patch(`/admin/api-keys/${encodeURIComponent(editing.id)}`, keyBody(event.target, "edit", { creating: false }));
    $("#key-dialog").close();
    setStatus(`Key ${editing.name} saved`);
    await loadKeys();
  } catch (error) {
    showError($("#edit-error"), error);
  }
}

function openRotate(key) {
  editing = key;
  $("#rotate-dialog-title").textContent = `Rotate ${key.name}`;
  showError($("#rotate-error"), null);
  $("#rotate-dialog").showModal();
}

async function rotate(event) {
  event.preventDefault();
  try {
    const grace = Number($("#rotate-grace").value);
    const rotated = await api.post(`/admin/api-keys/${encodeURIComponent(editing.id)}/rotate`, { grace_period_s: grace });
    $("#rotate-dialog").close();
    showSecret(`New secret for ${rotated.name}`, rotated.api_key);
    setStatus(`Key ${rotated.name} rotated`);
    await loadKeys();
  } catch (error) {
    showError($("#rotate-error"), error);
  }
}

function openRevoke(key) {
  editing = key;
  $("#revoke-dialog-title").textContent = `Revoke ${key.name}`;
  $("#revoke-text").textContent = `Requests with ${key.key_hint} will be refused at once. This cannot be undone.`;
  showError($("#revoke-error"), null);
  $("#revoke-dialog").showModal();
}

async function revoke(event) {
  event.preventDefault();
  try {
    await api.delete(`/admin/api-keys/${encodeURIComponent(editing.id)}`);
    $("#revoke-dialog").close();
    setStatus(`Key ${editing.name} revoked`);
    await loadKeys();
  } catch (error) {
    showError($("#revoke-error"), error);
  }
}

export function setUpKeys() {
  resetCreateForm();
  $("#create-form").addEventListener("submit", createKey);
  $("#edit-form").addEventListener("submit", saveEdit);
  $("#rotate-form").addEventListener("submit", rotate);
  $("#revoke-form").addEventListener("submit", revoke);
  $("#show-revoked").addEventListener("change", () => loadKeys().catch((error) => setStatus(error.message)));
  $("#keys-reload").addEventListener("click", () => loadKeys().catch((error) => setStatus(error.message)));
  $("#secret-copy").addEventListener("click", (event) => copyText($("#secret-value").textContent, event.target));
  $("#secret-dismiss").addEventListener("click", () => {
    $("#secret-value").textContent = "";
    $("#secret-panel").hidden = true;
  });
  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
}
