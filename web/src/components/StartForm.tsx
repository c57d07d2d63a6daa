import { type FormEvent, useId, useMemo, useState } from "react";
import type { Api, CreateBuildBody } from "../api/client";
import { ApiError } from "../api/client";

const MAX_FILES = 200;
const MAX_BYTES = 1024 * 1024;

interface Upload {
  path: string;
  content: string;
  bytes: number;
}

type Field = "prompt" | "framework" | "maxConcurrency" | "budgetUsd" | "files";

function fieldOf(name: string): Field | null {
  const head = name.split(".")[0];
  return (["prompt", "framework", "maxConcurrency", "budgetUsd", "files"] as const).find((f) => f === head) ?? null;
}

/** A random key; crypto.randomUUID needs a secure context, getRandomValues does not (a LAN address). */
function newKey(): string {
  if (typeof crypto.randomUUID === "function" && window.isSecureContext) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function safePath(path: string): boolean {
  return !!path && !path.startsWith("/") && !path.includes("\\") && !path.split("/").includes("..") && path.length <= 255;
}

export function StartForm({ api, onStarted }: { api: Api; onStarted: (buildId: string) => void }) {
  const id = useId();
  const [prompt, setPrompt] = useState("");
  const [framework, setFramework] = useState("");
  const [requireApproval, setRequireApproval] = useState(false);
  const [maxConcurrency, setMaxConcurrency] = useState("5");
  const [budget, setBudget] = useState("");
  const [files, setFiles] = useState<Upload[]>([]);
  const [errors, setErrors] = useState<Partial<Record<Field, string>>>({});
  const [formError, setFormError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // One key per distinct submission: a double click or a retried request starts one build.
  const body = useMemo(
    () => ({ prompt, framework, requireApproval, maxConcurrency, budget, files }),
    [prompt, framework, requireApproval, maxConcurrency, budget, files],
  );
  const idempotencyKey = useMemo(() => newKey(), [body]);

  const totalBytes = files.reduce((n, f) => n + f.bytes, 0);

  async function pickFiles(list: FileList | null) {
    if (!list) return;
    const picked: Upload[] = [];
    for (const file of Array.from(list)) {
      const path = (file as File & { webkitRelativePath?: string }).webkitRelativePath || file.name;
      const content = await file.text();
      picked.push({ path, content, bytes: new TextEncoder().encode(content).length });
    }
    setFiles(picked);
  }

  function check(): Partial<Record<Field, string>> {
    const e: Partial<Record<Field, string>> = {};
    if (!prompt.trim()) e.prompt = "Say what to build.";
    else if (prompt.length > 20000) e.prompt = `At most 20,000 characters (now ${prompt.length.toLocaleString()}).`;
    if (framework.length > 50) e.framework = "At most 50 characters.";
    const mc = Number(maxConcurrency);
    if (!Number.isInteger(mc) || mc < 1 || mc > 20) e.maxConcurrency = "A whole number from 1 to 20.";
    if (budget.trim() && !(Number(budget) > 0)) e.budgetUsd = "A number of dollars above 0, or leave it empty.";
    if (files.length > MAX_FILES) e.files = `At most ${MAX_FILES} files (${files.length} chosen).`;
    else if (totalBytes > MAX_BYTES) e.files = `At most 1 MiB in all (${(totalBytes / 1024).toFixed(0)} KiB chosen).`;
    else if (files.some((f) => !safePath(f.path))) e.files = "File paths must be relative, without '..' or backslashes.";
    return e;
  }

  async function submit(e: FormEvent) {
    e.preventDefault();
    setFormError(null);
    const found = check();
    setErrors(found);
    if (Object.keys(found).length) {
      setFormError("Some fields need a change before the build can start.");
      return;
    }
    const request: CreateBuildBody = {
      prompt: prompt.trim(),
      maxConcurrency: Number(maxConcurrency),
      requireApproval,
      files: files.map((f) => ({ path: f.path, content: f.content })),
    };
    if (framework.trim()) request.framework = framework.trim();
    if (budget.trim()) request.budgetUsd = Number(budget);
    setBusy(true);
    try {
      const created = await api.createBuild(request, idempotencyKey);
      onStarted(created.buildId);
    } catch (err) {
      if (err instanceof ApiError && Array.isArray(err.details)) {
        const byField: Partial<Record<Field, string>> = {};
        for (const d of err.details as { field?: string; message?: string }[]) {
          const f = fieldOf(d.field ?? "");
          if (f) byField[f] = d.message ?? "Invalid.";
        }
        setErrors(byField);
      }
      setFormError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }

  const describedBy = (f: Field, help?: string) =>
    [help, errors[f] ? `${id}-${f}-error` : null].filter(Boolean).join(" ") || undefined;
  const errorText = (f: Field) =>
    errors[f] ? (
      <p id={`${id}-${f}-error`} className="field-error">
        {errors[f]}
      </p>
    ) : null;

  return (
    <section aria-labelledby={`${id}-title`} className="card">
      <h2 id={`${id}-title`}>Start a build</h2>
      <form onSubmit={submit} noValidate aria-describedby={formError ? `${id}-form-error` : undefined}>
        <label htmlFor={`${id}-prompt`}>What should be built?</label>
        <textarea
          id={`${id}-prompt`}
          name="prompt"
          rows={3}
          required
          value={prompt}
          onChange={(e) => setPrompt(e.target.value)}
          aria-invalid={Boolean(errors.prompt)}
          aria-describedby={describedBy("prompt")}
          placeholder="Create a landing page with a hero section"
        />
        {errorText("prompt")}
        <div className="grid">
          <div>
            <label htmlFor={`${id}-framework`}>Framework (optional)</label>
            <input
              id={`${id}-framework`}
              name="framework"
              value={framework}
              onChange={(e) => setFramework(e.target.value)}
              aria-invalid={Boolean(errors.framework)}
              aria-describedby={describedBy("framework")}
              placeholder="react"
            />
            {errorText("framework")}
          </div>
          <div>
            <label htmlFor={`${id}-mc`}>Tasks at once</label>
            <input
              id={`${id}-mc`}
              name="maxConcurrency"
              type="number"
              min={1}
              max={20}
              step={1}
              value={maxConcurrency}
              onChange={(e) => setMaxConcurrency(e.target.value)}
              aria-invalid={Boolean(errors.maxConcurrency)}
              aria-describedby={describedBy("maxConcurrency")}
            />
            {errorText("maxConcurrency")}
          </div>
          <div>
            <label htmlFor={`${id}-budget`}>Budget in USD (optional)</label>
            <input
              id={`${id}-budget`}
              name="budgetUsd"
              type="number"
              min={0}
              step="0.01"
              inputMode="decimal"
              value={budget}
              onChange={(e) => setBudget(e.target.value)}
              aria-invalid={Boolean(errors.budgetUsd)}
              aria-describedby={describedBy("budgetUsd")}
            />
            {errorText("budgetUsd")}
          </div>
        </div>
        <div className="checkbox">
          <input
            id={`${id}-approval`}
            name="requireApproval"
            type="checkbox"
            checked={requireApproval}
            onChange={(e) => setRequireApproval(e.target.checked)}
          />
          <label htmlFor={`${id}-approval`}>Let me approve or edit the plan before it runs</label>
        </div>
        <label htmlFor={`${id}-files`}>Project files to start from (optional)</label>
        <input
          id={`${id}-files`}
          name="files"
          type="file"
          multiple
          onChange={(e) => void pickFiles(e.target.files)}
          aria-invalid={Boolean(errors.files)}
          aria-describedby={describedBy("files", `${id}-files-help`)}
        />
        <p id={`${id}-files-help`} className="help">
          Up to {MAX_FILES} text files, 1 MiB in all.
          {files.length ? ` Chosen: ${files.length} (${(totalBytes / 1024).toFixed(1)} KiB).` : ""}
        </p>
        {errorText("files")}
        {formError ? (
          <p id={`${id}-form-error`} role="alert" className="error">
            {formError}
          </p>
        ) : null}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Starting…" : "Start build"}
        </button>
      </form>
    </section>
  );
}
