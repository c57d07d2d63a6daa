// The build's files: a list, one open with syntax highlighting (highlight.js), download one or all
// (a zip made in the browser with fflate).

import { strToU8, zipSync } from "fflate";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import css from "highlight.js/lib/languages/css";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import markdown from "highlight.js/lib/languages/markdown";
import python from "highlight.js/lib/languages/python";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";
import "highlight.js/styles/github.css";
import { useCallback, useEffect, useMemo, useState } from "react";
import type { Api, FileInfo } from "../api/client";
import { ApiError } from "../api/client";

hljs.registerLanguage("bash", bash);
hljs.registerLanguage("css", css);
hljs.registerLanguage("javascript", javascript);
hljs.registerLanguage("json", json);
hljs.registerLanguage("markdown", markdown);
hljs.registerLanguage("python", python);
hljs.registerLanguage("typescript", typescript);
hljs.registerLanguage("xml", xml);
hljs.registerLanguage("yaml", yaml);

const BY_EXTENSION: Record<string, string> = {
  ts: "typescript",
  tsx: "typescript",
  mts: "typescript",
  js: "javascript",
  jsx: "javascript",
  mjs: "javascript",
  cjs: "javascript",
  json: "json",
  css: "css",
  scss: "css",
  html: "xml",
  htm: "xml",
  xml: "xml",
  svg: "xml",
  vue: "xml",
  md: "markdown",
  py: "python",
  sh: "bash",
  yml: "yaml",
  yaml: "yaml",
};

export function languageOf(path: string): string | null {
  const ext = path.split(".").pop()?.toLowerCase() ?? "";
  return BY_EXTENSION[ext] ?? null;
}

function save(name: string, data: BlobPart, type: string): void {
  const url = URL.createObjectURL(new Blob([data], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export interface FileBrowserProps {
  api: Api;
  buildId: string;
  /** Changes whenever files may have changed (a task completed): the list is read again. */
  version: number;
  open: string | null;
  onOpen: (path: string | null) => void;
}

export function FileBrowser({ api, buildId, version, open, onOpen }: FileBrowserProps) {
  const [files, setFiles] = useState<FileInfo[] | null>(null);
  const [content, setContent] = useState<{ path: string; text: string } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [zipping, setZipping] = useState(false);

  useEffect(() => {
    let live = true;
    api
      .listFiles(buildId)
      .then((f) => live && setFiles(f))
      .catch((err) => live && setError(err instanceof ApiError ? err.message : String(err)));
    return () => {
      live = false;
    };
  }, [api, buildId, version]);

  useEffect(() => {
    if (!open) {
      setContent(null);
      return;
    }
    let live = true;
    setError(null);
    api
      .getFile(buildId, open)
      .then((text) => live && setContent({ path: open, text }))
      .catch((err) => live && setError(err instanceof ApiError ? err.message : String(err)));
    return () => {
      live = false;
    };
  }, [api, buildId, open, version]);

  const highlighted = useMemo(() => {
    if (!content) return null;
    const lang = languageOf(content.path);
    if (!lang || content.text.length > 400_000) return null;
    return hljs.highlight(content.text, { language: lang, ignoreIllegals: true }).value;
  }, [content]);

  const downloadAll = useCallback(async () => {
    if (!files?.length) return;
    setZipping(true);
    setError(null);
    try {
      const entries: Record<string, Uint8Array> = {};
      for (const f of files) entries[f.path] = strToU8(await api.getFile(buildId, f.path));
      save(`${buildId}.zip`, zipSync(entries, { level: 6 }) as Uint8Array<ArrayBuffer>, "application/zip");
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setZipping(false);
    }
  }, [api, buildId, files]);

  return (
    <section className="files" aria-label="Files">
      <div className="file-list">
        <div className="row spread">
          <h3>{files ? `${files.length} file${files.length === 1 ? "" : "s"}` : "Files"}</h3>
          <button type="button" onClick={() => void downloadAll()} disabled={!files?.length || zipping}>
            {zipping ? "Zipping…" : "Download all (.zip)"}
          </button>
        </div>
        {files === null && !error ? <p aria-live="polite">Loading…</p> : null}
        {files && !files.length ? <p>No files yet: they appear as tasks complete.</p> : null}
        <ul>
          {files?.map((f) => (
            <li key={f.path}>
              <button
                type="button"
                className="link mono"
                aria-current={f.path === open ? "true" : undefined}
                onClick={() => onOpen(f.path)}
              >
                {f.path}
              </button>
              <span className="muted"> {f.size.toLocaleString()} B</span>
            </li>
          ))}
        </ul>
      </div>
      <div className="file-view">
        {error ? (
          <p role="alert" className="error">
            {error}
          </p>
        ) : null}
        {content ? (
          <>
            <div className="row spread">
              <h3 className="mono" id="file-title">
                {content.path}
              </h3>
              <button type="button" onClick={() => save(content.path.split("/").pop() || "file", content.text, "text/plain")}>
                Download
              </button>
            </div>
            <pre className="code" aria-labelledby="file-title" tabIndex={0}>
              {highlighted !== null ? (
                <code className="hljs" dangerouslySetInnerHTML={{ __html: highlighted }} />
              ) : (
                <code>{content.text}</code>
              )}
            </pre>
          </>
        ) : files?.length ? (
          <p className="muted">Choose a file to read it.</p>
        ) : null}
      </div>
    </section>
  );
}
