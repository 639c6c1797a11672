// "Перезвонить": click-to-call from the journal (POST /api/v1/originate with the call's id,
// the signed-in employee's phone rings first), then its state from GET /api/v1/originate/{id}
// every second until it ends. The state is kept per call, not in the row, so a row redrawn
// by the change feed shows it still.

import { api } from "./api.js";

const POLL_MS = 1000;
const REASONS = {
  0: "телефон недоступен",
  1: "трубку положили",
  3: "не ответили",
  5: "занято",
  8: "сеть перегружена",
};
const states = new Map(); // call id → { text, state }

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function canCallBack(call) {
  return Boolean(document.body.dataset.employee && call.direction !== "internal" && call.number);
}

function describe(status) {
  if (status.state !== "failed") return status.state_label;
  const why = REASONS[status.reason_code] ?? status.reason;
  return why ? `${status.state_label}: ${why}` : status.state_label;
}

function show(id, text, state) {
  states.set(id, { text, state });
  const busy = state !== "finished" && state !== "failed";
  for (const node of document.querySelectorAll(`[data-callback-for="${id}"]`)) {
    node.querySelector(".callback-status").textContent = text;
    node.dataset.state = state;
    node.querySelector("button").disabled = busy;
  }
}

async function callBack(id) {
  show(id, "Соединение…", "sending");
  let status;
  try {
    status = await api("/api/v1/originate", { method: "POST", body: { call_id: id } });
  } catch (error) {
    show(id, "Не удалось: " + error.message, "failed");
    return;
  }
  for (;;) {
    show(id, describe(status), status.state);
    if (status.state === "finished" || status.state === "failed") return;
    await sleep(POLL_MS);
    try {
      status = await api(status.url);
    } catch (error) {
      show(id, "Состояние неизвестно: " + error.message, "failed");
      return;
    }
  }
}

// The button and its state line for one call (a row, or the side panel).
export function callbackControl(call) {
  const id = Number(call.id);
  const box = el("span", "callback");
  box.dataset.callbackFor = id;
  const go = el("button", "btn callback-button", "Перезвонить");
  go.type = "button";
  go.title = "Позвонить клиенту: сначала зазвонит ваш телефон";
  go.addEventListener("click", (event) => {
    event.stopPropagation(); // not the row's click (the side panel)
    callBack(id);
  });
  const line = el("span", "callback-status");
  line.setAttribute("aria-live", "polite");
  box.append(go, line);
  const known = states.get(id);
  if (known) {
    line.textContent = known.text;
    box.dataset.state = known.state;
    go.disabled = known.state !== "finished" && known.state !== "failed";
  }
  return box;
}
