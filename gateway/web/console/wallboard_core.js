// The wallboard, pure: a board frame and the time now -> what the page shows (rows of text, the
// chart's bars). wallboard.js draws it and does the I/O; the clocks tick here from the frame's
// times, so a board that did not change needs no new frame.

import { STATES, CLOCK_LABELS, clock } from "./seat_core.js";

export const AGENT_STATES = Object.freeze({ ...STATES, offline: "离线" });
export const CHANNELS = Object.freeze({ web: "网页", voice: "电话", sms: "短信", wechat: "微信", telegram: "Telegram", app: "App" });
export const MAX_CHANNELS = 6; // colours in wallboard.css; more channels share the last one
const LATE_MS = 60_000; // an oldest wait beyond this is shown red

// The server's time now: frames carry the server's times (`at`, stamped when built), the page
// ticks with its own clock from when the frame arrived (`received`), so the two never mix.
export function serverNow(frame, now) {
  return frame.at + (now - (frame.received ?? now));
}

function percent(share) {
  return share === null || share === undefined ? "—" : `${Math.round(share * 100)}%`;
}

export function queueRows(frame, now) {
  const server = serverNow(frame, now);
  return frame.queues.map((queue) => {
    const oldest = queue.oldest_ms === null ? null : server - queue.oldest_ms;
    return {
      name: queue.name,
      label: queue.label,
      waiting: String(queue.waiting),
      oldest: oldest === null ? "—" : clock(oldest),
      late: oldest !== null && oldest > LATE_MS,
      with_agents: String(queue.with_agents),
      service_level: percent(queue.service_level),
      average_answer: queue.average_answer_s === null ? "—" : `${queue.average_answer_s} 秒`,
      abandoned: String(queue.abandoned),
      handled: String(queue.handled),
    };
  });
}

export function agentRows(frame, now) {
  const server = serverNow(frame, now);
  return frame.agents.map((agent) => ({
    id: agent.id,
    name: agent.name,
    state: agent.state,
    label: AGENT_STATES[agent.state] || agent.state,
    since: agent.since_ms === null ? "—" : clock(server - agent.since_ms),
  }));
}

export function agentCounts(frame) {
  const counts = Object.fromEntries(Object.keys(AGENT_STATES).map((state) => [state, 0]));
  for (const agent of frame.agents) counts[agent.state] = (counts[agent.state] || 0) + 1;
  return Object.entries(counts).map(([state, count]) => `${AGENT_STATES[state] || state} ${count}`).join(" · ");
}

export function channelName(channel) {
  return CHANNELS[channel] || channel;
}

// Stacked bars, one per hour: [{hour, channel, index, x, y, width, height, count}] in a
// width x height box (with room for the axis labels below), scaled to the busiest hour.
export function chartBars(intake, width, height) {
  const channels = Object.keys(intake);
  const totals = Array.from({ length: 24 }, (_, hour) => channels.reduce((sum, c) => sum + intake[c][hour], 0));
  const top = Math.max(1, ...totals);
  const slot = width / 24;
  const bars = [];
  for (let hour = 0; hour < 24; hour += 1) {
    let base = height;
    channels.forEach((channel, index) => {
      const count = intake[channel][hour];
      if (!count) return;
      const barHeight = (count / top) * height;
      base -= barHeight;
      bars.push({ hour, channel, index: Math.min(index, MAX_CHANNELS - 1), x: hour * slot + 1, y: base, width: slot - 2, height: barHeight, count });
    });
  }
  return { bars, top, channels };
}

// 督办 steps: the reminder the working day after a clock ran out, the report five working days later.
export const ESCALATION_KINDS = Object.freeze({ reminder: "提醒", report: "通报" });

// The 督办 list, newest first: the clock as the seat page names it, the step in Chinese, the times
// in the page's locale (a clock or step this page does not know is shown as sent).
export function escalationRows(frame) {
  return (frame.escalations || []).map((event) => ({
    key: `${event.ticket}@${event.clock}@${event.kind}`,
    ticket: event.ticket,
    queue: event.queue,
    kind: event.kind,
    clock: CLOCK_LABELS[event.clock] || event.clock,
    step: `督办${ESCALATION_KINDS[event.kind] || event.kind}`,
    due: new Date(event.due).toLocaleString("zh-CN"),
    at: new Date(event.at).toLocaleString("zh-CN"),
  }));
}
