// The Server page: the engine's state (polled), the model, the redacted configuration and the audit log.
import { ApiError, api } from "./api.js";
import { $, definitionList, formatNumber, formatTime, h } from "./dom.js";

const POLL_MS = 2000;
let timer = null;
let previous = null; // {at, decoded, prefilled}: the last poll, for tokens per second
let oldestAuditId = null;

function rate(now, before, field) {
  if (!before) return "—";
  const seconds = (now.at - before.at) / 1000;
  return seconds > 0 ? ((now[field] - before[field]) / seconds).toFixed(1) : "—";
}

async function pollEngine() {
  const stats = await api.get("/admin/stats");
  const engine = stats.engine;
  if (!engine) {
    definitionList($("#engine-stats"), [["State", "not started"]]);
    return;
  }
  const now = { at: performance.now(), decoded: engine.tokens_decoded, prefilled: engine.prompt_tokens_prefilled };
  const kvPercent = (engine.kv_cache_usage * 100).toFixed(1);
  definitionList($("#engine-stats"), [
    ["Running requests", h("span", { id: "engine-running" }, formatNumber(engine.running))],
    ["Waiting requests", h("span", { id: "engine-waiting" }, formatNumber(engine.waiting))],
    ["KV cache", h("span", {}, h("meter", { min: 0, max: 1, value: engine.kv_cache_usage, "aria-label": "KV cache used" }),
      ` ${kvPercent}% (${formatNumber(engine.kv_blocks_used)} of ${formatNumber(engine.kv_blocks_total)} blocks)`)],
    ["Tokens/s generated", h("span", { id: "engine-tps" }, rate(now, previous, "decoded"))],
    ["Tokens/s prefilled", rate(now, previous, "prefilled")],
    ["Prefix cache hit rate", `${(engine.prefix_cache_hit_rate * 100).toFixed(1)}%`],
    ["Requests finished", formatNumber(engine.requests_finished)],
    ["Tokens generated", h("span", { id: "engine-decoded" }, formatNumber(engine.tokens_decoded))],
    ["Preemptions", formatNumber(engine.preemptions)],
    ["Uptime", `${Math.round(stats.uptime_s)} s`],
    ["Response cache", stats.cache.enabled ? `${(stats.cache.hit_rate * 100).toFixed(1)}% hits, ${formatNumber(stats.cache.size)} entries` : "off"],
    ["Rate limits", stats.rate_limit.enabled ? `${stats.rate_limit.storage}, ${formatNumber(stats.rate_limit.rejections)} refused` : "off"],
  ]);
  previous = now;
}

async function loadModel() {
  const info = await api.get("/info");
  definitionList($("#model-info"), [
    ["Model", h("span", { id: "model-name" }, info.model)],
    ["Path", info.model_path || "—"],
    ["Demo model", info.demo_model ? "yes" : "no"],
    ["Context length", formatNumber(info.context_length)],
    ["Quantization", info.quantization],
    ["Device", `${info.device} (${info.dtype})`],
    ["Reasoning levels", (info.reasoning_levels || []).join(", ")],
    ["Capabilities", (info.capabilities || []).join(", ")],
    ["Version", info.version],
  ]);
}

async function loadConfig() {
  const view = await api.get("/admin/config");
  const pre = $("#config-view");
  pre.textContent = JSON.stringify(view.config, null, 2);
  pre.hidden = false;
  $("#config-load").textContent = "Reload the configuration";
}

function changesText(changes) {
  if (!changes) return "";
  return Object.entries(changes).map(([field, change]) =>
    `${field}: ${JSON.stringify(change && "from" in change ? change.from : null)} → ${JSON.stringify(change ? change.to : null)}`).join("\n");
}

async function loadAudit(older) {
  const query = new URLSearchParams({ limit: "50" });
  if (older && oldestAuditId !== null) query.set("before", String(oldestAuditId));
  let page;
  try {
    page = await api.get(`/admin/audit?${query}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      $("#audit-note").textContent = "This server keeps no audit log (GET /admin/audit).";
      return;
    }
    throw error;
  }
  const rows = page.data.map((entry) => h("tr", { dataset: { action: entry.action } },
    h("td", {}, formatTime(entry.at)), h("td", {}, entry.actor), h("td", {}, entry.client || "—"),
    h("td", {}, entry.action), h("td", {}, entry.target || "—"),
    h("td", {}, h("pre", { class: "mono" }, changesText(entry.changes)))));
  const body = $("#audit-table tbody");
  if (older) body.append(...rows);
  else body.replaceChildren(...rows);
  if (page.data.length) oldestAuditId = page.data[page.data.length - 1].id;
  $("#audit-more").hidden = !page.has_more;
}

export function startServerPage(onError) {
  stopServerPage();
  previous = null;
  const tick = () => pollEngine().catch(onError);
  tick();
  timer = setInterval(tick, POLL_MS);
  loadModel().catch(onError);
  loadAudit(false).catch(onError);
}

export function stopServerPage() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

export function setUpServer(onError) {
  $("#config-load").addEventListener("click", () => loadConfig().then(() => loadAudit(false)).catch(onError));
  $("#audit-more").addEventListener("click", () => loadAudit(true).catch(onError));
}
