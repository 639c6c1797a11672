// The side panel of a call (the guide's "Записи разговора"): its details and timeline from
// GET /api/v1/calls/{id}, the comment (PUT .../comment, DELETE to remove it, with the CSRF
// token), and the player
// of its recording parts (/api/v1/recordings/{id}, served with Range) with the whole
// conversation as one download (/api/v1/calls/{id}/recording).

import { api } from "./api.js";
import { callbackControl, canCallBack } from "./callback.js";
import { DIRECTION, ROLE, formatDuration, formatNumber, formatTime } from "./format.js";

const SPEEDS = [1, 1.5, 2];
const TRANSFER = { blind: "Перевод", attended: "Перевод с консультацией", blonde: "Перевод", pickup: "Перехват" };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function button(id, text, title, image) {
  const node = el("button", "btn", image ? undefined : text);
  if (image) {
    const img = el("img", "icon");
    img.src = `/static/${image}.svg`;
    img.alt = "";
    node.append(img);
  }
  node.type = "button";
  node.id = id;
  if (title) { node.title = title; node.setAttribute("aria-label", title); }
  return node;
}

const clock = (iso) => formatTime(iso).time;

function mmss(seconds) {
  const total = Math.max(0, Math.floor(seconds || 0));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
}

function partyOf(call) {
  const box = el("div", "p-party");
  if (call.customer) {
    box.append(el("div", "customer", call.customer.name));
    if (call.customer.contact) box.append(el("div", "contact", "Контакт: " + call.customer.contact.name));
  } else if (!call.number_withheld && call.number) {
    box.append(el("div", "unregistered", "Номер не зарегистрирован"));
  }
  const number = call.number_withheld ? "Номер скрыт" : formatNumber(call.number);
  if (number) box.append(el("div", "number", number));
  if (canCallBack(call)) box.append(callbackControl(call));
  return box;
}

function eventsOf(call) {
  const events = [];
  const add = (at, text) => { if (at) events.push({ at, text }); };
  add(call.started_at, "Начало звонка");
  const timeline = call.timeline ?? {};
  for (const person of timeline.participants ?? []) {
    const who = person.name || person.extension;
    const where = person.on_mobile ? " (мобильный)" : "";
    if (person.role === "placed") add(person.answered_at || person.rang_at || call.started_at, `${who}${where} позвонил(а)`);
    else add(person.rang_at, `Звонит у ${who}${where}`);
    if (person.role === "answered" && person.answered_at) {
      add(person.answered_at, `${who}${where} ответил(а)` +
        (person.talk_seconds ? `, разговор ${formatDuration(person.talk_seconds)}` : ""));
    }
  }
  for (const transfer of timeline.transfers ?? []) {
    const name = (ext) => (call.employees ?? []).find((e) => e.extension === ext)?.name || ext;
    add(transfer.at, `${TRANSFER[transfer.kind] ?? transfer.kind}: ${name(transfer.by)} → ${name(transfer.target)}`);
  }
  add(call.ended_at, call.approximate_end ? "Конец звонка (приблизительно)" : "Конец звонка");
  events.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  return events;
}

export class Panel {
  constructor(root, { onCallChanged }) {
    this.root = root;
    this.onCallChanged = onCallChanged;
    this.call = null;
    this.audio = new Audio();
    this.audio.preload = "metadata";
    this.audio.id = "audio";
    this.parts = [];
    this.part = 0;
    this.speed = 1;
    this.audio.addEventListener("timeupdate", () => this.showPosition());
    this.audio.addEventListener("loadedmetadata", () => this.showPosition());
    this.audio.addEventListener("play", () => this.showPlaying());
    this.audio.addEventListener("pause", () => this.showPlaying());
    this.audio.addEventListener("ended", () => {
      if (this.part + 1 < this.parts.length) this.load(this.part + 1, true);
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !this.root.hidden) this.close();
      if (event.key === "F7" && !this.root.hidden && this.canRegister()) {
        event.preventDefault();
        this.createCustomer();
      }
    });
  }

  get id() { return this.call?.id ?? null; }

  close() {
    this.audio.pause();
    this.audio.removeAttribute("src");
    this.root.hidden = true;
    this.call = null;
    document.body.classList.remove("with-panel");
    document.querySelector("#rows tr.selected")?.classList.remove("selected");
  }

  async open(id) {
    const call = await api(`/api/v1/calls/${Number(id)}`);
    this.audio.pause();
    this.call = call;
    this.parts = (call.timeline?.recordings ?? []).filter((r) => r.available !== false);
    this.part = 0;
    this.render();
    this.root.hidden = false;
    document.body.classList.add("with-panel");
    if (this.parts.length) this.load(0, false);
  }

  render() {
    const call = this.call;
    const head = el("div", "p-head");
    const title = el("h2", "", `${DIRECTION[call.direction] ?? ""} звонок · ${call.status_label}`);
    const close = button("panel-close", "×", "Закрыть");
    close.addEventListener("click", () => this.close());
    head.append(title, close);

    const when = formatTime(call.started_at);
    const facts = el("dl", "p-facts");
    const fact = (name, value) => { if (value) facts.append(el("dt", "", name), el("dd", "", value)); };
    fact("Дата", `${when.date} ${when.time}`);
    fact("Ожидание", formatDuration(call.ring_seconds));
    fact("Разговор", formatDuration(call.talk_seconds));
    const staff = (call.employees ?? []).map((e) => `${e.name || e.extension} — ${ROLE[e.role] ?? e.role}`);
    fact("Сотрудники", staff.join("; "));

    const timeline = el("ol", "p-timeline");
    timeline.id = "timeline";
    for (const event of eventsOf(call)) {
      const item = el("li");
      item.append(el("time", "", clock(event.at)), el("span", "", event.text));
      timeline.append(item);
    }

    const registration = this.canRegister() ? [this.renderRegistration()] : [];
    this.root.replaceChildren(head, partyOf(call), ...registration, facts,
      el("h3", "", "Ход звонка"), timeline, this.renderPlayer(), this.renderComment());
  }

  renderPlayer() {
    const box = el("section", "player");
    box.id = "player";
    box.append(el("h3", "", "Запись разговора"));
    if (!this.parts.length) {
      box.append(el("p", "muted", "Записи нет"));
      return box;
    }
    const controls = el("div", "controls");
    const prev = button("part-prev", "", "Предыдущая часть", "prev");
    const back = button("back10", "−10 с", "Назад на 10 секунд");
    const play = button("play", "", "Воспроизвести", "play");
    const fwd = button("fwd10", "+10 с", "Вперёд на 10 секунд");
    const next = button("part-next", "", "Следующая часть", "next");
    prev.addEventListener("click", () => this.load(this.part - 1, !this.audio.paused));
    next.addEventListener("click", () => this.load(this.part + 1, !this.audio.paused));
    back.addEventListener("click", () => this.skip(-10));
    fwd.addEventListener("click", () => this.skip(10));
    play.addEventListener("click", () => (this.audio.paused ? this.play() : this.audio.pause()));
    controls.append(prev, back, play, fwd, next);

    const seek = el("input", "seek");
    seek.type = "range";
    seek.id = "seek";
    seek.min = "0";
    seek.step = "0.1";
    seek.value = "0";
    seek.setAttribute("aria-label", "Позиция");
    seek.addEventListener("input", () => {
      this.audio.currentTime = Number(seek.value);
      if (this.audio.paused) this.play();
    });
    const where = el("div", "where");
    const partLabel = el("span", "part-label");
    partLabel.id = "part-label";
    const time = el("span", "time");
    time.id = "position";
    where.append(partLabel, time);

    const speeds = el("div", "speeds");
    speeds.setAttribute("role", "group");
    speeds.setAttribute("aria-label", "Скорость");
    for (const speed of SPEEDS) {
      const b = button(`speed-${String(speed).replace(".", "_")}`, `${speed}×`.replace(".", ","), `Скорость ${speed}×`);
      b.dataset.speed = speed;
      b.addEventListener("click", () => this.setSpeed(speed));
      speeds.append(b);
    }
    const download = el("a", "download", "Скачать разговор");
    download.id = "download";
    download.href = `/api/v1/calls/${Number(this.call.id)}/recording?format=mp3`;
    download.setAttribute("download", "");
    const tools = el("div", "tools");
    tools.append(speeds, download);
    box.append(this.audio, controls, seek, where, tools);
    this.controls = { play, prev, next, seek, partLabel, time, speeds };
    return box;
  }

  canRegister() {
    const call = this.call;
    return Boolean(call && call.unregistered && call.number && call.direction !== "internal");
  }

  // The guide's "Регистрация клиента": a new customer with this number, or the number added
  // to a customer found by name (or to one of its contact persons).
  renderRegistration() {
    const box = el("section", "register");
    box.id = "register";
    const search = el("input");
    search.type = "search";
    search.id = "customer-search";
    search.placeholder = "Введите название";
    search.maxLength = 200;
    search.setAttribute("aria-label", "Введите название клиента");
    search.autocomplete = "off";
    const found = el("ul", "found");
    found.id = "customer-found";
    const create = button("create-customer", "Создать клиента (F7)");
    create.classList.add("primary");
    create.addEventListener("click", () => this.createCustomer());
    const chosen = el("div", "chosen");
    chosen.id = "chosen";
    chosen.hidden = true;
    const status = el("p", "muted");
    status.id = "register-status";
    status.setAttribute("aria-live", "polite");
    let typing = null;
    let asked = 0;
    search.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(async () => {
        const mine = ++asked;
        const q = search.value.trim();
        if (!q) { found.replaceChildren(); return; }
        try {
          const page = await api("/api/v1/customers", { params: { q, limit: 10 } });
          if (mine !== asked) return;
          found.replaceChildren(...page.items.map((customer) => {
            const item = el("li");
            const pick = el("button", "pick", customer.name);
            pick.type = "button";
            pick.dataset.id = customer.id;
            pick.addEventListener("click", () => this.choose(customer.id));
            item.append(pick);
            return item;
          }));
          if (!page.items.length) found.append(el("li", "muted", "Не найдено: создайте клиента (F7)"));
        } catch (error) {
          status.textContent = "Поиск не удался: " + error.message;
        }
      }, 200);
    });
    box.append(el("h3", "", "Регистрация номера"), search, found, chosen, create, status);
    this.registration = { search, found, chosen, status };
    return box;
  }

  async choose(customerId) {
    const { found, chosen, status } = this.registration;
    let customer;
    try {
      customer = await api(`/api/v1/customers/${encodeURIComponent(customerId)}`);
    } catch (error) {
      status.textContent = "Не удалось открыть клиента: " + error.message;
      return;
    }
    found.replaceChildren();
    const name = el("div", "chosen-name", customer.name);
    const toCustomer = button("bind-customer", "Добавить номер клиенту");
    toCustomer.addEventListener("click", () => this.bind(customer.id, null));
    const contacts = el("select");
    contacts.id = "contact-choice";
    contacts.setAttribute("aria-label", "Контактное лицо");
    for (const contact of customer.contacts) {
      const option = el("option", "", contact.name);
      option.value = contact.id;
      contacts.append(option);
    }
    const toContact = button("bind-contact", "Добавить номер контактному лицу");
    toContact.addEventListener("click", () => this.bind(customer.id, contacts.value));
    const row = el("div", "actions");
    if (customer.contacts.length) row.append(contacts, toContact);
    else row.append(el("span", "muted", "У клиента нет контактных лиц"));
    chosen.replaceChildren(name, toCustomer, row);
    chosen.hidden = false;
  }

  async bind(customerId, contactId) {
    const number = this.call.number;
    await this.register("Номер добавлен", () => api(`/api/v1/numbers/${encodeURIComponent(number)}`, {
      method: "PUT", body: contactId ? { customer_id: customerId, contact_id: contactId } : { customer_id: customerId },
    }));
  }

  async createCustomer() {
    const { search, status } = this.registration;
    const name = search.value.trim();
    if (!name) {
      status.textContent = "Введите название нового клиента";
      search.focus();
      return;
    }
    // 1C owns the customers: ids made here say where they come from (docs/1c.md).
    const random = crypto.getRandomValues(new Uint8Array(12));
    const id = "web-" + Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
    await this.register("Клиент создан", () => api(`/api/v1/customers/${id}`, {
      method: "PUT", body: { name, numbers: [this.call.number], contacts: [] },
    }));
  }

  async register(done, write) {
    const { status } = this.registration;
    status.textContent = "Сохранение…";
    try {
      await write();
    } catch (error) {
      status.textContent = "Не сохранено: " + error.message;
      return;
    }
    const id = this.call.id;
    await this.open(id);
    this.onCallChanged(this.call);
    const note = el("p", "muted", done);
    note.id = "register-done";
    this.root.querySelector(".p-party")?.append(note);
  }

  renderComment() {
    const box = el("section", "comment");
    box.append(el("h3", "", "Комментарий"));
    const text = el("textarea");
    text.id = "comment-text";
    text.maxLength = 4000;
    text.rows = 3;
    text.value = this.call.comment ?? "";
    text.setAttribute("aria-label", "Комментарий");
    const save = button("comment-save", "Сохранить");
    const remove = button("comment-delete", "Удалить");
    const status = el("span", "muted");
    status.id = "comment-status";
    status.setAttribute("aria-live", "polite");
    const write = async (value) => {
      status.textContent = "Сохранение…";
      try {
        const path = `/api/v1/calls/${Number(this.call.id)}/comment`;
        const answer = value.trim()
          ? await api(path, { method: "PUT", body: { text: value } })
          : await api(path, { method: "DELETE" });
        this.call = { ...this.call, comment: answer.comment, version: answer.version };
        text.value = answer.comment ?? "";
        status.textContent = answer.comment ? "Сохранено" : "Удалено";
        this.onCallChanged(await api(`/api/v1/calls/${Number(this.call.id)}`));
      } catch (error) {
        status.textContent = "Не сохранено: " + error.message;
      }
    };
    save.addEventListener("click", () => write(text.value));
    remove.addEventListener("click", () => write(""));
    const actions = el("div", "actions");
    actions.append(save, remove, status);
    box.append(text, actions);
    return box;
  }

  // Part `index` from `offset` seconds (negative: that far before its end).
  load(index, autoplay, offset = 0) {
    if (index < 0 || index >= this.parts.length) return;
    this.part = index;
    const part = this.parts[index];
    this.audio.src = `/api/v1/recordings/${Number(part.id)}`;
    if (offset) {
      this.audio.addEventListener("loadedmetadata", () => {
        const duration = Number.isFinite(this.audio.duration) ? this.audio.duration : part.duration_seconds;
        this.audio.currentTime = Math.max(0, offset < 0 ? duration + offset : Math.min(offset, duration));
      }, { once: true });
    }
    this.audio.playbackRate = this.speed;
    this.controls.seek.max = String(part.duration_seconds || 0);
    this.controls.partLabel.textContent = `Часть ${index + 1} из ${this.parts.length}`;
    this.controls.prev.disabled = index === 0;
    this.controls.next.disabled = index + 1 >= this.parts.length;
    this.showSpeed();
    this.showPosition();
    if (autoplay) this.play();
  }

  play() {
    this.audio.playbackRate = this.speed;
    this.audio.play().catch(() => {});
  }

  // 10 s back or forward across the parts, as if they were one conversation.
  skip(seconds) {
    const end = Number.isFinite(this.audio.duration) ? this.audio.duration : this.parts[this.part].duration_seconds;
    const target = this.audio.currentTime + seconds;
    const playing = !this.audio.paused;
    if (target >= end && this.part + 1 < this.parts.length) this.load(this.part + 1, playing, target - end);
    else if (target < 0 && this.part > 0) this.load(this.part - 1, playing, target);
    else this.audio.currentTime = Math.min(Math.max(0, target), end);
  }

  setSpeed(speed) {
    this.speed = speed;
    this.audio.playbackRate = speed;
    this.showSpeed();
  }

  showSpeed() {
    for (const b of this.controls.speeds.children) b.classList.toggle("on", Number(b.dataset.speed) === this.speed);
  }

  showPlaying() {
    const playing = !this.audio.paused;
    this.controls.play.querySelector("img").src = `/static/${playing ? "pause" : "play"}.svg`;
    this.controls.play.title = playing ? "Пауза" : "Воспроизвести";
    this.controls.play.setAttribute("aria-label", this.controls.play.title);
  }

  showPosition() {
    if (!this.controls || !this.parts.length) return;
    const duration = Number.isFinite(this.audio.duration) ? this.audio.duration : this.parts[this.part].duration_seconds;
    if (duration) this.controls.seek.max = String(duration);
    if (document.activeElement !== this.controls.seek) this.controls.seek.value = String(this.audio.currentTime);
    this.controls.time.textContent = `${mmss(this.audio.currentTime)} / ${mmss(duration)}`;
  }
}
