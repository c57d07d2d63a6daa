// From the view model to what the DAG view draws: one node per task, one edge per dependency
// (from the dependency to its dependent), the critical path marked; positions by dagre, left to
// right. Layout depends only on the graph's shape, so status changes never move a node.

import dagre from "@dagrejs/dagre";
import type { BuildState } from "../model/build";
import type { CriticalPath } from "../model/graph";
import { criticalPath, edgeKey } from "../model/graph";
import type { TaskStatus } from "../model/events";

export const NODE_WIDTH = 220;
export const NODE_HEIGHT = 60;

export type GraphNode = {
  id: string;
  name: string;
  type: string;
  status: TaskStatus;
  attempt: number;
  draft: boolean;
  critical: boolean;
  willRetry: boolean;
  cached: boolean;
};

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
  critical: boolean;
  /** The dependency is done: its dependent may run. */
  satisfied: boolean;
}

export interface GraphInput {
  nodes: GraphNode[];
  edges: GraphEdge[];
  critical: CriticalPath;
  /** Changes only when the set of tasks or dependencies changes: the layout's cache key. */
  shape: string;
}

export function graphInput(state: Pick<BuildState, "order" | "tasks">): GraphInput {
  const tasks = state.order.map((id) => state.tasks[id]).filter(Boolean);
  const critical = criticalPath(tasks);
  const known = new Set(tasks.map((t) => t.id));
  const nodes: GraphNode[] = tasks.map((t) => ({
    id: t.id,
    name: t.name,
    type: t.type,
    status: t.status,
    attempt: t.attempt,
    draft: t.draft,
    critical: critical.nodes.has(t.id),
    willRetry: t.willRetry,
    cached: t.cached,
  }));
  const edges: GraphEdge[] = [];
  const shape: string[] = [];
  for (const t of tasks) {
    const deps = [...new Set(t.dependsOn)].filter((d) => known.has(d) && d !== t.id);
    shape.push(`${t.id}<${deps.join(",")}`);
    for (const d of deps) {
      const key = edgeKey(d, t.id);
      edges.push({
        id: key,
        source: d,
        target: t.id,
        critical: critical.edges.has(key),
        satisfied: state.tasks[d].status === "completed",
      });
    }
  }
  return { nodes, edges, critical, shape: shape.join("|") };
}

export type Positions = Map<string, { x: number; y: number }>;

const RANK_GAP = 56;
const NODE_GAP = 14;
/** Up to this many tasks dagre lays the graph out; beyond, `layered` does (dagre took 0.8-5 s for 200). */
export const DAGRE_MAX_NODES = 30;
/** A rank taller than this is folded into side-by-side columns, so 200 tasks stay readable. */
export const MAX_PER_COLUMN = 24;

/** Top-left corner of each node, laid out left to right by dependency rank. */
export function layout(input: Pick<GraphInput, "nodes" | "edges">): Positions {
  return input.nodes.length <= DAGRE_MAX_NODES ? dagreLayout(input) : layered(input);
}

export function dagreLayout(input: Pick<GraphInput, "nodes" | "edges">): Positions {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: NODE_GAP, ranksep: RANK_GAP, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of input.nodes) g.setNode(n.id, { width: NODE_WIDTH, height: NODE_HEIGHT });
  for (const e of input.edges) g.setEdge(e.source, e.target);
  dagre.layout(g);
  const out: Positions = new Map();
  for (const n of input.nodes) {
    const p = g.node(n.id);
    out.set(n.id, { x: p.x - NODE_WIDTH / 2, y: p.y - NODE_HEIGHT / 2 });
  }
  return out;
}

/**
 * A layered (Sugiyama-style) layout in linear time per sweep, for big plans: rank = longest chain
 * of dependencies before a task; order within a rank by barycentre sweeps (down, then up, four
 * times); ranks taller than MAX_PER_COLUMN folded into columns. Tasks caught in a cycle (a blocked
 * plan) go in ranks after the others.
 */
export function layered(input: Pick<GraphInput, "nodes" | "edges">, perColumn = MAX_PER_COLUMN): Positions {
  const ids = input.nodes.map((n) => n.id);
  const preds = new Map<string, string[]>(ids.map((id) => [id, []]));
  const succs = new Map<string, string[]>(ids.map((id) => [id, []]));
  for (const e of input.edges) {
    if (!preds.has(e.target) || !succs.has(e.source)) continue;
    preds.get(e.target)!.push(e.source);
    succs.get(e.source)!.push(e.target);
  }
  // Ranks by Kahn's topological order.
  const indegree = new Map(ids.map((id) => [id, preds.get(id)!.length]));
  const rank = new Map<string, number>();
  const queue = ids.filter((id) => indegree.get(id) === 0);
  for (const id of queue) rank.set(id, 0);
  for (let i = 0; i < queue.length; i++) {
    const v = queue[i];
    for (const w of succs.get(v)!) {
      rank.set(w, Math.max(rank.get(w) ?? 0, rank.get(v)! + 1));
      indegree.set(w, indegree.get(w)! - 1);
      if (indegree.get(w) === 0) queue.push(w);
    }
  }
  let top = Math.max(-1, ...rank.values());
  const ranked = new Set(queue);
  for (const id of ids) if (!ranked.has(id)) rank.set(id, ++top);

  const layers: string[][] = [];
  for (const id of queue.length === ids.length ? queue : ids) {
    const r = rank.get(id)!;
    (layers[r] ??= []).push(id);
  }
  for (let r = 0; r < layers.length; r++) layers[r] ??= [];
  const where = new Map<string, number>(); // centred position within the rank
  const place = (layer: string[]) => layer.forEach((id, i) => where.set(id, i - (layer.length - 1) / 2));
  layers.forEach(place);
  const sweep = (layer: string[], neighbours: Map<string, string[]>) => {
    const key = new Map<string, number>();
    for (const id of layer) {
      const ns = neighbours.get(id)!;
      key.set(id, ns.length ? ns.reduce((t, n) => t + where.get(n)!, 0) / ns.length : where.get(id)!);
    }
    layer.sort((a, b) => key.get(a)! - key.get(b)!);
    place(layer);
  };
  for (let round = 0; round < 4; round++) {
    for (let r = 1; r < layers.length; r++) sweep(layers[r], preds);
    for (let r = layers.length - 2; r >= 0; r--) sweep(layers[r], succs);
  }

  const out: Positions = new Map();
  const tallest = Math.min(perColumn, Math.max(1, ...layers.map((l) => l.length)));
  let x = 0;
  for (const layer of layers) {
    const columns = Math.max(1, Math.ceil(layer.length / perColumn));
    const rows = Math.ceil(layer.length / columns);
    layer.forEach((id, i) => {
      const column = Math.floor(i / rows);
      const row = i % rows;
      out.set(id, {
        x: x + column * (NODE_WIDTH + NODE_GAP * 2),
        y: (row + (tallest - rows) / 2) * (NODE_HEIGHT + NODE_GAP),
      });
    });
    x += columns * (NODE_WIDTH + NODE_GAP * 2) - NODE_GAP * 2 + RANK_GAP;
  }
  return out;
}
