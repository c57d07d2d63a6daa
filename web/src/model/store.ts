// What the build page holds: the view model it draws, and while a reload replays the event log, the
// fold of that replay (shown once it has caught up, so the page never steps back in time).

import type { BuildState } from "./build";
import { applyEvents, emptyBuild, replacePlan } from "./build";
import type { AnyEvent, PlannedTask } from "./events";
import type { Snapshot } from "./snapshot";
import { fromSnapshot, mergeSnapshot } from "./snapshot";

export interface BuildStore {
  view: BuildState;
  /** Events folded from seq 1 while `view` shows a snapshot; null once live. */
  replay: BuildState | null;
  snapshot: Snapshot | null;
}

export type BuildAction =
  | { type: "snapshot"; snapshot: Snapshot }
  | { type: "events"; events: readonly AnyEvent[] }
  | { type: "caughtUp"; lastSeq: number }
  | { type: "reset"; buildId: string }
  | { type: "planEdited"; tasks: readonly PlannedTask[] }
  | { type: "batch"; actions: readonly BuildAction[] };

export function initialStore(buildId: string): BuildStore {
  return { view: emptyBuild(buildId), replay: null, snapshot: null };
}

function promote(store: BuildStore, lastSeq: number): BuildStore {
  if (!store.replay || store.replay.lastSeq < lastSeq || Object.keys(store.replay.buffered).length) return store;
  const view = store.snapshot ? mergeSnapshot(store.replay, store.snapshot) : store.replay;
  return { ...store, view, replay: null };
}

export function buildReducer(store: BuildStore, action: BuildAction): BuildStore {
  switch (action.type) {
    case "reset":
      return initialStore(action.buildId);
    case "snapshot": {
      const snap = action.snapshot;
      if (snap.buildId !== store.view.buildId) return store;
      if (store.view.lastSeq === 0 && !store.replay) {
        // Nothing live yet: draw the snapshot now and fold the log beside it until it catches up.
        return { view: fromSnapshot(snap), replay: emptyBuild(snap.buildId), snapshot: snap };
      }
      if (store.replay) return { ...store, view: fromSnapshot(snap), snapshot: snap };
      return { ...store, view: mergeSnapshot(store.view, snap), snapshot: snap };
    }
    case "events": {
      if (store.replay) return { ...store, replay: applyEvents(store.replay, action.events) };
      const view = applyEvents(store.view, action.events);
      return view === store.view ? store : { ...store, view };
    }
    case "caughtUp":
      return promote(store, action.lastSeq);
    case "planEdited":
      // The API accepted this edited plan: draw it now (its plan_generated event confirms it later).
      return {
        ...store,
        view: replacePlan(store.view, action.tasks),
        replay: store.replay && replacePlan(store.replay, action.tasks),
      };
    case "batch": {
      // One render per animation frame: consecutive event batches fold in one pass.
      let out = store;
      let pending: AnyEvent[] = [];
      const flush = () => {
        if (pending.length) out = buildReducer(out, { type: "events", events: pending });
        pending = [];
      };
      for (const a of action.actions) {
        if (a.type === "events") pending.push(...a.events);
        else {
          flush();
          out = buildReducer(out, a);
        }
      }
      flush();
      return out;
    }
  }
}

/** The highest seq this store has folded (what a feed resumes after). */
export function foldedSeq(store: BuildStore): number {
  return (store.replay ?? store.view).lastSeq;
}
