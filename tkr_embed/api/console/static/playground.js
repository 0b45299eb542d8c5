// The Playground: a streamed chat with the reasoning shown apart, tools and their calls, and the request as code.
import { ApiError, apiUrl, session } from "./api.js";
import { $, copyText, h, showError } from "./dom.js";
import { sseEvents } from "./sse.js";

let history = []; // the conversation's messages as sent back to the server
let model = "default";
let controller = null;

function parseTools() {
  const text = $("#chat-tools").value.trim();
  if (!text) return null;
  let tools;
  try {
    tools = JSON.parse(text);
  } catch (error) {
    throw new Error(`Tools: not valid JSON (${error.message})`);
  }
  if (!Array.isArray(tools)) throw new Error("Tools: a JSON array of {\"type\": \"function\", \"function\": {...}}");
  return tools;
}

function requestBody(message) {
  const messages = [];
  const system = $("#chat-system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  if (message) messages.push({ role: "user", content: message });
  const body = { model, messages, stream: true, stream_options: { include_usage: true } };
  const effort = $("#chat-effort").value;
  if (effort) body.reasoning_effort = effort;
  const maxTokens = Number($("#chat-max-tokens").value);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  const tools = parseTools();
  if (tools) body.tools = tools;
  return body;
}

function pythonLiteral(value, indent = "") {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    const inner = `${indent}    `;
    return `[\n${value.map((item) => inner + pythonLiteral(item, inner)).join(",\n")},\n${indent}]`;
  }
  if (typeof value === "object") {
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    const inner = `${indent}    `;
    return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pythonLiteral(v, inner)}`).join(",\n")},\n${indent}}`;
  }
  return JSON.stringify(value);
}

function updateCode() {
  let body;
  try {
    body = requestBody($("#chat-message").value);
    showError($("#chat-tools-error"), null);
  } catch (error) {
    showError($("#chat-tools-error"), error);
    return;
  }
  const origin = `${window.location.origin}${apiUrl("")}`;
  const json = JSON.stringify(body, null, 2).replaceAll("'", "'\\''");
  $("#code-curl").textContent = `curl -N ${origin}/v1/chat/completions \\\n  -H "Authorization: Bearer $TKR_API_KEY" \\\n`
    + `  -H "Content-Type: application/json" \\\n  -d '${json}'`;
  const { model: name, messages, stream, stream_options: _, ...rest } = body;
  const extra = Object.entries(rest).map(([k, v]) => `    ${k}=${pythonLiteral(v, "    ")},\n`).join("");
  $("#code-python").textContent = `import os\n\nfrom openai import OpenAI\n\n`
    + `client = OpenAI(base_url="${origin}/v1", api_key=os.environ["TKR_API_KEY"])\n`
    + `stream = client.chat.completions.create(\n    model=${JSON.stringify(name)},\n`
    + `    messages=${pythonLiteral(messages, "    ")},\n    stream=${stream ? "True" : "False"},\n${extra})\n`
    + `for chunk in stream:\n    if not chunk.choices:\n        continue\n    delta = chunk.choices[0].delta\n`
    + `    reasoning = getattr(delta, "reasoning", None)  # the analysis channel, apart from the answer\n`
    + `    if reasoning:\n        print(reasoning, end="", flush=True)\n    if delta.content:\n        print(delta.content, end="", flush=True)\n`;
}

function turn(role, ...children) {
  const item = h("li", { class: `turn ${role}` }, h("div", { class: "who" }, role === "user" ? "You" : "Assistant"), ...children);
  $("#conversation").append(item);
  return item;
}

async function send(event) {
  event.preventDefault();
  showError($("#chat-error"), null);
  const text = $("#chat-message").value.trim();
  if (!text) return;
  let body;
  try {
    body = requestBody(text);
  } catch (error) {
    showError($("#chat-tools-error"), error);
    return;
  }
  turn("user", h("div", { class: "text" }, text));
  const reasoningText = h("div", { class: "text reasoning-text" });
  const reasoning = h("details", { class: "reasoning", hidden: true }, h("summary", {}, "Reasoning"), reasoningText);
  const answer = h("div", { class: "text answer-text" });
  const calls = h("ol", { class: "tool-calls", hidden: true });
  const meta = h("div", { class: "meta" });
  const reply = turn("assistant", reasoning, answer, calls, meta);
  reply.setAttribute("aria-busy", "true");
  $("#chat-message").value = "";
  $("#chat-send").disabled = true;
  $("#chat-stop").disabled = false;
  controller = new AbortController();
  const toolCalls = [];
  let content = "";
  try {
    const response = await fetch(apiUrl("/v1/chat/completions"), {
      method: "POST", signal: controller.signal, credentials: "omit",
      headers: { Authorization: `Bearer ${$("#chat-key").value.trim() || session.key}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const failure = await response.json().catch(() => null);
      throw new ApiError(response.status, failure);
    }
    const applied = response.headers.get("X-Reasoning-Effort-Applied");
    for await (const chunk of sseEvents(response)) {
      if (chunk.error) throw new ApiError(500, chunk);
      if (chunk.model) model = chunk.model;
      if (chunk.usage) {
        const details = chunk.usage.completion_tokens_details || {};
        meta.textContent = `${chunk.usage.prompt_tokens} prompt, ${chunk.usage.completion_tokens} completion `
          + `(${details.reasoning_tokens ?? 0} reasoning) tokens${applied ? `; effort stepped down to ${applied}` : ""}`;
      }
      for (const choice of chunk.choices || []) {
        const delta = choice.delta || {};
        const thought = delta.reasoning ?? delta.reasoning_content;
        if (thought) {
          reasoning.hidden = false;
          reasoningText.textContent += thought;
        }
        if (delta.content) {
          content += delta.content;
          answer.textContent = content;
        }
        for (const call of delta.tool_calls || []) {
          const slot = toolCalls[call.index] || (toolCalls[call.index] = { id: call.id, type: "function", function: { name: "", arguments: "" } });
          if (call.id) slot.id = call.id;
          if (call.function && call.function.name) slot.function.name += call.function.name;
          if (call.function && call.function.arguments) slot.function.arguments += call.function.arguments;
          calls.hidden = false;
          calls.replaceChildren(...toolCalls.filter(Boolean).map((c) =>
            h("li", { class: "tool-call" }, `${c.function.name}(${c.function.arguments})`)));
        }
      }
    }
    const message = { role: "assistant", content };
    if (toolCalls.length) message.tool_calls = toolCalls.filter(Boolean);
    history.push({ role: "user", content: text }, message);
  } catch (error) {
    if (error.name === "AbortError") meta.textContent = "stopped";
    else showError($("#chat-error"), error);
  } finally {
    reply.removeAttribute("aria-busy");
    controller = null;
    $("#chat-send").disabled = false;
    $("#chat-stop").disabled = true;
    updateCode();
  }
}

export async function loadModelName() {
  const response = await fetch(apiUrl("/v1/models"), { headers: { Authorization: `Bearer ${session.key}` }, credentials: "omit" });
  if (response.ok) {
    const models = await response.json();
    if (models.data && models.data.length) model = models.data[0].id;
  }
  updateCode();
}

export function setUpPlayground() {
  $("#chat-form").addEventListener("submit", send);
  $("#chat-form").addEventListener("input", updateCode);
  $("#chat-form").addEventListener("change", updateCode);
  $("#chat-message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("#chat-form").requestSubmit();
  });
  $("#chat-stop").addEventListener("click", () => controller && controller.abort());
  $("#chat-clear").addEventListener("click", () => {
    history = [];
    $("#conversation").replaceChildren();
    showError($("#chat-error"), null);
    updateCode();
  });
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", () => copyText($(`#${button.dataset.copy}`).textContent, button));
  }
  updateCode();
}
