// One journal row per call object, built with DOM calls only: every name, number and comment
// is text, never HTML.

import { callbackControl, canCallBack } from "./callback.js";
import { DIRECTION, ROLE, STATUS_TONE, formatDuration, formatNumber, formatTime } from "./format.js";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function icon(name, title) {
  const img = el("img", "icon icon-" + name);
  img.src = `/static/${name}.svg`;
  img.alt = title;
  img.title = title;
  return img;
}

function partyCell(call) {
  const cell = el("td", "c-party");
  const line = el("div", "line");
  line.append(icon(call.direction, DIRECTION[call.direction] ?? call.direction));
  const box = el("span", "party");
  if (call.customer) {
    box.append(el("span", "customer", call.customer.name));
    if (call.customer.contact) box.append(el("span", "contact", call.customer.contact.name));
    if (call.number && !call.number_withheld) box.append(el("span", "number small", formatNumber(call.number)));
  } else if (call.number_withheld) {
    box.append(el("span", "number", "Номер скрыт"));
  } else if (call.number) {
    box.append(el("span", "number", formatNumber(call.number)));
  } else {
    box.append(el("span", "internal", "Внутренний звонок"));
  }
  line.append(box);
  cell.append(line);
  if (canCallBack(call)) cell.append(callbackControl(call));
  return cell;
}

function staffCell(call) {
  const cell = el("td", "c-staff");
  const list = el("ol", "staff");
  for (const employee of call.employees ?? []) {
    const item = el("li", "role-" + employee.role);
    item.append(el("span", "name", employee.name || employee.extension));
    const role = ROLE[employee.role] ?? employee.role;
    item.append(el("span", "role", employee.on_mobile ? `${role}, мобильный` : role));
    list.append(item);
  }
  cell.append(list);
  return cell;
}

export function renderRow(call) {
  const row = el("tr", "call");
  row.dataset.id = call.id;
  row.dataset.version = call.version;
  row.dataset.startedAt = call.started_at;
  row.dataset.status = call.status;
  const when = formatTime(call.started_at);
  const time = el("td", "c-time");
  time.append(el("span", "date", when.date), el("span", "time", when.time));
  const status = el("td", "c-status");
  status.append(el("span", "badge badge-" + (STATUS_TONE[call.status] ?? "muted"), call.status_label));
  const talk = el("td", "c-talk", formatDuration(call.talk_seconds));
  const marks = el("td", "c-marks");
  if (call.first_contact) marks.append(icon("first", "Первичное обращение"));
  if (call.attention) marks.append(icon("attention", "Требует внимания"));
  if (call.comment) marks.append(icon("comment", "Комментарий: " + call.comment));
  row.append(time, partyCell(call), staffCell(call), status, talk, marks);
  return row;
}
