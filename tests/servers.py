"""Extra real servers that single tests start and stop themselves (loopback only)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisProcess:
    port: int
    directory: Path
    appendonly: bool
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.directory), "--appendonly", "yes" if self.appendonly else "no",
             "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextmanager
def redis_server(appendonly: bool = True) -> Iterator[RedisProcess]:
    """A redis-server of the test's own, on a free loopback port."""
    server = RedisProcess(free_port(), Path(tempfile.mkdtemp(prefix="sb-redis-")), appendonly)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


async def run_cli(*args: str, env: dict[str, str],
                  limit: float = 120.0) -> tuple[int, str, str]:
    """Run the `switchboard` command without blocking the test's event loop."""
    process = await asyncio.create_subprocess_exec(
        "switchboard", *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), limit)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def start_switchboard(command: str, env: dict[str, str], log: Path,
                      new_session: bool = False) -> subprocess.Popen[bytes]:
    """`switchboard <command>` as its own process, with only ``env``'s SWITCHBOARD_* set."""
    import os
    import sys

    bin_dir = Path(sys.executable).parent
    full = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    full.update(env)
    full["PATH"] = f"{bin_dir}{os.pathsep}{full.get('PATH', '')}"
    with log.open("ab") as out:
        return subprocess.Popen([str(bin_dir / "switchboard"), command], env=full, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=new_session)
