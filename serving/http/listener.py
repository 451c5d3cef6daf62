"""The HTTP listener beside the gRPC server: bound where gRPC is bound (loopback by default), with
the same TLS certificate when gRPC has one, started before the models load (calls answer
UNAVAILABLE until then, as gRPC's do) and stopped with it."""

from __future__ import annotations

import ssl

from aiohttp import web

from simclr_search.serving.http.gateway import Gateway


class HttpListener:
    def __init__(self, runner: web.AppRunner, site: web.TCPSite, port: int) -> None:
        self._runner, self._site, self.port = runner, site, port

    async def stop_accepting(self) -> None:
        """No new connections; calls in progress go on."""
        await self._site.stop()

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_http(
    gateway: Gateway, host: str, port: int, tls_cert: str = "", tls_key: str = ""
) -> HttpListener:
    """Listen on ``host:port`` (port 0: a free one). Raises OSError when it cannot bind."""
    context = None
    if tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert, tls_key)
    runner = web.AppRunner(gateway.app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host or "0.0.0.0", port, ssl_context=context)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = site._server.sockets[0].getsockname()[1]  # aiohttp exposes no public accessor
    return HttpListener(runner, site, bound)
