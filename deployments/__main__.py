"""``python -m multicsr.deployments list | register | yaml``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="The pipeline's Prefect deployments (one per LLM/backbone combination).")


def _specs(only: Optional[list[str]]):
    from multicsr.deployments.specs import DEPLOYMENTS, get_deployment

    try:
        return [get_deployment(name) for name in only] if only else list(DEPLOYMENTS)
    except KeyError as exc:
        raise typer.BadParameter(exc.args[0]) from None


@app.command("list")
def list_() -> None:
    """Print each deployment: name, preset, work pool, schedule."""
    from multicsr.deployments.specs import DEPLOYMENTS, FLOW_NAME

    for spec in DEPLOYMENTS:
        typer.echo(f"{FLOW_NAME}/{spec.name}\tpreset={spec.preset}\tpool={spec.work_pool}\tcron={spec.cron or '-'}")


@app.command()
def register(
    only: Annotated[Optional[list[str]], typer.Option("--only", help="deployment name (repeatable; default: all)")] = None,
    workdir_root: Annotated[Optional[Path], typer.Option(help="each deployment works in <root>/<name> on the worker "
                                                          "(default $MULTICSR_WORKDIR_ROOT, else ~/.cache/multicsr/runs)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="config override section.key=value")] = None,
    cpu_pool: Annotated[str, typer.Option(help="work pool of CPU deployments")] = "multicsr-cpu",
    gpu_pool: Annotated[str, typer.Option(help="work pool of GPU deployments")] = "multicsr-gpu",
    paused: Annotated[bool, typer.Option("--paused/--active", envvar="MULTICSR_PAUSE_SCHEDULES",
                                         help="register the cron schedules (the nightly GPU rebuilds) inactive: "
                                              "use --paused where no GPU worker polls the pool")] = False,
    create_pools: Annotated[bool, typer.Option("--create-pools", help="create missing process work pools")] = False,
    wait: Annotated[float, typer.Option(help="seconds to wait for the server to answer (one just started)")] = 60.0,
) -> None:
    """Create or update the deployments on the server PREFECT_API_URL names.

    Each carries the data root, workdir root and model caches, resolved here to absolute paths, in
    its `env` job variable (set MULTICSR_DATA_ROOT and MULTICSR_MODEL_CACHE to choose them).
    """
    from multicsr.deployments.register import register as do_register
    from multicsr.deployments.register import wait_for_api
    from multicsr.deployments.specs import default_workdir_root

    from prefect.settings import PREFECT_API_URL

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if not url:
        raise typer.BadParameter("no Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
    if (error := wait_for_api(wait)) is not None:
        raise typer.BadParameter(f"no Prefect server answers at {url} after {wait:g} s ({error}): "
                                 "start one (prefect server start) or fix PREFECT_API_URL")
    root = workdir_root.expanduser().resolve() if workdir_root else default_workdir_root()
    ids = do_register(_specs(only), root, set_, cpu_pool=cpu_pool, gpu_pool=gpu_pool, paused=paused,
                      create_pools=create_pools)
    typer.echo(json.dumps(ids, indent=2))


@app.command()
def yaml(output: Annotated[Path, typer.Option("--output", "-o")] = Path("prefect.yaml"),
         check: Annotated[bool, typer.Option("--check", help="exit 1 if the file differs instead of writing")] = False
         ) -> None:
    """Write prefect.yaml (the same deployments, for `prefect deploy --all`)."""
    from multicsr.deployments.register import prefect_yaml

    text = prefect_yaml()
    if check:
        current = output.read_text(encoding="utf-8") if output.is_file() else ""
        if current != text:
            typer.echo(f"{output} is out of date: run `python -m multicsr.deployments yaml -o {output}`", err=True)
            raise typer.Exit(1)
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}")


if __name__ == "__main__":
    app()
