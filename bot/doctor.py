"""`switchboard doctor`: checks of the installation, each OK, WARN or FAIL with a fix.

The checks that need a network live with their bridge (or the store) and are
handed in as probes; this module runs them, adds the local ones (Python, packages)
and turns the result into text or JSON.
"""

from __future__ import annotations

import asyncio
import enum
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from email import policy
from importlib import metadata

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from bot import DISTRIBUTION
from bot.settings import Settings


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""
    version: str = ""

    @classmethod
    def ok(cls, name: str, detail: str, version: str = "") -> Check:
        return cls(name, Status.OK, detail, version=version)

    @classmethod
    def warn(cls, name: str, detail: str, fix: str = "") -> Check:
        return cls(name, Status.WARN, detail, fix)

    @classmethod
    def fail(cls, name: str, detail: str, fix: str) -> Check:
        return cls(name, Status.FAIL, detail, fix)


Probe = Callable[[Settings], Awaitable[list[Check]]]

MIN_PYTHON = (3, 11)
PROBE_TIMEOUT = 20.0


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return Check.fail("python", f"Python {version} is too old",
                          f"install Python {'.'.join(map(str, MIN_PYTHON))} or newer")
    return Check.ok("python", f"Python {version}", version)


def check_header_fix(mail_policy: object = policy.default) -> Check:
    """Whether the interpreter's email package refuses to write headers that break
    lines (CVE-2024-6923, fixed in 3.11.10, 3.12.5, 3.13). Switchboard seals every
    outgoing email itself either way; the upstream fix is a second line of defence."""
    version = ".".join(map(str, sys.version_info[:3]))
    if hasattr(mail_policy, "verify_generated_headers"):
        return Check.ok("email headers", f"Python {version} refuses header injection itself")
    return Check.warn("email headers", f"Python {version} lacks the upstream fix for header "
                      "injection through encoded words (CVE-2024-6923); Switchboard's own "
                      "check still guards every outgoing email",
                      "upgrade Python to 3.11.10, 3.12.5, 3.13 or newer")


def _supported_ranges() -> dict[str, SpecifierSet]:
    """What Switchboard's own metadata says it supports (pyproject's dependencies)."""
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return {}
    ranges: dict[str, SpecifierSet] = {}
    for line in requires:
        requirement = Requirement(line)
        if requirement.marker is None:
            ranges[canonicalize_name(requirement.name)] = requirement.specifier
    return ranges


def check_packages() -> list[Check]:
    """Every dependency the installed distribution declares, in its supported range."""
    checks = []
    ranges = _supported_ranges()
    if not ranges:
        return [Check.fail("packages", f"{DISTRIBUTION} is not installed as a package, so "
                           "its dependencies cannot be checked",
                           f"pip install {DISTRIBUTION} (pip install -e . in a checkout)")]
    for name in sorted(ranges):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            checks.append(Check.fail(f"package {name}", "not installed",
                                     f"pip install {DISTRIBUTION} with its dependencies"))
            continue
        supported = ranges.get(canonicalize_name(name))
        if supported is not None and not supported.contains(version, prereleases=True):
            checks.append(Check.fail(f"package {name}", f"{name} {version} is outside the "
                                     f"supported range {supported}",
                                     f"pip install '{name}{supported}'"))
            continue
        checks.append(Check.ok(f"package {name}", f"{name} {version}", version))
    return checks


async def in_time(name: str, checks: Awaitable[list[Check]],
                  seconds: float = PROBE_TIMEOUT) -> list[Check]:
    """``checks``, or a failure named ``name`` if they take longer than ``seconds``."""
    try:
        return await asyncio.wait_for(checks, seconds)
    except TimeoutError:
        return [Check.fail(name, f"no answer within {seconds:.0f} s",
                           "check the host, port and firewall")]


async def _guarded(probe: Probe, settings: Settings) -> list[Check]:
    return await in_time(getattr(probe, "check_name", probe.__name__), probe(settings))


async def run_checks(settings: Settings, probes: Sequence[Probe]) -> list[Check]:
    """Every check, the local ones first; probes run concurrently."""
    results = await asyncio.gather(*(_guarded(p, settings) for p in probes))
    return [check_python(), check_header_fix(), *check_packages(),
            *(c for group in results for c in group)]


def failed(checks: Sequence[Check]) -> bool:
    return any(c.status is Status.FAIL for c in checks)


def as_text(checks: Sequence[Check], verbose: bool = False) -> str:
    lines = []
    for c in checks:
        if c.name.startswith("package ") and c.status is Status.OK and not verbose:
            continue
        line = f"{c.status.value:<5} {c.name:<10} {c.detail}"
        if c.fix:
            line += f"\n{'':16}fix: {c.fix}"
        lines.append(line)
    packages = [c for c in checks if c.name.startswith("package ")]
    if not verbose and all(c.status is Status.OK for c in packages):
        lines.insert(1, f"{'OK':<5} {'packages':<10} all {len(packages)} required packages "
                        "installed")
    summary = {s: sum(c.status is s for c in checks) for s in Status}
    lines.append(f"\n{summary[Status.OK]} ok, {summary[Status.WARN]} warnings, "
                 f"{summary[Status.FAIL]} failures")
    return "\n".join(lines)


def as_json(checks: Sequence[Check]) -> str:
    return json.dumps({"ok": not failed(checks), "checks": [asdict(c) for c in checks]},
                      indent=2)
