"""The dashboard serves only its own files: htmx is vendored, and it is exactly the
release package.json pins (npm ci installs it), so an upgrade is one line there and a
copy of the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

from runner.dashboard.app import STATIC_DIR, TEMPLATES_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_the_vendored_htmx_is_the_pinned_release() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["htmx.org"]
    installed = json.loads((ROOT / "node_modules" / "htmx.org" / "package.json").read_text())

    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "pin htmx exactly"
    assert installed["version"] == pinned
    released = ROOT / "node_modules" / "htmx.org" / "dist" / "htmx.min.js"
    assert (STATIC_DIR / "htmx.min.js").read_bytes() == released.read_bytes()


def test_no_template_loads_anything_from_another_host() -> None:
    for template in TEMPLATES_DIR.glob("*.html"):
        text = template.read_text()
        assert not re.search(
            r'(src|href)="(https?:)?//', text.replace('href="{{ e.console_url }}"', "")
        ), template
        assert "<script>" not in text and " style=" not in text, template  # the CSP allows neither
