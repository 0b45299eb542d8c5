// Small DOM helpers: every text from the server goes in through textContent, never as HTML.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function formatNumber(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

export function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

export function setStatus(message) {
  $("#status").textContent = message || "";
}

export function showError(element, error) {
  element.textContent = error ? (error.message || String(error)) : "";
}

export async function copyText(text, button) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    // Without clipboard access (plain HTTP on another host), select the text for the user to copy.
    button.textContent = "Select and copy by hand";
  }
  setTimeout(() => { button.textContent = label; }, 2000);
}

export function fillList(list, rows) {
  list.replaceChildren(...rows);
}

export function definitionList(list, pairs) {
  list.replaceChildren(...pairs.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}
