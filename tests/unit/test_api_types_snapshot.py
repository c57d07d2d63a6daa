"""The OpenAPI document committed for the dashboard (web/src/api/openapi.json, from which its types
are generated) is the one the api handler serves. When this fails, the API changed: run
`python scripts/gen_api_types.py` and commit web/src/api/ (the browser tests check the types too)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_openapi_document_is_the_served_one() -> None:
    spec = importlib.util.spec_from_file_location("gen_api_types", ROOT / "scripts" / "gen_api_types.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    served = gen.document_text(gen.document_from_handler())
    assert served == gen.DOCUMENT.read_text(), "the API's OpenAPI document changed: run python scripts/gen_api_types.py"
