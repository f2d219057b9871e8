"""Render the demo's saga trace in Arize Phoenix with headless Chromium and save it as a PNG.

    python exporters/screenshot_trace.py [--out docs/trace.png]

Run from the repository root. It starts ``phoenix serve`` on 127.0.0.1 (free ports, a temporary working
directory), runs ``demo/agent.py`` exporting its spans there over OTLP/HTTP, waits for the spans of the
``trip_booking`` run (the trip whose payment fails and whose bookings are compensated), opens that
trace in Phoenix's web UI (``/projects/<project id>/traces/<trace id>``) in headless Chromium and
saves a screenshot. Phoenix is stopped and the temporary directories are removed at the end.

Needs Arize Phoenix (``pip install -e '.[dev]'``) and Chromium (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "agent.py"
PROJECT = "agent-relay-demo"
SESSION_SPAN = "invoke_agent trip_booking"
# the saga's tool spans: two bookings, the declined payment, then the compensations, latest first
TOOL_SPANS = frozenset(
    f"execute_tool {name}"
    for name in ("book_flight", "book_hotel", "charge_card", "cancel_hotel", "cancel_flight")
)
# Chromium on a closed network: no background requests, no first-run UI, a fresh profile
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class StepError(Exception):
    """A step failed; the message says which and why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _paged(url: str) -> list[dict[str, Any]]:
    """All ``data`` items of a paginated Phoenix REST listing (``next_cursor``)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        sep = "&" if "?" in url else "?"
        page = _get_json(f"{url}{sep}cursor={quote(cursor)}" if cursor else url)
        items += page["data"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextmanager
def phoenix_server(phoenix: str, work: Path, timeout: float = 120.0) -> Iterator[str]:
    """``phoenix serve`` on 127.0.0.1 with free ports; yields its base URL once /healthz answers 200."""
    http_port, grpc_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    base = f"http://127.0.0.1:{http_port}"
    log_path = work / "phoenix.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([phoenix, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None:
                    raise StepError(f"phoenix serve exited ({proc.returncode}):\n{_tail(log_path)}")
                if time.monotonic() > deadline:
                    raise StepError(f"phoenix serve did not answer {base}/healthz in {timeout:.0f} s")
                time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_demo(base: str, work: Path) -> None:
    """``demo/agent.py`` in ``work`` (its SQLite ledger lands there), exporting its spans to Phoenix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_RELAY_"))}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": base,
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={PROJECT}",
        }
    )
    try:
        proc = subprocess.run(
            [sys.executable, str(DEMO)], cwd=work, env=env, capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired as exc:
        raise StepError("demo/agent.py did not finish in 180 s") from exc
    if proc.returncode != 0:
        raise StepError(f"demo/agent.py failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def saga_trace_id(base: str, timeout: float = 60.0) -> str:
    """The trace id of the ``trip_booking`` run, once its session span and all its tool spans arrived."""
    url = f"{base}/v1/projects/{quote(PROJECT)}/spans?limit=1000"
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while True:
        try:
            spans = _paged(url)
        except (OSError, ValueError, KeyError):
            spans = []  # the project appears with its first span; until then the listing is a 404
        sessions = [s for s in spans if s["name"] == SESSION_SPAN]
        if sessions:
            trace_id = str(sessions[-1]["context"]["trace_id"])
            seen = {s["name"] for s in spans if s["context"]["trace_id"] == trace_id}
            if seen >= TOOL_SPANS:
                return trace_id
        if time.monotonic() > deadline:
            missing = sorted(({SESSION_SPAN} | TOOL_SPANS) - seen)
            raise StepError(
                f"spans of the trip_booking run did not reach Phoenix in {timeout:.0f} s: {missing}"
            )
        time.sleep(0.5)


def project_id(base: str) -> str:
    """Phoenix's id of the project (the UI routes by id, not by name)."""
    for project in _paged(f"{base}/v1/projects"):
        if project["name"] == PROJECT:
            return str(project["id"])
    raise StepError(f"project {PROJECT!r} not found in {base}/v1/projects")


def screenshot(
    chromium: str, url: str, out: Path, profile: Path, width: int, height: int, budget_ms: int
) -> str:
    """Load ``url`` in headless Chromium, let the app render for ``budget_ms`` of virtual time, save a PNG
    of the window to ``out``; returns the rendered DOM (to check what the picture shows)."""
    out.unlink(missing_ok=True)
    command = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        f"--virtual-time-budget={budget_ms}",
        f"--screenshot={out}",
        "--dump-dom",
        url,
    ]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120 + budget_ms / 1000)
    except subprocess.TimeoutExpired as exc:
        raise StepError(f"chromium did not finish loading {url}") from exc
    if proc.returncode != 0 or not out.exists():
        raise StepError(f"chromium failed ({proc.returncode}) on {url}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "trace.png", help="PNG to write")
    parser.add_argument("--width", type=int, default=1600, help="browser window width (px)")
    parser.add_argument("--height", type=int, default=1000, help="browser window height (px)")
    parser.add_argument("--chromium", default="chromium", help="Chromium executable (default: chromium)")
    args = parser.parse_args(argv)

    chromium = shutil.which(args.chromium) if args.chromium else None
    if chromium is None:
        print(
            f"error: {args.chromium!r} not found; install Chromium: apt-get install chromium", file=sys.stderr
        )
        return 1
    phoenix = shutil.which("phoenix", path=str(Path(sys.executable).parent)) or shutil.which("phoenix")
    if phoenix is None:
        print("error: Arize Phoenix not found; install it: pip install -e '.[dev]'", file=sys.stderr)
        return 1

    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="agent-relay-screenshot-") as tmp:
            tmp_path = Path(tmp)
            for name in ("phoenix", "demo", "chromium"):
                (tmp_path / name).mkdir()
            with phoenix_server(phoenix, tmp_path / "phoenix") as base:
                print(f"phoenix serve: {base}")
                run_demo(base, tmp_path / "demo")
                trace_id = saga_trace_id(base)
                url = f"{base}/projects/{project_id(base)}/traces/{trace_id}"
                print(f"trip_booking trace: {url}")
                # a JS app: give it virtual time to fetch and render; retry once with more if it did not
                for budget_ms in (15_000, 30_000):
                    dom = screenshot(
                        chromium, url, out, tmp_path / "chromium", args.width, args.height, budget_ms
                    )
                    if all(name in dom for name in TOOL_SPANS | {SESSION_SPAN}):
                        break
                else:
                    raise StepError(f"the span tree did not render in Phoenix's UI at {url}")
    except StepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
