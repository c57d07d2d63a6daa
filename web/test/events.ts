// Event envelopes for the tests, as the API writes them.

import type { AnyEvent, PlannedTask } from "../src/model/events";

export const BUILD = "bld_TEST";

export function ev(seq: number, type: string, data: Record<string, unknown> = {}, buildId = BUILD): AnyEvent {
  return { id: `evt_${seq}`, type, buildId, seq, timestamp: 1_000_000 + seq * 1000, data } as AnyEvent;
}

export function task(id: string, dependsOn: string[] = [], estimatedDuration = 10): PlannedTask {
  return { id, name: `Task ${id}`, type: "create_file", description: `does ${id}`, estimatedDuration, dependsOn };
}

/** A whole build's log: plan streamed, generated, tasks a -> b -> c run, completed. */
export function happyLog(): AnyEvent[] {
  const a = task("a");
  const b = task("b", ["a"]);
  const c = task("c", ["b"]);
  let s = 0;
  const e = (type: string, data: Record<string, unknown> = {}) => ev(++s, type, data);
  return [
    e("build_started", { prompt: "make it", framework: "react" }),
    e("plan_partial", { planId: "p1", totalTasksSoFar: 1, latestTasks: [a] }),
    e("plan_partial", { planId: "p1", totalTasksSoFar: 2, latestTasks: [b] }),
    e("plan_partial", { planId: "p1", totalTasksSoFar: 3, latestTasks: [c] }),
    e("plan_generated", { planId: "p1", planVersion: 1, taskCount: 3, estimatedDuration: 30, recovery: null, tasks: [a, b, c] }),
    e("task_started", { taskId: "a", taskName: "Task a", attempt: 1 }),
    e("task_completed", { taskId: "a", taskName: "Task a", files: ["a.ts"], durationMs: 1200, usage: { promptTokens: 10, completionTokens: 20, costUsd: 0.001 } }),
    e("task_started", { taskId: "b", taskName: "Task b", attempt: 1 }),
    e("task_completed", { taskId: "b", taskName: "Task b", files: ["b.ts"], durationMs: 800, usage: { promptTokens: 1, completionTokens: 2, costUsd: 0.002 } }),
    e("task_started", { taskId: "c", taskName: "Task c", attempt: 1 }),
    e("task_completed", { taskId: "c", taskName: "Task c", files: [{ path: "c.ts" }], durationMs: 500 }),
    e("build_completed", { status: "completed", metrics: { totalTasks: 3, completedTasks: 3, costUsd: 0.003 } }),
  ];
}

/** A small seeded PRNG (mulberry32): the random tests are the same on every run. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffle<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}
