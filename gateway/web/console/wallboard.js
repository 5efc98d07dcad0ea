// The wallboard's shell: a supervisor's login, the wall's websocket (reconnecting with back-off),
// and drawing what wallboard_core.js made of the latest frame. Peer strings reach the page as text
// (textContent), never as markup; the chart is SVG built node by node. The CSRF token lives in this
// module's memory only.

import { backoff, ALERT_CATEGORIES } from "./seat_core.js";
import { $, element, callApi } from "./page.js";
import { queueRows, agentRows, agentCounts, chartBars, channelName, escalationRows } from "./wallboard_core.js";

const SVG = "http://www.w3.org/2000/svg";
const CHART = { width: 480, height: 160, labels: 16 };
const QUEUE_FIELDS = ["waiting", "oldest", "with_agents", "service_level", "average_answer", "abandoned", "handled"];

const page = { session: null, frame: null, socket: null, attempt: 0, timer: null, leaving: false, chart: "" };

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

async function api(path, body) {
  return callApi(`supervisor/${path}`, body, page.session ? page.session.csrf : undefined);
}

// --- views ---------------------------------------------------------------------------------------

function showLogin(message = "") {
  page.session = null;
  page.leaving = true;
  if (page.socket) page.socket.close(1000, "logout");
  $("wall-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  $("login-supervisor").focus();
}

function showWall(session) {
  page.session = session;
  page.leaving = false;
  $("login-view").hidden = true;
  $("wall-view").hidden = false;
  $("supervisor-name").textContent = `班长 ${session.name || session.supervisor}（${session.supervisor}）`;
  connect();
}

async function login(event) {
  event.preventDefault();
  const supervisor = $("login-supervisor").value.trim();
  const tokenInput = $("login-token");
  const token = tokenInput.value;
  tokenInput.value = ""; // the token is not kept anywhere once sent
  let answer;
  try {
    answer = await api("login", { supervisor, token });
  } catch {
    $("login-error").textContent = "无法连接服务器，请稍后再试";
    return;
  }
  if (answer.status === 200) showWall(answer.data);
  else if (answer.status === 401) $("login-error").textContent = "班长工号或令牌不正确，请重新输入";
  else if (answer.status === 403) $("login-error").textContent = "请从本系统的登录页登录";
  else $("login-error").textContent = "登录失败：服务暂不可用，请稍后再试";
}

async function logout() {
  await api("logout", {}).catch(() => null);
  showLogin("已退出登录");
}

// --- the socket ------------------------------------------------------------------------------------

function connect() {
  clearTimeout(page.timer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/console/ws/wallboard`);
  page.socket = socket;
  $("connection").textContent = "连接中…";
  socket.addEventListener("open", () => {
    page.attempt = 0;
    $("connection").textContent = "已连接";
  });
  socket.addEventListener("message", (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type !== "board") return;
    frame.received = Date.now();
    page.frame = frame;
    draw();
  });
  socket.addEventListener("close", () => {
    if (page.socket !== socket || page.leaving) return;
    $("connection").textContent = "连接断开，正在重连…";
    page.attempt += 1;
    page.timer = setTimeout(reconnect, backoff(page.attempt) * (0.5 + Math.random() / 2));
  });
}

async function reconnect() {
  // The upgrade's refusal is not readable from a WebSocket: ask whether the session still holds.
  const { status } = await api("session").catch(() => ({ status: 0 }));
  if (status === 401 || status === 403) showLogin("登录已过期，请重新登录");
  else connect();
}

// --- drawing ---------------------------------------------------------------------------------------
// A frame changes a few cells: rows are kept by key and only what changed is written, so a wall
// under 100 events/s costs the browser little (docs/benchmarks.md, "Console").

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setClass(node, name) {
  if (node.className !== name) node.className = name;
}

function patchRows(tbody, items, keyOf, build, update) {
  const existing = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  let previous = null;
  for (const item of items) {
    const key = keyOf(item);
    let row = existing.get(key);
    if (row) existing.delete(key);
    else {
      row = build(item);
      row.dataset.key = key;
    }
    update(row, item);
    const expected = previous ? previous.nextSibling : tbody.firstChild;
    if (row !== expected) tbody.insertBefore(row, expected);
    previous = row;
  }
  for (const row of existing.values()) row.remove();
}

function cells(row) {
  return row.cells;
}

function draw() {
  const frame = page.frame;
  if (!frame) return;
  const now = Date.now();
  document.body.dataset.seq = String(frame.seq);
  setText($("wall-day"), frame.day);
  patchRows(
    $("queues").tBodies[0],
    queueRows(frame, now),
    (row) => row.name,
    (row) =>
      element(
        "tr",
        { "data-queue": row.name },
        element("th", { scope: "row" }),
        ...QUEUE_FIELDS.map((field) => element("td", { "data-field": field })),
      ),
    (tr, row) => {
      setText(cells(tr)[0], row.label);
      QUEUE_FIELDS.forEach((field, index) => {
        const cell = cells(tr)[index + 1];
        setText(cell, String(row[field]));
        setClass(cell, field === "oldest" && row.late ? "number late" : "number");
      });
    },
  );
  setText($("agent-counts"), agentCounts(frame));
  patchRows(
    $("agents").tBodies[0],
    agentRows(frame, now),
    (row) => row.id,
    (row) =>
      element(
        "tr",
        { "data-agent": row.id },
        element("th", { scope: "row" }),
        element("td", { "data-field": "state" }),
        element("td", { className: "number", "data-field": "since" }),
      ),
    (tr, row) => {
      setText(cells(tr)[0], `${row.name}（${row.id}）`);
      setText(cells(tr)[1], row.label);
      setClass(cells(tr)[1], `state-${row.state}`);
      setText(cells(tr)[2], row.since);
    },
  );
  patchRows(
    $("nodes").tBodies[0],
    Object.entries(frame.nodes),
    ([node]) => node,
    ([node]) => element("tr", { "data-node": node }, element("th", { scope: "row", text: node }), element("td", { className: "number" })),
    (tr, [, calls]) => setText(cells(tr)[1], String(calls)),
  );
  patchRows(
    $("late").tBodies[0],
    frame.late || [],
    (late) => late.ticket,
    (late) =>
      element(
        "tr",
        { "data-ticket": late.ticket },
        element("th", { scope: "row", text: late.ticket }),
        element("td", { text: late.queue }),
        element("td", { text: late.category }),
        element("td", { text: late.limit.replace("wd", " 个工作日").replace("h", " 小时") }),
        element("td", { "data-field": "due" }),
      ),
    (tr, late) => {
      setClass(tr, `deadline-${late.colour}`);
      tr.dataset.colour = late.colour;
      setText(cells(tr)[4], `${new Date(late.due).toLocaleString("zh-CN")}${late.colour === "red" ? "（已超时）" : ""}`);
    },
  );
  patchRows(
    $("escalations").tBodies[0],
    escalationRows(frame),
    (row) => row.key,
    (row) =>
      element(
        "tr",
        { className: `escalation escalation-${row.kind}`, "data-ticket": row.ticket, "data-kind": row.kind },
        element("td", { text: row.at }),
        element("th", { scope: "row", text: row.ticket }),
        element("td", { text: row.queue }),
        element("td", { text: row.clock }),
        element("td", { text: row.step }),
        element("td", { text: row.due }),
      ),
    () => {},
  );
  patchRows(
    $("surges").tBodies[0],
    frame.surges || [],
    (surge) => `${surge.category}@${surge.place}@${surge.at}`,
    (surge) =>
      element(
        "tr",
        { className: "surge", "data-place": surge.place },
        element("td", { text: new Date(surge.at).toLocaleTimeString("zh-CN") }),
        element("td", { text: surge.category }),
        element("th", { scope: "row", text: surge.place.replace("/", " ") }),
        element("td", { className: "number", text: String(surge.count) }),
        element("td", { className: "number", text: surge.usual.toFixed(1) }),
      ),
    () => {},
  );
  patchRows(
    $("alerts").tBodies[0],
    frame.alerts || [],
    (alert) => `${alert.ticket}@${alert.at}`,
    (alert) =>
      element(
        "tr",
        { className: `alert severity-${alert.severity}`, "data-ticket": alert.ticket },
        element("td", { text: new Date(alert.at).toLocaleTimeString("zh-CN") }),
        element("th", { scope: "row", text: alert.ticket }),
        element("td", { className: "number", text: `${alert.severity}级` }),
        element("td", { text: alert.categories.map((category) => ALERT_CATEGORIES[category] || category).join("、") }),
        element("td", { text: alert.context }),
      ),
    () => {},
  );
  patchRows(
    $("processes").tBodies[0],
    frame.processes,
    (process) => process.process,
    (process) => element("tr", {}, element("th", { scope: "row", text: process.process }), element("td", { className: "number" })),
    (tr, process) => setText(cells(tr)[1], `v${process.config_version}`),
  );
  const intake = JSON.stringify(frame.intake);
  if (intake !== page.chart) {
    page.chart = intake;
    drawChart(frame.intake);
  }
}

function drawChart(intake) {
  const { bars, top, channels } = chartBars(intake, CHART.width, CHART.height);
  const chart = svg("svg", { viewBox: `0 0 ${CHART.width} ${CHART.height + CHART.labels}`, role: "img" });
  const total = channels.reduce((sum, c) => sum + intake[c].reduce((a, b) => a + b, 0), 0);
  chart.setAttribute("aria-label", `今日受理 ${total} 件，最多的一小时 ${top} 件`);
  chart.append(svg("line", { class: "axis", x1: 0, y1: CHART.height, x2: CHART.width, y2: CHART.height }));
  for (const bar of bars) {
    const rect = svg("rect", { class: `channel-${bar.index}`, x: bar.x, y: bar.y, width: bar.width, height: bar.height });
    rect.dataset.hour = String(bar.hour);
    rect.dataset.channel = bar.channel;
    rect.dataset.count = String(bar.count);
    const title = svg("title");
    title.textContent = `${String(bar.hour).padStart(2, "0")} 时 ${channelName(bar.channel)} ${bar.count} 件`;
    rect.append(title);
    chart.append(rect);
  }
  for (let hour = 0; hour < 24; hour += 3) {
    const label = svg("text", { x: (hour * CHART.width) / 24 + 2, y: CHART.height + CHART.labels - 3 });
    label.textContent = `${hour}时`;
    chart.append(label);
  }
  $("intake-chart").replaceChildren(chart);
  $("intake-legend").replaceChildren(
    ...channels.map((channel, index) =>
      element("li", { "data-channel": channel }, element("span", { className: `swatch channel-${Math.min(index, 5)}` }), `${channelName(channel)} ${intake[channel].reduce((a, b) => a + b, 0)}`),
    ),
  );
}

async function boot() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  setInterval(draw, 1000); // the clocks age between frames
  const { status, data } = await api("session").catch(() => ({ status: 0, data: {} }));
  if (status === 200) showWall(data);
  else if (status === 403) showLogin("此账号不是班长账号，请用班长工号登录");
  else showLogin(data.error && data.error.code === "session_expired" ? "登录已过期，请重新登录" : "");
}

boot();
