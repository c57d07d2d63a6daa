"""The reference is in the repository: nothing points outside it, and every pointer into docs/ lands."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {
    ".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
    ".hypothesis", "cdk.out", "dist", "build", "test-artifacts", "stepwise.egg-info", "stepwise-out",
}
# Spelled in pieces so that this file does not match itself.
OUTSIDE = re.compile(rb"CONTRACT\s*(?:\xc2\xa7|section\s*\d)|\.\./" + rb"shared\b")
POINTER = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?")


def repo_files() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        found.extend(Path(folder) / f for f in files)
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces become hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_no_file_points_at_the_handbook_outside_the_repository() -> None:
    files = repo_files()
    assert any(f.name == "README.md" for f in files) and len(files) > 100
    offenders = sorted(str(f.relative_to(ROOT)) for f in files if OUTSIDE.search(f.read_bytes()))
    assert offenders == [], "point into docs/ (e.g. docs/api.md#events) instead"


def test_every_pointer_into_docs_names_a_document_and_a_heading_it_has() -> None:
    anchors = {
        doc.name: {slug(line.lstrip("#")) for line in doc.read_text().splitlines() if line.startswith("#")}
        for doc in (ROOT / "docs").glob("*.md")
    }
    broken = []
    for path in repo_files():
        if path.suffix not in {".py", ".md", ".ts", ".tsx", ".sh", ".toml", ".json"}:
            continue
        for name, anchor in POINTER.findall(path.read_text(errors="replace")):
            if name not in anchors or (anchor and anchor not in anchors[name]):
                broken.append(f"{path.relative_to(ROOT)}: docs/{name}#{anchor}")
    assert broken == []


def test_the_checks_see_what_they_look_for() -> None:
    contract = "CONTRACT"
    assert OUTSIDE.search(f"see {contract} §4".encode()) and OUTSIDE.search(f"{contract} section 2".encode())
    assert OUTSIDE.search(b"open ../" + b"shared/STYLE.md") and not OUTSIDE.search(b"CONTRACT_ROUTES = {")
    assert slug("Delivery, retries and the dead-letter queue") == "delivery-retries-and-the-dead-letter-queue"
    assert slug("From the LLM's text to a plan") == "from-the-llms-text-to-a-plan"


def test_the_readme_layout_names_every_sub_package_of_shared() -> None:
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    shared = ROOT / "shared"
    packages = sorted(
        str(p.relative_to(shared))
        for parent in (shared, shared / "logic")
        for p in parent.iterdir()
        if (p / "__init__.py").is_file()
    )
    assert {"dal", "logic", "logic/attempts", "logic/readiness", "models", "providers"} <= set(packages)
    assert [p for p in packages if f"| `shared/{p}/` |" not in layout] == []
