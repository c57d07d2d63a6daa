// How statuses, times, money and tokens read on the page.

import type { BuildStatus, TaskStatus } from "../model/events";

export const TASK_STATUS_LABEL: Record<TaskStatus, string> = {
  pending: "Pending",
  queued: "Queued",
  in_progress: "Running",
  completed: "Completed",
  failed: "Failed",
  timeout: "Timed out",
  skipped: "Skipped",
  cancelled: "Cancelled",
};

// A symbol beside every colour, so status never rests on colour alone.
export const TASK_STATUS_ICON: Record<TaskStatus, string> = {
  pending: "○",
  queued: "◔",
  in_progress: "◐",
  completed: "✓",
  failed: "✕",
  timeout: "⏱",
  skipped: "↷",
  cancelled: "⊘",
};

export const BUILD_STATUS_LABEL: Record<BuildStatus, string> = {
  planning: "Planning",
  awaiting_approval: "Awaiting approval",
  executing: "Running",
  completed: "Completed",
  completed_with_errors: "Completed with errors",
  failed: "Failed",
  cancelled: "Cancelled",
  timed_out: "Timed out",
};

export function seconds(ms: number | undefined | null): string {
  if (ms === undefined || ms === null) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

export function usd(value: number | undefined | null): string {
  if (value === undefined || value === null) return "—";
  if (value === 0) return "$0.00";
  if (value < 0.01) return `$${value.toFixed(4)}`;
  return `$${value.toFixed(2)}`;
}

export function tokens(n: number | undefined | null): string {
  return n === undefined || n === null ? "—" : n.toLocaleString("en-US");
}

export function age(epochMs: number | undefined, now: number): string {
  if (!epochMs) return "—";
  const s = Math.max(0, Math.round((now - epochMs) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

const pad = (n: number) => String(n).padStart(2, "0");

/** Local date and time, `2026-11-30 09:42:07` (no Intl: its first use costs a page tens of ms). */
export function when(epochMs: number | undefined): string {
  if (!epochMs) return "";
  const d = new Date(epochMs);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
