// The view's filters: the address bar <-> the form <-> GET /api/v1/calls parameters.

const KEYS = ["period", "from", "to", "kind", "first_contact", "unregistered", "internal", "mine", "q"];

// The filters of a query string, as the page's own URL keeps them.
export function fromSearch(search) {
  const query = new URLSearchParams(search);
  const view = {};
  for (const key of KEYS) {
    if (key === "kind") view.kind = query.getAll("kind").flatMap((k) => k.split(",")).filter(Boolean);
    else view[key] = query.get(key) ?? "";
  }
  return view;
}

export function toSearch(view) {
  const query = new URLSearchParams();
  for (const key of KEYS) {
    if (key === "kind") view.kind.forEach((k) => query.append("kind", k));
    else if ((key === "from" || key === "to") && view.period !== "custom") continue;
    else if (view[key]) query.set(key, view[key]);
  }
  const text = query.toString();
  return text ? "?" + text : "";
}

export function readForm(form) {
  const data = new FormData(form);
  const view = {};
  for (const key of KEYS) {
    if (key === "kind") view.kind = data.getAll("kind");
    else view[key] = String(data.get(key) ?? "").trim();
  }
  return view;
}

export function fillForm(form, view) {
  for (const input of form.elements) {
    if (!input.name) continue;
    if (input.type === "checkbox") {
      input.checked = input.name === "kind" ? view.kind.includes(input.value) : view[input.name] === input.value;
    } else if (input.type === "radio") {
      input.checked = (view[input.name] ?? "") === input.value;
    } else if (input.name in view) {
      input.value = view[input.name];
    }
  }
}

function pbxToday(timezone) {
  // en-CA writes dates as YYYY-MM-DD.
  return new Intl.DateTimeFormat("en-CA", {
    timeZone: timezone, year: "numeric", month: "2-digit", day: "2-digit",
  }).format(new Date());
}

function shift(day, days) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + days)).toISOString().slice(0, 10);
}

// Dates of a period in the PBX's calendar (the API reads dates as the PBX's days; `to`
// includes its whole day). Неделя and Месяц are the last 7 and 30 days with today.
export function periodDates(view, timezone) {
  const today = pbxToday(timezone);
  switch (view.period) {
    case "today": return { from: today, to: today };
    case "yesterday": { const y = shift(today, -1); return { from: y, to: y }; }
    case "week": return { from: shift(today, -6), to: today };
    case "month": return { from: shift(today, -29), to: today };
    case "custom": return { from: view.from, to: view.to };
    default: return {};
  }
}

export function apiParams(view, { timezone, employee }) {
  const params = { ...periodDates(view, timezone) };
  if (view.kind.length) params.kind = view.kind.join(",");
  if (view.first_contact) params.first_contact = "true";
  if (view.unregistered) params.unregistered = "true";
  if (view.internal === "show") params.internal = "show";
  if (view.mine && employee) params.employee = employee;
  if (view.q) params.q = view.q;
  return params;
}
