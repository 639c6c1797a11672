// "Сейчас на линии": the calls in progress from GET /api/v1/live, refreshed every few seconds.

import { api } from "./api.js";
import { formatNumber } from "./format.js";

const EVERY = 3000;
const CALL_STATE = { ringing: "Звонок", talking: "Разговор", waiting: "Ожидание" };
const EMPLOYEE_STATE = {
  placed: "звонит", talking: "говорит", ringing: "звонит телефон", talked: "говорил(а)", rang: "не ответил(а)",
};
const SHOWN = new Set(["placed", "talking", "ringing"]);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function card(call) {
  const item = el("li", "now-call now-" + call.state);
  item.dataset.linkedid = call.linkedid;
  item.append(el("span", "now-state", CALL_STATE[call.state] ?? call.state));
  const who = call.customer
    ? [call.customer.name, call.customer.contact?.name].filter(Boolean).join(", ")
    : call.number ? formatNumber(call.number) : "Внутренний звонок";
  item.append(el("span", "now-party", who));
  if (call.customer && call.number) item.append(el("span", "now-number", formatNumber(call.number)));
  const staff = (call.employees ?? []).filter((e) => SHOWN.has(e.state));
  if (staff.length) {
    item.append(el("span", "now-staff", staff
      .map((e) => `${e.name || e.extension} ${EMPLOYEE_STATE[e.state] ?? e.state}`).join(", ")));
  }
  return item;
}

export function startNow(root) {
  const list = root.querySelector("ul");
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const live = await api("/api/v1/live");
      const items = live.available ? live.items : [];
      list.replaceChildren(...items.map(card));
      root.hidden = items.length === 0;
    } catch {
      // the journal's own state line says when the server is unreachable
    } finally {
      busy = false;
    }
  }
  refresh();
  setInterval(refresh, EVERY);
  document.addEventListener("visibilitychange", refresh);
}
