// The seat page's shell: login, the seat's websocket (reconnecting with back-off), ringing, the
// keyboard, and drawing what the core (seat_core.js) decided. Every peer string reaches the page as
// text (textContent), never as markup. The CSRF token lives in this module's memory only; the
// agent's token is sent once, to log in, and never kept.

import {
  STATES,
  EDITABLE,
  initialState,
  onFrame,
  onCommand,
  helloFrame,
  fieldValue,
  clock,
  clockColour,
  backoff,
  FLAG_LABELS,
  CLOCK_LABELS,
  ALERT_CATEGORIES,
  FIELD_LIMITS,
  MAX_REPLY_CHARS,
  categoryLabel,
  conversation,
  isConversation,
  knowledgeKey,
  CHANNELS,
  earlierWanted,
  repeatMark,
  earlierItems,
  historyLines,
} from "./seat_core.js";
import { $, element, callApi } from "./page.js";

const SAVE_DELAY_MS = 600; // autosave after the agent pauses typing this long
const FIELD_LABELS = {
  text: "诉求内容",
  category: "分类",
  address: "地址",
  notes: "备注",
  citizen_name: "市民姓名",
  citizen_phone: "联系电话",
  answer: "答复市民",
  answered_from: "知识库条目",
};
const KNOWLEDGE_EVERY_MS = 3000; // suggestions asked again at most this often while the transcript grows
// sessionStorage: replies typed and not yet sent (text only), and the last journal position seen
const REPLIES_KEY = "hg-seat-replies";
const SAVING = { dirty: "未保存…", saving: "保存中…", saved: "已保存", failed: "保存失败" };
const SHORTCUTS = [
  ["Alt+A", "接受工单", { type: "accept" }],
  ["Alt+J", "拒绝工单", { type: "decline" }],
  ["Alt+S", "提交工单", { type: "submit" }],
  ["Alt+R", "示闲", { type: "state", state: "ready" }],
  ["Alt+B", "示忙", { type: "state", state: "busy" }],
  ["Alt+W", "话后处理", { type: "state", state: "wrap_up" }],
  ["Alt+L", "离开", { type: "state", state: "away" }],
  ["Alt+T", "转到诉求内容", { focus: "text" }],
  ["Alt+N", "转到备注", { focus: "notes" }],
  ["Alt+M", "转到回复框", { focus: "reply" }],
];
// Keys that act inside one box only (listed with the others).
const BOX_SHORTCUTS = [["Ctrl+Enter", "发送回复（在回复框中）"]];

const page = {
  session: null, // {agent, name, csrf, seats_url}: memory only
  state: initialState(Date.now()),
  socket: null,
  attempt: 0,
  reconnectTimer: null,
  saveTimers: {},
  audio: null,
  leaving: false,
  role: "leader", // "follower" while another tab of this agent leads (several tabs, below)
  channel: null, // BroadcastChannel to this agent's other tabs
  releaseLead: null, // frees the leader's Web Lock (logout)
  keptReplies: "", // what sessionStorage holds now (JSON)
};

// --- HTTP ----------------------------------------------------------------------------------------

async function api(path, body, changing = true) {
  return callApi(path, body, changing && page.session ? page.session.csrf : undefined);
}

function showLogin(message = "") {
  page.session = null;
  page.leaving = true;
  closeSocket();
  leaveTabs();
  $("seat-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  $("login-agent").focus();
}

function showSeat(session) {
  page.session = session;
  page.leaving = false;
  $("login-view").hidden = true;
  $("seat-view").hidden = false;
  $("agent-name").textContent = `${session.name || session.agent}（${session.agent}）`;
  lead(session);
}

function takeLead(session) {
  // The leading tab holds the seat: it brings back the replies this tab kept and reads the catalogue.
  setRole("leader");
  const kept = keptForReload(session.agent);
  apply(onCommand(page.state, { type: "restoreReplies", replies: kept.replies, seq: kept.seq }, Date.now()));
  loadCatalogue();
  connect();
}

async function loadCatalogue() {
  const answer = await api("catalogue", undefined, false).catch(() => null);
  if (answer && answer.status === 200) command({ type: "catalogue", categories: answer.data.categories });
}

// --- kept through a reload (sessionStorage: this tab only, text only, never a token): the replies
// typed and not sent, and the journal position the next hello asks to go on from --------------

function keptForReload(agent) {
  try {
    const kept = JSON.parse(sessionStorage.getItem(REPLIES_KEY) || "{}");
    if (kept.agent !== agent) return { replies: {}, seq: "" };
    const replies = kept.replies && typeof kept.replies === "object" ? kept.replies : {};
    return { replies, seq: typeof kept.seq === "string" ? kept.seq : "" };
  } catch {
    return { replies: {}, seq: "" };
  }
}

function keepReplies() {
  if (page.role !== "leader" || !page.session) return;
  const kept = JSON.stringify({ agent: page.session.agent, replies: page.state.replies, seq: page.state.seq });
  if (kept === page.keptReplies) return;
  page.keptReplies = kept;
  try {
    sessionStorage.setItem(REPLIES_KEY, kept);
  } catch {
    // storage full or refused: the reply stays on the page, it just does not survive a reload
  }
}

async function boot() {
  drawShortcuts();
  drawStateButtons();
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("accept").addEventListener("click", () => command({ type: "accept" }));
  $("decline").addEventListener("click", () => command({ type: "decline" }));
  $("submit").addEventListener("click", submit);
  $("reply-send").addEventListener("click", sendReply);
  $("reply-text").maxLength = MAX_REPLY_CHARS;
  $("reply-text").addEventListener("input", () => {
    if (page.state.current) command({ type: "replyDraft", ticket: page.state.current, text: $("reply-text").value });
  });
  $("reply-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.ctrlKey && !event.altKey && !event.metaKey) {
      event.preventDefault();
      sendReply();
    }
  });
  document.addEventListener("keydown", onKey);
  window.addEventListener("pagehide", flushAll);
  setInterval(drawClocks, 1000);
  const { status, data } = await api("session", undefined, false);
  if (status === 200) showSeat(data);
  else showLogin(data.error && data.error.code === "session_expired" ? "登录已过期，请重新登录" : "");
}

async function login(event) {
  event.preventDefault();
  const agent = $("login-agent").value.trim();
  const tokenInput = $("login-token");
  const token = tokenInput.value;
  tokenInput.value = ""; // the token is not kept anywhere once sent
  if ("Notification" in window && Notification.permission === "default") Notification.requestPermission();
  unlockAudio();
  let answer;
  try {
    answer = await api("login", { agent, token }, false);
  } catch {
    $("login-error").textContent = "无法连接服务器，请稍后再试";
    return;
  }
  if (answer.status === 200) showSeat(answer.data);
  else if (answer.status === 401) $("login-error").textContent = "工号或令牌不正确，请重新输入";
  else if (answer.status === 403) $("login-error").textContent = "请从本系统的登录页登录";
  else $("login-error").textContent = "登录失败：服务暂不可用，请稍后再试";
}

async function logout() {
  flushAll();
  sessionStorage.removeItem(REPLIES_KEY);
  page.keptReplies = "";
  await api("logout", {}).catch(() => null);
  page.state = initialState(Date.now());
  draw();
  showLogin("已退出登录");
}

// --- the seat's websocket ------------------------------------------------------------------------

function closeSocket() {
  clearTimeout(page.reconnectTimer);
  if (page.socket) {
    const socket = page.socket;
    page.socket = null;
    socket.onclose = null;
    socket.close(1000, "logout");
  }
}

async function connect() {
  clearTimeout(page.reconnectTimer);
  apply(onCommand(page.state, { type: "connecting" }, Date.now()));
  let answer;
  try {
    answer = await api("seat-ticket", {});
  } catch {
    return retry();
  }
  if (answer.status === 401) return showLogin("登录已过期，请重新登录");
  if (answer.status !== 200 || page.leaving) return retry();
  const socket = new WebSocket(page.session.seats_url);
  page.socket = socket;
  socket.onopen = () => {
    const wanted = page.state.agent ? page.state.state : "away";
    socket.send(JSON.stringify(helloFrame(page.session.agent, answer.data.ticket, wanted, page.state.seq)));
  };
  socket.onmessage = (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (frame.type === "welcome") {
      page.attempt = 0;
      document.body.dataset.connects = String(Number(document.body.dataset.connects || 0) + 1);
    }
    apply(onFrame(page.state, frame, Date.now()));
  };
  socket.onclose = (event) => {
    if (page.socket !== socket) return;
    page.socket = null;
    apply(onCommand(page.state, { type: "disconnected" }, Date.now()));
    if (event.code === 4008) {
      notice("本工号已在其他页面登录，此页面已断开", "warn");
      return;
    }
    retry();
  };
}

function retry() {
  if (page.leaving) return;
  const delay = backoff(page.attempt++) * (0.75 + Math.random() * 0.5);
  page.reconnectTimer = setTimeout(connect, delay);
}

function send(frame) {
  if (page.socket && page.socket.readyState === WebSocket.OPEN) page.socket.send(JSON.stringify(frame));
}

// --- several tabs --------------------------------------------------------------------------------
// One tab per agent leads: it holds a Web Lock while it lives, and it alone opens the seat's socket,
// rings and notifies. The others follow: they draw the leader's state (BroadcastChannel) and send
// their agent's clicks, keys and edits to it, so no second socket replaces the first. Closing the
// leader frees the lock; the next tab takes it and connects, its hello keeps the agent's state,
// and the server offers again what was ringing (a closed seat's offers go back to the queue).

function lead(session) {
  leaveTabs();
  const name = `hg-seat:${session.agent}`;
  if (!navigator.locks || !window.BroadcastChannel) {
    takeLead(session); // an old browser: every tab is its own seat (the newest replaces the others)
    return;
  }
  page.channel = new BroadcastChannel(name);
  page.channel.onmessage = (event) => onTabMessage(event.data);
  setRole("follower");
  page.channel.postMessage({ type: "sync" });
  navigator.locks.request(name, () => {
    if (page.leaving) return undefined;
    takeLead(session);
    return new Promise((resolve) => {
      page.releaseLead = resolve; // held until this tab closes or logs out
    });
  });
}

function leaveTabs() {
  if (page.releaseLead) page.releaseLead();
  page.releaseLead = null;
  if (page.channel) page.channel.close();
  page.channel = null;
}

function setRole(role) {
  page.role = role;
  document.body.dataset.role = role;
  $("tab-role").textContent = role === "leader" ? "本页为主页面" : "跟随中：另一个标签页正在接收工单，本页同步显示";
  if (role === "leader") broadcast();
}

function onTabMessage(message) {
  if (page.role === "leader") {
    if (message.type === "sync") broadcast();
    else if (message.type === "command") command(message.what);
  } else if (message.type === "state") {
    page.state = message.state;
    draw();
  }
}

function broadcast() {
  if (page.role === "leader" && page.channel) page.channel.postMessage({ type: "state", state: page.state });
}

// --- effects -------------------------------------------------------------------------------------

function apply({ state, effects }) {
  page.state = state;
  for (const effect of effects) {
    if (effect.send) send(effect.send);
    if (effect.ring) ring(effect.ring);
    if (effect.stopRing) document.body.classList.remove("ringing");
  }
  keepReplies();
  draw();
  askKnowledge();
  askEarlier();
}

function command(what) {
  if (page.role === "follower") {
    page.channel.postMessage({ type: "command", what }); // the leading tab holds the seat
    return;
  }
  apply(onCommand(page.state, what, Date.now()));
}

function notice(text, level) {
  page.state = { ...page.state, notices: [...page.state.notices, { text, level }].slice(-5) };
  draw();
}

function unlockAudio() {
  // Browsers start sound only after a gesture: the login click opens the audio context.
  if (!page.audio && window.AudioContext) page.audio = new AudioContext();
}

function ring(ticket) {
  document.body.classList.add("ringing");
  document.body.dataset.rings = String(Number(document.body.dataset.rings || 0) + 1);
  if (page.audio) {
    const now = page.audio.currentTime;
    for (const [offset, pitch] of [[0, 660], [0.25, 880]]) {
      const tone = page.audio.createOscillator();
      const gain = page.audio.createGain();
      tone.frequency.value = pitch;
      gain.gain.setValueAtTime(0.2, now + offset);
      gain.gain.exponentialRampToValueAtTime(0.001, now + offset + 0.2);
      tone.connect(gain).connect(page.audio.destination);
      tone.start(now + offset);
      tone.stop(now + offset + 0.2);
    }
  }
  if ("Notification" in window && Notification.permission === "granted" && document.hidden) {
    new Notification("新工单", { body: String(ticket.text || "").slice(0, 80), tag: "hg-offer" });
  }
}

// --- autosave ------------------------------------------------------------------------------------

function onEdit(ticketId, field, value) {
  command({ type: "edit", ticket: ticketId, field, value });
  clearTimeout(page.saveTimers[ticketId]);
  page.saveTimers[ticketId] = setTimeout(() => command({ type: "save", ticket: ticketId }), SAVE_DELAY_MS);
}

function flushAll() {
  for (const [ticketId, timer] of Object.entries(page.saveTimers)) {
    clearTimeout(timer);
    command({ type: "save", ticket: ticketId });
  }
  page.saveTimers = {};
}

// --- keyboard ------------------------------------------------------------------------------------

function onKey(event) {
  if (!event.altKey || event.ctrlKey || event.metaKey || $("seat-view").hidden) return;
  const shortcut = SHORTCUTS.find(([keys]) => event.code === `Key${keys.slice(-1)}`);
  if (!shortcut || event.shiftKey) return;
  event.preventDefault();
  const what = shortcut[2];
  if (what.focus) {
    const input = what.focus === "reply" ? $("reply-text") : document.querySelector(`[data-field="${what.focus}"]`);
    if (input) input.focus();
    return;
  }
  if (what.type === "submit") submit();
  else command(what);
}

function sendReply() {
  if (page.state.current) command({ type: "reply", ticket: page.state.current });
}

function adopt(ticketId, hit) {
  command({ type: "adopt", ticket: ticketId, entry: hit.id, answer: hit.answer });
  clearTimeout(page.saveTimers[ticketId]);
  command({ type: "save", ticket: ticketId });
}

function chooseCategory(ticketId, category) {
  clearTimeout(page.saveTimers[ticketId]);
  command({ type: "edit", ticket: ticketId, field: "category", value: category });
  command({ type: "save", ticket: ticketId });
}

// --- what the page reads about the tickets on screen ---------------------------------------------
// A read about one ticket the agent holds (GET with the session: 知识库 suggestions, 历史工单), asked
// by the leading tab only (the others draw what it got), one request at a time per read, for what
// `wanted(state)` names ({ticket, key}: asked again when the key changes, for the same ticket at
// most every `every` ms). `answered(ticket, answer)` makes the answer a command for the core (or
// null); a request that failed on the way is asked again at the next change.

function reader(path, every, wanted, answered) {
  const asked = { key: "", at: 0, timer: null, busy: false };
  const ask = () => {
    const want = page.role === "leader" && !asked.busy ? wanted(page.state) : null;
    if (!want || want.key === asked.key) return;
    const wait = asked.at + every - Date.now();
    clearTimeout(asked.timer);
    if (asked.key.startsWith(`${want.ticket}:`) && wait > 0) {
      asked.timer = setTimeout(ask, wait);
      return;
    }
    asked.key = want.key;
    asked.at = Date.now();
    asked.busy = true;
    api(`${path}?ticket=${encodeURIComponent(want.ticket)}`, undefined, false)
      .then((answer) => {
        const what = answered(want.ticket, answer);
        if (what) command(what);
      })
      .catch(() => {
        asked.key = ""; // asked again at the next change
      })
      .finally(() => {
        asked.busy = false;
        ask();
      });
  };
  return ask;
}

// 知识库: for the ticket on screen, again when what the citizen said grows.
const askKnowledge = reader(
  "knowledge",
  KNOWLEDGE_EVERY_MS,
  (state) => {
    const ticket = state.current ? state.tickets[state.current] : null;
    return ticket ? { ticket: ticket.id, key: knowledgeKey(ticket) } : null;
  },
  (ticket, answer) =>
    answer.status === 200 ? { type: "knowledge", ticket, enabled: answer.data.enabled, results: answer.data.results } : null,
);

// 历史工单: once per ticket offered or held (a refusal is kept too, and said in the panel).
const askEarlier = reader("earlier", 0, earlierWanted, (ticket, answer) =>
  answer.status === 200 ? { ...answer.data, type: "earlier", ticket } : { type: "earlier", ticket, failed: true },
);

function submit() {
  // The submit carries every edit not yet saved: the pending autosaves are not needed any more.
  for (const timer of Object.values(page.saveTimers)) clearTimeout(timer);
  page.saveTimers = {};
  command({ type: "submit" });
}

// --- drawing -------------------------------------------------------------------------------------

function drawShortcuts() {
  const list = $("shortcuts-list");
  for (const [keys, label] of [...SHORTCUTS, ...BOX_SHORTCUTS]) {
    list.append(element("dt", { text: keys }), element("dd", { text: label }));
  }
}

function drawStateButtons() {
  const group = $("states");
  for (const [name, label] of Object.entries(STATES)) {
    const button = element("button", { type: "button", "data-state": name, text: label, "aria-pressed": "false" });
    button.addEventListener("click", () => command({ type: "state", state: name }));
    group.append(button);
  }
}

function drawClocks() {
  const now = Date.now();
  const state = page.state;
  $("state-clock").textContent = clock(now - state.stateSince);
  for (const node of document.querySelectorAll("[data-since]")) {
    node.textContent = clock(now - Date.parse(node.dataset.since));
  }
  for (const node of document.querySelectorAll("[data-due]")) {
    node.dataset.colour = clockColour(Date.parse(node.dataset.due), Date.parse(node.dataset.received), now, state.yellowShare);
  }
  const countdown = $("offer-countdown");
  if (state.offer && countdown) countdown.textContent = `${Math.max(0, Math.ceil((state.offer.expiresAt - now) / 1000))} 秒`;
}

const CONNECTION = { idle: "", connecting: "正在连接…", open: "已连接", closed: "连接中断，正在重连…" };

function draw() {
  const state = page.state;
  $("connection").textContent = CONNECTION[state.connection];
  $("connection").dataset.connection = state.connection;
  for (const button of $("states").querySelectorAll("button")) {
    const active = button.dataset.state === state.state;
    button.setAttribute("aria-pressed", String(active));
    button.classList.toggle("active", active);
  }
  $("state-label").textContent = STATES[state.state];
  drawOffer(state);
  drawTabs(state);
  drawCurrent(state);
  drawNotices(state);
  drawClocks();
  broadcast();
}

function drawOffer(state) {
  const section = $("offer");
  section.hidden = !state.offer;
  const body = $("offer-ticket");
  if (!state.offer) {
    body.replaceChildren();
    return;
  }
  if (body.dataset.ticket !== state.offer.ticket.id || body.dataset.drawn !== JSON.stringify(state.offer.ticket)) {
    body.replaceChildren(ticketCard(state.offer.ticket));
    body.dataset.ticket = state.offer.ticket.id;
    body.dataset.drawn = JSON.stringify(state.offer.ticket);
  }
  drawMark($("offer-repeat"), state.offer.ticket, state.earlier[state.offer.ticket.id]);
}

function drawMark(node, ticket, found) {
  const mark = repeatMark(ticket, found);
  node.hidden = !mark;
  node.textContent = mark;
}

function drawTabs(state) {
  const tabs = $("ticket-tabs");
  tabs.replaceChildren(
    ...state.order.map((id) => {
      const ticket = state.tickets[id];
      const button = element("button", {
        type: "button",
        role: "tab",
        "aria-selected": String(id === state.current),
        text: `${CHANNELS[ticket.channel] || ticket.channel} · ${citizenName(ticket)}`,
      });
      button.addEventListener("click", () => command({ type: "select", ticket: id }));
      return button;
    }),
  );
}

function drawCurrent(state) {
  const section = $("current");
  const id = state.current;
  const ticket = id ? state.tickets[id] : null;
  section.hidden = !ticket;
  $("beside").hidden = !ticket; // 历史工单 and 知识库: about the ticket on screen
  if (!ticket) {
    section.dataset.ticket = "";
    return;
  }
  const formFor = `${id}:${state.catalogue.length}`;
  if (section.dataset.form !== formFor) {
    section.dataset.form = formFor;
    $("current-form").replaceChildren(...EDITABLE.map((field) => fieldInput(state, id, field)));
  }
  if (section.dataset.ticket !== id) {
    section.dataset.ticket = id;
    $("reply-text").value = state.replies[id] || "";
  }
  const drawn = JSON.stringify(ticket);
  if ($("current-ticket").dataset.drawn !== drawn) {
    $("current-ticket").replaceChildren(ticketCard(ticket, { conversation: false }));
    $("current-ticket").dataset.drawn = drawn;
  }
  for (const input of $("current-form").querySelectorAll("[data-field]")) {
    const value = fieldValue(state, id, input.dataset.field);
    if (input.tagName === "SELECT") syncCategory(state, input, value);
    if (document.activeElement !== input && input.value !== value) input.value = value;
  }
  drawSuggestions(state, ticket);
  drawConversation(state, ticket);
  drawEarlier(state, ticket);
  drawKnowledge(state, ticket);
  const saving = state.saving[id];
  $("save-state").textContent = saving ? SAVING[saving] : "";
  $("save-state").dataset.saving = saving || "";
}

function fieldInput(state, id, field) {
  const inputId = `field-${field}`;
  if (field === "category" && state.catalogue.length) {
    // With a dispatch catalogue the category is one of it: 名称（承办单位）.
    const select = element("select", { id: inputId, "data-field": field });
    select.append(element("option", { value: "", text: "请选择分类（分派目录）" }));
    for (const item of state.catalogue) select.append(element("option", { value: item.id, text: categoryLabel(state, item.id) }));
    select.addEventListener("change", () => chooseCategory(id, select.value));
    return element("div", { className: "field" }, element("label", { for: inputId, text: FIELD_LABELS[field] }), select);
  }
  const multiline = field === "text" || field === "notes" || field === "answer";
  const input = element(multiline ? "textarea" : "input", { id: inputId, "data-field": field, rows: "3" });
  if (!multiline) input.removeAttribute("rows");
  input.maxLength = FIELD_LIMITS[field];
  input.addEventListener("input", () => onEdit(id, field, input.value));
  return element("div", { className: `field field-${field}` }, element("label", { for: inputId, text: FIELD_LABELS[field] }), input);
}

function syncCategory(state, select, value) {
  // A category typed before the catalogue came (or dropped from it) is shown as such, not lost.
  const stray = select.querySelector("option[data-stray]");
  if (stray && stray.value !== value) stray.remove();
  if (value && !state.catalogue.some((item) => item.id === value) && !select.querySelector("option[data-stray]")) {
    select.append(element("option", { value, "data-stray": "1", text: `${value}（不在分派目录中）` }));
  }
}

function drawSuggestions(state, ticket) {
  const box = $("suggestions");
  const suggestions = state.catalogue.length ? ticket.suggestions || [] : [];
  box.hidden = !suggestions.length;
  const drawn = JSON.stringify([suggestions, fieldValue(state, ticket.id, "category")]);
  if (box.dataset.drawn === drawn) return;
  box.dataset.drawn = drawn;
  const chosen = fieldValue(state, ticket.id, "category");
  const buttons = suggestions.map((suggestion) => {
    const score = `${Math.round(suggestion.score * 100)}%`;
    const evidence = (suggestion.evidence || []).length ? `，依据：${suggestion.evidence.join("、")}` : "";
    const button = element("button", {
      type: "button",
      className: "suggestion",
      "data-category": suggestion.category,
      "aria-pressed": String(chosen === suggestion.category),
      title: `${suggestion.department}${evidence}`,
      text: `建议分类：${categoryLabel(state, suggestion.category)} ${score}`,
    });
    button.addEventListener("click", () => chooseCategory(ticket.id, suggestion.category));
    const why = element("span", { className: "evidence", text: evidence.slice(1) });
    return element("li", {}, button, why);
  });
  box.replaceChildren(element("span", { className: "label", text: "分类建议" }), element("ul", {}, ...buttons));
}

function timeOf(at) {
  const when = new Date(at);
  return Number.isNaN(when.getTime()) ? "" : when.toLocaleString("zh-CN", { hour12: false, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
}

function drawConversation(state, ticket) {
  const box = $("conversation");
  box.hidden = !isConversation(ticket);
  if (box.hidden) return;
  const drawn = JSON.stringify(ticket.messages || []);
  if ($("conversation-list").dataset.drawn !== drawn) {
    $("conversation-list").dataset.drawn = drawn;
    const items = conversation(ticket).map((message) =>
      element(
        "li",
        { className: message.out ? "said out" : "said in", "data-message": message.id },
        element("span", { className: "who", text: `${message.who} ${timeOf(message.at)}` }),
        element("p", { className: "message", text: message.text }),
        message.out ? element("span", { className: "delivery", "data-delivery": message.state, text: message.status }) : null,
      ),
    );
    $("conversation-list").replaceChildren(...items);
    $("conversation-list").scrollTop = $("conversation-list").scrollHeight;
  }
  const reply = $("reply-text");
  const typed = state.replies[ticket.id] || "";
  // Typing stays the agent's; a reply that went out empties the box even while it has the focus.
  const sentOut = typed === "" && reply.dataset.kept !== "";
  if (reply.value !== typed && (document.activeElement !== reply || sentOut)) reply.value = typed;
  reply.dataset.kept = typed;
  $("reply-send").disabled = Boolean(state.sending[ticket.id]);
  $("reply-count").textContent = `${reply.value.length} / ${MAX_REPLY_CHARS}`;
}

function drawEarlier(state, ticket) {
  const panel = $("earlier");
  const found = state.earlier[ticket.id];
  panel.dataset.answered = found ? ticket.id : ""; // the ticket the list on screen is for
  drawMark($("earlier-repeat"), ticket, found);
  const drawn = JSON.stringify([ticket.id, found || null, state.catalogue.length]);
  if (panel.dataset.drawn === drawn) return;
  panel.dataset.drawn = drawn;
  const items = earlierItems(state, found).map((item) =>
    element(
      "li",
      { className: "earlier-item", "data-ticket": item.id },
      element(
        "p",
        { className: "meta" },
        element("span", { className: "channel", text: item.channel }),
        element("time", { datetime: item.at, text: timeOf(item.at) }),
        element("span", { className: "status", text: item.status }),
      ),
      element("p", { className: "category", text: `分类：${item.category}` }),
      element("p", { className: "text", text: item.text }),
      item.answer ? element("p", { className: "answer", text: `答复：${item.answer}` }) : null,
    ),
  );
  $("earlier-list").replaceChildren(...items);
  $("earlier-empty").hidden = items.length > 0;
  $("earlier-empty").textContent = !found ? "正在查询…" : found.failed ? "历史工单暂时无法读取" : "该市民此前没有工单";
}

function drawKnowledge(state, ticket) {
  const panel = $("knowledge");
  const known = state.knowledge;
  panel.dataset.answered = known.ticket || ""; // the ticket the last answer was for (enabled or not)
  panel.hidden = !known.enabled;
  if (panel.hidden) return;
  const results = known.ticket === ticket.id ? known.results : [];
  const adopted = fieldValue(state, ticket.id, "answered_from");
  const drawn = JSON.stringify([ticket.id, results, adopted]);
  if (panel.dataset.drawn === drawn) return;
  panel.dataset.drawn = drawn;
  const items = results.map((hit) => {
    const used = adopted === hit.id;
    const button = element("button", {
      type: "button",
      className: used ? "adopt used" : "adopt",
      "aria-pressed": String(used),
      text: used ? "已采用" : "采用此答案",
    });
    button.addEventListener("click", () => adopt(ticket.id, hit));
    return element(
      "li",
      { className: "hit", "data-entry": hit.id },
      element("p", { className: "question", text: hit.question }),
      element("p", { className: "answer", text: hit.answer }),
      element("p", { className: "source", text: `出处：${hit.source || "知识库"}（${hit.id}）` }),
      button,
    );
  });
  $("knowledge-list").replaceChildren(...items);
  $("knowledge-empty").hidden = results.length > 0;
}

function drawNotices(state) {
  $("notices").replaceChildren(
    ...state.notices.map((item) => element("li", { className: `notice ${item.level}`, text: item.text })),
  );
}

function citizenName(ticket) {
  const citizen = ticket.citizen || {};
  return citizen.name || citizen.phone || citizen.wechat_openid || "匿名市民";
}

function row(label, ...content) {
  return element("div", { className: "row" }, element("dt", { text: label }), element("dd", {}, ...content));
}

function mergeButton(ticket, action, label) {
  const button = element("button", { type: "button", className: "merge", text: label });
  button.addEventListener("click", () => command({ type: "merge", action, ticket }));
  return button;
}

function ticketCard(ticket, { conversation: withMessages = true } = {}) {
  const citizen = ticket.citizen || {};
  const voice = ticket.voice || {};
  const list = element("dl", { className: "ticket-card", "data-ticket": ticket.id });
  list.append(row("工单号", ticket.id));
  list.append(row("渠道", `${CHANNELS[ticket.channel] || ticket.channel}（队列 ${ticket.queue}）`));
  list.append(row("市民", `${citizen.name || "未留姓名"}  ${citizen.phone || ""}`.trim()));
  if (voice.called || ticket.ivr_path) list.append(row("呼入号码 / 按键路径", `${voice.called || "—"} / ${ticket.ivr_path || "—"}`));
  list.append(row("等待时长", element("span", { "data-since": ticket.received_at })));
  if (ticket.flags && ticket.flags.length) {
    const flags = ticket.flags.map((flag) => element("span", { className: `flag flag-${flag}`, text: FLAG_LABELS[flag] || flag }));
    list.append(row("标记", ...flags));
  }
  for (const alert of ticket.alerts || []) {
    const kind = ALERT_CATEGORIES[alert.category] || alert.category;
    const text = `${kind}（${alert.severity}级）“${alert.word}”：${alert.context}`;
    list.append(row("敏感词预警", element("p", { className: `alert severity-${alert.severity}`, text })));
  }
  if (ticket.parent) {
    const controls = element("span", {}, `主单 ${ticket.parent}${ticket.merge_confirmed ? "（已确认）" : ""} `);
    if (!ticket.merge_confirmed) controls.append(mergeButton(ticket.id, "confirm_merge", "确认合并"));
    controls.append(mergeButton(ticket.id, "split", "拆分"));
    list.append(row("子单", controls));
  }
  if (ticket.children && ticket.children.length) {
    list.append(row("主单", `含子单 ${ticket.children.length} 张：答复本单即答复全部子单`));
  }
  if (ticket.related && ticket.related.length) {
    list.append(row("同一市民其他工单", ticket.related.join("、")));
  }
  for (const deadline of ticket.clocks || []) {
    const due = new Date(deadline.due);
    const label = `${deadline.limit.replace("wd", " 个工作日").replace("h", " 小时")}，${due.toLocaleString("zh-CN")} 前`;
    const shown = element("span", {
      className: "deadline",
      "data-due": deadline.due,
      "data-received": ticket.received_at,
      text: label,
    });
    list.append(row(CLOCK_LABELS[deadline.name] || deadline.name, shown));
  }
  if (ticket.address) list.append(row("地址", ticket.address));
  list.append(row("诉求", element("p", { className: "text", text: ticket.text || "" })));
  const recordings = (ticket.attachments || []).filter((attachment) => attachment.kind === "recording" && attachment.path);
  recordings.forEach((attachment, index) => {
    // Seekable: the browser asks for byte ranges; the server checks this agent holds the ticket.
    const source = `/console/api/recording?ticket=${encodeURIComponent(ticket.id)}&n=${index}`;
    const seconds = attachment.seconds ? `（${Math.round(attachment.seconds)} 秒）` : "";
    const player = element("audio", { controls: "", preload: "none", src: source, "aria-label": `通话录音${seconds}` });
    list.append(row(`录音${seconds}`, player));
  });
  if (ticket.channel === "voice" || (ticket.transcript && ticket.transcript.length)) {
    const lines = (ticket.transcript || []).map((segment) =>
      element("li", {
        className: segment.final ? "segment" : "segment partial",
        text: `${segment.speaker === "agent" ? "坐席" : "市民"}：${segment.text}`,
      }),
    );
    list.append(row("实时转写", element("ol", { className: "transcript", "aria-live": "polite" }, ...lines)));
  }
  for (const message of withMessages ? ticket.messages || [] : []) {
    const who = message.direction === "in" ? "市民" : "回复";
    list.append(row(who, element("p", { className: "message", text: message.text })));
  }
  const lines = historyLines(ticket);
  if (lines.length) {
    // 处理记录: who did what with the ticket, folded away until the agent opens it.
    const items = lines.map((line) => element("li", { text: `${timeOf(line.at)}  ${line.who}  ${line.what}` }));
    const record = element(
      "details",
      { className: "history" },
      element("summary", { text: `处理记录（${lines.length} 条）` }),
      element("ol", {}, ...items),
    );
    list.append(row("处理记录", record));
  }
  return list;
}

document.addEventListener("DOMContentLoaded", boot);
