"""Idempotency keys are keyed hashes (issue 19): what a trace backend receives cannot be turned back into a
redacted argument, runs recorded with the old keys still replay, fork and resume, and the secret can be
supplied, rotated and kept off spans."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent_relay import AgentRuntime, ConfigurationError, LedgerOptions, tool
from agent_relay.content import ContentPolicy
from agent_relay.encoding import canonical_dumps
from agent_relay.keys import KeyScheme, call_id, idempotency_key
from agent_relay.ledger import LedgerStore
from agent_relay.ledger.schema import SCHEMA_VERSION, agent_runs, schema_info, tool_calls
from tests.integration.test_schema_upgrade import T0, build_old_schema
from tests.support import calls_of, run_row


class OtlpReceiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP trace endpoint on loopback that keeps every request it receives (raw and decoded)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[Any] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.bodies.append(body)
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        receiver.spans.extend(scope_spans.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _attributes(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def _material(pin: str, version: int) -> str:
    """The documented key material of ``check_pin(account="acct-1", pin=pin)``."""
    args = canonical_dumps({"account": "acct-1", "pin": pin})
    return f'{{"args":{args},"phase":"forward","tool":"check_pin","v":{version}}}'


def test_a_redacted_pin_cannot_be_found_from_what_the_trace_backend_received(
    tmp_path: Path, otlp: OtlpReceiver
) -> None:
    runtime = AgentRuntime(
        f"sqlite:///{tmp_path}/ledger.db",
        span_exporters=[OTLPSpanExporter(endpoint=otlp.endpoint)],
        content=ContentPolicy(capture=True, redact=["pin"]),
    )

    @tool(runtime)
    def check_pin(account: str, pin: str) -> bool:
        return pin == "4821"

    with runtime.agent_session(name="bank"):
        assert check_pin("acct-1", "4821") is True
    [secret] = runtime.ledger.key_secrets()
    runtime.shutdown()  # flushes the exporter

    [span] = [s for s in otlp.spans if s.name == "execute_tool check_pin"]
    attributes = _attributes(span)
    key = attributes["agent_relay.idempotency_key"]
    assert "4821" not in attributes["gen_ai.tool.call.arguments"]  # redacted on the span
    assert all(secret.hex().encode() not in body and secret not in body for body in otlp.bodies)

    candidates = [f"{n:04d}" for n in range(10_000)]
    # the documented formula without the secret (either version) finds nothing...
    for version in (1, 2):
        hashes = {hashlib.sha256(_material(pin, version).encode()).hexdigest() for pin in candidates}
        assert key not in hashes
    # ...while with the ledger's secret exactly the redacted PIN matches: the test can find it
    scheme = KeyScheme(secret)
    assert [pin for pin in candidates if scheme.digest(_material(pin, 2)) == key] == ["4821"]


def test_spans_show_the_whole_key_a_short_one_or_none_and_the_ledger_keeps_it_whole(tmp_path: Path) -> None:
    seen = {}
    for form in ("full", "short", "none"):
        exporter = InMemorySpanExporter()
        runtime = AgentRuntime(f"sqlite:///{tmp_path}/ledger.db", span_exporters=[exporter], span_key=form)

        @tool(runtime)
        def lookup(sku: str) -> str:
            return sku

        with runtime.agent_session(name="shop") as session:
            lookup("a-1")
        [row] = calls_of(runtime, session.run_id)
        assert len(row["idempotency_key"]) == 64
        runtime.shutdown()  # (flushes the spans)
        [span] = [s for s in exporter.get_finished_spans() if s.name == "execute_tool lookup"]
        seen[form] = (span.attributes or {}).get("agent_relay.idempotency_key")
    full = seen["full"]
    assert isinstance(full, str) and len(full) == 64
    assert seen["short"] == full[:16] and seen["none"] is None


def test_every_runtime_on_one_ledger_makes_the_same_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    first, second = AgentRuntime(url), AgentRuntime(url)
    ran: list[str] = []
    charges = {}
    for rt in (first, second):

        @tool(rt, name="charge")
        def charge(order: str) -> str:
            ran.append(order)
            return order

        charges[rt] = charge

    with pytest.raises(RuntimeError), first.agent_session(name="pay") as session:
        charges[first]("o-1")
        raise RuntimeError("the worker's agent failed after the charge")
    # the run resumed by the second runtime (another worker): its call is served, not run again
    with second.agent_session(name="pay", resume_run_id=session.run_id):
        assert charges[second]("o-1") == "o-1"
    assert ran == ["o-1"]
    assert second.services.keys.current.key_id == first.services.keys.current.key_id
    assert run_row(second, session.run_id)["key_id"] == first.services.keys.current.key_id
    first.shutdown()
    second.shutdown()


def test_a_secret_given_from_outside_keys_alike_in_two_ledgers_and_a_missing_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = []
    for name in ("a", "b"):
        monkeypatch.setenv("AGENT_RELAY_KEY_SECRET", "shared-secret-of-the-fleet-0001")
        runtime = AgentRuntime(f"sqlite:///{tmp_path}/{name}.db")

        @tool(runtime)
        def charge(order: str) -> str:
            return order

        with runtime.agent_session(name="pay") as session:
            charge("o-1")
        keys.append(calls_of(runtime, session.run_id)[0]["idempotency_key"])
        runtime.shutdown()
    assert keys[0] == keys[1]

    # ledger b without the fleet's secret: its run cannot be replayed, and nothing is written
    monkeypatch.delenv("AGENT_RELAY_KEY_SECRET")
    runtime = AgentRuntime(f"sqlite:///{tmp_path}/b.db")

    @tool(runtime)
    def charge(order: str) -> str:
        return order

    runs_before = _count(runtime, agent_runs)
    with (
        pytest.raises(ConfigurationError, match=r"AgentRuntime\(key_secret=\[current, old\]\)"),
        runtime.agent_session(name="pay", replay=True, replay_run_id=session.run_id),
    ):
        charge("o-1")
    assert _count(runtime, agent_runs) == runs_before
    runtime.shutdown()

    # given the old secret after a new one, it replays
    runtime = AgentRuntime(
        f"sqlite:///{tmp_path}/b.db",
        key_secret=["a-newer-secret-0000000002", "shared-secret-of-the-fleet-0001"],
    )

    @tool(runtime)
    def charge(order: str) -> str:
        raise AssertionError("a replay runs no tool body")

    with runtime.agent_session(name="pay", replay=True, replay_run_id=session.run_id):
        assert charge("o-1") == "o-1"
    runtime.shutdown()


def _count(runtime: AgentRuntime, table: sa.Table) -> int:
    with runtime.ledger.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


@pytest.mark.parametrize("secret", ["short", b"", 12345, ["ok-ok-ok-ok-ok-ok-ok", "short"], []], ids=repr)
def test_a_bad_secret_is_refused_before_the_ledger_is_created(tmp_path: Path, secret: Any) -> None:
    with pytest.raises(ConfigurationError, match="key_secret"):
        AgentRuntime(f"sqlite:///{tmp_path}/ledger.db", key_secret=secret)
    with pytest.raises(ConfigurationError, match="span_key"):
        AgentRuntime(f"sqlite:///{tmp_path}/ledger.db", span_key="half")
    assert not (tmp_path / "ledger.db").exists()


def test_after_a_rotation_new_runs_use_the_new_secret_and_old_runs_replay_with_theirs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    runtime = AgentRuntime(url)

    @tool(runtime)
    def charge(order: str) -> str:
        return order

    with runtime.agent_session(name="pay") as old:
        charge("o-1")
    runtime.shutdown()
    store = LedgerStore(url)
    new_id = store.rotate_key_secret()
    store.dispose()

    runtime = AgentRuntime(url)
    ran = []

    @tool(runtime)
    def charge(order: str) -> str:
        ran.append(order)
        return order

    assert runtime.services.keys.current.key_id == new_id
    with runtime.agent_session(name="pay") as new:
        charge("o-1")
    with runtime.agent_session(name="pay", replay=True, replay_run_id=old.run_id) as replay:
        assert charge("o-1") == "o-1"
    assert ran == ["o-1"]  # the new run ran it; the replay of the old one served it
    old_key = calls_of(runtime, old.run_id)[0]["idempotency_key"]
    assert calls_of(runtime, new.run_id)[0]["idempotency_key"] != old_key
    assert calls_of(runtime, replay.run_id)[0]["idempotency_key"] == old_key
    assert run_row(runtime, replay.run_id)["key_id"] == run_row(runtime, old.run_id)["key_id"] != new_id
    runtime.shutdown()


# --- runs recorded before keyed keys --------------------------------------------------------------------
def _legacy_ledger(url: str) -> tuple[str, str]:
    """A version-4 ledger (before keyed keys) holding two runs recorded with version-1 keys: ``done``
    (book, pay: both succeeded) and ``broken`` (book succeeded, pay failed). Their run ids."""
    engine = sa.create_engine(url)
    runs = {"done": str(uuid.uuid4()), "broken": str(uuid.uuid4())}
    with engine.begin() as conn:
        build_old_schema(conn, 4)
        for name, run_id in runs.items():
            conn.execute(
                agent_runs.insert().values(
                    run_id=run_id, name="trip", status="succeeded" if name == "done" else "failed",
                    started_at=T0, ended_at=T0,
                )
            )  # fmt: skip
            for seq, (tool_name, args, output) in enumerate(
                [("book", {"hotel": "Adlon"}, "b-1"), ("pay", {"amount": 10}, "p-1")], start=1
            ):
                key = idempotency_key(tool_name, "forward", args)  # version 1: plain SHA-256
                failed = name == "broken" and tool_name == "pay"
                conn.execute(
                    tool_calls.insert().values(
                        call_id=call_id(run_id, "forward", key), run_id=run_id, seq=seq, tool_name=tool_name,
                        phase="forward", idempotency_key=key, arguments=args,
                        output=None if failed else output, status="failed" if failed else "succeeded",
                        error_type="RuntimeError" if failed else None, started_at=T0, ended_at=T0,
                    )
                )  # fmt: skip
    engine.dispose()
    return runs["done"], runs["broken"]


def test_runs_recorded_with_the_old_keys_replay_fork_and_resume_after_the_upgrade(database_url: str) -> None:
    done, broken = _legacy_ledger(database_url)
    runtime = AgentRuntime(database_url, ledger_options=LedgerOptions(upgrade=True))
    with runtime.ledger.engine.connect() as conn:
        assert conn.execute(sa.select(schema_info.c.version)).scalar_one() == SCHEMA_VERSION
    ran: list[str] = []

    @tool(runtime)
    def book(hotel: str) -> str:
        ran.append(f"book {hotel}")
        return "b-2"

    @tool(runtime)
    def pay(amount: int) -> str:
        ran.append(f"pay {amount}")
        return "p-2"

    with runtime.agent_session(name="trip", replay=True, replay_run_id=done) as replay:
        assert (book("Adlon"), pay(10)) == ("b-1", "p-1")
    assert ran == []  # every call served from the recorded run
    with runtime.agent_session(name="trip", fork_after=1, replay_run_id=done) as fork:
        assert (book("Adlon"), pay(10)) == ("b-1", "p-2")
    assert ran == ["pay 10"]  # served up to the fork point, live after it
    with runtime.agent_session(name="trip", resume_run_id=broken):
        assert (book("Adlon"), pay(10)) == ("b-1", "p-2")
    assert ran == ["pay 10", "pay 10"]  # the succeeded booking served, the failed payment run again

    legacy = idempotency_key("book", "forward", {"hotel": "Adlon"})
    for run_id in (replay.run_id, fork.run_id, broken):
        assert calls_of(runtime, run_id)[0]["idempotency_key"] == legacy
        assert run_row(runtime, run_id)["key_version"] in (None, 1)
    with runtime.agent_session(name="trip") as fresh:  # a new run: keyed
        book("Adlon")
    assert calls_of(runtime, fresh.run_id)[0]["idempotency_key"] != legacy
    assert run_row(runtime, fresh.run_id)["key_version"] == 2
    runtime.shutdown()
