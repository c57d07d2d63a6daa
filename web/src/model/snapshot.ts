// `GET /builds/{buildId}` as a seed for the view model (a reload draws the build at once) and as
// the source of what events leave out (a truncated plan, exact metrics).

import type { BuildState, TaskVM } from "./build";
import { emptyBuild, isTerminal } from "./build";
import type { BuildStatus, Metrics, Recovery, TaskStatus, Usage } from "./events";

export interface SnapshotTask {
  id: string;
  type: string;
  name: string;
  description?: string;
  dependsOn?: string[];
  targetPath?: string | null;
  estimatedDuration?: number | null;
  status: TaskStatus;
  attempt?: number;
  cached?: boolean;
  error?: string | null;
  files?: (string | { path: string })[];
  startedAt?: number | null;
  completedAt?: number | null;
  durationMs?: number | null;
  usage?: Usage | null;
}

export interface Snapshot {
  buildId: string;
  status: BuildStatus;
  prompt: string;
  framework?: string | null;
  createdAt?: number;
  updatedAt?: number;
  startedAt?: number | null;
  estimatedDuration?: number | null;
  planVersion?: number | null;
  plan?: {
    planId: string;
    estimatedDuration?: number | null;
    recovery?: Recovery;
    planVersion?: number | null;
    tasks?: SnapshotTask[];
  } | null;
  recovery?: Recovery;
  metrics?: Metrics;
  failureReason?: string | null;
  message?: string | null;
}

function paths(files: SnapshotTask["files"]): string[] {
  return (files ?? []).map((f) => (typeof f === "string" ? f : f.path));
}

function taskFrom(t: SnapshotTask): TaskVM {
  return {
    id: t.id,
    name: t.name,
    type: t.type,
    description: t.description ?? "",
    estimatedDuration: t.estimatedDuration ?? undefined,
    dependsOn: [...(t.dependsOn ?? [])],
    targetPath: t.targetPath,
    status: t.status,
    attempt: t.attempt ?? 0,
    attempts: [],
    startedAt: t.startedAt ?? undefined,
    completedAt: t.completedAt ?? undefined,
    durationMs: t.durationMs ?? undefined,
    usage: t.usage ?? undefined,
    files: paths(t.files),
    error: t.error,
    cached: Boolean(t.cached),
    willRetry: false,
    draft: false,
  };
}

function planVersionOf(snap: Snapshot): number {
  return snap.planVersion ?? snap.plan?.planVersion ?? (snap.plan ? 1 : 0);
}

/** A whole view model from the snapshot alone (a reload, before the event log is replayed). */
export function fromSnapshot(snap: Snapshot): BuildState {
  const s = emptyBuild(snap.buildId);
  const tasks = snap.plan?.tasks ?? [];
  s.status = snap.status;
  s.prompt = snap.prompt;
  s.framework = snap.framework;
  s.createdAt = snap.createdAt;
  s.startedAt = snap.startedAt ?? snap.createdAt;
  s.updatedAt = snap.updatedAt;
  s.planId = snap.plan?.planId;
  s.planVersion = planVersionOf(snap);
  s.planned = Boolean(snap.plan);
  s.estimatedDuration = snap.estimatedDuration ?? snap.plan?.estimatedDuration ?? undefined;
  s.recovery = snap.plan?.recovery ?? snap.recovery ?? null;
  s.tasks = Object.fromEntries(tasks.map((t) => [t.id, taskFrom(t)]));
  s.order = tasks.map((t) => t.id);
  s.metrics = { ...(snap.metrics ?? {}) };
  if (isTerminal(snap.status)) {
    s.end = {
      type: snap.status === "cancelled" ? "build_cancelled" : snap.status.startsWith("completed") ? "build_completed" : "build_failed",
      status: snap.status,
      reason: snap.failureReason ?? undefined,
      message: snap.message ?? undefined,
      at: snap.updatedAt ?? 0,
    };
  }
  if (snap.status === "awaiting_approval" && snap.plan) s.approval = { planId: snap.plan.planId };
  return s;
}

/**
 * Complete a live view model with a snapshot without moving it back in time: statuses stay the
 * events' (they are at least as new); the snapshot adds tasks the events left out (a truncated
 * plan), fields the events do not carry, and the build's exact metrics.
 */
export function mergeSnapshot(state: BuildState, snap: Snapshot): BuildState {
  const s: BuildState = { ...state, tasks: { ...state.tasks } };
  s.prompt = s.prompt || snap.prompt;
  s.framework = s.framework ?? snap.framework;
  s.createdAt = snap.createdAt ?? s.createdAt;
  s.startedAt = s.startedAt ?? snap.startedAt ?? undefined;
  if (snap.metrics && (snap.updatedAt ?? 0) >= (s.updatedAt ?? 0) - 1000) s.metrics = { ...s.metrics, ...snap.metrics };
  if (!s.metrics.totalTasks && snap.metrics) s.metrics = { ...snap.metrics, ...s.metrics };
  const tasks = snap.plan?.tasks ?? [];
  const sameOrNewerPlan = planVersionOf(snap) >= s.planVersion;
  if (!sameOrNewerPlan) return s;
  if (snap.plan) {
    s.estimatedDuration = s.estimatedDuration ?? snap.estimatedDuration ?? snap.plan.estimatedDuration ?? undefined;
    if (s.planTruncated || !s.planned) {
      const ids = tasks.map((t) => t.id);
      for (const t of tasks) if (!s.tasks[t.id]) s.tasks[t.id] = taskFrom(t);
      const known = new Set(ids);
      s.order = [...ids, ...s.order.filter((id) => !known.has(id) && s.tasks[id])];
      if (s.planned) s.planTruncated = false;
    }
  }
  for (const t of tasks) {
    const cur = s.tasks[t.id];
    if (!cur) continue;
    const fill: Partial<TaskVM> = {};
    if (cur.estimatedDuration === undefined && t.estimatedDuration != null) fill.estimatedDuration = t.estimatedDuration;
    if (cur.targetPath === undefined && t.targetPath !== undefined) fill.targetPath = t.targetPath;
    if (cur.usage === undefined && t.usage) fill.usage = t.usage;
    if (cur.durationMs === undefined && t.durationMs != null) fill.durationMs = t.durationMs;
    if (cur.startedAt === undefined && t.startedAt != null) fill.startedAt = t.startedAt;
    if (cur.files.length === 0 && t.files?.length) fill.files = paths(t.files);
    if (cur.draft) {
      fill.name = t.name;
      fill.type = t.type;
      fill.dependsOn = [...(t.dependsOn ?? [])];
    }
    if (Object.keys(fill).length) s.tasks[t.id] = { ...cur, ...fill };
  }
  return s;
}
