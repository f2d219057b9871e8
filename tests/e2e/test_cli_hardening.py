"""The ``agent-relay`` command where issue 14 found it wanting, run as a user runs it: the ledger it works
on (``--db`` with ``compensate --app`` and ``demo``), its advice (commands that run as written), a trace
URL template with a typo, a missing ledger file, a stdout closed early, unpriced costs, and terminal
escape sequences recorded in a run."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from agent_relay.ledger.schema import SCHEMA_VERSION
from tests.e2e.test_saga_recovery import CRASHING_RUN, TOOLS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

# What a hostile run name, tool name or error message could hold: a window title, a screen clear, an
# OSC-8 hyperlink, a forged line, and the C1 control CSI (U+009B), which some terminals obey too.
EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\\nforged-line\x9b2J"
RAW_CONTROLS = (b"\x1b", b"\x07", "\x9b".encode())  # ESC, BEL, CSI as UTF-8

HOSTILE = textwrap.dedent(
    """
    import sys, warnings
    from agent_relay import AgentRuntime, tool
    EVIL = sys.argv[2]
    runtime = AgentRuntime(sys.argv[1])

    @tool(runtime, name="fetch" + EVIL)
    def fetch(url: str) -> str:
        raise RuntimeError("upstream said " + EVIL)

    @tool(runtime)
    def ok(x: int) -> int:
        return x

    try:
        with runtime.agent_session(name="evil" + EVIL, input_payload={"q": EVIL}):
            ok(1)
            try:
                fetch(EVIL)
            except RuntimeError:
                pass
            raise ValueError("gave up: " + EVIL)
    except ValueError:
        pass
    with runtime.agent_session(name="plain") as plain:
        ok(2)
    with runtime.agent_session(name="many") as many:  # `show` prints more than a pipe's buffer holds
        for i in range(1500):
            ok(i)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with runtime.agent_session(name="unpriced") as unpriced:
            unpriced.record_usage("gpt-4o", 100, 10, cost_usd="0.0123")
            unpriced.record_usage("no-such-model-anywhere", 100, 10)  # unpriced: the cost is a lower bound
    print(plain.run_id, unpriced.run_id, many.run_id)
    runtime.shutdown()
    """
)


# Variables that would make Rich draw for a terminal (or not) whatever stdout is: the tests set them.
TERMINAL_VARIABLES = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "TERM")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without AgentRelay's, OpenTelemetry's and the terminal's variables, plus ``extra``
    (a PYTHONPATH in it goes before the one inherited)."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "AGENT_RELAY_")) and k not in TERMINAL_VARIABLES
    }
    env = {**clean, "PYTHONIOENCODING": "utf-8", **(extra or {})}
    if extra and "PYTHONPATH" in extra and os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join([extra["PYTHONPATH"], os.environ["PYTHONPATH"]])
    return env


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """``agent-relay ARGS`` in a subprocess; stdout and stderr as the raw bytes a terminal would get."""
    return subprocess.run(
        [sys.executable, "-m", "agent_relay.cli", *args],
        cwd=cwd,
        capture_output=True,
        timeout=120,
        env=_env(env),
    )


def one_line_error(out: subprocess.CompletedProcess[bytes], *needles: str) -> str:
    """The one ``error: ...`` line a failed command prints (nothing on stdout), holding every needle."""
    stderr = out.stderr.decode()
    assert out.returncode == 1 and out.stdout == b"", stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def assert_inert(data: bytes) -> None:
    """No byte of ``data`` drives a terminal: no ESC, BEL or C1 CSI."""
    for raw in RAW_CONTROLS:
        assert raw not in data, (raw, data)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A ledger of four runs: one whose names, arguments and errors hold escape sequences, a plain one,
    one with unpriced usage, and one of 1,500 calls."""
    tmp = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{tmp / 'ledger.db'}"
    made = subprocess.run(
        [sys.executable, "-c", HOSTILE, url, EVIL],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=True,
    )
    plain, unpriced, many = made.stdout.split()
    runs = json.loads(cli("--db", url, "runs", "--json", cwd=tmp).stdout)
    evil = next(r["run_id"] for r in runs if r["name"] == "evil" + EVIL)  # the JSON keeps the name exact
    yield {"dir": str(tmp), "db": url, "evil": evil, "plain": plain, "unpriced": unpriced, "many": many}


# --- 8: control characters are shown, never obeyed ---------------------------------------------------


def test_runs_shows_control_characters_as_escapes_and_one_line_per_run(hostile: dict[str, str]) -> None:
    out = cli("--db", hostile["db"], "runs", cwd=Path(hostile["dir"]))
    assert out.returncode == 0, out.stderr
    assert_inert(out.stdout)
    lines = out.stdout.decode().splitlines()
    assert len(lines) == 1 + 4  # the header and the four runs: no forged line
    assert not any(line.startswith("forged-line") for line in lines)
    evil_line = next(line for line in lines if line.startswith(hostile["evil"]))
    assert r"evil\x1b]0;pwned\x07\x1b[2J\x1b]8;;http://evil\x1b\click" in evil_line
    assert r"\nforged-line\x9b2J" in evil_line


def test_show_and_diff_escape_names_tools_arguments_and_errors(hostile: dict[str, str]) -> None:
    tmp = Path(hostile["dir"])
    show = cli("--db", hostile["db"], "show", hostile["evil"], cwd=tmp)
    assert show.returncode == 0, show.stderr
    assert_inert(show.stdout)
    text = show.stdout.decode()
    assert not any(line.startswith("forged-line") for line in text.splitlines())
    assert r"fetch\x1b]0;pwned\x07" in text  # the tool's name
    assert r"RuntimeError: upstream said \x1b]0;pwned\x07\x1b[2J" in text  # the call's error
    assert r"ValueError: gave up: \x1b]0;pwned" in text  # the run's error
    assert r'args {"url":"\u001b]0;pwned\u0007' in text  # arguments: JSON escapes, kept
    diff = cli("--db", hostile["db"], "diff", hostile["evil"], hostile["plain"], cwd=tmp)
    assert diff.returncode == 0, diff.stderr
    assert_inert(diff.stdout)
    assert r"fetch\x1b]0;pwned" in diff.stdout.decode()


def test_json_output_keeps_values_exact_with_c1_controls_escaped(hostile: dict[str, str]) -> None:
    tmp = Path(hostile["dir"])
    for args in (("runs", "--json"), ("show", hostile["evil"], "--json"), ("export", hostile["evil"])):
        out = cli("--db", hostile["db"], *args, cwd=tmp)
        assert out.returncode == 0, out.stderr
        assert_inert(out.stdout)
        assert "\\u009b2J" in out.stdout.decode()
    data = json.loads(cli("--db", hostile["db"], "show", hostile["evil"], "--json", cwd=tmp).stdout)
    assert data["run"]["name"] == "evil" + EVIL
    assert data["calls"][1]["tool_name"] == "fetch" + EVIL and data["calls"][1]["arguments"] == {"url": EVIL}


def test_on_a_terminal_only_styles_are_written(hostile: dict[str, str]) -> None:
    """Rich's tables and trees (a terminal, forced): the only escape sequences are its own colours."""
    tmp = Path(hostile["dir"])
    terminal = {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "TERM": "xterm-256color", "COLUMNS": "400"}
    for args in (("runs",), ("show", hostile["evil"]), ("diff", hostile["evil"], hostile["plain"])):
        out = cli("--db", hostile["db"], *args, cwd=tmp, env=terminal)
        assert out.returncode == 0, out.stderr
        assert b"\x1b[" in out.stdout, "not rendered as on a terminal"
        assert_inert(re.sub(rb"\x1b\[[0-9;]*m", b"", out.stdout))  # SGR colours aside: nothing


def test_error_lines_escape_what_they_quote(tmp_path: Path) -> None:
    (tmp_path / "evilapp.py").write_text(f"raise ImportError({EVIL!r})\n")
    out = cli("compensate", "some-run", "--app", "evilapp:runtime", cwd=tmp_path)
    assert_inert(out.stderr)
    line = one_line_error(out, "cannot load --app 'evilapp:runtime'", r"\x1b]0;pwned\x07")
    assert line.endswith(r"\nforged-line\x9b2J")


def test_compensation_failures_are_printed_escaped(tmp_path: Path) -> None:
    app = textwrap.dedent(
        f"""
        import os
        from agent_relay import AgentRuntime, tool
        runtime = AgentRuntime(os.environ["LEDGER"])

        @tool(runtime, compensation="unbook")
        def book(x: int) -> int:
            return x

        @tool(runtime)
        def unbook(x: int) -> None:
            raise RuntimeError({EVIL!r})
        """
    )
    (tmp_path / "evilapp.py").write_text(app)
    env = {"LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}", "PYTHONPATH": str(tmp_path)}
    crash = "from evilapp import runtime, book\nimport os\nwith runtime.agent_session(name='t') as s:\n"
    crash += "    print(s.run_id, flush=True)\n    book(1)\n    os._exit(3)\n"
    crashed = subprocess.run(
        [sys.executable, "-c", crash],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(env),
        timeout=120,
    )
    run_id = crashed.stdout.split()[0]
    out = cli("compensate", run_id, "--app", "evilapp:runtime", "--force", cwd=tmp_path, env=env)
    assert out.returncode == 1, out.stderr
    assert_inert(out.stdout + out.stderr)
    assert r"RuntimeError: \x1b]0;pwned\x07" in out.stderr.decode()
    assert len(out.stderr.decode().splitlines()) == 1  # one failure, one line


# --- 6: a cost with unpriced usage is a lower bound --------------------------------------------------


def test_a_cost_with_unpriced_usage_is_shown_as_a_lower_bound(hostile: dict[str, str]) -> None:
    tmp = Path(hostile["dir"])
    runs = cli("--db", hostile["db"], "runs", cwd=tmp).stdout.decode().splitlines()
    unpriced = next(line for line in runs if line.startswith(hostile["unpriced"]))
    plain = next(line for line in runs if line.startswith(hostile["plain"]))
    assert " $0.0123+ " in unpriced and "+" not in plain
    rows = json.loads(cli("--db", hostile["db"], "runs", "--json", cwd=tmp).stdout)
    assert {r["run_id"]: r["cost_unknown"] for r in rows}[hostile["unpriced"]] is True
    assert {r["run_id"]: r["cost_unknown"] for r in rows}[hostile["plain"]] is False
    show = cli("--db", hostile["db"], "show", hostile["unpriced"], cwd=tmp).stdout.decode()
    assert "cost $0.0123+ (at least: some usage unpriced)" in show
    data = json.loads(cli("--db", hostile["db"], "show", hostile["unpriced"], "--json", cwd=tmp).stdout)
    assert data["run"]["cost_unknown"] is True


# --- 2: a trace URL template with a typo -------------------------------------------------------------


BAD_TEMPLATES = [
    ("http://jaeger/trace/{nope}", "{nope}"),
    ("http://jaeger/trace/{}", "{}"),
    ("http://jaeger/trace/{trace_id.hex}", "{trace_id.hex}"),
    ("http://jaeger/trace/{trace_id", "malformed"),
    ("http://jaeger/trace/{trace_id:d}", "Unknown format code 'd'"),
]


def test_a_trace_url_template_is_checked_naming_the_allowed_placeholders(hostile: dict[str, str]) -> None:
    tmp = Path(hostile["dir"])
    for template, named in BAD_TEMPLATES:
        out = cli("--db", hostile["db"], "show", hostile["plain"], "--trace-url", template, cwd=tmp)
        one_line_error(out, named, "{trace_id}", "{run_id}")
        from_env = cli(
            "--db", hostile["db"], "show", hostile["plain"], "--json", cwd=tmp,
            env={"AGENT_RELAY_TRACE_URL": template},
        )  # fmt: skip
        one_line_error(from_env, named, "AGENT_RELAY_TRACE_URL")
    good = "http://jaeger/trace/{trace_id}?run={run_id}&x={{literal}}"
    out = cli("--db", hostile["db"], "show", hostile["plain"], "--trace-url", good, "--json", cwd=tmp)
    data = json.loads(out.stdout)
    assert (
        data["trace_url"]
        == f"http://jaeger/trace/{data['run']['trace_id']}?run={hostile['plain']}&x={{literal}}"
    )


# --- 5: a stdout closed early ------------------------------------------------------------------------


def test_a_stdout_closed_early_ends_quietly_with_status_0(hostile: dict[str, str]) -> None:
    """``agent-relay show RUN | head -3``, made certain: the reading end is closed before the command
    writes anything, so every write meets a broken pipe."""
    tmp = Path(hostile["dir"])
    for args in (
        ("runs",),
        ("runs", "--json"),
        ("show", hostile["evil"]),
        ("show", hostile["evil"], "--json"),
        ("diff", hostile["evil"], hostile["plain"]),
        ("export", hostile["evil"]),
    ):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "agent_relay.cli", "--db", hostile["db"], *args],
                cwd=tmp,
                stdout=write_end,
                stderr=subprocess.PIPE,
                timeout=120,
                env=_env(),
            )
        finally:
            os.close(write_end)
        assert (done.returncode, done.stderr) == (0, b""), (args, done.stderr.decode())


def test_show_piped_to_head_succeeds(hostile: dict[str, str]) -> None:
    """``agent-relay show RUN | head -3`` as the issue has it, on a run whose tree is larger than a pipe's
    buffer: the command is still writing when ``head`` exits."""
    command = [sys.executable, "-m", "agent_relay.cli", "--db", hostile["db"], "show", hostile["many"]]
    script = f"set -o pipefail; {shlex.join(command)} | head -3"
    done = subprocess.run(
        ["bash", "-c", script], cwd=hostile["dir"], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and lines[0] == f"run {hostile['many']}  many  succeeded  mode live", lines
    assert lines[1].startswith("  #1 ok  forward  succeeded")


# --- 4: db upgrade never creates a ledger ------------------------------------------------------------


def test_db_upgrade_refuses_a_missing_sqlite_file_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    out = cli("--db", f"sqlite:///{missing}", "db", "upgrade", cwd=tmp_path)
    one_line_error(out, f"no ledger at sqlite:///{missing}", "does not exist")
    assert list(tmp_path.iterdir()) == []  # no file, no -wal, no -journal


# --- 3 and 7: advice that works as written -----------------------------------------------------------


def test_the_schema_version_advice_is_a_command_that_runs(tmp_path: Path) -> None:
    from tests.integration.test_schema_upgrade import build_v1_ledger

    url = f"sqlite:///{tmp_path / 'old.db'}"
    build_v1_ledger(url)
    line = one_line_error(cli("--db", url, "runs", cwd=tmp_path), "schema version 1")
    advice = re.search(r"`(agent-relay [^`]*)`", line)
    assert advice is not None, line
    argv = shlex.split(advice.group(1).replace("<url>", url))
    out = cli(*argv[1:], cwd=tmp_path)  # run exactly what it says
    assert out.returncode == 0, out.stderr
    assert f"schema version 1 -> {SCHEMA_VERSION}" in out.stdout.decode()


def test_the_in_doubt_advice_is_settle_call_and_following_it_finishes_the_unwind(tmp_path: Path) -> None:
    (tmp_path / "trip_tools.py").write_text(TOOLS)
    env = {"PYTHONPATH": str(tmp_path), "WORLD": str(tmp_path / "world.txt")}
    env["LEDGER"] = f"sqlite:///{tmp_path / 'ledger.db'}"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env({**env, "CRASH": "cancel_hotel"}),
        timeout=120,
    )
    run_id = crashed.stdout.split()[0]
    first = cli("compensate", run_id, "--app", "trip_tools:runtime", cwd=tmp_path, env=env)
    assert first.returncode == 1
    failure = first.stderr.decode()
    assert "CallInDoubtError" in failure and "UPDATE" not in failure
    advice = re.search(r'(runtime\.settle_call\("[^"]+", "succeeded", output=\.\.\.\))', failure)
    assert advice is not None, failure
    assert 'runtime.settle_call("' in failure and '", "failed")' in failure
    # the hotel was in fact never cancelled... say it was, as the advice says (output=None: it returns None)
    settle = f"from trip_tools import runtime\n{advice.group(1).replace('...', 'None')}\nruntime.shutdown()"
    subprocess.run([sys.executable, "-c", settle], cwd=tmp_path, env=_env(env), check=True, timeout=120)
    second = cli("compensate", run_id, "--app", "trip_tools:runtime", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert f"run {run_id}: compensated" in second.stdout.decode()


# --- 1: the ledger --db names is the one worked on ---------------------------------------------------


def _crash_a_trip(tmp: Path, ledger_url: str, tools: str = TOOLS) -> tuple[dict[str, str], str]:
    """A trip run whose process died in its unwind (in ``cancel_hotel``, declared idempotent), recorded
    in ``ledger_url``; the environment the tools module needs, and the run's id."""
    (tmp / "trip_tools.py").write_text(tools)
    env = {"PYTHONPATH": str(tmp), "WORLD": str(tmp / "world.txt"), "HOTEL_IDEMPOTENT": "1"}
    env |= {"LEDGER": ledger_url, "AGENT_RELAY_DATABASE_URL": ledger_url}
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN],
        cwd=tmp,
        capture_output=True,
        text=True,
        env=_env({**env, "CRASH": "cancel_hotel"}),
        timeout=120,
    )
    assert crashed.returncode == 9, crashed.stderr
    del env["AGENT_RELAY_DATABASE_URL"]
    return env, crashed.stdout.split()[0]


def _same_ledger_spelled_otherwise(url: str, tmp: Path) -> str:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":  # relative to the working directory
        return f"sqlite:///{os.path.relpath(str(parsed.database), tmp)}"
    if parsed.port == 5432:
        parsed = parsed.set(port=None)  # the default port, left out
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def test_compensate_refuses_a_db_that_is_not_the_apps_ledger(tmp_path: Path, database_url: str) -> None:
    env, run_id = _crash_a_trip(tmp_path, database_url)
    world = (tmp_path / "world.txt").read_text()
    masked = sa.make_url(database_url).render_as_string(hide_password=True)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    args = ("compensate", run_id, "--app", "trip_tools:runtime")
    refused = cli("--db", other, *args, cwd=tmp_path, env=env)
    one_line_error(refused, f"--db names the ledger at {other}", f"records to {masked}")
    from_env = cli(*args, cwd=tmp_path, env={**env, "AGENT_RELAY_DATABASE_URL": other})
    one_line_error(from_env, f"$AGENT_RELAY_DATABASE_URL names the ledger at {other}", masked)
    secret = cli("--db", "postgresql+psycopg://agent:s3cret@127.0.0.1:1/ledger", *args, cwd=tmp_path, env=env)
    assert "s3cret" not in one_line_error(secret, "agent:***@127.0.0.1:1/ledger", masked)
    assert (tmp_path / "world.txt").read_text() == world  # nothing was unwound
    assert not (tmp_path / "other.db").exists()  # nor any ledger created
    same = _same_ledger_spelled_otherwise(database_url, tmp_path)
    out = cli("--db", same, *args, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert f"run {run_id}: compensated" in out.stdout.decode()
    assert (tmp_path / "world.txt").read_text().splitlines()[-2:] == ["cancel Adlon", "cancel LH400"]


def test_compensate_gives_db_to_an_app_that_reads_the_environment(tmp_path: Path, database_url: str) -> None:
    from_env = TOOLS.replace('AgentRuntime(os.environ["LEDGER"])', "AgentRuntime.from_env()")
    assert from_env != TOOLS
    env, run_id = _crash_a_trip(tmp_path, database_url, from_env)
    out = cli(
        "--db", database_url, "compensate", run_id, "--app", "trip_tools:runtime", cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr
    assert f"run {run_id}: compensated" in out.stdout.decode()
    assert not (tmp_path / "agent_relay.db").exists()  # the default ledger was never opened


def test_demo_runs_on_the_db_ledger(tmp_path: Path, database_url: str) -> None:
    (tmp_path / "demo").symlink_to(ROOT / "demo")  # a checkout's root, as `demo` asks for
    out = cli("--db", database_url, "demo", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    masked = sa.make_url(database_url).render_as_string(hide_password=True)
    assert f"ledger: {masked}" in out.stdout.decode()
    assert not (tmp_path / "agent_relay.db").exists()
    runs = json.loads(cli("--db", database_url, "runs", "--json", cwd=tmp_path).stdout)
    assert {r["name"] for r in runs} >= {"email_flow", "trip_booking", "research", "newsletter"}
