// The Usage page: per key, requests and tokens per UTC day as charts, and the budgets used.
import { ApiError, api } from "./api.js";
import { stackedBarChart } from "./charts.js";
import { $, formatNumber, formatTime, h } from "./dom.js";

const KINDS = ["prompt", "completion", "reasoning", "total"];

// Every UTC day of the period, oldest first, so that days without use show as gaps.
function periodDays(count) {
  const today = new Date();
  return Array.from({ length: count }, (_, i) => {
    const day = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - (count - 1 - i)));
    return day.toISOString().slice(0, 10);
  });
}

function budgetTable(budget) {
  const periods = Object.entries(budget || {}).filter(([, period]) => period && period.limit
    && Object.values(period.limit).some((value) => value !== null));
  if (periods.length === 0) return h("p", { class: "note" }, "No budget.");
  return h("table", { class: "budget-table" },
    h("caption", { class: "visually-hidden" }, "Budget used"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Budget"), h("th", { scope: "col" }, "Used"),
      h("th", { scope: "col" }, "Resets"))),
    h("tbody", {}, periods.flatMap(([name, period]) => KINDS.filter((kind) => period.limit[kind] !== null).map((kind) => {
      const used = period.used[kind] || 0;
      const limit = period.limit[kind];
      const label = `${name} ${kind}`;
      return h("tr", { dataset: { budget: label } },
        h("th", { scope: "row" }, label),
        h("td", {}, h("meter", { min: 0, max: limit, value: Math.min(used, limit), high: limit * 0.8, optimum: 0, "aria-label": `${label} used` }),
          ` ${formatNumber(used)} of ${formatNumber(limit)}`),
        h("td", {}, formatTime(period.resets_at)));
    }))));
}

function usageCard(entry, days) {
  const byDay = new Map((entry.days || []).map((row) => [row.day, row]));
  const pick = (field) => days.map((day) => (byDay.get(day) || {})[field] || 0);
  const reasoning = pick("reasoning_tokens");
  const answer = pick("completion_tokens").map((value, i) => Math.max(0, value - reasoning[i]));
  return h("article", { class: "card usage-card", dataset: { keyId: entry.key_id } },
    h("h2", {}, entry.name || entry.key_id, " ", h("span", { class: "note" }, entry.key_id)),
    h("div", { class: "charts" },
      stackedBarChart({ title: "Requests per day", days, series: [{ name: "requests", className: "bar-requests", values: pick("requests") }] }),
      stackedBarChart({ title: "Tokens per day", days, series: [
        { name: "prompt", className: "bar-prompt", values: pick("prompt_tokens") },
        { name: "completion (answer)", className: "bar-completion", values: answer },
        { name: "reasoning", className: "bar-reasoning", values: reasoning },
      ] })),
    h("h3", {}, "Budget used"),
    budgetTable(entry.budget));
}

// Servers without GET /admin/usage: each key's totals from /admin/stats, counted on today's bar.
async function usageFromStats(days) {
  const stats = await api.get("/admin/stats");
  const today = days[days.length - 1];
  return stats.usage.map((row) => ({ key_id: row.key_id, name: row.name, budget: null, days: [{ ...row, day: today }] }));
}

export async function loadUsage() {
  const keyId = $("#usage-key").value;
  const count = Number($("#usage-days").value);
  const days = periodDays(count);
  let entries;
  let note = "";
  try {
    const query = new URLSearchParams({ days: String(count) });
    if (keyId) query.set("key_id", keyId);
    entries = (await api.get(`/admin/usage?${query}`)).data;
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404 || error.code === "key_not_found") throw error;
    entries = (await usageFromStats(days)).filter((entry) => !keyId || entry.key_id === keyId);
    note = "This server has no per-day usage (GET /admin/usage): each key's totals are shown on today's bar.";
  }
  $("#usage-note").textContent = note;
  $("#usage-list").replaceChildren(...(entries.length
    ? entries.map((entry) => usageCard(entry, days))
    : [h("p", { class: "note" }, "No usage in this period.")]));
}

export function setKeyChoices(keys) {
  const select = $("#usage-key");
  const chosen = select.value;
  select.replaceChildren(h("option", { value: "" }, "Every key"),
    ...keys.map((key) => h("option", { value: key.id, selected: key.id === chosen }, `${key.name} (${key.key_hint})`)));
}

export function setUpUsage(onError) {
  for (const id of ["#usage-key", "#usage-days"]) $(id).addEventListener("change", () => loadUsage().catch(onError));
  $("#usage-reload").addEventListener("click", () => loadUsage().catch(onError));
}
