"""The house rules, checked on the source: the core (bot/) owns its ports and imports no
adapter and no network library; only the programs that wire it (the composition root)
know the concrete adapters; adapters depend on the core, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
# The composition root and the programs it starts (bot/runtime/): they pick the concrete
# adapters.
RUNTIME = ROOT / "bot" / "runtime"
NETWORK_LIBRARIES = {"slack_bolt", "slack_sdk", "nio", "aiosmtplib", "aioimaplib", "aiosmtpd",
                     "aiohttp", "redis", "rq", "dkim", "spf", "dns", "authres"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def imported(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


CORE = sorted(p for p in (ROOT / "bot").rglob("*.py") if RUNTIME not in p.parents)
ADAPTERS = sorted([*(ROOT / "bridges").rglob("*.py"), *(ROOT / "storage").rglob("*.py")])


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_imports_no_adapter_and_no_network_library(path: Path) -> None:
    wrong = imported(path) & ({"bridges", "storage"} | NETWORK_LIBRARIES)
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_the_ports_and_error_bases_live_in_the_core() -> None:
    for module in ("ports.py", "stores.py", "errors.py"):
        assert (ROOT / "bot" / module).is_file()
    for gone in ("bridges/ports.py", "storage/protocols.py", "storage/errors.py"):
        assert not (ROOT / gone).exists(), f"{gone} should be in bot/"


@pytest.mark.parametrize("path", ADAPTERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_adapters_depend_on_the_core_not_on_the_runtime_nor_on_each_other(path: Path) -> None:
    """An adapter takes the core's protocols: bridges/ never reaches into storage/ (nor the
    reverse), and neither knows the program that wires them."""
    own = path.relative_to(ROOT).parts[0]
    other = {"bridges": "storage", "storage": "bridges"}[own]
    wrong = {m for m in imported_modules(path)
             if m.split(".")[0] == other or m == "bot.runtime" or m.startswith("bot.runtime.")}
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_the_runtime_sits_apart_from_the_core() -> None:
    for module in ("app.py", "cli.py", "jobs.py", "workers.py"):
        assert (RUNTIME / module).is_file()
    for gone in ("app.py", "cli.py", "cli_billing.py", "jobs.py", "workers.py", "demo.py"):
        assert not (ROOT / "bot" / gone).exists(), f"bot/{gone} belongs in bot/runtime/"
