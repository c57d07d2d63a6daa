import { describe, expect, it } from "vitest";
import type { Snapshot } from "../src/model/snapshot";
import { buildReducer, foldedSeq, initialStore } from "../src/model/store";
import { BUILD, ev, happyLog, task } from "./events";

function snapshotDone(): Snapshot {
  return {
    buildId: BUILD,
    status: "completed",
    prompt: "make it",
    createdAt: 1_000_000,
    updatedAt: 1_012_000,
    planVersion: 1,
    plan: {
      planId: "p1",
      estimatedDuration: 30,
      tasks: ["a", "b", "c"].map((id, i) => ({
        id,
        name: `Task ${id}`,
        type: "create_file",
        description: "",
        dependsOn: i ? [["a", "b", "c"][i - 1]] : [],
        status: "completed" as const,
        attempt: 1,
        usage: { promptTokens: 5, completionTokens: 5, costUsd: 0.5 },
      })),
    },
    metrics: { totalTasks: 3, completedTasks: 3, costUsd: 1.5, planCostUsd: 0.1 },
  };
}

describe("reload: the snapshot draws at once, the replayed log takes over once caught up", () => {
  it("never shows an older state while the log replays", () => {
    let st = buildReducer(initialStore(BUILD), { type: "snapshot", snapshot: snapshotDone() });
    expect(st.view.status).toBe("completed");
    expect(st.view.order).toEqual(["a", "b", "c"]);
    // The first events of the replay are old (planning): the view must not step back.
    st = buildReducer(st, { type: "events", events: happyLog().slice(0, 4) });
    expect(st.view.status).toBe("completed");
    expect(foldedSeq(st)).toBe(4);
    st = buildReducer(st, { type: "caughtUp", lastSeq: 12 }); // not there yet
    expect(st.replay).not.toBeNull();
    st = buildReducer(st, { type: "events", events: happyLog().slice(4) });
    st = buildReducer(st, { type: "caughtUp", lastSeq: 12 });
    expect(st.replay).toBeNull();
    expect(st.view.lastSeq).toBe(12);
    expect(st.view.status).toBe("completed");
    // The snapshot still completes what the events leave out.
    expect(st.view.metrics.planCostUsd).toBe(0.1);
    expect(st.view.tasks.c.usage?.costUsd).toBe(0.5);
    expect(st.view.tasks.a.usage?.costUsd).toBe(0.001); // the event's own figure wins
  });

  it("a snapshot that arrives after live events merges without moving statuses back", () => {
    let st = buildReducer(initialStore(BUILD), { type: "events", events: happyLog() });
    st = buildReducer(st, { type: "caughtUp", lastSeq: 12 });
    const stale = { ...snapshotDone(), status: "executing" as const };
    stale.plan!.tasks![2].status = "pending";
    st = buildReducer(st, { type: "snapshot", snapshot: stale });
    expect(st.view.status).toBe("completed");
    expect(st.view.tasks.c.status).toBe("completed");
  });

  it("a truncated plan is completed from the snapshot", () => {
    let st = buildReducer(initialStore(BUILD), {
      type: "events",
      events: [
        ev(1, "build_started", { prompt: "p" }),
        ev(2, "plan_generated", { planId: "p1", planVersion: 1, taskCount: 3, estimatedDuration: 30, recovery: null, tasks: [task("a")], truncated: true }),
      ],
    });
    st = buildReducer(st, { type: "snapshot", snapshot: { ...snapshotDone(), status: "executing" } });
    expect(st.view.order).toEqual(["a", "b", "c"]);
    expect(st.view.planTruncated).toBe(false);
    expect(st.view.tasks.c.dependsOn).toEqual(["b"]);
  });

  it("one batch per frame folds events and control actions in order", () => {
    const log = happyLog();
    const st = buildReducer(initialStore(BUILD), {
      type: "batch",
      actions: [
        { type: "events", events: log.slice(0, 6) },
        { type: "events", events: log.slice(6) },
        { type: "caughtUp", lastSeq: 12 },
      ],
    });
    expect(st.view.lastSeq).toBe(12);
    expect(st.view.status).toBe("completed");
  });
});

describe("an edited plan the API accepted", () => {
  it("is drawn at once, keeping the run state of the tasks it keeps; its plan_generated changes nothing more", () => {
    const log = [
      ev(1, "build_started", { prompt: "p" }),
      ev(2, "plan_generated", { planId: "p1", planVersion: 1, taskCount: 3, estimatedDuration: 30, recovery: null, tasks: [task("a"), task("b", ["a"]), task("c", ["b"])] }),
      ev(3, "plan_approval_required", { planId: "p1", expiresAt: 1, taskCount: 3, estimatedDuration: 30, approvalUrl: "/x" }),
    ];
    let st = buildReducer(initialStore(BUILD), { type: "events", events: log });
    st = buildReducer(st, { type: "planEdited", tasks: [task("a"), task("c", ["a"])] });
    expect(st.view.order).toEqual(["a", "c"]);
    expect(st.view.tasks.c.dependsOn).toEqual(["a"]);
    expect(st.view.approvedEdited).toBe(true);
    const confirmed = buildReducer(st, {
      type: "events",
      events: [ev(4, "plan_generated", { planId: "p1", planVersion: 2, taskCount: 2, estimatedDuration: 20, recovery: null, tasks: [task("a"), task("c", ["a"])] })],
    });
    expect(confirmed.view.order).toEqual(["a", "c"]);
    expect(confirmed.view.planVersion).toBe(2);
  });
});
