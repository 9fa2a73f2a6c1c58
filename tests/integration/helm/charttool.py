"""Running helm and kubectl against the chart, for the chart's tests.

The binaries are the ones hack/cluster builds (helm v3.22, kubectl v1.35): next to the
cluster's kubeconfig when it is running (.cluster/bin), else in the build cache, else
built there now by hack/cluster/build.sh (cached; a no-op once built). Commands are
argument lists, never shell strings; a failing command raises with its output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.integration.cluster.simcluster import HACK_DIR, REPO_ROOT, wait_until
from tests.support.servers import free_port

CHART_DIR = REPO_ROOT / "helm" / "trainyard"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PROMETHEUS_CRDS_SCRIPT = REPO_ROOT / "hack" / "helm" / "prometheus-crds.sh"


class CommandFailed(AssertionError):
    """A helm or kubectl command exited non-zero; the message carries its output."""

    def __init__(self, argv: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"stdout: {result.stdout[-4000:]}\nstderr: {result.stderr[-4000:]}"
        )
        self.result = result


def _pinned(name: str) -> str:
    text = (HACK_DIR / "versions.env").read_text()
    match = re.search(rf"^{name}=(\S+)$", text, re.MULTILINE)
    assert match, f"versions.env names {name}"
    return match.group(1)


def tool(name: str) -> Path:
    """The path of `helm` or `kubectl`, building it (cached) if nothing has yet."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        beside = Path(kubeconfig).parent / "bin" / name
        if beside.exists():
            return beside
    cache = Path(os.environ.get("TRAINYARD_CACHE_DIR") or Path.home() / ".cache" / "trainyard")
    cached = cache / "k8s" / _pinned("K8S_VERSION") / "bin" / name
    if not cached.exists():
        subprocess.run([str(HACK_DIR / "build.sh"), name], check=True, cwd=REPO_ROOT)
    return cached


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 300, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, input=stdin, check=False
    )
    if check and result.returncode != 0:
        raise CommandFailed(argv, result)
    return result


def helm(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run([str(tool("helm")), *args], check=check, timeout=timeout)


def kubectl(*args: str, check: bool = True, stdin: str | None = None, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return run([str(tool("kubectl")), *args], check=check, stdin=stdin, timeout=timeout)


def template_args(
    chart: Path = CHART_DIR,
    values: Sequence[Path] = (),
    sets: Sequence[str] = (),
    release: str = "ty",
    namespace: str = "trainyard",
) -> list[str]:
    argv = ["template", release, str(chart), "--namespace", namespace]
    for path in values:
        argv += ["--values", str(path)]
    for item in sets:
        argv += ["--set", item]
    return argv


def render_text(**kwargs: Any) -> str:
    """`helm template` output (raises CommandFailed when helm refuses the values)."""
    return helm(*template_args(**kwargs)).stdout


def render(**kwargs: Any) -> list[dict[str, Any]]:
    """The objects `helm template` renders, as dicts (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(render_text(**kwargs)) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def chart_copy(destination: Path, *, with_fixture_files: bool) -> Path:
    """A copy of the chart; with the test dashboard and rules file added, or with none.

    The real dashboards/ and rules/ (from the observability work) are kept when adding
    the fixtures, so both are checked by the apiserver; without them the copy shows that
    an empty glob renders no object.
    """
    chart = destination / "trainyard"
    shutil.copytree(CHART_DIR, chart)
    if with_fixture_files:
        (chart / "dashboards").mkdir(exist_ok=True)
        (chart / "rules").mkdir(exist_ok=True)
        shutil.copy(FIXTURES / "test-fixture-dashboard.json", chart / "dashboards")
        shutil.copy(FIXTURES / "test-fixture-alerts.yaml", chart / "rules")
    else:
        shutil.rmtree(chart / "dashboards", ignore_errors=True)
        shutil.rmtree(chart / "rules", ignore_errors=True)
    return chart


def random_free_port() -> int:
    """A free loopback port chosen by the kernel (see tests.support.servers.free_port);
    `served` below notices when a concurrent test took it meanwhile."""
    return free_port()


@contextmanager
def served(argv: Sequence[str], env: dict[str, str], port: int, log_path: Path) -> Iterator[str]:
    """Run `trainyard serve` (argv) until the block exits; yield its URL once it is ready.

    Ready means: this process announced its address on stdout, is still alive, and
    /readyz answers 200, so a reply can never come from another server on the port.
    """
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(list(argv), env=env, stdout=log, stderr=subprocess.STDOUT)
        try:

            def ready() -> bool:
                if process.poll() is not None:
                    raise AssertionError(
                        f"serve exited {process.returncode}: {log_path.read_text()[-3000:]}"
                    )
                if f"Trainyard API: {url}" not in log_path.read_text():
                    return False
                try:
                    return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(f"{' '.join(argv[:3])} to answer /readyz on {url}", ready, timeout=180)
            yield url
            assert process.poll() is None, f"serve died: {log_path.read_text()[-3000:]}"
        finally:
            process.terminate()
            process.wait(timeout=30)
