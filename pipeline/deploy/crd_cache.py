"""The upstream CRD files that render --check validates Argo and Prometheus objects against, pinned by
upstream commit and sha256, downloaded into a cache unless K8S_SCHEMAS_DIR names a folder that holds them.

Checks that read the cache are as strict as checks that read a local folder: the same files, byte for
byte. A file is written only after its sha256 matched: a changed or truncated download is refused and
nothing is kept.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BASE_URL_ENV = "K8S_SCHEMAS_BASE_URL"
"""Where the files are fetched from, as BASE/OWNER/REPO/COMMIT/PATH (default: GitHub's raw files)."""
CACHE_ENV = "K8S_SCHEMAS_CACHE"
"""Cache folder (default: $XDG_CACHE_HOME or ~/.cache, then model-cicd/crds-<pins>)."""
DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
MAX_BYTES = 4 * 1024 * 1024
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PinnedCrd:
    """One upstream CRD file: where it comes from and what its bytes hash to."""

    name: str
    repository: str
    commit: str
    path: str
    sha256: str

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.repository}/{self.commit}/{self.path}"


_ROLLOUTS = ("argoproj/argo-rollouts", "9f8d111d8f8e3e88b6d7f8bbdf62fd3cd863ef9d")
_PROMETHEUS = ("prometheus-operator/prometheus-operator", "6adcebc5076c34f4f55f8f5f7b1e528929373ac7")
_GATEWAY = ("kubernetes-sigs/gateway-api", "8bb74df00e56ec8f944d48c25e6c1c9c2f6848e3")  # tag v1.6.1
_GATEWAY_DIR = "config/crd/standard/gateway.networking.k8s.io_"
_SPARK = ("kubeflow/spark-operator", "38082f3318e9d33f3e4a940c7cf165df6e40b422")
_SPARK_DIR = "charts/spark-operator-chart/crds/sparkoperator.k8s.io_"
PINNED = (
    PinnedCrd(
        "argo-rollouts-rollout-crd.yaml",
        *_ROLLOUTS,
        "manifests/crds/rollout-crd.yaml",
        "4c4f84b29ee91ea5ca8f86b2f019f168f2091821a661b78e3cb3d0dc0f9baf1d",
    ),
    PinnedCrd(
        "argo-rollouts-analysis-template-crd.yaml",
        *_ROLLOUTS,
        "manifests/crds/analysis-template-crd.yaml",
        "5e25e2bdd3851b75707732207e4d79ddd4ebdb69f95cf058cf539f0186678948",
    ),
    PinnedCrd(
        "argo-cd-application-crd.yaml",
        "argoproj/argo-cd",
        "37ee0097cf851bc2dd7665fc081bbce61a7e836e",
        "manifests/crds/application-crd.yaml",
        "9fd0da3e7097ad6d1af614fabd5c960bc7ddb00d768c3ef485a2fda6e9460df8",
    ),
    PinnedCrd(
        "prometheus-operator-servicemonitors-crd.yaml",
        *_PROMETHEUS,
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        "a99047972c9dd7679ce2050b9968e8a08773492e671b3e17abd476d42aa78a32",
    ),
    PinnedCrd(
        "prometheus-operator-prometheusrules-crd.yaml",
        *_PROMETHEUS,
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        "78be98554b9c8506ab2b4f4feb91c5f3a56e536a0a510f3a8e876a459970d56d",
    ),
    PinnedCrd(
        "prometheus-operator-alertmanagerconfigs-crd.yaml",
        *_PROMETHEUS,
        "example/prometheus-operator-crd/monitoring.coreos.com_alertmanagerconfigs.yaml",
        "fed47c462483a47a4d1912bf8a7a3767618644cfdee86dc73d7624c55d6a8b9d",
    ),
    PinnedCrd(
        "gateway-api-httproutes-crd.yaml",
        *_GATEWAY,
        f"{_GATEWAY_DIR}httproutes.yaml",
        "a424a0d6c953b162e71d1d97bb7e75012d8f1ac264e7274f2763d1b96ab39852",
    ),
    PinnedCrd(
        "gateway-api-gateways-crd.yaml",
        *_GATEWAY,
        f"{_GATEWAY_DIR}gateways.yaml",
        "25b885f5870b8fff1ae82efa2628b2761cef3745900c2aecf8fb76629a01255a",
    ),
    PinnedCrd(
        "gateway-api-gatewayclasses-crd.yaml",
        *_GATEWAY,
        f"{_GATEWAY_DIR}gatewayclasses.yaml",
        "53710048ba26f8620eed59d5e51b157ecf040daf5c6eef31a4b991e0808c4be5",
    ),
    PinnedCrd(
        "gateway-api-referencegrants-crd.yaml",
        *_GATEWAY,
        f"{_GATEWAY_DIR}referencegrants.yaml",
        "8c645e9333cfa67790cc2a53e0c00076f88b2bd4230d2b49688c78bc34f9b2c3",
    ),
    PinnedCrd(
        "spark-operator-scheduledsparkapplications-crd.yaml",
        *_SPARK,
        f"{_SPARK_DIR}scheduledsparkapplications.yaml",
        "7e91cad1e3d2250dfc46c2005338592664b889cc1bb4a74f5b01bc2b3147b55c",
    ),
    PinnedCrd(
        "spark-operator-sparkapplications-crd.yaml",
        *_SPARK,
        f"{_SPARK_DIR}sparkapplications.yaml",
        "e03bf7ad5de56546a5f7b8d897f165eb636df4b0808ea456f7300d8366edd05b",
    ),
)
"""The Argo, Prometheus Operator and Gateway API CRD files, and the Spark operator's two that
the spark engine's scheduled batch is validated against (docs/batch.md)."""


class CrdDownloadError(Exception):
    """A pinned file could not be had or did not match its sha256; the message names URL and fix."""


def cache_dir() -> Path:
    """Folder of the downloaded files; its name changes with the pins, so old files never mix in."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    pins = hashlib.sha256("".join(f"{c.name}{c.sha256}" for c in PINNED).encode()).hexdigest()[:12]
    return base / "model-cicd" / f"crds-{pins}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(url: str) -> bytes:
    if not url.startswith(("https://", "http://")):
        raise CrdDownloadError(f"{url}: only http(s) URLs are fetched; check {BASE_URL_ENV}")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            data: bytes = response.read(MAX_BYTES + 1)
    except OSError as exc:
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # the error carries the open response
        raise CrdDownloadError(
            f"cannot download {url}: {exc}; set K8S_SCHEMAS_DIR to a folder holding these files, or retry "
            f"with network access"
        ) from None
    if len(data) > MAX_BYTES:
        raise CrdDownloadError(f"{url} is larger than {MAX_BYTES} bytes: not the pinned CRD file")
    return data


def complete(directory: Path) -> bool:
    """Every pinned file is in `directory` (a failed download leaves the folder, without them)."""
    return all((directory / crd.name).is_file() for crd in PINNED)


def ensure(directory: Path, base_url: str | None = None) -> list[str]:
    """Every pinned file in `directory`, verified; download what is missing or wrong. Return the names
    downloaded. Raise CrdDownloadError on a failed download or a sha256 mismatch (nothing is written)."""
    base_url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    directory.mkdir(parents=True, exist_ok=True)
    fetched = []
    for crd in PINNED:
        target = directory / crd.name
        if target.is_file() and _sha256(target) == crd.sha256:
            continue
        data = _download(crd.url(base_url))
        got = hashlib.sha256(data).hexdigest()
        if got != crd.sha256:
            raise CrdDownloadError(
                f"{crd.url(base_url)} has sha256 {got}, expected {crd.sha256} (upstream {crd.repository} "
                f"{crd.commit} {crd.path}); refusing it, nothing was written"
            )
        with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{crd.name}.", delete=False) as tmp:
            tmp.write(data)
        Path(tmp.name).replace(target)
        fetched.append(crd.name)
    return fetched
