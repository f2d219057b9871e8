"""The ``agent-relay`` command: the terminal face of the ledger.

Read commands (``runs``, ``show``, ``diff``, ``export``) only read the ledger; they never create one.
Every read command takes ``--json`` for scripts; run ids are accepted by unique prefix. Errors are one
line on stderr and a non-zero exit (the traceback with ``--debug``); database passwords are masked.
Control characters read from the ledger are printed as visible escapes (``\x1b``, ``\n``), never as they
are. A stdout closed early (``agent-relay runs | head -3``) ends the command quietly, with status 0.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import string
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import sqlalchemy as sa
from click.core import ParameterSource

from .._version import __version__
from ..errors import AgentRelayError
from ..ledger.schema import SCHEMA_VERSION
from ..ledger.store import LedgerStore
from ..query import LedgerReader, refuse_missing_file
from ..telemetry import DATABASE_URL_ENV, DEFAULT_DATABASE_URL
from . import control, render
from .bulk import export_many, instant, progress_bar, prune
from .diff import align
from .text import json_safe, printable

TRACE_URL_ENV = "AGENT_RELAY_TRACE_URL"
TRACE_URL_PLACEHOLDERS = ("trace_id", "run_id")
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433, "oracle": 1521}
F = TypeVar("F", bound=Callable[..., Any])
_WHERE_DB = control.WHERE_DB


class _Context:
    def __init__(self, db: str, db_source: ParameterSource | None, debug: bool) -> None:
        self.db = db
        self.db_source = db_source  # COMMANDLINE, ENVIRONMENT or DEFAULT: where --db came from
        self.debug = debug
        self._reader: LedgerReader | None = None

    def reader(self) -> LedgerReader:
        """The ledger, read-only: refused if missing or of another schema version."""
        if self._reader is None:
            url = sa.make_url(self.db)
            refuse_missing_file(url, _WHERE_DB)
            self._reader = LedgerReader(url)
        return self._reader


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {printable(message)}", err=True)
    raise SystemExit(code)


def _json_out(data: Any) -> None:
    click.echo(json_safe(json.dumps(data, default=_json_default, ensure_ascii=False, indent=2)))


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


class _StdoutClosed(Exception):
    """Stdout was closed before the output was written; ``main`` ends quietly with status 0.

    Not an ``OSError``: click would turn a ``BrokenPipeError`` into exit status 1.
    """


class _Group(click.Group):
    """Turns errors into one line and an exit code; ``--debug`` shows the traceback."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:  # --help and --version write while the arguments are parsed
            return super().make_context(info_name, args, parent, **extra)
        except BrokenPipeError:
            raise _StdoutClosed from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _StdoutClosed from None
        except (AgentRelayError, sa.exc.SQLAlchemyError, OSError) as exc:
            obj = ctx.obj if isinstance(ctx.obj, _Context) else None
            if obj is not None and obj.debug:
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _fail(message)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar=DATABASE_URL_ENV,
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help=f"The ledger's SQLAlchemy URL (or ${DATABASE_URL_ENV}).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(__version__, prog_name="agent-relay")
@click.pass_context
def cli(ctx: click.Context, db: str, debug: bool) -> None:
    """Inspect, compare, export and unwind the runs recorded in an AgentRelay ledger."""
    ctx.obj = _Context(db, ctx.get_parameter_source("db"), debug)


@cli.command()
@click.option("--status", help="Only runs with this status (succeeded, failed, compensated, ...).")
@click.option("--name", help="Only runs of this agent session name.")
@click.option("--mode", help="Only runs of this mode (live, replay, fork, resume).")
@click.option("--parent", help="Only runs opened inside this run (its full id).")
@click.option("--since", help="Only runs started since: a duration (30m, 2h, 7d) or an ISO date.")
@click.option("--until", help="Only runs started before: a duration ago or an ISO date.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def runs(
    obj: _Context,
    status: str | None,
    name: str | None,
    mode: str | None,
    parent: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Recorded runs, newest first."""
    found = obj.reader().runs(
        status=status,
        name=name,
        mode=mode,
        parent=parent,
        since=instant(since, "--since"),
        until=instant(until, "--until"),
        limit=limit,
    )
    rows = [dataclasses.asdict(run) for run in found]
    if as_json:
        _json_out(rows)
    else:
        render.runs_table(rows)


@cli.command()
@click.argument("run")
@click.option(
    "--trace-url",
    envvar=TRACE_URL_ENV,
    help="Link template for the run's trace, e.g. http://localhost:16686/trace/{trace_id} "
    f"(or ${TRACE_URL_ENV}).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(obj: _Context, run: str, trace_url: str | None, as_json: bool) -> None:
    """One run as a tree of its calls, with totals, input, output and a trace link."""
    if trace_url:
        _check_trace_url(trace_url)
    record, calls = _run_and_calls(obj.reader(), run)
    run_id = record["run_id"]
    link = (
        trace_url.format(trace_id=record["trace_id"], run_id=run_id)
        if trace_url and record["trace_id"]
        else None
    )
    if as_json:
        _json_out({"run": record, "calls": calls, "trace_url": link})
    else:
        render.run_tree(record, calls, link)


def _run_and_calls(reader: LedgerReader, prefix: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run a unique id prefix names, and its calls (each with its ``history`` of attempts)."""
    run_id = reader.resolve(prefix)
    return dataclasses.asdict(reader.run(run_id)), [dataclasses.asdict(c) for c in reader.calls(run_id)]


def _check_trace_url(template: str) -> None:
    """Fail with one line unless ``template`` is a ``str.format`` template whose only placeholders are
    ``TRACE_URL_PLACEHOLDERS`` (so a typo is named before any ledger is read, never a traceback)."""
    allowed = " and ".join("{" + name + "}" for name in TRACE_URL_PLACEHOLDERS)
    what = f"the trace URL template {template!r} (--trace-url or ${TRACE_URL_ENV})"
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        _fail(f"{what} is malformed ({exc}): write a literal brace as {{{{ or }}}}; use {allowed}")
    for field in fields:
        if field not in TRACE_URL_PLACEHOLDERS:
            _fail(f"{what} has the unknown placeholder {{{field}}}: the allowed placeholders are {allowed}")
    try:
        template.format(trace_id="0" * 32, run_id="run")
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        _fail(f"{what} cannot be filled in ({type(exc).__name__}: {exc}): use plain {allowed}")


@cli.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def diff(obj: _Context, run_a: str, run_b: str, as_json: bool) -> None:
    """Two runs' calls side by side: same, different arguments or output, only in one."""
    (first_run, calls_a), (second_run, calls_b) = (_run_and_calls(obj.reader(), r) for r in (run_a, run_b))
    a, b = first_run["run_id"], second_run["run_id"]
    pairs = align(calls_a, calls_b)
    first = next((i for i, p in enumerate(pairs) if p.kind != "same"), None)
    if as_json:
        _json_out(
            {
                "run_a": a,
                "run_b": b,
                "first_difference": first,
                "calls": [{"kind": p.kind, "a": p.a, "b": p.b, "detail": p.detail} for p in pairs],
            }
        )
    else:
        render.diff_table(a, b, pairs, first)


@cli.command()
@click.argument("run", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "otlp", "jsonl", "parquet"]),
    help="One RUN: json (the default) prints the run and its calls; otlp sends them as spans, with their "
    "original ids and timing, to the OTLP endpoint the OTEL_EXPORTER_OTLP_* variables name. Many runs "
    "(no RUN): jsonl (the default), one run and its calls a line; parquet (needs pyarrow), to --output.",
)
@click.option("--since", help="Many runs: those started since a duration ago (7d) or an ISO date.")
@click.option("--until", help="Many runs: those started before a duration ago or an ISO date.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Many runs: write to this file.")
@click.pass_obj
def export(
    obj: _Context, run: str | None, fmt: str | None, since: str | None, until: str | None, output: str | None
) -> None:
    """Re-emit a recorded run (for runs recorded while no collector was up), print it as JSON, or export
    many runs (streamed) as JSON Lines or Parquet."""
    if run is None:
        if fmt in ("json", "otlp"):
            raise click.UsageError(f"--format {fmt} exports one run: name it (agent-relay export RUN)")
        start, end = instant(since, "--since"), instant(until, "--until")
        written = export_many(obj.reader(), fmt or "jsonl", start, end, output)
        if output is not None:
            click.echo(printable(f"exported {written} runs to {output}"), err=True)
        return
    if fmt in ("jsonl", "parquet") or since or until or output:
        raise click.UsageError(
            "RUN exports one run (--format json or otlp); leave RUN out to export many with --since/--until "
            "as --format jsonl or parquet"
        )
    record, calls = _run_and_calls(obj.reader(), run)
    run_id = record["run_id"]
    if fmt in (None, "json"):
        _json_out({"run": record, "calls": calls})
        return
    from .export import export_otlp

    sent = export_otlp(record, calls, os.environ, progress=render.progress)
    click.echo(printable(f"exported run {run_id}: {sent} spans (trace {record['trace_id']})"))


@cli.command()
@click.argument("run")
@click.option(
    "--app",
    required=True,
    metavar="MODULE:ATTR",
    help="Where your AgentRuntime lives, its tools registered (e.g. myagent.tools:runtime).",
)
@click.option("--force", is_flag=True, help="Unwind a run still marked running (its process is gone).")
@click.pass_obj
def compensate(obj: _Context, run: str, app: str, force: bool) -> None:
    """Unwind a run whose process died before it could (safe to run twice).

    The run is unwound in the ledger of the runtime ``--app`` loads. A ``--db`` given on the command line
    is put in ``$AGENT_RELAY_DATABASE_URL`` first (a runtime made by ``AgentRuntime.from_env()`` opens it);
    a ``--db`` or ``$AGENT_RELAY_DATABASE_URL`` naming another ledger than the runtime's is refused.
    """
    if obj.db_source is ParameterSource.COMMANDLINE:
        os.environ[DATABASE_URL_ENV] = obj.db
    runtime = _load_app(app)
    try:
        if obj.db_source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            _check_same_ledger(obj, app, runtime.ledger.db.url)
        with LedgerReader(runtime.ledger) as reader:
            run_id = reader.resolve(run)
        session = runtime.compensate(run_id, force=force)
        for failure in session.compensation_errors:
            click.echo(f"  {printable(failure)}", err=True)
        click.echo(f"run {printable(run_id)}: {session.status}")
    finally:
        runtime.shutdown()
    if session.compensation_errors:
        raise SystemExit(1)


def _ledger_key(url: sa.URL) -> tuple[object, ...]:
    """What names the database a URL opens, driver and credentials aside: a SQLite file by its real path,
    a server database by backend, host, port (the backend's default when left out) and name."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        name = url.database or ":memory:"
        if name != ":memory:" and not url.query.get("mode") and not name.startswith("file:"):
            name = os.path.realpath(name)
        return (backend, name)
    return (backend, (url.host or "").lower(), url.port or _DEFAULT_PORTS.get(backend), url.database)


def _check_same_ledger(obj: _Context, app: str, runtime_url: sa.URL) -> None:
    """Fail unless ``--db`` names the ledger the ``--app`` runtime records to (both named, masked)."""
    url = sa.make_url(obj.db)
    if _ledger_key(url) == _ledger_key(runtime_url):
        return
    given = "--db" if obj.db_source is ParameterSource.COMMANDLINE else f"${DATABASE_URL_ENV}"
    ours = url.render_as_string(hide_password=True)
    theirs = runtime_url.render_as_string(hide_password=True)
    _fail(
        f"{given} names the ledger at {ours}, but the runtime of --app {app} records to {theirs}: "
        f"refusing to unwind a run in another ledger than the one asked for. Point {given} at {theirs} "
        f"(or leave it out), or make --app load a runtime on {ours}."
    )


def _load_app(spec: str) -> Any:
    import importlib

    from ..runtime import AgentRuntime

    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        target = getattr(importlib.import_module(module_name), attr or "runtime")
    except (ImportError, AttributeError) as exc:
        _fail(f"cannot load --app {spec!r}: {exc}")
    if not isinstance(target, AgentRuntime):
        _fail(f"--app {spec!r} is a {type(target).__name__}, not an AgentRuntime")
    return target


cli.add_command(prune)


@cli.group()
def db() -> None:
    """The ledger's schema."""


@db.command()
@click.pass_obj
def upgrade(obj: _Context) -> None:
    """Upgrade the ledger's schema in place (rows are kept; safe to run twice).

    A SQLite file that does not exist is refused and left uncreated, like the read commands do.
    """
    url = sa.make_url(obj.db)
    refuse_missing_file(url, _WHERE_DB)
    store = LedgerStore(url)
    try:
        with store.db.guard("read the schema version"):
            found = store.read_version() or SCHEMA_VERSION  # (none: upgrade() says there is no ledger)
        with progress_bar(max(SCHEMA_VERSION - found, 0), "upgrading the schema") as advance:
            start, end = store.upgrade(progress=lambda _version: advance(1))
    finally:
        store.dispose()
    masked = printable(store.database)
    click.echo(
        f"{masked}: schema version {start} -> {end}"
        if start != end
        else f"{masked}: already at schema version {end}"
    )


@cli.command()
@click.pass_obj
def demo(obj: _Context) -> None:
    """Run the demo (demo/agent.py of a source checkout) on the --db ledger.

    The demo runs in a child process with ``$AGENT_RELAY_DATABASE_URL`` set to ``--db`` (by default
    sqlite:///agent_relay.db in the working directory); its exit status is the command's.
    """
    path = Path.cwd() / "demo" / "agent.py"
    if not path.exists():
        _fail("demo/agent.py not found: run this from the root of an agent-relay checkout")
    done = subprocess.run([sys.executable, str(path)], env={**os.environ, DATABASE_URL_ENV: obj.db})
    if done.returncode:
        raise SystemExit(done.returncode if done.returncode > 0 else 128 - done.returncode)


for _command in (control.cancel, control.approve, control.reject, control.settle):
    cli.add_command(_command)
db.add_command(control.rotate_key)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``agent-relay``: its exit status.

    A stdout closed before the output is written (``agent-relay show RUN | head -3``) is not an error:
    the rest of the output is dropped and the status is 0, with nothing on stderr (Python docs, "Note on
    SIGPIPE").
    """
    try:
        try:
            cli.main(args=argv, prog_name="agent-relay", standalone_mode=False)
        except click.exceptions.Abort:
            _fail("aborted", 130)
        except click.ClickException as exc:
            exc.show()
            return exc.exit_code
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
    except (_StdoutClosed, BrokenPipeError):
        _stdout_to_devnull()
    return 0


def _stdout_to_devnull() -> None:
    """Point stdout's file descriptor at /dev/null, so the interpreter's flush at exit writes what is left
    of its buffer there instead of failing on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file (replaced by a test harness): nothing to redirect
        pass
