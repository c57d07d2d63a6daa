// The view model of one build, folded from its event log (and seeded or completed by
// `GET /builds/{buildId}`). Pure functions: no I/O, no clock, no React.

import type {
  AnyEvent,
  BuildEvent,
  BuildStatus,
  Metrics,
  PlannedTask,
  Recovery,
  TaskStatus,
  Usage,
} from "./events";
import { TERMINAL_BUILD_STATUSES } from "./events";

export type AttemptOutcome = "running" | "completed" | "failed" | "timeout" | "cancelled";

export interface Attempt {
  n: number;
  startedAt?: number;
  endedAt?: number;
  outcome: AttemptOutcome;
  error?: string;
  durationMs?: number;
}

export interface TaskVM {
  id: string;
  name: string;
  type: string;
  description: string;
  estimatedDuration?: number;
  dependsOn: string[];
  targetPath?: string | null;
  status: TaskStatus;
  attempt: number;
  attempts: Attempt[];
  startedAt?: number;
  completedAt?: number;
  durationMs?: number;
  usage?: Usage;
  files: string[];
  error?: string | null;
  cached: boolean;
  willRetry: boolean;
  skipReason?: string;
  skipDependency?: string;
  /** Seen in the streaming plan (plan_partial) and not yet confirmed by plan_generated. */
  draft: boolean;
}

export type NoticeKind = "sequential" | "blocked" | "hard_error" | "warning";

export interface PlanNotice {
  seq: number;
  kind: NoticeKind;
  message: string;
  cycles: string[];
}

export interface Blocked {
  planId: string;
  message: string;
  cycles: string[];
  cycleTasks: string[][];
  edges: [string, string][];
}

export interface Approval {
  planId: string;
  expiresAt?: number | string;
  approvalUrl?: string;
  taskCount?: number;
}

export interface BuildEnd {
  type: "build_completed" | "build_failed" | "build_cancelled";
  status: BuildStatus;
  reason?: string;
  message?: string;
  at: number;
}

export interface BuildState {
  buildId: string;
  /** Every event up to this seq has been applied, none after it. */
  lastSeq: number;
  /** Events that arrived ahead of a gap, applied once the gap is filled. */
  buffered: Record<number, AnyEvent>;
  status: BuildStatus;
  prompt: string;
  framework?: string | null;
  createdAt?: number;
  startedAt?: number;
  updatedAt?: number;
  planId?: string;
  planVersion: number;
  /** plan_generated seen (or a planned build restored): the task list is final for this version. */
  planned: boolean;
  /** plan_generated carried only a prefix of the tasks: read the rest from GET /builds/{id}. */
  planTruncated: boolean;
  estimatedDuration?: number;
  recovery?: Recovery;
  tasks: Record<string, TaskVM>;
  order: string[];
  notices: PlanNotice[];
  blocked: Blocked | null;
  approval: Approval | null;
  approvedEdited?: boolean;
  rejectedReason?: string | null;
  end: BuildEnd | null;
  metrics: Metrics;
  /** How many runs: 1, plus one per build_resumed. */
  runs: number;
}

export function emptyBuild(buildId: string): BuildState {
  return {
    buildId,
    lastSeq: 0,
    buffered: {},
    status: "planning",
    prompt: "",
    planVersion: 0,
    planned: false,
    planTruncated: false,
    tasks: {},
    order: [],
    notices: [],
    blocked: null,
    approval: null,
    end: null,
    metrics: {},
    runs: 1,
  };
}

function newTask(t: Partial<PlannedTask> & { id: string }, draft: boolean): TaskVM {
  return {
    id: t.id,
    name: t.name ?? t.id,
    type: t.type ?? "create_file",
    description: t.description ?? "",
    estimatedDuration: t.estimatedDuration,
    dependsOn: [...(t.dependsOn ?? [])],
    status: "pending",
    attempt: 0,
    attempts: [],
    files: [],
    cached: false,
    willRetry: false,
    draft,
  };
}

function filePaths(files: unknown): string[] {
  if (!Array.isArray(files)) return [];
  return files
    .map((f) => (typeof f === "string" ? f : typeof f === "object" && f && "path" in f ? String(f.path) : ""))
    .filter(Boolean);
}

const ACTIVE: ReadonlySet<TaskStatus> = new Set(["pending", "queued", "in_progress"]);

/** A mutable working copy of one state for one batch: tasks are copied when first touched. */
class Draft {
  s: BuildState;
  private touched = new Set<string>();
  private tasksCopied = false;

  constructor(state: BuildState) {
    this.s = { ...state, buffered: { ...state.buffered } };
  }

  task(id: string, create?: Partial<PlannedTask>): TaskVM | undefined {
    if (!this.tasksCopied) {
      this.s.tasks = { ...this.s.tasks };
      this.tasksCopied = true;
    }
    let t = this.s.tasks[id];
    if (!t) {
      if (!create) return undefined;
      t = newTask({ ...create, id }, true);
      this.s.tasks[id] = t;
      this.s.order = [...this.s.order, id];
      this.touched.add(id);
      return t;
    }
    if (!this.touched.has(id)) {
      t = { ...t, attempts: [...t.attempts] };
      this.s.tasks[id] = t;
      this.touched.add(id);
    }
    return t;
  }

  setOrder(order: string[]): void {
    if (!this.tasksCopied) {
      this.s.tasks = { ...this.s.tasks };
      this.tasksCopied = true;
    }
    const keep = new Set(order);
    for (const id of Object.keys(this.s.tasks)) if (!keep.has(id)) delete this.s.tasks[id];
    this.s.order = order;
  }
}

function closeAttempt(t: TaskVM, n: number, outcome: AttemptOutcome, at: number, extra: Partial<Attempt> = {}): void {
  let i = t.attempts.findIndex((a) => a.n === n);
  if (i < 0) {
    t.attempts.push({ n, outcome: "running" });
    i = t.attempts.length - 1;
  }
  const a = t.attempts[i];
  const durationMs = extra.durationMs ?? (a.startedAt !== undefined ? Math.max(0, at - a.startedAt) : undefined);
  t.attempts[i] = { ...a, ...extra, outcome, endedAt: at, durationMs };
}

function applyOne(d: Draft, e: BuildEvent): void {
  const s = d.s;
  s.updatedAt = e.timestamp;
  switch (e.type) {
    case "build_started":
      s.prompt = e.data.prompt ?? s.prompt;
      s.framework = e.data.framework;
      s.createdAt = s.createdAt ?? e.timestamp;
      s.startedAt = s.startedAt ?? e.timestamp;
      break;
    case "plan_partial": {
      s.planId = e.data.planId;
      for (const t of e.data.latestTasks ?? []) {
        const task = d.task(t.id, t)!;
        if (task.draft || !s.planned) Object.assign(task, definition(t));
      }
      break;
    }
    case "plan_generated": {
      s.planId = e.data.planId;
      s.planVersion = e.data.planVersion ?? s.planVersion + 1;
      s.estimatedDuration = e.data.estimatedDuration;
      s.recovery = e.data.recovery ?? null;
      s.planned = true;
      s.planTruncated = Boolean(e.data.truncated);
      const ids = (e.data.tasks ?? []).map((t) => t.id);
      for (const t of e.data.tasks ?? []) {
        const task = d.task(t.id, t)!;
        Object.assign(task, definition(t), { draft: false });
      }
      if (!s.planTruncated) d.setOrder(ids);
      // Tasks may have started while the plan streamed: the build executes from here.
      if (s.status === "planning" && Object.values(s.tasks).some((t) => t.attempt > 0)) s.status = "executing";
      if (s.blocked && s.blocked.planId === e.data.planId && s.planVersion > 1) s.blocked = null;
      break;
    }
    case "plan_warning":
      s.notices = [
        ...s.notices,
        {
          seq: e.seq,
          kind: e.data.warning === "sequential_execution" ? "sequential" : "warning",
          message: e.data.message,
          cycles: e.data.cycles ?? [],
        },
      ];
      break;
    case "plan_blocked":
      s.blocked = {
        planId: e.data.planId,
        message: e.data.message,
        cycles: e.data.cycles ?? [],
        cycleTasks: e.data.cycleTasks ?? [],
        edges: e.data.edges ?? [],
      };
      s.notices = [...s.notices, { seq: e.seq, kind: "blocked", message: e.data.message, cycles: e.data.cycles ?? [] }];
      break;
    case "plan_approval_required":
      s.status = "awaiting_approval";
      s.approval = {
        planId: e.data.planId,
        expiresAt: e.data.expiresAt,
        approvalUrl: e.data.approvalUrl,
        taskCount: e.data.taskCount,
      };
      break;
    case "plan_approved":
      s.approval = null;
      s.blocked = null;
      s.approvedEdited = e.data.edited;
      if (s.status === "awaiting_approval" || s.status === "planning") s.status = "executing";
      break;
    case "plan_rejected":
      s.approval = null;
      s.rejectedReason = e.data.reason ?? null;
      break;
    case "build_resumed":
      s.status = "executing";
      s.end = null;
      s.runs += 1;
      for (const id of e.data.taskIds ?? []) {
        const t = d.task(id);
        if (!t) continue;
        t.status = "pending";
        t.error = null;
        t.willRetry = false;
        t.skipReason = undefined;
        t.skipDependency = undefined;
      }
      break;
    case "task_started": {
      // A task may start while the plan still streams: the build shows "planning" until plan_generated.
      if ((s.status === "planning" && s.planned) || s.status === "awaiting_approval") s.status = "executing";
      s.approval = null;
      const t = d.task(e.data.taskId, { name: e.data.taskName, description: e.data.description })!;
      t.status = "in_progress";
      t.attempt = e.data.attempt;
      t.startedAt = e.timestamp;
      t.error = null;
      t.willRetry = false;
      if (!t.attempts.some((a) => a.n === e.data.attempt))
        t.attempts.push({ n: e.data.attempt, startedAt: e.timestamp, outcome: "running" });
      break;
    }
    case "task_completed": {
      const t = d.task(e.data.taskId, { name: e.data.taskName })!;
      t.status = "completed";
      t.completedAt = e.timestamp;
      t.durationMs = e.data.durationMs ?? t.durationMs;
      t.usage = e.data.usage ?? t.usage;
      t.cached = Boolean(e.data.cached);
      t.files = filePaths(e.data.files);
      t.error = null;
      t.willRetry = false;
      closeAttempt(t, t.attempt || 1, "completed", e.timestamp, { durationMs: e.data.durationMs });
      break;
    }
    case "task_failed":
    case "task_timeout": {
      const t = d.task(e.data.taskId, { name: e.data.taskName })!;
      const outcome = e.type === "task_failed" ? "failed" : "timeout";
      const error =
        e.type === "task_failed" ? e.data.error : `Timed out on attempt ${e.data.attempt}. ${e.data.suggestion ?? ""}`;
      t.attempt = Math.max(t.attempt, e.data.attempt);
      closeAttempt(t, e.data.attempt, outcome, e.timestamp, { error });
      t.error = error;
      t.willRetry = e.data.willRetry;
      t.status = e.data.willRetry ? "pending" : outcome;
      if (!e.data.willRetry) t.completedAt = e.timestamp;
      break;
    }
    case "task_skipped": {
      const t = d.task(e.data.taskId, {})!;
      t.status = "skipped";
      t.skipReason = e.data.reason;
      t.skipDependency = e.data.dependency;
      t.willRetry = false;
      break;
    }
    case "build_completed":
      s.status = e.data.status;
      s.metrics = { ...s.metrics, ...(e.data.metrics ?? {}) };
      s.end = { type: e.type, status: e.data.status, at: e.timestamp };
      s.approval = null;
      break;
    case "build_failed": {
      const status: BuildStatus = e.data.reason === "timed_out" ? "timed_out" : "failed";
      s.status = status;
      s.end = { type: e.type, status, reason: e.data.reason, message: e.data.message, at: e.timestamp };
      s.approval = null;
      if (e.data.reason === "circular_dependencies")
        s.notices = [
          ...s.notices,
          { seq: e.seq, kind: "hard_error", message: e.data.message ?? "", cycles: s.blocked?.cycles ?? [] },
        ];
      break;
    }
    case "build_cancelled":
      s.status = "cancelled";
      s.end = { type: e.type, status: "cancelled", reason: e.data.reason, at: e.timestamp };
      s.approval = null;
      for (const id of s.order) {
        const t = s.tasks[id];
        if (t && ACTIVE.has(t.status)) {
          const w = d.task(id)!;
          if (w.status === "in_progress") closeAttempt(w, w.attempt || 1, "cancelled", e.timestamp);
          w.status = "cancelled";
          w.willRetry = false;
        }
      }
      break;
  }
}

function definition(t: Partial<PlannedTask>): Partial<TaskVM> {
  const out: Partial<TaskVM> = {};
  if (t.name !== undefined) out.name = t.name;
  if (t.type !== undefined) out.type = t.type;
  if (t.description !== undefined) out.description = t.description;
  if (t.estimatedDuration !== undefined) out.estimatedDuration = t.estimatedDuration;
  if (t.dependsOn !== undefined) out.dependsOn = [...t.dependsOn];
  return out;
}

/**
 * Apply a batch of events in seq order. An event at or below `lastSeq`, or already buffered, is a
 * duplicate and changes nothing; one beyond a gap waits in `buffered` until the gap is filled.
 */
export function applyEvents(state: BuildState, events: readonly AnyEvent[]): BuildState {
  const fresh = events.filter((e) => e.seq > state.lastSeq && !(e.seq in state.buffered));
  if (fresh.length === 0) return state;
  const d = new Draft(state);
  for (const e of fresh) {
    if (e.buildId && e.buildId !== state.buildId) continue;
    d.s.buffered[e.seq] = e;
  }
  let next = d.s.buffered[d.s.lastSeq + 1];
  while (next) {
    delete d.s.buffered[next.seq];
    applyOne(d, next as BuildEvent);
    d.s.lastSeq = next.seq;
    next = d.s.buffered[d.s.lastSeq + 1];
  }
  return d.s;
}

/** The task list replaced by an edited plan the API accepted; run state of kept tasks stays. */
export function replacePlan(state: BuildState, tasks: readonly PlannedTask[]): BuildState {
  const d = new Draft(state);
  for (const t of tasks) Object.assign(d.task(t.id, t)!, definition(t), { draft: false });
  d.setOrder(tasks.map((t) => t.id));
  d.s.blocked = null;
  d.s.approvedEdited = true;
  return d.s;
}

/** The first seq missing below a buffered event (what to ask GET /events for), or null. */
export function missingAfter(state: BuildState): number | null {
  return Object.keys(state.buffered).length > 0 ? state.lastSeq : null;
}

export function isTerminal(status: BuildStatus): boolean {
  return TERMINAL_BUILD_STATUSES.has(status);
}
