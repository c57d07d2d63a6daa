import { describe, expect, it } from "vitest";
import { draftFrom, toPlanTasks } from "../src/components/PlanEditor";
import { applyEvents, emptyBuild } from "../src/model/build";
import { criticalPath, describeCycle, findCycles, type Node } from "../src/model/graph";
import { BUILD, ev, rng, task } from "./events";

const n = (id: string, dependsOn: string[] = [], estimatedDuration?: number): Node => ({ id, dependsOn, estimatedDuration });

/** A random DAG: each task may depend only on tasks before it. */
function randomDag(random: () => number, size: number, density: number): Node[] {
  const nodes: Node[] = [];
  for (let i = 0; i < size; i++) {
    const deps = [];
    for (let j = 0; j < i; j++) if (random() < density) deps.push(`t${j}`);
    nodes.push(n(`t${i}`, deps, 1 + Math.floor(random() * 30)));
  }
  return nodes;
}

function isRealCycle(cycle: string[], nodes: Node[]): boolean {
  const deps = new Map(nodes.map((x) => [x.id, x.dependsOn]));
  if (cycle[0] !== cycle[cycle.length - 1]) return false;
  for (let i = 0; i + 1 < cycle.length; i++) if (!deps.get(cycle[i])!.includes(cycle[i + 1])) return false;
  return true;
}

describe("the plan editor's cycle check", () => {
  it("finds no cycle in a DAG and ignores dependencies on unknown tasks", () => {
    expect(findCycles([n("a"), n("b", ["a"]), n("c", ["a", "b", "ghost"])])).toEqual([]);
  });

  it("finds a self-dependency, a pair and a longer circle, each as a readable path", () => {
    expect(findCycles([n("a", ["a"])])).toEqual([["a", "a"]]);
    const pair = findCycles([n("a", ["b"]), n("b", ["a"])]);
    expect(pair).toHaveLength(1);
    expect(describeCycle(pair[0])).toMatch(/^(a → b → a|b → a → b)$/);
    const three = findCycles([n("a", ["c"]), n("b", ["a"]), n("c", ["b"]), n("d", ["a"])]);
    expect(three).toHaveLength(1);
    expect(three[0]).toHaveLength(4);
  });

  it("reports one cycle per knot", () => {
    const cycles = findCycles([n("a", ["b"]), n("b", ["a"]), n("x", ["y"]), n("y", ["x"]), n("z", ["a"])]);
    expect(cycles.map((c) => [...c].sort().join())).toEqual(expect.arrayContaining(["a,a,b", "x,x,y"]));
    expect(cycles).toHaveLength(2);
  });

  it("property (seeded): random DAGs have none; one back edge makes a cycle through it", () => {
    const random = rng(7);
    for (let round = 0; round < 60; round++) {
      const size = 2 + Math.floor(random() * 60);
      const nodes = randomDag(random, size, random() * 0.3);
      expect(findCycles(nodes)).toEqual([]);
      // Add an edge from an earlier task to a later one that (transitively) depends on it.
      const later = 1 + Math.floor(random() * (size - 1));
      const earlier = Math.floor(random() * later);
      nodes[later] = { ...nodes[later], dependsOn: [...nodes[later].dependsOn, `t${earlier}`] };
      nodes[earlier] = { ...nodes[earlier], dependsOn: [...nodes[earlier].dependsOn, `t${later}`] };
      const cycles = findCycles(nodes);
      expect(cycles.length).toBeGreaterThanOrEqual(1);
      for (const c of cycles) expect(isRealCycle(c, nodes)).toBe(true);
      expect(cycles.some((c) => c.includes(`t${earlier}`) && c.includes(`t${later}`))).toBe(true);
    }
  });

  it("handles a 1,000-task chain without recursion limits", () => {
    const nodes = Array.from({ length: 1000 }, (_, i) => n(`t${i}`, i ? [`t${i - 1}`] : []));
    expect(findCycles(nodes)).toEqual([]);
    nodes[0] = n("t0", ["t999"]);
    expect(findCycles(nodes)[0]).toHaveLength(1001);
  });

  it("the editor sends the plan's task shape, dependencies under input, none on removed tasks", () => {
    const s = applyEvents(emptyBuild(BUILD), [
      ev(1, "build_started", { prompt: "p" }),
      ev(2, "plan_generated", { planId: "p1", planVersion: 1, taskCount: 2, estimatedDuration: 20, recovery: null, tasks: [task("a"), task("b", ["a"], 7)] }),
    ]);
    const draft = draftFrom(s);
    draft[1].dependsOn.push("removed");
    expect(toPlanTasks(draft)).toEqual([
      { id: "a", type: "create_file", name: "Task a", description: "does a", estimatedDuration: 10, priority: 5, input: { dependencies: [] } },
      { id: "b", type: "create_file", name: "Task b", description: "does b", estimatedDuration: 7, priority: 5, input: { dependencies: ["a"] } },
    ]);
  });
});

describe("critical path", () => {
  it("is the longest chain by estimated duration", () => {
    const cp = criticalPath([n("a", [], 5), n("b", ["a"], 50), n("c", ["a"], 10), n("d", ["b", "c"], 5)]);
    expect([...cp.nodes].sort()).toEqual(["a", "b", "d"]);
    expect([...cp.edges].sort()).toEqual(["a->b", "b->d"]);
    expect(cp.seconds).toBe(60);
  });

  it("is empty for a graph with a cycle, and for no tasks", () => {
    expect(criticalPath([n("a", ["b"]), n("b", ["a"])]).nodes.size).toBe(0);
    expect(criticalPath([]).nodes.size).toBe(0);
  });

  it("property (seeded): its length is at least every task's finish and it is a connected chain", () => {
    const random = rng(11);
    for (let round = 0; round < 40; round++) {
      const nodes = randomDag(random, 1 + Math.floor(random() * 50), random() * 0.25);
      const cp = criticalPath(nodes);
      const finish = new Map<string, number>();
      for (const x of nodes) finish.set(x.id, Math.max(0, ...x.dependsOn.map((d) => finish.get(d)!)) + x.estimatedDuration!);
      expect(cp.seconds).toBe(Math.max(...finish.values()));
      expect(cp.edges.size).toBe(cp.nodes.size - 1);
      const sum = [...cp.nodes].reduce((t, id) => t + nodes.find((x) => x.id === id)!.estimatedDuration!, 0);
      expect(sum).toBe(cp.seconds);
    }
  });
});
