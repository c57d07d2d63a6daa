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

/** Top-left corner of each node, laid out left to right by dependency rank. */
export function layout(input: Pick<GraphInput, "nodes" | "edges">): Positions {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 14, ranksep: 56, marginx: 8, marginy: 8 });
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
