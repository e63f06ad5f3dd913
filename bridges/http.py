"""Switchboard's HTTP server: liveness, readiness, metrics, and the endpoints other
bridges mount on it (Slack's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from bridges.metrics import CONTENT_TYPE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Readiness = Callable[[], Awaitable[dict[str, bool]]]
Scrape = Callable[[], Awaitable[bytes]]
# A page: (path parameters, query) -> (HTTP status, HTML or a plain-text reason).
Page = Callable[[Mapping[str, str], Mapping[str, str]], Awaitable[tuple[int, str]]]


async def _hardened(_: web.Request, response: web.StreamResponse) -> None:
    """Every answer, errors included: never sniffed into another type than it says."""
    response.headers["X-Content-Type-Options"] = "nosniff"


class HttpServer:
    def __init__(self, host: str, port: int, *, readiness: Readiness | None = None,
                 metrics: Scrape | None = None) -> None:
        self.host = host
        self.port = port
        self.readiness = readiness
        self.metrics = metrics
        self.app = web.Application(client_max_size=4 * 1024 * 1024)
        self.app.on_response_prepare.append(_hardened)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)

    def page(self, path: str, page: Page) -> None:
        """Serve ``page`` at ``path`` (GET): HTML on 200, the reason as text otherwise."""
        async def handle(request: web.Request) -> web.Response:
            status, body = await page(request.match_info, request.query)
            if status != 200:
                return web.Response(status=status, text=body, headers={
                    "Cache-Control": "no-store"})
            # Private pages: never cached, and their address never leaks in a Referer.
            return web.Response(text=body, content_type="text/html", headers={
                "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                "X-Robots-Tag": "noindex"})

        self.app.router.add_get(path, handle)

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _readyz(self, _: web.Request) -> web.Response:
        checks = await self.readiness() if self.readiness else {}
        ready = all(checks.values())
        return web.json_response({"ready": ready, "checks": checks},
                                 status=200 if ready else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = await self.metrics() if self.metrics else b""
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def start(self) -> None:
        # shutdown_timeout: how long in-flight requests may take to finish on stop.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=30)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
