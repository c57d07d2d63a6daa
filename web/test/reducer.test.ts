import { describe, expect, it } from "vitest";
import { applyEvents, emptyBuild, missingAfter } from "../src/model/build";
import { BUILD, ev, happyLog, rng, shuffle, task } from "./events";

const fold = (events: ReturnType<typeof happyLog>) => applyEvents(emptyBuild(BUILD), events);

describe("event → view-model reducer", () => {
  it("folds a whole build: plan, tasks, files, usage, end", () => {
    const s = fold(happyLog());
    expect(s.lastSeq).toBe(12);
    expect(s.status).toBe("completed");
    expect(s.prompt).toBe("make it");
    expect(s.order).toEqual(["a", "b", "c"]);
    expect(s.tasks.c.dependsOn).toEqual(["b"]);
    expect(Object.values(s.tasks).map((t) => t.status)).toEqual(["completed", "completed", "completed"]);
    expect(s.tasks.a.usage).toEqual({ promptTokens: 10, completionTokens: 20, costUsd: 0.001 });
    expect(s.tasks.a.durationMs).toBe(1200);
    expect(s.tasks.c.files).toEqual(["c.ts"]);
    expect(s.tasks.a.attempts).toEqual([expect.objectContaining({ n: 1, outcome: "completed", durationMs: 1200 })]);
    expect(s.metrics.costUsd).toBe(0.003);
    expect(s.end?.type).toBe("build_completed");
  });

  it("shows tasks while the plan streams, before plan_generated", () => {
    const s = fold(happyLog().slice(0, 3));
    expect(s.status).toBe("planning");
    expect(s.order).toEqual(["a", "b"]);
    expect(s.tasks.b.draft).toBe(true);
    expect(s.planned).toBe(false);
  });

  it("a task started while the plan streams keeps its state through plan_generated", () => {
    const [started, partialA, partialB] = happyLog();
    const a = task("a");
    const b = task("b", ["a"]);
    const log = [
      started,
      partialA,
      ev(3, "task_started", { taskId: "a", taskName: "Task a", attempt: 1 }),
      { ...partialB, seq: 4, id: "evt_4" },
      ev(5, "task_completed", { taskId: "a", taskName: "Task a", files: ["a.ts"], durationMs: 5 }),
    ] as ReturnType<typeof happyLog>;
    let s = fold(log);
    expect(s.status).toBe("planning"); // still planning: the plan is being written
    expect(s.tasks.a.status).toBe("completed");
    s = applyEvents(s, [
      ev(6, "plan_generated", { planId: "p1", planVersion: 1, taskCount: 2, estimatedDuration: 20, recovery: null, tasks: [a, b] }),
    ]);
    expect(s.status).toBe("executing");
    expect(s.tasks.a.status).toBe("completed"); // plan_generated does not reset a started task
    expect(s.tasks.a.draft).toBe(false);
    expect(s.tasks.a.files).toEqual(["a.ts"]);
    expect(s.tasks.b.status).toBe("pending");
  });

  it("applies events in seq order whatever order they arrive in (seeded shuffles)", () => {
    const log = happyLog();
    const expected = fold(log);
    for (let seed = 1; seed <= 25; seed++) {
      const random = rng(seed);
      let s = emptyBuild(BUILD);
      // Deliver in random chunks of a random permutation.
      const order = shuffle(log, random);
      while (order.length) s = applyEvents(s, order.splice(0, 1 + Math.floor(random() * 4)));
      expect(s).toEqual(expected);
    }
  });

  it("ignores duplicates: the same events again change nothing (same object back)", () => {
    const s = fold(happyLog());
    expect(applyEvents(s, happyLog())).toBe(s);
    expect(applyEvents(s, happyLog().slice(3, 6))).toBe(s);
  });

  it("a reconnect that resends what was seen neither doubles attempts nor loses later events", () => {
    const log = happyLog();
    let s = applyEvents(emptyBuild(BUILD), log.slice(0, 8)); // ... task_started b
    // The connection drops; the server resends from an older seq, overlapping.
    s = applyEvents(s, log.slice(5, 12));
    expect(s).toEqual(fold(log));
    expect(s.tasks.b.attempts).toHaveLength(1);
  });

  it("holds events beyond a gap until the gap is filled, and says where it starts", () => {
    const log = happyLog();
    let s = applyEvents(emptyBuild(BUILD), log.slice(0, 5));
    s = applyEvents(s, log.slice(7, 9));
    expect(s.lastSeq).toBe(5);
    expect(missingAfter(s)).toBe(5);
    expect(s.tasks.b.status).toBe("pending");
    s = applyEvents(s, log.slice(5, 7));
    expect(s.lastSeq).toBe(9);
    expect(missingAfter(s)).toBeNull();
    expect(s.tasks.b.status).toBe("completed");
  });

  it("drops events of another build", () => {
    const s = applyEvents(emptyBuild(BUILD), [ev(1, "build_started", { prompt: "x" }, "bld_OTHER")]);
    expect(s.lastSeq).toBe(0);
  });

  it("plan_generated is final: streamed tasks it left out disappear", () => {
    const s = fold([
      ev(1, "build_started", { prompt: "p" }),
      ev(2, "plan_partial", { planId: "p1", totalTasksSoFar: 2, latestTasks: [task("a"), task("junk")] }),
      ev(3, "plan_generated", { planId: "p1", planVersion: 1, taskCount: 1, estimatedDuration: 10, recovery: null, tasks: [task("a")] }),
    ]);
    expect(s.order).toEqual(["a"]);
    expect(s.tasks.junk).toBeUndefined();
    expect(s.tasks.a.draft).toBe(false);
  });

  it("an edited plan (a new planVersion) replaces tasks and dependencies", () => {
    const log = [
      ev(1, "build_started", { prompt: "p" }),
      ev(2, "plan_generated", { planId: "p1", planVersion: 1, taskCount: 3, estimatedDuration: 30, recovery: null, tasks: [task("a"), task("b", ["a"]), task("c", ["b"])] }),
      ev(3, "plan_approval_required", { planId: "p1", expiresAt: 99, taskCount: 3, estimatedDuration: 30, approvalUrl: "/builds/bld_TEST/approval" }),
    ];
    let s = fold(log);
    expect(s.status).toBe("awaiting_approval");
    expect(s.approval?.approvalUrl).toBe("/builds/bld_TEST/approval");
    s = applyEvents(s, [
      ev(4, "plan_generated", { planId: "p1", planVersion: 2, taskCount: 2, estimatedDuration: 20, recovery: null, tasks: [task("a"), task("c", ["a"])] }),
      ev(5, "plan_approved", { planId: "p1", planVersion: 2, edited: true }),
    ]);
    expect(s.planVersion).toBe(2);
    expect(s.order).toEqual(["a", "c"]);
    expect(s.tasks.c.dependsOn).toEqual(["a"]);
    expect(s.tasks.b).toBeUndefined();
    expect(s.status).toBe("executing");
    expect(s.approval).toBeNull();
    expect(s.approvedEdited).toBe(true);
  });

  it("a truncated plan_generated keeps the streamed tasks and asks for the rest", () => {
    const s = fold([
      ev(1, "build_started", { prompt: "p" }),
      ev(2, "plan_partial", { planId: "p1", totalTasksSoFar: 3, latestTasks: [task("a"), task("b"), task("c")] }),
      ev(3, "plan_generated", { planId: "p1", planVersion: 1, taskCount: 3, estimatedDuration: 10, recovery: null, tasks: [task("a")], truncated: true }),
    ]);
    expect(s.planTruncated).toBe(true);
    expect(s.order).toEqual(["a", "b", "c"]);
  });

  it("retries: a failure that will retry keeps the task pending; attempts are recorded with their errors", () => {
    const s = fold([
      ev(1, "build_started", { prompt: "p" }),
      ev(2, "plan_generated", { planId: "p1", planVersion: 1, taskCount: 1, estimatedDuration: 10, recovery: null, tasks: [task("a")] }),
      ev(3, "task_started", { taskId: "a", taskName: "Task a", attempt: 1 }),
      ev(4, "task_failed", { taskId: "a", taskName: "Task a", attempt: 1, error: "boom", willRetry: true }),
    ]);
    expect(s.tasks.a.status).toBe("pending");
    expect(s.tasks.a.willRetry).toBe(true);
    const t = applyEvents(s, [
      ev(5, "task_started", { taskId: "a", taskName: "Task a", attempt: 2 }),
      ev(6, "task_timeout", { taskId: "a", taskName: "Task a", attempt: 2, willRetry: false, suggestion: "Retry or skip this task" }),
    ]).tasks.a;
    expect(t.status).toBe("timeout");
    expect(t.attempts.map((a) => [a.n, a.outcome])).toEqual([
      [1, "failed"],
      [2, "timeout"],
    ]);
    expect(t.attempts[0].error).toBe("boom");
    expect(t.attempts[0].durationMs).toBe(1000);
  });

  it("a resumed build runs again: its tasks reset, then the last terminal event is its end", () => {
    const a = task("a");
    const b = task("b", ["a"]);
    let s = fold([
      ev(1, "build_started", { prompt: "p" }),
      ev(2, "plan_generated", { planId: "p1", planVersion: 1, taskCount: 2, estimatedDuration: 20, recovery: null, tasks: [a, b] }),
      ev(3, "task_started", { taskId: "a", taskName: "Task a", attempt: 1 }),
      ev(4, "task_failed", { taskId: "a", taskName: "Task a", attempt: 1, error: "bad", willRetry: false }),
      ev(5, "task_skipped", { taskId: "b", reason: "dependency_failed", dependency: "a" }),
      ev(6, "build_completed", { status: "completed_with_errors", metrics: { failedTasks: 1, skippedTasks: 1 } }),
    ]);
    expect(s.status).toBe("completed_with_errors");
    expect(s.tasks.b.skipDependency).toBe("a");
    s = applyEvents(s, [ev(7, "build_resumed", { runId: "run2", taskIds: ["a", "b"] })]);
    expect(s.status).toBe("executing");
    expect(s.end).toBeNull();
    expect(s.runs).toBe(2);
    expect([s.tasks.a.status, s.tasks.b.status]).toEqual(["pending", "pending"]);
    expect(s.tasks.a.error).toBeNull();
    s = applyEvents(s, [
      ev(8, "task_started", { taskId: "a", taskName: "Task a", attempt: 2 }),
      ev(9, "task_completed", { taskId: "a", taskName: "Task a", files: [] }),
      ev(10, "task_started", { taskId: "b", taskName: "Task b", attempt: 1 }),
      ev(11, "task_completed", { taskId: "b", taskName: "Task b", files: [] }),
      ev(12, "build_completed", { status: "completed", metrics: { failedTasks: 0, skippedTasks: 0 } }),
    ]);
    expect(s.status).toBe("completed");
    expect(s.tasks.a.attempts.map((x) => x.outcome)).toEqual(["failed", "completed"]);
    expect(s.end?.status).toBe("completed");
  });

  it("cancel stops every task that had not ended", () => {
    const log = happyLog().slice(0, 8);
    const s = applyEvents(fold(log), [ev(9, "build_cancelled", { reason: "cancelled by the user" })]);
    expect(s.status).toBe("cancelled");
    expect([s.tasks.a.status, s.tasks.b.status, s.tasks.c.status]).toEqual(["completed", "cancelled", "cancelled"]);
    expect(s.tasks.b.attempts[0].outcome).toBe("cancelled");
  });

  it("cycle recovery: the sequential warning, the blocked plan and the hard error become notices", () => {
    const s = fold([
      ev(1, "build_started", { prompt: "p" }),
      ev(2, "plan_warning", { planId: "p1", warning: "sequential_execution", message: "one by one", cycles: ["a → b → a"] }),
      ev(3, "plan_blocked", { planId: "p1", reason: "circular_dependencies", message: "stuck", cycles: ["a → b → a"], cycleTasks: [["a", "b"]], edges: [["a", "b"], ["b", "a"]] }),
      ev(4, "build_failed", { reason: "circular_dependencies", message: "cycles" }),
    ]);
    expect(s.notices.map((n) => n.kind)).toEqual(["sequential", "blocked", "hard_error"]);
    expect(s.blocked?.cycleTasks).toEqual([["a", "b"]]);
    expect(s.status).toBe("failed");
    expect(s.end?.reason).toBe("circular_dependencies");
  });

  it("build_failed with reason timed_out is the timed_out status", () => {
    const s = fold([ev(1, "build_started", { prompt: "p" }), ev(2, "build_failed", { reason: "timed_out", message: "too slow" })]);
    expect(s.status).toBe("timed_out");
  });

  it("an event type it does not know is counted (seq) and otherwise ignored", () => {
    const s = fold([ev(1, "build_started", { prompt: "p" }), ev(2, "something_new", { x: 1 })]);
    expect(s.lastSeq).toBe(2);
    expect(s.status).toBe("planning");
  });
});
