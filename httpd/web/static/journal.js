// The journal page: the view the address bar names, paged by cursor as the user scrolls,
// kept current by the change feed.

import { api } from "./api.js";
import { apiParams, fillForm, fromSearch, readForm, toSearch } from "./filters.js";
import { follow } from "./live.js";
import { startNow } from "./now.js";
import { Panel } from "./panel.js";
import { renderRow } from "./rows.js";

const PAGE = 50;
const FIRST_ROWS = "journal-first-rows";
const form = document.getElementById("filters");
const rows = document.getElementById("rows");
const state = document.getElementById("state");
const moreButton = document.getElementById("more-button");
const context = {
  timezone: document.body.dataset.timezone,
  employee: document.body.dataset.employee,
};

let view = fromSearch(location.search);
let cursor = null;
let loading = false;
let generation = 0; // a newer view makes older answers void

function say(text) {
  state.textContent = text;
  state.hidden = !text;
}

function showCustomDates() {
  document.getElementById("custom-dates").hidden = view.period !== "custom";
}

async function loadPage(first) {
  if (loading && !first) return;
  const mine = ++generation;
  loading = true;
  try {
    const params = { ...apiParams(view, context), limit: PAGE };
    if (!first) params.cursor = cursor;
    const page = await api("/api/v1/calls", { params });
    if (mine !== generation) return;
    if (first) rows.replaceChildren();
    for (const call of page.items) rows.append(renderRow(call));
    // The first screen of rows is in the DOM: bench/web_render.py reads this mark.
    if (first && !performance.getEntriesByName(FIRST_ROWS).length) performance.mark(FIRST_ROWS);
    cursor = page.next_cursor;
    moreButton.hidden = !cursor;
    say(rows.childElementCount ? "" : "Звонков нет");
  } catch (error) {
    if (mine === generation) say("Не удалось загрузить журнал: " + error.message);
  } finally {
    if (mine === generation) loading = false;
  }
}

function reload() {
  cursor = null;
  loading = false;
  say("Загрузка…");
  showCustomDates();
  return loadPage(true);
}

// The filters changed in the form: a new address (Back returns to the previous view).
function apply() {
  view = readForm(form);
  const search = toSearch(view);
  if (search !== location.search) history.pushState(null, "", "/" + search);
  reload();
}

let typing = null;
form.addEventListener("input", (event) => {
  clearTimeout(typing);
  if (event.target.name === "q") typing = setTimeout(apply, 350);
});
form.addEventListener("change", (event) => {
  if (event.target.name !== "q") apply();
});
form.addEventListener("submit", (event) => {
  event.preventDefault();
  clearTimeout(typing);
  apply();
});
window.addEventListener("popstate", () => {
  view = fromSearch(location.search);
  fillForm(form, view);
  reload();
});

moreButton.addEventListener("click", () => cursor && loadPage(false));
new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting) && cursor && !loading) loadPage(false);
}, { rootMargin: "400px" }).observe(document.getElementById("more"));

// Changes: rows on the page change in place; calls new to the page that the view shows are
// taken from the view's first page and put on top.
async function applyChanges(items) {
  let unknown = false;
  for (const call of items) {
    const old = rows.querySelector(`tr[data-id="${Number(call.id)}"]`);
    if (!old) { unknown = true; continue; }
    if (Number(old.dataset.version) >= call.version) continue;
    const row = renderRow(call);
    row.classList.add("changed");
    if (old.classList.contains("selected")) row.classList.add("selected");
    old.replaceWith(row);
  }
  if (!unknown) return;
  const mine = generation;
  const page = await api("/api/v1/calls", { params: { ...apiParams(view, context), limit: PAGE } });
  if (mine !== generation) return;
  const top = rows.firstElementChild;
  const fresh = [];
  for (const call of page.items) {
    if (rows.querySelector(`tr[data-id="${Number(call.id)}"]`)) continue;
    if (top && call.started_at < top.dataset.startedAt) continue; // paged in as they scroll
    const row = renderRow(call);
    row.classList.add("fresh");
    fresh.push(row);
  }
  rows.prepend(...fresh);
  if (fresh.length) say("");
}

// A call newer than its row (a comment written in the panel): the row changes at once.
function showCall(call) {
  const old = rows.querySelector(`tr[data-id="${Number(call.id)}"]`);
  if (!old || Number(old.dataset.version) >= call.version) return;
  const row = renderRow(call);
  if (old.classList.contains("selected")) row.classList.add("selected");
  old.replaceWith(row);
}

const panel = new Panel(document.getElementById("panel"), { onCallChanged: showCall });
rows.addEventListener("click", (event) => {
  const row = event.target.closest("tr.call");
  if (!row) return;
  rows.querySelector("tr.selected")?.classList.remove("selected");
  row.classList.add("selected");
  panel.open(row.dataset.id).catch((error) => say("Не удалось открыть звонок: " + error.message));
});

fillForm(form, view);
reload();
startNow(document.getElementById("now"));
follow({
  onChanges: (items) => applyChanges(items).catch(() => {}),
  onJournalChanged: reload,
  onTrouble: (trouble) => document.body.classList.toggle("offline", trouble),
});
