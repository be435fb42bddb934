"""The service's lock file: a wheelhouse of it for an offline image build, its SBOM and its audit.

The image installs exactly the lock (`--require-hashes --no-deps --no-index`), so the lock is the
image's Python environment: the SBOM and the audit are made from it, outside the image.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.workspace import Workspace, read_json

LOCK_FILE = Path(__file__).resolve().parents[2] / "model_service" / "requirements.lock"
# pip does not widen a PEP 600 tag given with --platform to older glibc tags: list those the base
# (glibc 2.36 in bookworm) accepts.
_PLATFORM_TAGS = {
    "linux/amd64": [
        f"manylinux{tag}_x86_64"
        for tag in ("_2_28", "_2_27", "_2_24", "_2_17", "2014", "_2_12", "2010", "_2_5", "1")
    ]
}


def wheelhouse(workspace: Workspace, platform: str, reporter: Reporter) -> Path:
    """Wheels of every locked dependency for the target platform, cached by the lock's hash."""
    lock_hash = hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()[:16]
    folder = workspace.root / "build" / "wheelhouse" / f"{platform.replace('/', '-')}-{lock_hash}"
    done = folder / ".complete"
    if done.is_file():
        reporter.note(f"reused wheelhouse {folder}")
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--no-deps", "--require-hashes",
        *(arg for tag in _PLATFORM_TAGS[platform] for arg in ("--platform", tag)),
        "--python-version", "3.11", "--implementation", "cp",
        "-r", str(LOCK_FILE), "-d", str(folder),
    ]  # fmt: skip
    reporter.note(f"downloading the wheelhouse of {LOCK_FILE.name} for {platform}")
    done_proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if done_proc.returncode != 0:
        tail = " ".join((done_proc.stderr or done_proc.stdout).strip().splitlines()[-3:])
        msg = f"could not download the wheelhouse for {LOCK_FILE} (a package index must answer): {tail}"
        raise StageError(msg)
    done.write_text(lock_hash + "\n", encoding="utf-8")
    return folder


def write_sbom(path: Path, reporter: Reporter) -> bool:
    """CycloneDX JSON of the image's Python environment, from the lock that pip installed it from.

    The image installs exactly the lock (`--require-hashes --no-deps --no-index`), so the lock is that
    environment's full list; this needs neither the image's interpreter nor cyclonedx inside the image.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "cyclonedx_py", "requirements", str(LOCK_FILE)]
    command += ["--of", "JSON", "--output-reproducible", "-o", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reporter.warn(f"no SBOM: cyclonedx-py failed: {(done.stderr or done.stdout).strip()[-300:]}")
        return False
    reporter.note(f"SBOM (CycloneDX): {path}")
    return True


def audit_lock(path: Path, reporter: Reporter) -> dict[str, Any]:
    """pip-audit of the lock; a clear note, not a failure, when the vulnerability database is out of reach."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip_audit", "--requirement", str(LOCK_FILE), "--disable-pip", "--no-deps",
        "--progress-spinner", "off", "--format", "json", "--output", str(path),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    except subprocess.TimeoutExpired:
        reporter.warn("pip-audit: no answer from its vulnerability database within 300s; not audited")
        return {"status": "unreachable", "vulnerabilities": None}
    if path.is_file() and done.returncode in {0, 1}:
        found = read_json(path)
        vulns = [
            f"{dep['name']} {dep['version']} {v['id']}"
            for dep in found.get("dependencies", [])
            for v in dep.get("vulns", [])
        ]
        if vulns:
            reporter.warn(f"pip-audit: {len(vulns)} known vulnerabilities: {', '.join(vulns[:5])}")
        else:
            reporter.note("pip-audit: no known vulnerabilities in the lock")
        return {"status": "vulnerable" if vulns else "clean", "vulnerabilities": vulns}
    reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    reporter.warn(
        f"pip-audit could not reach its vulnerability database (offline?); not audited: {reason[0]}"
    )
    return {"status": "unreachable", "vulnerabilities": None, "reason": reason[0]}
