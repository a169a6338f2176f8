"""What a worker needs travels with the deployments: both registration routes (the Python
registrar and ``prefect deploy`` on prefect.yaml) give every deployment absolute paths for the
data root, the workdir root and the model caches in its ``env`` job variable, also on a machine
where none of the MULTICSR_* variables is set (a process worker runs each flow in a temporary
folder, so relative defaults point at nothing there, and Prefect fills an unset ``{{ $VAR }}``
with "", which put workdirs at ``/<deployment>``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from multicsr.deployments.specs import DEPLOYMENTS, WORKDIR_ROOT_ENV, WORKER_ENV_NAMES, get_deployment


pytest.register_assert_rewrite("ops_fixtures")

from ops_fixtures import REPO, run_cli  # noqa: E402

pytest_plugins = ["ops_fixtures"]


def _fresh_machine_env(server, home: Path) -> dict[str, str]:
    """The server's client environment with no MULTICSR_* variable and an empty home."""
    env = {k: v for k, v in server.env().items() if not k.startswith("MULTICSR_")}
    env["HOME"] = str(home)
    return env


def _read(server, names: list[str]) -> dict:
    from prefect.client.orchestration import get_client

    with server.settings(), get_client(sync_client=True) as client:
        return {name: client.read_deployment_by_name(f"multicsr-pipeline/{name}") for name in names}


def _expected_env(home: Path, cwd: Path) -> dict[str, str]:
    """The defaults a fresh machine resolves, written out from the documented rules."""
    shared = (cwd / ".." / "shared" / "data").resolve()
    return {"MULTICSR_DATA_ROOT": str(shared if shared.is_dir() else home / ".cache" / "multicsr" / "data"),
            WORKDIR_ROOT_ENV: str(home / ".cache" / "multicsr" / "runs"),
            "MULTICSR_MODEL_CACHE": str(home / ".cache" / "multicsr" / "models")}


def _ensure_pool(server, name: str) -> None:
    from multicsr.deployments.register import ensure_process_pool

    with server.settings():
        ensure_process_pool(name)


def test_prefect_yaml_without_the_variables_gives_absolute_paths(live_server, tmp_path):
    """``prefect deploy`` of the repository's prefect.yaml on a machine with no MULTICSR_* variable."""
    home = tmp_path / "home"
    home.mkdir()
    env = _fresh_machine_env(live_server, home)
    _ensure_pool(live_server, "multicsr-cpu")
    # one deployment keeps the test short; the generator writes every entry alike (test_ops_server
    # keeps prefect.yaml equal to its output) and the static test below reads them all
    run_cli(["prefect", "--no-prompt", "deploy", "--name", "demo-snli"], env, cwd=REPO)
    expected = _expected_env(home, REPO)
    d = _read(live_server, ["demo-snli"])["demo-snli"]
    assert d.parameters["workdir"] == f"{expected[WORKDIR_ROOT_ENV]}/demo-snli", d.parameters["workdir"]
    assert d.job_variables["env"] == expected


def test_every_prefect_yaml_entry_carries_the_worker_environment():
    import yaml

    document = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    steps = [next(iter(step)) for step in document["build"]]
    assert steps == ["multicsr.deployments.register.export_worker_environment"]  # fills the unset variables
    assert [entry["name"] for entry in document["deployments"]] == [spec.name for spec in DEPLOYMENTS]
    for entry in document["deployments"]:
        assert entry["work_pool"]["job_variables"]["env"] == {name: "{{ $" + name + " }}" for name in WORKER_ENV_NAMES}
        assert entry["parameters"]["workdir"] == "{{ $" + WORKDIR_ROOT_ENV + " }}/" + entry["name"]


def test_registrar_without_the_variables_gives_the_same_paths(live_server, tmp_path, monkeypatch):
    """``python -m multicsr.deployments register`` (README's route; its typer app, in this process)
    resolves the same defaults as prefect.yaml; ``MULTICSR_PAUSE_SCHEDULES`` (what compose sets)
    registers the nightly GPU rebuilds inactive, so they do not go Late on a stack without a GPU
    worker; a root given on the command line reaches both the workdir and the worker's environment."""
    from typer.testing import CliRunner

    from multicsr.deployments.__main__ import app

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(REPO)
    fresh = {**{k: None for k in os.environ if k.startswith("MULTICSR_")}, "HOME": str(home),
             "PREFECT_API_URL": live_server.url, "MULTICSR_PAUSE_SCHEDULES": "true"}
    runner = CliRunner()
    with live_server.settings():
        result = runner.invoke(app, ["register", "--only", "demo-snli", "--only", "flan-t5-xl-bert", "--create-pools",
                                     "--cpu-pool", "ops-env-cpu", "--gpu-pool", "ops-env-gpu"], env=fresh)
    assert result.exit_code == 0, result.output
    expected = _expected_env(home, REPO)
    deployments = _read(live_server, ["demo-snli", "flan-t5-xl-bert"])
    assert deployments["demo-snli"].job_variables["env"] == expected
    assert deployments["demo-snli"].parameters["workdir"] == f"{expected[WORKDIR_ROOT_ENV]}/demo-snli"
    nightly = deployments["flan-t5-xl-bert"]
    assert get_deployment("flan-t5-xl-bert").cron and nightly.schedules
    assert not any(s.active for s in nightly.schedules)

    root = tmp_path / "chosen-root"
    monkeypatch.chdir(tmp_path)  # no ../shared/data here: the data root is the variable's
    with live_server.settings():
        result = runner.invoke(app, ["register", "--only", "demo-snli", "--cpu-pool", "ops-env-cpu", "--workdir-root",
                                     str(root), "--active"], env={**fresh, "MULTICSR_DATA_ROOT": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    d = _read(live_server, ["demo-snli"])["demo-snli"]
    assert d.parameters["workdir"] == f"{root}/demo-snli"
    assert d.job_variables["env"] == {**expected, WORKDIR_ROOT_ENV: str(root), "MULTICSR_DATA_ROOT": str(tmp_path / "data")}
    assert all(os.path.isabs(value) for value in d.job_variables["env"].values())
