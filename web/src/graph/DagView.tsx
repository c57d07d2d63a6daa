// The DAG: @xyflow/react draws the nodes laid out by dagre. Nodes are coloured by status (with a
// symbol and a word, never colour alone), edges go from a dependency to its dependent, and the
// critical path is drawn thicker. A node is a focusable element: Tab to it, Enter selects it.

import {
  Background,
  Controls,
  type Edge,
  Handle,
  MarkerType,
  MiniMap,
  type Node,
  type NodeProps,
  Position,
  ReactFlow,
  type ReactFlowInstance,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { memo, useCallback, useEffect, useMemo, useRef, useState } from "react";
import { TASK_STATUS_ICON, TASK_STATUS_LABEL } from "../components/format";
import type { GraphInput, GraphNode, Positions } from "./layout";
import { layout, NODE_HEIGHT, NODE_WIDTH } from "./layout";

type TaskNodeData = GraphNode & { selected: boolean };
type TaskFlowNode = Node<TaskNodeData, "task">;

const TaskNode = memo(function TaskNode({ data }: NodeProps<TaskFlowNode>) {
  const retry = data.willRetry ? " · retrying" : "";
  return (
    <div
      className={`dag-node status-${data.status}${data.critical ? " critical" : ""}${data.draft ? " draft" : ""}`}
      style={{ width: NODE_WIDTH, height: NODE_HEIGHT }}
      data-task-id={data.id}
      data-status={data.status}
    >
      <Handle type="target" position={Position.Left} isConnectable={false} />
      <div className="dag-node-name" title={data.name}>
        {data.name}
      </div>
      <div className="dag-node-meta">
        <span className="dag-node-status">
          <span aria-hidden="true">{TASK_STATUS_ICON[data.status]}</span> {TASK_STATUS_LABEL[data.status]}
          {data.attempt > 1 ? ` · try ${data.attempt}` : ""}
          {retry}
          {data.cached ? " · cached" : ""}
        </span>
        {data.critical ? (
          <span className="dag-node-critical" title="On the critical path">
            ★ critical
          </span>
        ) : null}
      </div>
      <Handle type="source" position={Position.Right} isConnectable={false} />
    </div>
  );
});

const nodeTypes = { task: TaskNode };
/** Graphs with more tasks than this get an overview map. */
const MINIMAP_FROM = 20;

export interface DagViewProps {
  graph: GraphInput;
  selected: string | null;
  onSelect: (taskId: string | null) => void;
  /** Called once the first layout with nodes has been drawn (for the bench and tests). */
  onDrawn?: (nodeCount: number) => void;
}

function ariaLabel(n: GraphNode, deps: number): string {
  const parts = [`${n.name}`, TASK_STATUS_LABEL[n.status]];
  if (n.attempt > 1) parts.push(`attempt ${n.attempt}`);
  if (n.critical) parts.push("on the critical path");
  parts.push(deps === 1 ? "1 dependency" : `${deps} dependencies`);
  return parts.join(", ");
}

export const DagView = memo(function DagView({ graph, selected, onSelect, onDrawn }: DagViewProps) {
  const cache = useRef<{ shape: string; positions: Positions } | null>(null);
  // Node and edge objects are kept while what they show is the same, so a status change re-renders
  // only the nodes it touches (a 200-task build streams hundreds of events).
  const nodeCache = useRef(new Map<string, { key: string; node: TaskFlowNode }>());
  const edgeCache = useRef(new Map<string, { key: string; edge: Edge }>());
  const [flow, setFlow] = useState<ReactFlowInstance<TaskFlowNode, Edge> | null>(null);
  const fitted = useRef<string>("");

  if (graph.nodes.length && !performance.getEntriesByName("dag-render").length) performance.mark("dag-render");
  const positions = useMemo(() => {
    if (cache.current?.shape !== graph.shape) cache.current = { shape: graph.shape, positions: layout(graph) };
    return cache.current.positions;
  }, [graph]);

  const depCount = useMemo(() => {
    const m = new Map<string, number>();
    for (const e of graph.edges) m.set(e.target, (m.get(e.target) ?? 0) + 1);
    return m;
  }, [graph.edges]);

  const nodes: TaskFlowNode[] = useMemo(() => {
    const next = new Map<string, { key: string; node: TaskFlowNode }>();
    const out = graph.nodes.map((n) => {
      const position = positions.get(n.id) ?? { x: 0, y: 0 };
      const isSelected = n.id === selected;
      const deps = depCount.get(n.id) ?? 0;
      const key = [n.name, n.status, n.attempt, n.draft, n.critical, n.willRetry, n.cached, isSelected, deps, position.x, position.y].join("|");
      const hit = nodeCache.current.get(n.id);
      const node: TaskFlowNode =
        hit && hit.key === key
          ? hit.node
          : {
              id: n.id,
              type: "task" as const,
              position,
              data: { ...n, selected: isSelected },
              selected: isSelected,
              draggable: false,
              connectable: false,
              ariaLabel: ariaLabel(n, deps),
              width: NODE_WIDTH,
              height: NODE_HEIGHT,
            };
      next.set(n.id, { key, node });
      return node;
    });
    nodeCache.current = next;
    return out;
  }, [graph.nodes, positions, selected, depCount]);

  const edges: Edge[] = useMemo(() => {
    const next = new Map<string, { key: string; edge: Edge }>();
    const out = graph.edges.map((e) => {
      const key = `${e.critical}|${e.satisfied}`;
      const hit = edgeCache.current.get(e.id);
      const edge: Edge =
        hit && hit.key === key
          ? hit.edge
          : {
              id: e.id,
              source: e.source,
              target: e.target,
              className: `${e.critical ? "critical" : ""} ${e.satisfied ? "satisfied" : ""}`.trim(),
              markerEnd: { type: MarkerType.ArrowClosed, width: 12, height: 12, color: e.critical ? "#7c3aed" : "#6b7280" },
              focusable: false,
              selectable: false,
            };
      next.set(e.id, { key, edge });
      return edge;
    });
    edgeCache.current = next;
    return out;
  }, [graph.edges]);

  // Fit the view when the graph's shape changes (tasks streaming in, an edited plan), and when the
  // canvas is resized (a details panel opened) unless the person has panned or zoomed it.
  const moved = useRef(false);
  const fittedView = useRef<{ x: number; y: number; zoom: number } | null>(null);
  const box = useRef<HTMLDivElement>(null);
  const fit = useCallback(() => {
    if (!flow) return;
    void flow.fitView({ padding: 0.08, maxZoom: 1.2, duration: 0 }).then(() => {
      fittedView.current = flow.getViewport();
    });
  }, [flow]);
  useEffect(() => {
    if (!flow || graph.nodes.length === 0 || fitted.current === graph.shape) return;
    fitted.current = graph.shape;
    fit();
  }, [flow, fit, graph.shape, graph.nodes.length]);
  useEffect(() => {
    if (!flow || !box.current || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(() => {
      if (!moved.current) fit();
    });
    observer.observe(box.current);
    return () => observer.disconnect();
  }, [flow, fit]);

  useEffect(() => {
    if (flow && graph.nodes.length && onDrawn) {
      const id = requestAnimationFrame(() => onDrawn(graph.nodes.length));
      return () => cancelAnimationFrame(id);
    }
  }, [flow, graph.nodes.length, onDrawn]);

  // The overview map (a second drawing of every node) comes once the graph itself is on screen.
  const [showMap, setShowMap] = useState(false);
  useEffect(() => {
    if (!flow || showMap || graph.nodes.length <= MINIMAP_FROM) return;
    const id = setTimeout(() => setShowMap(true), 0);
    return () => clearTimeout(id);
  }, [flow, showMap, graph.nodes.length]);

  return (
    <div className="dag" role="region" aria-label={`Task graph: ${graph.nodes.length} tasks`} ref={box}>
      <ReactFlow<TaskFlowNode, Edge>
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        onInit={(f) => {
          performance.mark("dag-init");
          setFlow(f);
        }}
        onNodeClick={(_, node) => onSelect(node.id)}
        onPaneClick={() => onSelect(null)}
        onMoveEnd={(event, viewport) => {
          // A person's pan or zoom (an event, and the view really moved), not a fit or a click.
          const fit = fittedView.current;
          if (event && fit && (Math.abs(viewport.x - fit.x) > 1 || Math.abs(viewport.y - fit.y) > 1 || viewport.zoom !== fit.zoom))
            moved.current = true;
        }}
        onNodesChange={(changes) => {
          // Nodes are controlled: a selection made with the keyboard (Enter on a focused node) arrives here.
          for (const c of changes) if (c.type === "select" && c.selected) onSelect(c.id);
        }}
        nodesDraggable={false}
        nodesConnectable={false}
        nodesFocusable
        edgesFocusable={false}
        elementsSelectable
        onlyRenderVisibleElements={graph.nodes.length > 80}
        minZoom={0.05}
        maxZoom={2}
        fitView
        proOptions={{ hideAttribution: true }}
        ariaLabelConfig={{
          "node.a11yDescription.default": "Press Enter or Space to show this task's details.",
        }}
      >
        <Background gap={24} />
        <Controls showInteractive={false} aria-label="Zoom controls" />
        {showMap && graph.nodes.length > MINIMAP_FROM ? (
          <MiniMap pannable zoomable ariaLabel="Overview of the whole graph" nodeClassName={(n) => `minimap-${(n.data as TaskNodeData).status}`} />
        ) : null}
      </ReactFlow>
    </div>
  );
});
