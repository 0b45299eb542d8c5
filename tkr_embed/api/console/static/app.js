// The console's shell: sign-in with an admin key (session storage only), the pages and the navigation between them.
import { ApiError, api, session } from "./api.js";
import { $, setStatus, showError } from "./dom.js";
import { loadKeys, setUpKeys } from "./keys.js";
import { loadModelName, setUpPlayground } from "./playground.js";
import { setUpServer, startServerPage, stopServerPage } from "./server.js";
import { loadUsage, setKeyChoices, setUpUsage } from "./usage.js";

const PAGES = ["keys", "usage", "server", "playground"];

function onError(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut("The server no longer accepts this key: sign in again.");
    return;
  }
  setStatus(error.message || String(error));
}

function showPage(name) {
  for (const page of document.querySelectorAll(".page")) page.hidden = page.id !== `page-${name}`;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// focus: move the keyboard focus to the page shown (after a navigation), before its data loads, so that a load
// finishing later never pulls the focus away from where the user has moved it since.
async function route({ focus = false } = {}) {
  if (!session.key) {
    showPage("signin");
    $("#nav").hidden = true;
    $("#sign-out").hidden = true;
    return;
  }
  $("#nav").hidden = false;
  $("#sign-out").hidden = false;
  const name = PAGES.includes(window.location.hash.slice(1)) ? window.location.hash.slice(1) : "keys";
  showPage(name);
  if (focus) $("#main").focus();
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · tkr-embed console`;
  if (name !== "server") stopServerPage();
  try {
    if (name === "keys") await loadKeys();
    if (name === "usage") {
      setKeyChoices((await api.get("/admin/api-keys?include_revoked=true")).data);
      await loadUsage();
    }
    if (name === "server") startServerPage(onError);
    if (name === "playground") await loadModelName();
  } catch (error) {
    onError(error);
  }
}

async function signIn(event) {
  event.preventDefault();
  const key = $("#signin-key").value.trim();
  showError($("#signin-error"), null);
  try {
    await api.get("/admin/api-keys?include_revoked=false", { key });
  } catch (error) {
    const message = error instanceof ApiError && error.status === 401 ? "This key is not valid on this server."
      : error instanceof ApiError && error.status === 403 ? "This key lacks the admin permission."
        : error.message;
    showError($("#signin-error"), new Error(message));
    return;
  }
  session.key = key;
  $("#signin-key").value = "";
  setStatus("Signed in");
  await route({ focus: true });
}

function signOut(message) {
  session.key = null;
  stopServerPage();
  setStatus(message || "Signed out");
  if (window.location.hash) history.replaceState(null, "", window.location.pathname);
  route();
  $("#signin-key").focus();
}

function start() {
  setUpKeys();
  setUpUsage(onError);
  setUpServer(onError);
  setUpPlayground();
  $("#signin-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => {
    setStatus("");
    route({ focus: true });
  });
  route();
}

start();
