import { describe, expect, it } from "vitest";
import { DAGRE_MAX_NODES, dagreLayout, graphInput, layered, layout, NODE_HEIGHT, NODE_WIDTH } from "../src/graph/layout";
import { applyEvents, emptyBuild } from "../src/model/build";
import { BUILD, ev, happyLog, rng, task } from "./events";

function planned(tasks: ReturnType<typeof task>[]) {
  return applyEvents(emptyBuild(BUILD), [
    ev(1, "build_started", { prompt: "p" }),
    ev(2, "plan_generated", { planId: "p1", planVersion: 1, taskCount: tasks.length, estimatedDuration: 1, recovery: null, tasks }),
  ]);
}

describe("graph layout input", () => {
  it("one node per task, one edge per dependency from the dependency to its dependent", () => {
    const g = graphInput(planned([task("a"), task("b", ["a"]), task("c", ["a", "b"])]));
    expect(g.nodes.map((x) => x.id)).toEqual(["a", "b", "c"]);
    expect(g.edges.map((e) => [e.source, e.target])).toEqual([
      ["a", "b"],
      ["a", "c"],
      ["b", "c"],
    ]);
  });

  it("drops edges to unknown tasks (a plan still streaming) and self-edges, and duplicate dependencies", () => {
    const g = graphInput(planned([task("a", ["a"]), task("b", ["a", "a", "later"])]));
    expect(g.edges.map((e) => e.id)).toEqual(["a->b"]);
  });

  it("marks the critical path on nodes and edges", () => {
    const g = graphInput(planned([task("a", [], 5), task("slow", ["a"], 60), task("fast", ["a"], 1), task("z", ["slow", "fast"], 5)]));
    expect(g.nodes.filter((x) => x.critical).map((x) => x.id)).toEqual(["a", "slow", "z"]);
    expect(g.edges.filter((e) => e.critical).map((e) => e.id)).toEqual(["a->slow", "slow->z"]);
  });

  it("carries status for colour; the layout's key does not change when only statuses do", () => {
    const log = happyLog();
    const before = graphInput(applyEvents(emptyBuild(BUILD), log.slice(0, 5)));
    const after = graphInput(applyEvents(emptyBuild(BUILD), log));
    expect(before.nodes.map((x) => x.status)).toEqual(["pending", "pending", "pending"]);
    expect(after.nodes.map((x) => x.status)).toEqual(["completed", "completed", "completed"]);
    expect(after.shape).toBe(before.shape);
    expect(after.edges.every((e) => e.satisfied)).toBe(true);
  });

  it("lays a 200-task DAG out left to right with no two nodes overlapping", () => {
    const random = rng(3);
    const tasks = Array.from({ length: 200 }, (_, i) => {
      const deps = [];
      for (let k = 0; k < 2 && i > 0; k++) if (random() < 0.8) deps.push(`t${Math.floor(random() * i)}`);
      return task(`t${i}`, deps);
    });
    const g = graphInput(planned(tasks));
    const pos = layout(g);
    expect(pos.size).toBe(200);
    for (const e of g.edges) expect(pos.get(e.source)!.x).toBeLessThan(pos.get(e.target)!.x);
    const boxes = [...pos.values()];
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i];
        const b = boxes[j];
        const overlap = Math.abs(a.x - b.x) < NODE_WIDTH && Math.abs(a.y - b.y) < NODE_HEIGHT;
        expect(overlap).toBe(false);
      }
  });
});

describe("layout of big plans", () => {
  it("uses the linear-time layered layout past DAGRE_MAX_NODES and folds tall ranks into columns", () => {
    const tasks = [task("root"), ...Array.from({ length: 100 }, (_, i) => task(`leaf${i}`, ["root"])), task("end", Array.from({ length: 100 }, (_, i) => `leaf${i}`))];
    const g = graphInput(planned(tasks));
    expect(g.nodes.length).toBeGreaterThan(DAGRE_MAX_NODES);
    const pos = layered(g, 24);
    const leafXs = new Set(Array.from({ length: 100 }, (_, i) => pos.get(`leaf${i}`)!.x));
    expect(leafXs.size).toBe(5); // 100 leaves in ceil(100 / 24) = 5 columns
    const ys = Array.from({ length: 100 }, (_, i) => pos.get(`leaf${i}`)!.y);
    expect(Math.max(...ys) - Math.min(...ys)).toBeLessThan(24 * (NODE_HEIGHT + 14));
    expect(pos.get("end")!.x).toBeGreaterThan(Math.max(...leafXs));
  });

  it("places tasks caught in a cycle (a blocked plan) after the others instead of failing", () => {
    const pos = layered({ nodes: graphInput(planned([task("a"), task("b", ["c"]), task("c", ["b"])])).nodes, edges: [
      { id: "c->b", source: "c", target: "b", critical: false, satisfied: false },
      { id: "b->c", source: "b", target: "c", critical: false, satisfied: false },
    ] });
    expect(pos.size).toBe(3);
    expect(pos.get("b")!.x).toBeGreaterThan(pos.get("a")!.x);
    expect(pos.get("c")!.x).not.toBe(pos.get("b")!.x);
  });

  it("a small plan is laid out by dagre, the same graph by either layout keeps dependencies to the left", () => {
    const g = graphInput(planned([task("a"), task("b", ["a"]), task("c", ["a"]), task("d", ["b", "c"])]));
    for (const pos of [dagreLayout(g), layered(g)])
      for (const e of g.edges) expect(pos.get(e.source)!.x).toBeLessThan(pos.get(e.target)!.x);
  });
});
