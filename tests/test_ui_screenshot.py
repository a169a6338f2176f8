"""The pipeline run in the Prefect UI: headless Chromium opens the run page and the run's STS
comparison and curation report artifacts on the real server of test_ops_server (the demo
deployment run by a process worker), and saves screenshots.

Needs Debian's ``chromium`` (``apt-get install chromium``); without it the test is skipped with
that reason. Chromium starts with background networking disabled (the machine is offline) and
without its sandbox (containers run it as root). Set ``MULTICSR_SCREENSHOT_DIR`` to keep the PNGs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.register_assert_rewrite("ops_fixtures")
pytest_plugins = ["ops_fixtures"]

WINDOW = (1400, 1000)


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium not installed (Debian: apt-get install chromium); the UI screenshot needs a browser")


def _headless(chromium: str, url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, "--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
               "--disable-dev-shm-usage", "--hide-scrollbars", "--no-first-run", f"--user-data-dir={profile}",
               f"--window-size={WINDOW[0]},{WINDOW[1]}",
               "--virtual-time-budget=20000",  # let the single-page app fetch and render before capture
               *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def _page(chromium: str, url: str, png: Path, profile: Path, expect: list[str]) -> None:
    """Screenshot ``url`` into ``png`` and check that the rendered page shows every ``expect``
    text (the DOM after the app's scripts ran; a loaded machine may need a second look)."""
    shot = _headless(chromium, url, profile, f"--screenshot={png}")
    assert png.is_file(), f"chromium wrote no screenshot (exit {shot.returncode}): {shot.stderr[-2000:]}"
    for _ in range(3):
        dom = _headless(chromium, url, profile, "--dump-dom").stdout
        if all(text in dom for text in expect):
            break
    missing = [text for text in expect if text not in dom]
    assert not missing, f"{url} rendered without {missing}"
    assert "Can't connect to Server API" not in dom
    _assert_nontrivial_png(png)


def _assert_nontrivial_png(png: Path) -> None:
    from PIL import Image

    assert png.stat().st_size > 20_000, f"{png} is only {png.stat().st_size} bytes"
    with Image.open(png) as image:
        assert image.size == WINDOW
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, f"{png} has {len(colours or [])} colours: a blank page?"


@pytest.mark.slow
def test_run_page_and_artifacts_render(chromium, demo_worker_run, live_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with live_server.settings(), get_client(sync_client=True) as client:
        run = client.read_flow_run(demo_worker_run.flow_run_id)
        artifacts = {a.key: a.id for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))}
    keep = Path(os.environ.get("MULTICSR_SCREENSHOT_DIR") or tmp_path)
    keep.mkdir(parents=True, exist_ok=True)
    profile = tmp_path / "chromium-profile"

    # the run: its state, deployment and work pool, the task graph (a canvas) and the logs
    _page(chromium, f"{live_server.ui}/runs/flow-run/{run.id}", keep / "flow-run.png", profile,
          expect=[run.name, "Completed", "demo-snli"])
    # the artifacts the run published: the STS before/after table and the curation report
    _page(chromium, f"{live_server.ui}/artifacts/artifact/{artifacts['sts-comparison']}", keep / "sts-comparison.png",
          profile, expect=["sts-comparison", "STS16", run.name])
    _page(chromium, f"{live_server.ui}/artifacts/artifact/{artifacts['curation-report']}",
          keep / "curation-report.png", profile,
          expect=["Curation report", "kept", run.name, '<img src="data:image/png;base64,'])  # the figures, inline
