// The fields of a key's settings (name, scopes, rate limits, budgets, reasoning policy), shared by the create
// form and the edit dialog, and the request body they make (docs/API.md, the key view).
import { h } from "./dom.js";

export const PERMISSIONS = ["generate:text", "generate:chat", "generate:stream", "admin"];
const DEFAULT_PERMISSIONS = ["generate:text", "generate:chat", "generate:stream"];
const LIMITS = [
  ["burst", "Burst"], ["requests_per_minute", "Requests / minute"], ["requests_per_hour", "Requests / hour"],
  ["requests_per_day", "Requests / day"], ["tokens_per_minute", "Tokens / minute"],
];
const BUDGET_KINDS = [["prompt", "Prompt"], ["completion", "Completion"], ["reasoning", "Reasoning"], ["total", "Total"]];
const PERIODS = [["day", "tokens per UTC day"], ["month", "tokens per UTC month"]];
const EFFORTS = ["low", "medium", "high"];

function numberField(id, label, value) {
  return h("div", {},
    h("label", { for: id }, label),
    h("input", { id, name: id, type: "number", min: 1, step: 1, inputmode: "numeric", value: value ?? "", placeholder: "none" }));
}

// prefix keeps ids unique between the create form and the edit dialog; key: the key view being edited, or null.
export function keyFields(prefix, key) {
  const permissions = key ? key.permissions : DEFAULT_PERMISSIONS;
  const limits = (key && key.limits) || {};
  const budgets = (key && key.budgets) || {};
  const reasoning = (key && key.reasoning) || {};
  const allowed = reasoning.allowed_efforts || EFFORTS;
  const parts = [
    h("label", { for: `${prefix}-name` }, "Name"),
    h("input", { id: `${prefix}-name`, name: "name", required: true, maxlength: 200, value: key ? key.name : "" }),
    h("fieldset", {}, h("legend", {}, "Scopes"),
      h("div", { class: "checks" }, PERMISSIONS.map((permission) => h("label", { class: "inline" },
        h("input", { type: "checkbox", name: "permission", value: permission, checked: permissions.includes(permission) }),
        permission)))),
  ];
  if (!key) {
    parts.push(numberField(`${prefix}-expires`, "Expires after (days, empty: never)", ""));
  }
  parts.push(
    h("fieldset", {}, h("legend", {}, "Rate limits (empty: the server's)"),
      h("div", { class: "fields" }, LIMITS.map(([field, label]) => numberField(`${prefix}-limit-${field}`, label, limits[field])))),
    ...PERIODS.map(([period, legend]) => h("fieldset", {}, h("legend", {}, `Budget: ${legend} (empty: none)`),
      h("div", { class: "fields" }, BUDGET_KINDS.map(([kind, label]) =>
        numberField(`${prefix}-budget-${period}-${kind}`, label, budgets[period] ? budgets[period][kind] : null))))),
    h("fieldset", {}, h("legend", {}, "Reasoning policy"),
      h("div", { class: "checks", role: "group", "aria-label": "Allowed reasoning efforts" },
        EFFORTS.map((effort) => h("label", { class: "inline" },
          h("input", { type: "checkbox", name: "effort", value: effort, checked: allowed.includes(effort) }), `allow ${effort}`))),
      h("label", { for: `${prefix}-above` }, "A request above the allowed efforts"),
      h("select", { id: `${prefix}-above`, name: "above" },
        h("option", { value: "step_down", selected: reasoning.above !== "refuse" }, "is stepped down to the highest allowed"),
        h("option", { value: "refuse", selected: reasoning.above === "refuse" }, "is refused (403)")),
      numberField(`${prefix}-max-reasoning`, "Reasoning tokens cap (empty: none)", reasoning.max_reasoning_tokens)),
  );
  return parts;
}

function readNumber(form, id) {
  const input = form.querySelector(`#${id}`);
  if (!input || input.value.trim() === "") return null;
  const value = Number(input.value);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${input.labels[0].textContent}: a whole number of 1 or more`);
  return value;
}

function allNull(object) {
  return Object.values(object).every((value) => value === null);
}

// The body of POST /admin/api-keys (create) or PATCH /admin/api-keys/{id}; throws on bad input.
export function keyBody(form, prefix, { creating }) {
  const permissions = [...form.querySelectorAll('input[name="permission"]:checked')].map((box) => box.value);
  if (permissions.length === 0) throw new Error("Choose at least one scope");
  const limits = Object.fromEntries(LIMITS.map(([field]) => [field, readNumber(form, `${prefix}-limit-${field}`)]));
  const budgets = Object.fromEntries(PERIODS.map(([period]) => [period,
    Object.fromEntries(BUDGET_KINDS.map(([kind]) => [kind, readNumber(form, `${prefix}-budget-${period}-${kind}`)]))]));
  const efforts = [...form.querySelectorAll('input[name="effort"]:checked')].map((box) => box.value);
  if (efforts.length === 0) throw new Error("Allow at least one reasoning effort");
  const maxReasoning = readNumber(form, `${prefix}-max-reasoning`);
  const above = form.querySelector(`#${prefix}-above`).value;
  const unrestricted = efforts.length === EFFORTS.length && maxReasoning === null;
  const body = {
    name: form.querySelector(`#${prefix}-name`).value.trim(),
    permissions,
    limits: allNull(limits) ? null : limits,
    budgets: allNull(budgets.day) && allNull(budgets.month) ? null : budgets,
    reasoning: unrestricted ? null : {
      allowed_efforts: efforts.length === EFFORTS.length ? null : efforts, above, max_reasoning_tokens: maxReasoning,
    },
  };
  if (creating) {
    const expires = readNumber(form, `${prefix}-expires`);
    if (expires !== null) body.expires_in_days = expires;
    for (const field of ["limits", "budgets", "reasoning"]) if (body[field] === null) delete body[field];
  }
  return body;
}
