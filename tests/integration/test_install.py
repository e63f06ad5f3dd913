"""The package as an operator gets it: the wheel built from this checkout, installed into a
fresh virtual environment outside the checkout, and run from there: `--version`, `init`,
`doctor`, the demo on the real services, and a charge report's web page."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bot import DISTRIBUTION, __version__
from tests.conftest import Services
from tests.mailhelp import eventually
from tests.servers import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def run(*command: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
        limit: float = 600) -> str:
    done = subprocess.run([str(c) for c in command], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=limit, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[Path, Path]]:
    """(the wheel, the venv it is installed in), both in a folder outside the checkout."""
    work = Path(tempfile.mkdtemp(prefix="switchboard-install-"))
    assert ROOT not in work.parents
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", ROOT)
    (wheel,) = (work / "dist").glob("switchboard_mail_bridge-*.whl")
    run(sys.executable, "-m", "venv", work / "venv")
    run(work / "venv" / "bin" / "pip", "install", "-q", wheel)
    yield wheel, work / "venv"
    shutil.rmtree(work, ignore_errors=True)


def outside(services: Services, venv: Path, **overrides: str) -> dict[str, str]:
    """The installed copy's environment: its own bin first, no path into the checkout."""
    env = services.service_env(SWITCHBOARD_REDIS_PREFIX=f"install-{os.getpid()}", **overrides)
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin"
    return env


def test_every_file_the_runtime_opens_is_in_the_wheel(installed: tuple[Path, Path]) -> None:
    wheel, venv = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"bot/templates/{p.relative_to(ROOT / 'templates').as_posix()}"
                 for p in (ROOT / "templates").rglob("*.j2")}
    assert len(templates) > 20 and templates <= names
    # And the installed copy reads them from its own site-packages, every one compiling.
    out = run(venv / "bin" / "python", "-c", (
        "from bot.render import environment, template_folder\n"
        "env = environment()\n"
        "names = env.list_templates(extensions=[\"j2\"])\n"
        "[env.get_template(n) for n in names]\n"
        "print(template_folder()); print(len(names))"), cwd=venv)
    folder, count = out.split()
    assert folder.startswith(str(venv)) and int(count) == len(templates)


def test_version_init_and_doctor_from_the_install(installed: tuple[Path, Path],
                                                  services: Services) -> None:
    _, venv = installed
    env = outside(services, venv)
    out = run("switchboard", "--version", env=env, cwd=venv)
    assert out.strip() == f"switchboard {__version__} ({DISTRIBUTION})"
    run("switchboard", "init", "switchboard.toml", env=env, cwd=venv)
    text = (venv / "switchboard.toml").read_text()
    assert '[imap]' in text and '# password_file = "/run/secrets/imap_password"' in text
    doctor = subprocess.run(["switchboard", "--config", "switchboard.toml", "doctor"], env=env,
                            cwd=venv, capture_output=True, text=True, timeout=120)
    assert "OK    packages   all" in doctor.stdout, doctor.stdout + doctor.stderr
    assert "not installed as a package" not in doctor.stdout
    assert "OK    redis" in doctor.stdout and "OK    imap" in doctor.stdout


async def test_demo_and_a_report_page_from_the_install(installed: tuple[Path, Path],
                                                       services: Services,
                                                       http: aiohttp.ClientSession) -> None:
    _, venv = installed
    env = outside(services, venv)
    demo = await asyncio.to_thread(run, "switchboard", "demo", env=env, cwd=venv, limit=180)
    assert "Quarterly numbers" in demo, demo

    card = venv / "rate-card.toml"
    card.write_text('currency = "EUR"\n[prices]\ntransfer_per_gb = "0.10"\n'
                    'storage_per_gb_month = "0.02"\ncpu_per_second = "0.0001"\n'
                    'memory_per_gb = "0.01"\n[prices.transaction]\n'
                    + "".join(f'{name} = "0.001"\n' for name in (
                        "email_ingested", "chat_post", "im_delivered", "retry", "email_sent",
                        "command")))
    port = free_port()
    env = outside(services, venv, SWITCHBOARD_RATE_CARD=str(card),
                  SWITCHBOARD_HTTP_LISTEN=f"127.0.0.1:{port}", SWITCHBOARD_IMAP_HOST="")
    customer = f"matrix:{services.matrix_server}"
    shown = run("switchboard", "customer", "set", customer, "--name", "Demo Org",
                "--web-report", env=env, cwd=venv)
    url = re.search(r"web report: (http://\S+)", shown).group(1)
    server = await asyncio.create_subprocess_exec(
        "switchboard", "run", env=env, cwd=venv, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        async def page() -> str | None:
            try:
                async with http.get(url) as r:
                    return await r.text() if r.status == 200 else None
            except aiohttp.ClientError:
                return None

        html = await eventually(page, what="the report page from the installed copy")
        assert "Demo Org" in html and "<html" in html.lower()
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
