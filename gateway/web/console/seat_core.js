// The seat page's core: what the seat holds, decided from the server's frames and the agent's
// commands, with no I/O (no DOM, no socket, no clock: `now` is passed in). Each step returns the new
// state and the effects the shell carries out: frames to send, a ring to start or stop, a notice.
// The same kind of thing as the terminal seat's core (gateway/clients/seat.py), over the frames of
// docs/seat-protocol.md.

export const STATES = Object.freeze({ ready: "示闲", busy: "示忙", wrap_up: "话后处理", away: "离开" });
export const EDITABLE = Object.freeze([
  "text",
  "category",
  "address",
  "notes",
  "citizen_name",
  "citizen_phone",
  "answer",
  "answered_from",
]);
// Each field's size limit (gateway/ticket.py): the page refuses more before the server does.
export const FIELD_LIMITS = Object.freeze({
  text: 4000,
  category: 128,
  address: 256,
  notes: 4000,
  citizen_name: 64,
  citizen_phone: 21,
  answer: 900,
  answered_from: 64,
});
export const MAX_REPLY_CHARS = 1000; // a `reply` frame's text (docs/seat-protocol.md)
export const MESSAGE_CHANNELS = Object.freeze(["sms", "wechat", "telegram"]);
export const CHANNELS = Object.freeze({ web: "网页", voice: "电话", sms: "短信", wechat: "微信", telegram: "Telegram", app: "App" });
export const STATUS_LABELS = Object.freeze({
  draft: "草稿",
  queued: "排队中",
  offered: "待接受",
  claimed: "处理中",
  submitted: "已提交",
  abandoned: "已放弃",
});
export const DELIVERY_LABELS = Object.freeze({ queued: "排队中", sent: "已发送", delivered: "已送达", failed: "发送失败" });
const MAX_SEGMENTS = 500; // transcript segments kept per ticket: a long call must not grow the page for ever
const MAX_NOTICES = 5;
const MAX_EARLY_DELIVERIES = 50; // delivery news that came before its reply's ack, kept until it comes
const MAX_CATEGORIES = 2000;
const MAX_KNOWLEDGE = 10;
const MAX_EARLIER = 10; // earlier tickets listed per ticket (the server sends at most as many)
export const FLAG_LABELS = Object.freeze({
  urgent: "紧急",
  enterprise: "政企通",
  sensitive: "敏感词",
  sensitive_high: "高风险",
  sensitive_critical: "极高风险",
});
const REVOKED = Object.freeze({
  answered_by_parent: "已随主单答复",
  caller_hung_up: "来电人已挂机",
  worker_died: "通话中断",
  agent_no_answer: "坐席话机未接听",
});
export const CLOCK_LABELS = Object.freeze({ contact: "联系时限", reply: "答复时限", resolve: "办结时限" });
export const ALERT_CATEGORIES = Object.freeze({
  self_harm: "自伤自杀",
  violence: "暴力伤害",
  mass_incident: "群体性事件",
  public_safety: "公共安全",
  extreme_demand: "极端诉求",
  minor_at_risk: "未成年人风险",
});

const HISTORY_ACTIONS = Object.freeze({
  queued: "进入队列",
  offered: "派给坐席",
  claimed: "坐席受理",
  updated: "修改工单",
  submitted: "提交",
  requeued: "退回队列",
  abandoned: "未接通结束",
  replied: "回复市民",
  message: "市民来信",
  sent: "已发出",
  delivered: "已送达",
  failed: "发送失败",
  page_sent: "已短信通知值班班长",
  page_failed: "通知班长失败",
  triaged: "智能分析",
  reassessed: "通话中发现敏感词",
  merged: "并入主单",
  child_linked: "新增子单",
  child_split: "子单拆出",
  split: "拆分为独立工单",
  merge_confirmed: "确认合并",
  answered_by_parent: "随主单答复",
  followup_asked: "回访已发出",
  followup_answered: "回访已答复",
  followup_unanswered: "回访未答复",
  followup_not_sent: "未能回访",
  reopened: "重办",
});
const HISTORY_HIDDEN = new Set(["transcript"]); // each final segment of a call: the 实时转写 shows them

function actorLabel(actor) {
  const [kind, ...rest] = String(actor).split(":");
  const who = rest.join(":");
  const kinds = { agent: "坐席", worker: "语音网关", channel: "通道", client: "接口", parent: "主单" };
  if (actor === "triage") return "智能分派";
  if (actor === "system") return "系统";
  return kinds[kind] ? `${kinds[kind]} ${who}` : actor;
}

export function historyLines(ticket) {
  // The ticket's history as the agent reads it, oldest first: when, who, what (a 督办 names its clock).
  return (ticket.history || [])
    .filter((entry) => !HISTORY_HIDDEN.has(entry.action))
    .map((entry) => {
      const detail = entry.detail || {};
      let what = HISTORY_ACTIONS[entry.action] || entry.action;
      if (entry.action === "escalated") {
        what = `${detail.kind === "report" ? "督办通报" : "督办提醒"}（${CLOCK_LABELS[detail.clock] || detail.clock}）`;
      } else if (detail.reason) {
        what = `${what}（${detail.reason}）`;
      }
      return { at: entry.at, who: actorLabel(entry.actor), what };
    });
}

export function initialState(now) {
  return {
    connection: "idle", // idle | connecting | open | closed
    agent: "",
    name: "",
    queues: [],
    yellowShare: 0.8, // a deadline clock is yellow once this share of its time is used
    state: "away",
    stateSince: now,
    offer: null, // {ticket, expiresAt}
    tickets: {}, // claimed tickets by id
    order: [], // claimed ids, oldest first
    current: null, // the claimed ticket on screen
    drafts: {}, // ticket id -> {field: value} not yet acknowledged
    saving: {}, // ticket id -> "dirty" | "saving" | "saved" | "failed"
    pending: {}, // frame id -> {kind, ticket, fields}
    notices: [], // the latest messages for the agent, newest last
    nextId: 1,
    replies: {}, // ticket id -> the reply typed and not yet sent (kept by the shell through a reload)
    sending: {}, // ticket id -> true while its reply waits for the server's answer
    early: {}, // reply id -> {status, reason}: delivery news that came before the reply's ack
    catalogue: [], // the dispatch catalogue's categories [{id, name, department}]; [] when none
    knowledge: { enabled: false, ticket: null, results: [] }, // suggestions for the ticket on screen
    seq: "", // the last journal position seen (a news frame's `seq`): the next hello's `since`
    earlier: {}, // ticket id -> its 历史工单 {failed, repeat, count, earlier}: the offer's and the held ones'
  };
}

function step(state, ...effects) {
  return { state, effects };
}

function noticed(state, text, level = "info") {
  return { ...state, notices: [...state.notices, { text, level }].slice(-MAX_NOTICES) };
}

function withoutKey(object, key) {
  const copy = { ...object };
  delete copy[key];
  return copy;
}

function dropTicket(state, id) {
  const order = state.order.filter((other) => other !== id);
  return {
    ...state,
    offer: state.offer && state.offer.ticket.id === id ? null : state.offer,
    tickets: withoutKey(state.tickets, id),
    order,
    current: state.current === id ? order[0] ?? null : state.current,
    drafts: withoutKey(state.drafts, id),
    saving: withoutKey(state.saving, id),
    replies: withoutKey(state.replies, id),
    sending: withoutKey(state.sending, id),
    earlier: withoutKey(state.earlier, id),
  };
}

function holdTicket(state, ticket) {
  const order = state.order.includes(ticket.id) ? state.order : [...state.order, ticket.id];
  return { ...state, tickets: { ...state.tickets, [ticket.id]: ticket }, order, current: state.current ?? ticket.id };
}

// --- sending -------------------------------------------------------------------------------------

function request(state, kind, frame, extra = {}) {
  const id = state.nextId;
  const pending = { ...state.pending, [id]: { kind, ticket: frame.ticket ?? null, ...extra } };
  return { state: { ...state, nextId: id + 1, pending }, effect: { send: { id, ...frame } } };
}

export function helloFrame(agent, token, state, since = "") {
  const hello = { type: "hello", v: 1, agent, token, state };
  return JOURNAL_POSITION.test(since) ? { ...hello, since } : hello;
}

// --- journal positions (`seq`: a Redis stream id, `ms-n`) ----------------------------------------

const JOURNAL_POSITION = /^[0-9]{1,20}-[0-9]{1,20}$/;

export function seqAfter(seq, other) {
  // Whether `seq` comes later in the agent's journal than `other` (anything comes after nothing).
  if (!other) return true;
  const [ms, n] = seq.split("-").map(BigInt);
  const [otherMs, otherN] = other.split("-").map(BigInt);
  return ms > otherMs || (ms === otherMs && n > otherN);
}

function missedNotices(state, before, missed, gap) {
  // What the welcome's replay brought, said once: the citizens' new messages, and a gap if any.
  let next = state;
  const messages = missed.filter((frame) => frame.type === "message").length;
  if (messages) next = noticed(next, `断线期间收到市民新消息 ${messages} 条，已补上`);
  else if (missed.length) next = noticed(next, `断线期间的动态 ${missed.length} 条已补上`);
  if (gap) next = noticed(next, "断线时间较长，部分动态未能补发；工单内容以当前为准", "warn");
  // What this page held and the server no longer gives back went away while the page was
  // disconnected; a replayed `revoked` already said why.
  const explained = new Set(missed.filter((frame) => frame.type === "revoked").map((frame) => frame.ticket));
  for (const id of before.order.filter((held) => !next.tickets[held] && !explained.has(held))) {
    next = noticed(next, `工单 ${id} 在断线期间已收回或关闭`, "warn");
  }
  return next;
}

// --- server frames -------------------------------------------------------------------------------

const FRAMES = {
  welcome(state, frame, now) {
    let next = {
      ...state,
      connection: "open",
      agent: frame.agent,
      name: frame.name || frame.agent,
      queues: frame.queues,
      yellowShare: frame.yellow_share ?? 0.8,
      state: frame.state,
      stateSince: now,
      offer: null,
      tickets: {},
      order: [],
      current: null,
      pending: {},
    };
    for (const ticket of frame.resumed) next = holdTicket(next, ticket);
    // A reply typed for a ticket this agent no longer holds is dropped with it.
    const replies = Object.fromEntries(Object.entries(state.replies).filter(([id]) => next.tickets[id]));
    next = { ...next, replies, sending: {} };
    if (state.current && next.tickets[state.current]) next = { ...next, current: state.current };
    // Edits the server never acknowledged (the socket dropped first) are sent again.
    const effects = [];
    for (const id of next.order) {
      if (next.drafts[id] && Object.keys(next.drafts[id]).length) {
        const sent = saveDraft(next, id);
        next = sent.state;
        effects.push(...sent.effects);
      }
    }
    if (frame.resumed.length) next = noticed(next, `已恢复处理中的工单 ${frame.resumed.length} 张`);
    // What happened meanwhile, replayed from the journal in order (each handler takes a frame it
    // already saw in `resumed` without change); what the page saw before is not applied twice.
    const missed = (frame.missed || []).filter((news) => news.seq && seqAfter(news.seq, state.seq));
    for (const news of missed) {
      const handle = FRAMES[news.type];
      if (handle) next = handle(next, news, now).state;
    }
    next = missedNotices({ ...next, seq: frame.seq || state.seq }, state, missed, frame.gap);
    return step(next, ...effects);
  },
  offer(state, frame, now) {
    const next = { ...state, offer: { ticket: frame.ticket, expiresAt: now + frame.expires_in * 1000 } };
    return step(next, { ring: frame.ticket });
  },
  offer_revoked(state, frame) {
    const next = noticed({ ...state, offer: null }, `工单 ${frame.ticket} 未及时接受，已转回队列`, "warn");
    return step(next, { stopRing: true });
  },
  state(state, frame, now) {
    const why = { missed_offer: "（未及时接受工单）", wrap_up_ended: "（话后处理时限已到）" }[frame.reason] || "";
    return step(noticed({ ...state, state: frame.state, stateSince: now }, `状态已改为${STATES[frame.state]}${why}`));
  },
  ticket(state, frame) {
    const ticket = frame.ticket;
    if (ticket.status !== "claimed") return step(noticed(dropTicket(state, ticket.id), `工单 ${ticket.id}：${ticket.status}`));
    const wasOffer = state.offer && state.offer.ticket.id === ticket.id;
    let next = holdTicket({ ...state, offer: wasOffer ? null : state.offer }, ticket);
    if (wasOffer) next = { ...next, current: ticket.id };
    return wasOffer ? step(next, { stopRing: true }) : step(next);
  },
  screen_pop(state, frame) {
    return step(noticed(holdTicket(state, frame.ticket), `来电振铃，请接听（工单 ${frame.ticket.id}）`));
  },
  revoked(state, frame) {
    const why = REVOKED[frame.reason] || frame.reason;
    return step(noticed(dropTicket(state, frame.ticket), `工单 ${frame.ticket} 已收回（${why}）`, "warn"), {
      stopRing: true,
    });
  },
  triaged(state, frame) {
    const fields = ["priority", "flags", "suggestions", "clocks", "parent", "related"];
    const change = (ticket) => ({ ...ticket, ...Object.fromEntries(fields.map((name) => [name, frame[name] ?? ticket[name]])) });
    return step(withTicket(state, frame.ticket, change));
  },
  escalated(state, frame) {
    // 督办: the clock is overdue and the hotline's supervision has sent its reminder (or report).
    const what = frame.kind === "report" ? "督办通报" : "督办提醒";
    const clock = CLOCK_LABELS[frame.clock] || frame.clock;
    const due = new Date(frame.due).toLocaleString("zh-CN", { hour12: false });
    const text = `${what}：工单 ${frame.ticket} 的${clock}已超期（应于 ${due} 前），请尽快处理`;
    return step(noticed(state, text, frame.kind === "report" ? "error" : "warn"));
  },
  call_ended(state, frame) {
    return step(noticed(state, `工单 ${frame.ticket} 的通话已结束，工单仍由您处理`));
  },
  transcript(state, frame) {
    return step(withTicket(state, frame.ticket, (ticket) => ({ ...ticket, transcript: grown(ticket.transcript, frame.segment) })));
  },
  message(state, frame) {
    const add = (ticket) =>
      (ticket.messages || []).some((message) => message.id === frame.message.id)
        ? ticket // seen already (the ticket read again had it)
        : { ...ticket, messages: [...(ticket.messages || []), frame.message] };
    return step(withTicket(state, frame.ticket, add));
  },
  alert(state, frame) {
    const change = (ticket) => ({ ...ticket, alerts: frame.alerts, priority: frame.priority });
    const worst = Math.max(...frame.alerts.map((alert) => alert.severity));
    const kinds = [...new Set(frame.alerts.map((alert) => ALERT_CATEGORIES[alert.category] || alert.category))];
    const text = `敏感词预警（${kinds.join("、")}，${worst}级）：工单 ${frame.ticket}，请立即关注`;
    return step(noticed(withTicket(state, frame.ticket, change), text, worst >= 2 ? "error" : "warn"));
  },
  delivery(state, frame) {
    const held = state.tickets[frame.ticket] || (state.offer && state.offer.ticket.id === frame.ticket ? state.offer.ticket : null);
    const known = held && (held.messages || []).some((message) => message.id === frame.reply);
    if (held && !known) {
      // The news outran the reply's ack: kept until the ack names the reply.
      const early = { ...state.early, [frame.reply]: { status: frame.status, reason: frame.reason || "" } };
      const kept = Object.keys(early).slice(-MAX_EARLY_DELIVERIES);
      return step({ ...state, early: Object.fromEntries(kept.map((id) => [id, early[id]])) });
    }
    const mark = (message) =>
      message.id === frame.reply ? { ...message, status: later(message.status, frame.status), reason: frame.reason || "" } : message;
    return step(withTicket(state, frame.ticket, (ticket) => ({ ...ticket, messages: (ticket.messages || []).map(mark) })));
  },
  ack(state, frame, now) {
    const asked = state.pending[frame.re];
    const next = { ...state, pending: withoutKey(state.pending, frame.re) };
    if (frame.status === "submitted") return step(noticed(dropTicket(next, frame.ticket), `已提交工单 ${frame.ticket}`));
    if (frame.status === "declined") return step({ ...next, offer: null }, { stopRing: true });
    if (frame.status === "split") {
      const alone = withTicket(next, frame.ticket, (ticket) => ({ ...ticket, parent: "", merge_confirmed: false }));
      return step(noticed(alone, `工单 ${frame.ticket} 已拆分为独立工单`));
    }
    if (frame.status === "merge_confirmed") {
      return step(noticed(withTicket(next, frame.ticket, (ticket) => ({ ...ticket, merge_confirmed: true })), "已确认合并"));
    }
    if (frame.state) return step({ ...next, state: frame.state, stateSince: now });
    if (asked && asked.kind === "update") return step(saved(next, asked));
    if (asked && asked.kind === "reply" && frame.outbox) return step(replied(next, asked, frame.outbox));
    return step(next);
  },
  error(state, frame) {
    const asked = state.pending[frame.re];
    let next = { ...state, pending: withoutKey(state.pending, frame.re) };
    const fields = frame.fields || [];
    if (asked && asked.kind === "update") next = { ...next, saving: { ...next.saving, [asked.ticket]: "failed" } };
    if (asked && asked.kind === "reply") {
      // The reply stays in its box to be sent again.
      next = { ...next, sending: withoutKey(next.sending, asked.ticket) };
      const why = frame.code === "unavailable" ? "发送通道繁忙，请稍后重试" : frame.message;
      return step(noticed(next, `回复未发送：${why}`, "error"));
    }
    if (asked && asked.kind === "submit" && fields.some((field) => field.path === "fields.category")) {
      return step(noticed(next, `提交未完成：${CATEGORY_REQUIRED}`, "error"));
    }
    const detail = fields.map((field) => `${field.path}: ${field.message}`).join("；");
    return step(noticed(next, `操作未完成：${frame.message}${detail ? `（${detail}）` : ""}`, "error"));
  },
  pong(state) {
    return step(state);
  },
};

function grown(segments, segment) {
  const same = (other) =>
    other.final && other.speaker === segment.speaker && other.start === segment.start && other.text === segment.text;
  if (segment.final && (segments || []).some(same)) return segments; // seen already (replayed)
  const list = [...(segments || [])];
  const last = list[list.length - 1];
  // A partial result is replaced by the next result of the same speaker.
  if (last && !last.final && last.speaker === segment.speaker) list.pop();
  list.push(segment);
  return list.slice(-MAX_SEGMENTS);
}

function withTicket(state, id, change) {
  if (state.tickets[id]) return { ...state, tickets: { ...state.tickets, [id]: change(state.tickets[id]) } };
  if (state.offer && state.offer.ticket.id === id) return { ...state, offer: { ...state.offer, ticket: change(state.offer.ticket) } };
  return state;
}

const DELIVERY_ORDER = { queued: 0, sent: 1, delivered: 2, failed: 2 };

function later(was, now) {
  // A late `sent` never takes back a `delivered` or `failed`.
  return (DELIVERY_ORDER[now] ?? 0) >= (DELIVERY_ORDER[was] ?? 0) ? now : was;
}

function replied(state, asked, outbox) {
  // The reply is now the last of its ticket's conversation; the box empties unless typed in since.
  const early = state.early[outbox];
  const said = {
    direction: "out",
    id: outbox,
    at: asked.at,
    text: asked.text,
    status: early ? early.status : "queued",
    reason: early ? early.reason : "",
  };
  const add = (ticket) =>
    (ticket.messages || []).some((message) => message.id === outbox) ? ticket : { ...ticket, messages: [...(ticket.messages || []), said] };
  const replies = state.replies[asked.ticket] === asked.draft ? withoutKey(state.replies, asked.ticket) : state.replies;
  return {
    ...withTicket(state, asked.ticket, add),
    replies,
    sending: withoutKey(state.sending, asked.ticket),
    early: withoutKey(state.early, outbox),
  };
}

function saved(state, asked) {
  // Fields typed again since this update left keep their draft (the next save sends them).
  const draft = { ...(state.drafts[asked.ticket] || {}) };
  for (const [field, value] of Object.entries(asked.fields)) if (draft[field] === value) delete draft[field];
  const dirty = Object.keys(draft).length > 0;
  return {
    ...state,
    drafts: { ...state.drafts, [asked.ticket]: draft },
    saving: { ...state.saving, [asked.ticket]: dirty ? "dirty" : "saved" },
  };
}

export function onFrame(state, frame, now) {
  const handle = FRAMES[frame.type];
  if (!handle) return step(state);
  if (frame.seq && frame.type !== "welcome") {
    if (!seqAfter(frame.seq, state.seq)) return step(state); // came in the welcome's `missed` already
    const done = handle(state, frame, now);
    return { ...done, state: { ...done.state, seq: frame.seq } };
  }
  return handle(state, frame, now);
}

// --- the agent's commands ------------------------------------------------------------------------

function saveDraft(state, id) {
  const fields = { ...(state.drafts[id] || {}) };
  if (!Object.keys(fields).length) return step(state);
  const sent = request(state, "update", { type: "update", ticket: id, fields }, { fields });
  return step({ ...sent.state, saving: { ...sent.state.saving, [id]: "saving" } }, sent.effect);
}

const COMMANDS = {
  merge(state, command) {
    if (!["confirm_merge", "split"].includes(command.action)) return step(state);
    const sent = request(state, command.action, { type: command.action, ticket: command.ticket });
    return step(sent.state, sent.effect);
  },
  accept(state) {
    if (!state.offer) return step(noticed(state, "没有待接受的工单", "warn"));
    const sent = request(state, "accept", { type: "accept", ticket: state.offer.ticket.id });
    return step(sent.state, sent.effect, { stopRing: true });
  },
  decline(state) {
    if (!state.offer) return step(noticed(state, "没有待拒绝的工单", "warn"));
    const sent = request(state, "decline", { type: "decline", ticket: state.offer.ticket.id });
    return step(sent.state, sent.effect, { stopRing: true });
  },
  state(state, command) {
    if (!STATES[command.state]) return step(state);
    const sent = request(state, "state", { type: "state", state: command.state });
    return step(sent.state, sent.effect);
  },
  edit(state, command) {
    if (!state.tickets[command.ticket] || !EDITABLE.includes(command.field)) return step(state);
    const draft = { ...(state.drafts[command.ticket] || {}), [command.field]: command.value };
    return step({
      ...state,
      drafts: { ...state.drafts, [command.ticket]: draft },
      saving: { ...state.saving, [command.ticket]: "dirty" },
    });
  },
  save(state, command) {
    return state.tickets[command.ticket] ? saveDraft(state, command.ticket) : step(state);
  },
  submit(state) {
    const id = state.current;
    if (!id || !state.tickets[id]) return step(noticed(state, "没有可提交的工单", "warn"));
    if (!categoryAllowed(state, fieldValue(state, id, "category"))) {
      return step(noticed(state, `不能提交：${CATEGORY_REQUIRED}`, "error"));
    }
    // Edits not yet acknowledged go with the submit: nothing typed is lost.
    const fields = { ...(state.drafts[id] || {}) };
    const sent = request(state, "submit", { type: "submit", ticket: id, fields });
    return step(sent.state, sent.effect);
  },
  replyDraft(state, command) {
    if (!state.tickets[command.ticket]) return step(state);
    const text = String(command.text).slice(0, MAX_REPLY_CHARS);
    const replies = text ? { ...state.replies, [command.ticket]: text } : withoutKey(state.replies, command.ticket);
    return step({ ...state, replies });
  },
  reply(state, command, now) {
    const id = command.ticket;
    const text = (state.replies[id] || "").trim();
    if (!state.tickets[id]) return step(noticed(state, "没有可回复的工单", "warn"));
    if (!text) return step(noticed(state, "请先输入回复内容", "warn"));
    if (state.sending[id]) return step(state); // one reply at a time: no double send
    const at = new Date(now).toISOString();
    const sent = request(state, "reply", { type: "reply", ticket: id, text }, { text, draft: state.replies[id], at });
    return step({ ...sent.state, sending: { ...sent.state.sending, [id]: true } }, sent.effect);
  },
  restoreReplies(state, command) {
    // Replies kept through a reload: only text, bounded; the welcome drops those of tickets gone.
    const replies = { ...state.replies };
    for (const [id, text] of Object.entries(command.replies || {}).slice(0, 50)) {
      if (typeof text === "string" && text && !(id in replies)) replies[id] = text.slice(0, MAX_REPLY_CHARS);
    }
    // The journal position too: a reload asks for what it missed since the page last saw news.
    const seq = JOURNAL_POSITION.test(command.seq || "") && seqAfter(command.seq, state.seq) ? command.seq : state.seq;
    return step({ ...state, replies, seq });
  },
  catalogue(state, command) {
    const categories = (command.categories || [])
      .slice(0, MAX_CATEGORIES)
      .map((item) => ({ id: String(item.id), name: String(item.name), department: String(item.department) }));
    return step({ ...state, catalogue: categories });
  },
  knowledge(state, command) {
    const results = (command.results || []).slice(0, MAX_KNOWLEDGE);
    return step({ ...state, knowledge: { enabled: Boolean(command.enabled), ticket: command.ticket, results } });
  },
  earlier(state, command) {
    // 历史工单 of a ticket offered or held (the answer to a request that outlived its ticket is
    // dropped); only those are kept, so the map stays as small as what the seat holds.
    const shown = new Set(state.offer ? [...state.order, state.offer.ticket.id] : state.order);
    if (!shown.has(command.ticket)) return step(state);
    const found = command.failed
      ? { failed: true, repeat: false, count: 0, earlier: [] }
      : {
          failed: false,
          repeat: Boolean(command.repeat),
          count: Number(command.repeat_count) || 0,
          earlier: (command.earlier || []).slice(0, MAX_EARLIER),
        };
    const kept = Object.fromEntries(Object.entries(state.earlier).filter(([id]) => shown.has(id)));
    return step({ ...state, earlier: { ...kept, [command.ticket]: found } });
  },
  adopt(state, command) {
    // 采用此答案: the entry's answer and its id, as edits like any other (autosaved by `save`).
    const id = command.ticket;
    if (!state.tickets[id]) return step(state);
    const answer = String(command.answer).slice(0, FIELD_LIMITS.answer);
    const draft = { ...(state.drafts[id] || {}), answer, answered_from: String(command.entry) };
    return step({ ...state, drafts: { ...state.drafts, [id]: draft }, saving: { ...state.saving, [id]: "dirty" } });
  },
  select(state, command) {
    return step(state.tickets[command.ticket] ? { ...state, current: command.ticket } : state);
  },
  connecting(state) {
    return step({ ...state, connection: "connecting" });
  },
  disconnected(state) {
    // Offers go back to the queue when a seat drops; claimed tickets wait for the reconnect.
    const next = { ...state, connection: "closed", offer: null, pending: {} };
    return step(next, { stopRing: true });
  },
};

export function onCommand(state, command, now) {
  const handle = COMMANDS[command.type];
  return handle ? handle(state, command, now) : step(state);
}

// --- what the page shows (pure too) --------------------------------------------------------------

export const CATEGORY_REQUIRED = "请从分派目录中选择分类（可点“建议分类”）";

// With a dispatch catalogue a ticket is submitted with one of its categories (the server checks too).
export function categoryAllowed(state, category) {
  return !state.catalogue.length || state.catalogue.some((item) => item.id === category);
}

export function categoryLabel(state, id) {
  const item = state.catalogue.find((category) => category.id === id);
  return item ? `${item.name}（${item.department}）` : id;
}

export function isConversation(ticket) {
  return MESSAGE_CHANNELS.includes(ticket.channel) || (ticket.messages || []).length > 0;
}

// A ticket's conversation as the page lists it: who, when, what, and how far a reply got.
export function conversation(ticket) {
  return (ticket.messages || []).map((message) => {
    const out = message.direction === "out";
    const status = out ? DELIVERY_LABELS[message.status] || DELIVERY_LABELS.queued : "";
    const failed = out && message.status === "failed" && message.reason ? `：${message.reason}` : "";
    return { id: message.id, who: out ? "坐席回复" : "市民", at: message.at, text: message.text, out, state: message.status || "", status: status + failed };
  });
}

// What the knowledge suggestions of a ticket depend on: they are asked again when it changes.
export function knowledgeKey(ticket) {
  const said = (ticket.transcript || []).filter((segment) => segment.final && segment.speaker !== "agent").length;
  const wrote = (ticket.messages || []).filter((message) => message.direction === "in").length;
  return `${ticket.id}:${(ticket.text || "").length}:${said}:${wrote}`;
}

// The ticket whose 历史工单 the page asks for next: the offer's first (its mark shows before the
// accept), then the one on screen; null when both are known.
export function earlierWanted(state) {
  const id = [state.offer ? state.offer.ticket.id : null, state.current].find((one) => one && !state.earlier[one]);
  return id ? { ticket: id, key: `${id}:earlier` } : null;
}

// The repeat-contact mark: 重复来电 for a call, 重复诉求 for any other channel, with how many times
// the citizen came within the window before; "" when they did not.
export function repeatMark(ticket, found) {
  if (!found || !found.repeat) return "";
  return `${ticket.channel === "voice" ? "重复来电" : "重复诉求"}（此前 ${found.count} 次）`;
}

// A ticket's earlier tickets as the page lists them: channel, status and category in words.
export function earlierItems(state, found) {
  return (found ? found.earlier : []).map((item) => ({
    id: String(item.id),
    channel: CHANNELS[item.channel] || String(item.channel),
    at: String(item.received_at),
    status: STATUS_LABELS[item.status] || String(item.status),
    category: item.category ? categoryLabel(state, String(item.category)) : "未分类",
    text: String(item.text || ""),
    answer: item.answer ? String(item.answer) : "",
  }));
}

export function fieldValue(state, id, field) {
  const draft = state.drafts[id] || {};
  if (field in draft) return draft[field];
  const ticket = state.tickets[id] || {};
  if (field === "citizen_name") return (ticket.citizen || {}).name || "";
  if (field === "citizen_phone") return (ticket.citizen || {}).phone || "";
  return ticket[field] || "";
}

// A deadline clock's colour at `now` (ms): red from its due time, yellow once `yellowShare` of the
// time from the ticket's arrival to it is used (gateway/triage/deadlines.py `colour`).
export function clockColour(dueAt, receivedAt, now, yellowShare) {
  if (now >= dueAt) return "red";
  return now - receivedAt >= (dueAt - receivedAt) * yellowShare ? "yellow" : "green";
}

export function clock(milliseconds) {
  const seconds = Math.max(0, Math.floor(milliseconds / 1000));
  const pad = (value) => String(value).padStart(2, "0");
  const hours = Math.floor(seconds / 3600);
  const rest = `${pad(Math.floor((seconds % 3600) / 60))}:${pad(seconds % 60)}`;
  return hours ? `${hours}:${rest}` : rest;
}

export function backoff(attempt) {
  // 0.5 s doubling to 10 s; the shell adds jitter so a gateway restart is not met by every seat at once.
  return Math.min(10000, 500 * 2 ** Math.min(attempt, 5));
}
