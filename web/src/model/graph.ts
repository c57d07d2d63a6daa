// Graph facts the page needs: cycles (the plan editor refuses them before sending) and the
// critical path (the longest chain of estimated durations, marked on the DAG).

export interface Node {
  id: string;
  dependsOn: readonly string[];
  estimatedDuration?: number;
}

export const DEFAULT_ESTIMATE_S = 10;

/**
 * Every dependency cycle, each as the ids along it with the first repeated at the end
 * (["a", "b", "a"] reads "a needs b, b needs a"). Self-dependencies count. Dependencies on unknown
 * ids are ignored. One cycle is reported per strongly connected component (Tarjan).
 */
export function findCycles(nodes: readonly Node[]): string[][] {
  const known = new Set(nodes.map((n) => n.id));
  const deps = new Map(nodes.map((n) => [n.id, [...new Set(n.dependsOn)].filter((d) => known.has(d))]));
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const components: string[][] = [];

  // Iterative Tarjan: plans may be 1,000 tasks deep, more than a recursive walk should risk.
  for (const root of deps.keys()) {
    if (idx.has(root)) continue;
    const work: [string, number][] = [[root, 0]];
    while (work.length) {
      const frame = work[work.length - 1];
      const [v, i] = frame;
      if (i === 0) {
        idx.set(v, index);
        low.set(v, index);
        index++;
        stack.push(v);
        onStack.add(v);
      }
      const out = deps.get(v)!;
      if (i < out.length) {
        frame[1] = i + 1;
        const w = out[i];
        if (!idx.has(w)) work.push([w, 0]);
        else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
        continue;
      }
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1][0];
        low.set(parent, Math.min(low.get(parent)!, low.get(v)!));
      }
      if (low.get(v) === idx.get(v)) {
        const comp: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          comp.push(w);
        } while (w !== v);
        if (comp.length > 1 || deps.get(v)!.includes(v)) components.push(comp);
      }
    }
  }
  return components.map((comp) => cycleIn(comp, deps));
}

/** One simple cycle inside a strongly connected component, by breadth-first search back to its start. */
function cycleIn(comp: string[], deps: Map<string, string[]>): string[] {
  const members = new Set(comp);
  const start = [...comp].sort()[0];
  if (deps.get(start)!.includes(start)) return [start, start];
  const prev = new Map<string, string>();
  const queue = [start];
  while (queue.length) {
    const v = queue.shift()!;
    for (const w of deps.get(v)!) {
      if (!members.has(w)) continue;
      if (w === start) {
        const path = [v];
        while (path[0] !== start) path.unshift(prev.get(path[0])!);
        return [...path, start];
      }
      if (!prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start];
}

export function describeCycle(cycle: readonly string[], names?: (id: string) => string): string {
  return cycle.map((id) => (names ? names(id) : id)).join(" → ");
}

export interface CriticalPath {
  nodes: Set<string>;
  /** "from->to" for each dependency edge on the path (from is the dependency). */
  edges: Set<string>;
  seconds: number;
}

export const edgeKey = (from: string, to: string): string => `${from}->${to}`;

/** The longest path by estimated duration; empty when the graph has a cycle. */
export function criticalPath(nodes: readonly Node[]): CriticalPath {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const deps = new Map(nodes.map((n) => [n.id, [...new Set(n.dependsOn)].filter((d) => byId.has(d) && d !== n.id)]));
  const dependents = new Map<string, string[]>(nodes.map((n) => [n.id, []]));
  const indegree = new Map<string, number>();
  for (const [id, ds] of deps) {
    indegree.set(id, ds.length);
    for (const d of ds) dependents.get(d)!.push(id);
  }
  const ready = nodes.filter((n) => indegree.get(n.id) === 0).map((n) => n.id);
  const finish = new Map<string, number>();
  const via = new Map<string, string | null>();
  let seen = 0;
  while (ready.length) {
    const id = ready.pop()!;
    seen++;
    let start = 0;
    let best: string | null = null;
    for (const d of deps.get(id)!) {
      const f = finish.get(d)!;
      if (best === null || f > start) {
        start = f;
        best = d;
      }
    }
    finish.set(id, start + (byId.get(id)!.estimatedDuration ?? DEFAULT_ESTIMATE_S));
    via.set(id, best);
    for (const w of dependents.get(id)!) {
      indegree.set(w, indegree.get(w)! - 1);
      if (indegree.get(w) === 0) ready.push(w);
    }
  }
  const path: CriticalPath = { nodes: new Set(), edges: new Set(), seconds: 0 };
  if (seen !== nodes.length || nodes.length === 0) return path;
  let end: string | null = null;
  for (const [id, f] of finish) if (end === null || f > finish.get(end)!) end = id;
  path.seconds = end ? finish.get(end)! : 0;
  while (end) {
    path.nodes.add(end);
    const prev: string | null = via.get(end) ?? null;
    if (prev) path.edges.add(edgeKey(prev, end));
    end = prev;
  }
  return path;
}
