"""Regenerate the dashboard's API types from the OpenAPI document the API serves.

    python scripts/gen_api_types.py                         # the api handler's document, in-process
    python scripts/gen_api_types.py --url http://127.0.0.1:8000   # from a running `stepwise serve`

Writes web/src/api/openapi.json (the document, for review) and web/src/api/schema.d.ts (what
openapi-typescript makes of it). tests/browser/test_api_types.py fails when either differs from
what the API serves. Needs `npm ci` in web/ first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
DOCUMENT = WEB / "src" / "api" / "openapi.json"
TYPES = WEB / "src" / "api" / "schema.d.ts"
GENERATOR = WEB / "node_modules" / "openapi-typescript" / "bin" / "cli.js"


def document_from_handler() -> dict:
    """GET /openapi.json through the api handler, as `stepwise serve` answers it (no server, no AWS)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from local.server import handle_request

    status, _, body = handle_request("GET", "/openapi.json", "", {}, b"")
    if status != 200:
        raise RuntimeError(f"GET /openapi.json answered {status}: {body[:200]!r}")
    return json.loads(body)


def document_from_url(base_url: str) -> dict:
    with urllib.request.urlopen(base_url.rstrip("/") + "/openapi.json", timeout=30) as response:
        return json.loads(response.read())


def document_text(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def types_for(document: dict) -> str:
    """openapi-typescript's output for `document` (the text that schema.d.ts must hold)."""
    if not GENERATOR.is_file():
        raise RuntimeError(f"{GENERATOR} is missing: run `npm ci` in {WEB}")
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "openapi.json", Path(tmp) / "schema.d.ts"
        source.write_text(document_text(document))
        subprocess.run(
            ["node", str(GENERATOR), str(source), "--output", str(target)],
            check=True,
            capture_output=True,
            cwd=WEB,
        )
        return target.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="base URL of a running `stepwise serve` (default: the handler, in-process)")
    args = parser.parse_args()
    document = document_from_url(args.url) if args.url else document_from_handler()
    DOCUMENT.write_text(document_text(document))
    TYPES.write_text(types_for(document))
    print(f"wrote {DOCUMENT.relative_to(ROOT)} and {TYPES.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
