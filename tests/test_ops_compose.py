"""docker-compose.yml: the topology test_ops_server.py runs without Docker (server on Postgres,
CPU and GPU process workers on the deployments' pools, volumes, healthchecks), checked as data;
and validated by the Compose client itself where one is installed (no Docker engine is needed
for `config`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from multicsr.deployments.specs import CPU_POOL, GPU_POOL, WORKDIR_ROOT_ENV

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"


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
    env = {**os.environ, "POSTGRES_PASSWORD": "not-a-secret", "MULTICSR_DATA": str(tmp_path)}
    result = subprocess.run([*command, "-f", str(COMPOSE), "--profile", "gpu", "config", "-q"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    missing = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], cwd=REPO,
                             env={k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr  # no default password
