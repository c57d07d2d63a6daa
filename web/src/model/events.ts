// The build event log as the API and the WebSocket deliver it: one envelope per state change,
// `seq` from 1 per build, no gaps, no duplicates. Payloads are the documented event data; a field
// the dashboard does not know is ignored, a field it needs but finds missing is treated as absent.

export type BuildStatus =
  | "planning"
  | "awaiting_approval"
  | "executing"
  | "completed"
  | "completed_with_errors"
  | "failed"
  | "cancelled"
  | "timed_out";

export type TaskStatus =
  | "pending"
  | "queued"
  | "in_progress"
  | "completed"
  | "failed"
  | "timeout"
  | "skipped"
  | "cancelled";

export type Recovery = "auto-priority" | "llm-healed" | "linear-fallback" | null;

export const TERMINAL_BUILD_STATUSES: ReadonlySet<BuildStatus> = new Set([
  "completed",
  "completed_with_errors",
  "failed",
  "cancelled",
  "timed_out",
]);

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  costUsd: number | null;
}

export interface PlannedTask {
  id: string;
  name: string;
  type: string;
  description: string;
  estimatedDuration?: number;
  dependsOn: string[];
}

export interface Metrics {
  totalTasks?: number;
  completedTasks?: number;
  failedTasks?: number;
  skippedTasks?: number;
  cachedTasks?: number;
  promptTokens?: number;
  completionTokens?: number;
  costUsd?: number | null;
  planCostUsd?: number | null;
  durationMs?: number;
}

interface EventData {
  build_started: { prompt: string; framework?: string | null };
  plan_partial: { planId: string; totalTasksSoFar: number; latestTasks: PlannedTask[] };
  plan_warning: { planId: string; warning: string; message: string; cycles?: string[] };
  plan_blocked: {
    planId: string;
    reason: string;
    message: string;
    cycles: string[];
    cycleTasks: string[][];
    edges: [string, string][];
  };
  plan_generated: {
    planId: string;
    planVersion?: number;
    taskCount: number;
    estimatedDuration: number;
    recovery: Recovery;
    tasks: PlannedTask[];
    truncated?: boolean;
  };
  plan_approval_required: {
    planId: string;
    expiresAt: number | string;
    taskCount: number;
    estimatedDuration: number;
    approvalUrl: string;
  };
  plan_approved: { planId: string; planVersion: number; edited: boolean };
  plan_rejected: { planId: string; reason?: string | null };
  build_resumed: { runId: string; taskIds: string[] };
  task_started: { taskId: string; taskName: string; description?: string; attempt: number };
  task_completed: {
    taskId: string;
    taskName: string;
    filesCreated?: number;
    files?: string[] | { path: string }[];
    cached?: boolean;
    durationMs?: number;
    usage?: Usage;
  };
  task_failed: { taskId: string; taskName: string; error: string; attempt: number; willRetry: boolean };
  task_timeout: { taskId: string; taskName: string; attempt: number; willRetry: boolean; suggestion?: string };
  task_skipped: { taskId: string; reason: string; dependency?: string };
  build_completed: { status: BuildStatus; metrics?: Metrics; files?: unknown[]; truncated?: boolean };
  build_failed: { reason: string; message?: string };
  build_cancelled: { reason?: string };
}

export type EventType = keyof EventData;

export type BuildEvent = {
  [K in EventType]: { id: string; type: K; buildId: string; seq: number; timestamp: number; data: EventData[K] };
}[EventType];

/** An envelope of a type this dashboard does not know yet: kept for its seq, otherwise ignored. */
export interface UnknownEvent {
  id: string;
  type: string;
  buildId: string;
  seq: number;
  timestamp: number;
  data: Record<string, unknown>;
}

export type AnyEvent = BuildEvent | UnknownEvent;

export function isEnvelope(value: unknown): value is AnyEvent {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  // Control frames (`error` may carry a seq) have no event id or timestamp.
  return (
    typeof v.id === "string" &&
    typeof v.seq === "number" &&
    typeof v.timestamp === "number" &&
    typeof v.type === "string" &&
    typeof v.buildId === "string"
  );
}
