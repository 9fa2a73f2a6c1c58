"""The control-plane image (top-level Dockerfile) without a container engine.

No Docker or other engine runs here, so the image itself is never built. What it
would contain is rebuilt the same way instead: the wheel built from exactly the files
the Dockerfile copies, installed with the `postgres` extra into a fresh virtualenv that
sees nothing of this machine's packages (so no torch), and the image's ENTRYPOINT and
ENV run from that virtualenv against the test cluster. The Dockerfile's security lines
(multi-stage, pinned slim base, non-root user) are checked as text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.cluster.simcluster import REPO_ROOT, Cluster
from tests.integration.helm.charttool import random_free_port, served

DOCKERFILE = REPO_ROOT / "Dockerfile"
CONSTRAINTS = "image-constraints.txt"
COPIED = ("pyproject.toml", "README.md", CONSTRAINTS, "trainyard")
"""What the Dockerfile's build stage copies into the build context (checked below)."""


def pinned(lines: list[str]) -> dict[str, str]:
    """name -> version of `name==version` lines (names normalised as pip compares them)."""
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def dockerfile_text() -> str:
    return DOCKERFILE.read_text()


def entrypoint() -> list[str]:
    match = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile_text(), re.MULTILINE)
    assert match, "Dockerfile has an exec-form ENTRYPOINT"
    return json.loads(match.group(1))


def image_env() -> dict[str, str]:
    """The TRAINYARD_* variables the final stage's ENV sets."""
    final_stage = dockerfile_text().rsplit("\nFROM ", 1)[1]
    return dict(re.findall(r"^\s*(TRAINYARD_[A-Z_]+)=(\S+?)\s*\\?$", final_stage, re.MULTILINE))


def test_dockerfile_is_multi_stage_pinned_slim_non_root_and_serves_kubernetes() -> None:
    text = dockerfile_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base[1]), "pinned slim base"
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"], stages
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "numeric non-root user"
    assert entrypoint() == ["trainyard", "serve", "--backend", "kubernetes"]
    assert "[worker" not in text and not re.search(r"pip install[^\n]*torch", text)
    # Every distribution, not only the direct dependencies, is pinned in the image.
    install = re.search(r"/opt/trainyard/bin/pip install (.*)\\$", text, re.MULTILINE)
    assert install and f"--constraint {CONSTRAINTS}" in install[1], "install is not constrained"
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE)
    assert sorted(" ".join(copies).split()) == sorted(COPIED)
    # The chart's defaults match the image: its uid and port.
    values = yaml.safe_load((REPO_ROOT / "helm" / "trainyard" / "values.yaml").read_text())
    assert users[-1] == "{0}:{0}".format(values["podSecurityContext"]["runAsUser"])
    assert image_env()["TRAINYARD_PORT"] == str(values["server"]["port"])
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".cluster", "tests"} <= set(ignored)


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed as the Dockerfile installs it.

    Two differences that change what is installed in no way, only how long it takes
    (together about 4x less): the venv is made without its own pip, and this
    interpreter's pip installs into it (`pip --python`), which skips ensurepip; and
    nothing is byte-compiled at install time (`--no-compile`; the image runs with
    PYTHONDONTWRITEBYTECODE=1 anyway), so only the modules the tests import are
    compiled, when they import them.
    """
    root = tmp_path_factory.mktemp("image")
    context = root / "context"
    context.mkdir()
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, context / name)
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(context)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = wheels.glob("trainyard-*.whl")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False, clear=True).create(env_dir)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
         "--quiet", "--disable-pip-version-check", "--no-compile",
         "--constraint", str(context / CONSTRAINTS), f"{wheel}[postgres]"],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    return env_dir


def isolated_env(env_dir: Path, **extra: str) -> dict[str, str]:
    """An environment that reaches only `env_dir`'s packages (no PYTHONPATH, no repo)."""
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR")}
    return {**keep, "PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", **extra}


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_without_torch(image_venv: Path, tmp_path: Path) -> None:
    python = str(image_venv / "bin" / "python")
    probe = subprocess.run(
        [python, "-c", "import importlib.util as u, trainyard, json; print(json.dumps(["
         "u.find_spec('torch') is None, u.find_spec('psycopg') is not None, trainyard.__file__"
         "]))"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=isolated_env(image_venv),
    )  # fmt: skip
    no_torch, has_psycopg, location = json.loads(probe.stdout)
    assert no_torch, "torch is installed in the control-plane environment"
    assert has_psycopg, "the postgres extra (psycopg) is missing"
    assert location.startswith(str(image_venv)), f"imported from {location}, not the wheel"
    # The Alembic scripts are package data: without them the store cannot migrate.
    migrations = list(Path(location).parent.glob("store/migrations/versions/*.py"))
    assert migrations, "the wheel lacks the migrations"
    usage = subprocess.run(
        [str(image_venv / "bin" / entrypoint()[0]), "serve", "--help"],
        capture_output=True, text=True, check=True, env=isolated_env(image_venv), cwd=tmp_path,
    )  # fmt: skip
    assert "--backend" in usage.stdout and "kubernetes" in usage.stdout


@pytest.mark.slow
def test_every_installed_distribution_is_pinned_by_the_constraints(image_venv: Path) -> None:
    """The image's dependency tree is the committed one: every distribution the install
    resolved is pinned in image-constraints.txt at that version, and no pin is stale.

    Regenerate after a dependency change: build the venv as above without --constraint
    and write `pip --python VENV/bin/python freeze --exclude trainyard` into the file.
    """
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(image_venv / "bin" / "python"), "freeze",
         "--exclude", "trainyard"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    installed = pinned(frozen)
    constrained = pinned((REPO_ROOT / CONSTRAINTS).read_text().splitlines())
    both = installed.keys() & constrained.keys()
    moved = sorted(k for k in both if installed[k] != constrained[k])
    assert installed == constrained, (
        f"installed but not pinned: {sorted(installed.keys() - constrained.keys())}; "
        f"pinned but not installed: {sorted(constrained.keys() - installed.keys())}; "
        f"other versions: {moved}"
    )
    # The direct dependencies' pins (pyproject.toml's `dependencies`) are the installed ones.
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    direct = pinned([re.sub(r"\[[^]]*\]", "", line) for line in project["dependencies"]])
    assert {name: installed.get(name) for name in direct} == direct


@pytest.mark.slow
@pytest.mark.cluster
def test_image_entrypoint_serves_the_kubernetes_cluster(
    image_venv: Path, kube_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The image's ENTRYPOINT and ENV, run from the wheel's venv with the cluster's kubeconfig.

    Only the address differs from the image: loopback and a free port instead of
    0.0.0.0:8080, and a temporary home instead of /var/lib/trainyard.
    """
    argv = entrypoint()
    argv[0] = str(image_venv / "bin" / argv[0])
    port = random_free_port()
    home = tmp_path / "home"
    env = {**image_env(), "TRAINYARD_HOME": str(home),
           "TRAINYARD_HOST": "127.0.0.1", "TRAINYARD_PORT": str(port),
           "TRAINYARD_KUBECONFIG": str(kube_cluster.kubeconfig),
           "TRAINYARD_NAMESPACE": namespace}  # fmt: skip
    log = tmp_path / "serve.log"
    with served(argv, isolated_env(image_venv, **env), port, log) as url:
        token = (home / "admin-token").read_text().strip()
        reply = httpx.get(
            f"{url}/v1/cluster", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["backend"] == "kubernetes"
    assert body["nodes"], f"the kubernetes backend saw no nodes: {body}"
    assert "backend: kubernetes" in log.read_text()


READ_ONLY_ROOT = """
set -eu
# In a mount namespace of our own: only the home and TMPDIR stay writable, as in the
# chart's pod (readOnlyRootFilesystem, the store's volume at the home, /tmp an emptyDir).
mount --make-rprivate /
mount --bind "$TRAINYARD_HOME" "$TRAINYARD_HOME"
mount --bind "$TMPDIR" "$TMPDIR"
for target in / "$VENV" "$KUBECONFIG_DIR"; do
  mount -o remount,bind,ro "$(findmnt -n -o TARGET --target "$target")"
done
if touch "$VENV/write-probe" 2>/dev/null; then echo "the root is still writable" >&2; exit 3; fi
exec "$@"
"""


@pytest.mark.slow
@pytest.mark.cluster
def test_image_entrypoint_runs_with_a_read_only_root_filesystem(
    image_venv: Path, kube_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The chart's pods run with readOnlyRootFilesystem: the control plane must write
    nothing outside its home (the store's volume) and TMPDIR. No container engine here,
    so a private mount namespace (util-linux `unshare -m`) makes every other path
    read-only for the entrypoint, which must still serve the cluster and its store.
    Skipped, saying why, where this machine refuses a mount namespace (not root, or a
    sandbox without CAP_SYS_ADMIN)."""
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount --make-rprivate /"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.strip()}")
    argv = entrypoint()
    argv[0] = str(image_venv / "bin" / argv[0])
    port = random_free_port()
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    env = {**image_env(), "TRAINYARD_HOME": str(home), "HOME": str(home),
           "TMPDIR": str(scratch), "TRAINYARD_HOST": "127.0.0.1", "TRAINYARD_PORT": str(port),
           "TRAINYARD_KUBECONFIG": str(kube_cluster.kubeconfig), "VENV": str(image_venv),
           "KUBECONFIG_DIR": str(kube_cluster.kubeconfig.parent),
           "TRAINYARD_NAMESPACE": namespace}  # fmt: skip
    wrapped = ["unshare", "--mount", "sh", "-c", READ_ONLY_ROOT, "sh", *argv]
    log = tmp_path / "serve.log"
    with served(wrapped, isolated_env(image_venv, **env), port, log) as url:
        token = (home / "admin-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        nodes = httpx.get(f"{url}/v1/cluster", headers=headers, timeout=30)
        job = {"name": "ro", "workload": {"builtin": "gpt"}, "resources": {"gpu": 0}}
        created = httpx.post(f"{url}/v1/jobs", headers=headers, json=job, timeout=30)
        metrics = httpx.get(f"{url}/metrics", timeout=30)
    assert nodes.status_code == 200 and nodes.json()["nodes"], nodes.text
    assert created.status_code == 201, created.text
    assert metrics.status_code == 200 and "trainyard_" in metrics.text
    assert not (image_venv / "write-probe").exists()
    text = log.read_text()
    assert "Read-only file system" not in text, text[-3000:]
