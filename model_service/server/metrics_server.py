"""The metrics port (`MODEL_SERVICE_METRICS_PORT`): a process of its own that serves `GET /metrics`.

The workers never answer /metrics (on the public port it is a 404): in the review, a flood of scrapes
on the public port took authorised predictions from p50 1 ms to 528 ms, because each scrape rendered
every series on a worker's event loop. Here the workers only write their values to prometheus_client's
multiprocess files (`FLUSH_INTERVAL_S`), and this process, started by the launcher:

- shares no event loop and no interpreter lock with predictions;
- runs at niceness 10: when the CPU is contended the kernel gives it about a tenth of a worker's share
  (CFS weights 110 against 1024), so a flood of scrapes cannot take more from predictions, while a scrape
  still gets answered when the workers saturate the CPU (at niceness 19 a saturated machine here answered
  none in 8 s: a scrape that never comes back is a gap in the very window a canary is judged on);
- renders at most once per flush interval and answers repeated scrapes from that text: the files change
  no more often, so a flood costs HTTP parsing only;
- speaks HTTP through the same guarded protocol as the public port (head limits, read deadlines);
- adds every service process' CPU, memory and descriptors, read from /proc (process_metrics.py), and the
  interpreter's version (prometheus_client's PlatformCollector);
- appends the samples of a Prometheus text file when one is given (`--textfile`: the capture's
  live-quality gauges, which `pipeline evaluate` writes), read at each rendering like node_exporter's
  textfile collector: a file over `MAX_TEXTFILE_BYTES`, unreadable, not Prometheus text or naming a
  family the workers export is left out and counted in `model_service_textfile_errors_total{reason}`,
  never a failed scrape.

It ignores SIGINT and SIGTERM so that scrapes go on while the workers drain; the launcher kills it once
they are gone, and the kernel kills it if the launcher dies (parent-death signal). It is a program of its
own (`python -m model_service.server.metrics_server`), not a multiprocessing child: `ps` names it, and no
resource-tracker process comes with it.
"""

import argparse
import contextlib
import ctypes
import functools
import itertools
import json
import math
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from model_service.contract.capture import TEXTFILE_ERROR_REASONS, TEXTFILE_ERRORS
from model_service.operations.logs import LOG_CONFIG
from model_service.server.http import GuardedHttpToolsProtocol, HttpLimits
from model_service.server.process_metrics import ServiceProcessCollector

METRICS_PATH = "/metrics"
RENDER_INTERVAL_S = 0.5
"""The workers' FLUSH_INTERVAL_S (model_service/operations/metrics.py; a test keeps them equal): their files
change no more often. Not imported from there: that module's numpy would add some 20 MB to this process."""
NICENESS = 10
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
MAX_TEXTFILE_BYTES = 262_144
"""Largest text file appended to /metrics; a larger one is left out (`too_large`)."""


class MetricsApp:
    """ASGI app of the metrics port: `GET /metrics` from the multiprocess files, anything else a JSON error."""

    def __init__(
        self,
        render_interval_s: float = RENDER_INTERVAL_S,
        textfile: Path | None = None,
        launcher_pid: int | None = None,
    ) -> None:
        self.render_interval_s = render_interval_s
        self.launcher_pid = launcher_pid
        self.textfile = textfile
        self.textfile_errors = dict.fromkeys(TEXTFILE_ERROR_REASONS, 0)
        self._text = b""
        self._rendered_at = -math.inf
        self._ids = itertools.count()

    def render(self) -> bytes:
        """Every worker's series, rendered again only when the last rendering is a flush interval old."""
        now = time.monotonic()
        if now - self._rendered_at >= self.render_interval_s:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            PlatformCollector(registry)
            if self.launcher_pid is not None:
                registry.register(ServiceProcessCollector(self.launcher_pid))
            self._text = generate_latest(registry)
            if self.textfile is not None:
                self._text += self._textfile({metric.name for metric in registry.collect()})
            self._rendered_at = now
        return self._text

    def _textfile(self, exported: set[str]) -> bytes:
        """The text file's samples (none when it is absent or refused), then the refusals counted so far."""
        assert self.textfile is not None
        data, reason = b"", None
        try:
            with self.textfile.open("rb") as file:
                data = file.read(MAX_TEXTFILE_BYTES + 1)
        except FileNotFoundError:
            pass  # nothing evaluated yet
        except OSError:
            reason = "unreadable"
        if len(data) > MAX_TEXTFILE_BYTES:
            reason, data = "too_large", b""
        elif data:
            try:
                families = {family.name for family in text_string_to_metric_families(data.decode())}
            except (UnicodeDecodeError, ValueError, IndexError, KeyError):
                reason, families = "malformed", set()
            if families & exported:
                reason = "malformed"  # a second family of one name would make the whole scrape invalid
        if reason is not None:
            self.textfile_errors[reason] += 1
            data = b""
        elif data and not data.endswith(b"\n"):
            data += b"\n"
        counts = "".join(
            f'{TEXTFILE_ERRORS}_total{{reason="{reason}"}} {n}\n'
            for reason, n in self.textfile_errors.items()
        )
        head = (
            f"# HELP {TEXTFILE_ERRORS}_total text file contents left out of /metrics, by reason\n"
            f"# TYPE {TEXTFILE_ERRORS}_total counter\n"
        )
        return data + (head + counts).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path == METRICS_PATH and method in {"GET", "HEAD"}:
            body = self.render()
            headers = [
                (b"content-type", CONTENT_TYPE_LATEST.encode()),
                (b"content-length", b"%d" % len(body)),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
            return
        if path == METRICS_PATH:
            status, code, message = 405, "method_not_allowed", f"method {method} not allowed on {path}"
        else:
            status, code = 404, "not_found"
            message = f"no route {path} on the metrics port; it serves {METRICS_PATH} only"
        error = {"code": code, "message": message, "request_id": f"metrics-{next(self._ids):x}"}
        body = orjson.dumps({"error": error})
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _UnsignalledServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The launcher ends this process; SIGINT/SIGTERM to the process group must not stop scrapes early.
        yield


def _die_with_parent(launcher_pid: int) -> None:
    """SIGKILL from the kernel when the launcher dies (Linux; elsewhere the launcher's kill must do)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Compared with the launcher's pid, not with 1: in a container the launcher itself is pid 1.
    if os.getppid() != launcher_pid:  # the launcher died before the request took effect
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """`python -m model_service.server.metrics_server --fd N --launcher-pid P --http-limits JSON
    --keep-alive-timeout-s S`: started by the launcher, which bound the socket (descriptor N, inherited)."""
    parser = argparse.ArgumentParser(prog="python -m model_service.server.metrics_server")
    parser.add_argument("--fd", type=int, required=True, help="the bound, listening metrics socket")
    parser.add_argument("--launcher-pid", type=int, required=True, help="the launcher's pid")
    parser.add_argument("--http-limits", type=json.loads, required=True, help="HttpLimits' fields as JSON")
    parser.add_argument("--keep-alive-timeout-s", type=int, required=True)
    parser.add_argument("--textfile", type=Path, help="a Prometheus text file whose samples /metrics appends")
    args = parser.parse_args(argv)
    _die_with_parent(args.launcher_pid)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    os.nice(NICENESS)
    config = uvicorn.Config(
        MetricsApp(textfile=args.textfile, launcher_pid=args.launcher_pid),
        lifespan="off",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        log_level="warning",
        log_config=LOG_CONFIG,
        loop="asyncio",
        http=functools.partial(GuardedHttpToolsProtocol, limits=HttpLimits(**args.http_limits)),  # type: ignore[arg-type]
        timeout_keep_alive=args.keep_alive_timeout_s,
    )
    _UnsignalledServer(config).run(sockets=[socket.socket(fileno=args.fd)])


if __name__ == "__main__":
    main()
