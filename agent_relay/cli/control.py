"""The commands that act on runs from outside, writing to the ledger: ``cancel``, ``approve``, ``reject``,
``settle`` and ``db rotate-key``. Each opens the ledger itself (no runtime, no tools needed) and says what
it did in one line; a refusal is one line on stderr (``agent_relay.cli.main`` prints ``AgentRelayError``s
so)."""

from __future__ import annotations

import json
from typing import Protocol

import click
import sqlalchemy as sa

from ..errors import ConfigurationError
from ..ledger.store import LedgerStore
from ..query import LedgerReader, refuse_missing_file
from ..states import CallStatus
from ..telemetry import DATABASE_URL_ENV
from .text import printable

WHERE_DB = f"set --db or {DATABASE_URL_ENV}"  # (the fix a missing ledger's error names)


class Options(Protocol):
    """The command line's shared options (``agent_relay.cli``'s context object)."""

    db: str

    def reader(self) -> LedgerReader: ...


def _store(obj: Options) -> LedgerStore:
    url = sa.make_url(obj.db)
    refuse_missing_file(url, WHERE_DB)
    store = LedgerStore(url)
    try:
        store.open()
    except BaseException:
        store.dispose()
        raise
    return store


@click.command()
@click.argument("run")
@click.option("--reason", help="Why (kept on the run, and in the error its refused call raises).")
@click.pass_obj
def cancel(obj: Options, run: str, reason: str | None) -> None:
    """Cancel a running run, wherever it runs: its next tool call is refused, its saga unwinds what it
    did, and it ends cancelled. (Seen within a second by the process running it.)"""
    run_id = obj.reader().resolve(run)
    store = _store(obj)
    try:
        store.request_cancel(run_id, reason)
    finally:
        store.dispose()
    click.echo(f"run {printable(run_id)}: cancel requested")


@click.command()
@click.argument("call")
@click.option("--by", required=True, help="Who decides (kept on the call and its span).")
@click.option("--note", help="Why (kept on the call).")
@click.pass_obj
def approve(obj: Options, call: str, by: str, note: str | None) -> None:
    """Approve a call awaiting approval (its full call_id): resuming its run runs it."""
    _decide(obj, call, CallStatus.APPROVED, by, note)


@click.command()
@click.argument("call")
@click.option("--by", required=True, help="Who decides (kept on the call and its span).")
@click.option("--note", help="Why (kept on the call, and in the error the agent gets).")
@click.pass_obj
def reject(obj: Options, call: str, by: str, note: str | None) -> None:
    """Reject a call awaiting approval: resuming its run raises ApprovalRejectedError in the agent."""
    _decide(obj, call, CallStatus.REJECTED, by, note)


def _decide(obj: Options, call_id: str, status: CallStatus, by: str, note: str | None) -> None:
    store = _store(obj)
    try:
        store.decide_call(call_id, status, by, note)
    finally:
        store.dispose()
    click.echo(f"call {printable(call_id)}: {status} by {printable(by)}; resume its run to go on")


@click.command()
@click.argument("call")
@click.argument("outcome", type=click.Choice(["succeeded", "failed"]))
@click.option("--output", "output_json", help="succeeded: what the tool returned, as JSON (default null).")
@click.option("--error", "error_message", help="failed: why (kept on the call).")
@click.pass_obj
def settle(obj: Options, call: str, outcome: str, output_json: str | None, error_message: str | None) -> None:
    """Record the real outcome of a call left in doubt (pending: its process died, froze past its lease, or
    its body timed out; its full call_id): resuming its run then serves it, or runs it again if failed."""
    output = None
    if output_json is not None:
        if outcome != CallStatus.SUCCEEDED:
            raise ConfigurationError(
                "--output goes with succeeded (a failed call has no output; use --error)."
            )
        try:
            output = json.loads(output_json)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"--output must be JSON (a string is quoted: '\"w-1\"'): {exc}") from exc
    store = _store(obj)
    try:
        store.settle_call(call, outcome, output=output, error_message=error_message)
    finally:
        store.dispose()
    click.echo(f"call {printable(call)}: settled {outcome}; resume (or compensate) its run to go on")


@click.command("rotate-key")
@click.pass_obj
def rotate_key(obj: Options) -> None:
    """Add a new key secret to the ledger: runtimes opened from now on key new runs with it.

    Runs keyed with an older secret keep it: they replay, fork and resume as before. (A secret given
    from outside, AGENT_RELAY_KEY_SECRET, rotates by giving the new one first: new,old.)
    """
    store = _store(obj)
    try:
        key_id = store.rotate_key_secret()
    finally:
        store.dispose()
    click.echo(f"{printable(store.database)}: new key secret {key_id}; runs keyed with older ones keep them")
