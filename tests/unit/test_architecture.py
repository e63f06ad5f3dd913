"""The house rules, checked on the source: the core (bot/) owns its ports and imports no
adapter and no network library; only the programs that wire it (the composition root)
know the concrete adapters; adapters depend on the core, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
# The composition root and the programs it starts: they pick the concrete adapters.
WIRING = {"app.py", "cli.py", "cli_billing.py", "jobs.py", "demo.py", "workers.py"}
NETWORK_LIBRARIES = {"slack_bolt", "slack_sdk", "nio", "aiosmtplib", "aioimaplib", "aiosmtpd",
                     "aiohttp", "redis", "rq", "dkim", "spf", "dns", "authres"}


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name.split(".")[0] for name in found}


CORE = sorted(p for p in (ROOT / "bot").rglob("*.py") if p.name not in WIRING)


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_imports_no_adapter_and_no_network_library(path: Path) -> None:
    wrong = imported(path) & ({"bridges", "storage"} | NETWORK_LIBRARIES)
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_the_ports_and_error_bases_live_in_the_core() -> None:
    for module in ("ports.py", "stores.py", "errors.py"):
        assert (ROOT / "bot" / module).is_file()
    for gone in ("bridges/ports.py", "storage/protocols.py", "storage/errors.py"):
        assert not (ROOT / gone).exists(), f"{gone} should be in bot/"
