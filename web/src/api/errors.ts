// API errors in words a person can act on. The API answers {"error": {code, message, details?}}.

export interface Described {
  message: string;
  code?: string;
  details?: unknown;
}

interface ErrorBody {
  error?: { code?: string; message?: string; details?: unknown };
}

function fieldList(details: unknown): string {
  if (!Array.isArray(details)) return "";
  return details
    .map((d) => {
      if (typeof d !== "object" || d === null) return String(d);
      const item = d as { field?: string; message?: string };
      return item.message ? `${item.field ?? "body"}: ${item.message}` : (item.field ?? "");
    })
    .filter(Boolean)
    .join("; ");
}

export function describeError(status: number, body: unknown): Described {
  const err = (typeof body === "object" && body !== null ? (body as ErrorBody).error : undefined) ?? {};
  const said = err.message;
  const code = err.code;
  const details = err.details;
  switch (status) {
    case 400:
      return { code, details, message: `The request was malformed: ${said ?? "the server could not read it"}.` };
    case 401:
      return { code, message: "Your sign-in was not accepted (missing or expired token). Sign in again." };
    case 403:
      return { code, message: "You are not allowed to do that." };
    case 404:
      return { code, message: said && !/route/i.test(said) ? `Not found: ${said}.` : "Not found: it does not exist, or it belongs to another user." };
    case 409:
      return { code, details, message: `Not possible right now: ${said ?? "the build is in another state"}.` };
    case 413:
      return { code, message: `Too large: ${said ?? "the request is over the size limit"}. Upload fewer or smaller files.` };
    case 422: {
      const fields = fieldList(details);
      return { code, details, message: `Some fields are invalid — ${fields || said || "check the form"}.` };
    }
    case 429:
      return { code, message: "Too many requests. Wait a few seconds and try again." };
    default:
      if (status >= 500)
        return { code, message: `The server failed (${status}${said ? `: ${said}` : ""}). Try again in a moment.` };
      return { code, details, message: said ?? `The request failed with status ${status}.` };
  }
}
