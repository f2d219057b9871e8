"""A process killed in the middle of an unwind; ``runtime.compensate`` finishes it in a new process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent_relay import AgentRuntime, SessionStateError, UnknownRunError

pytestmark = pytest.mark.e2e

# The tools, as a module both the crashing process and the recovering one import.
TOOLS = textwrap.dedent(
    """
    import os
    from pathlib import Path
    from agent_relay import AgentRuntime, tool

    WORLD = Path(os.environ["WORLD"])  # the side effects, one line each, append-only
    runtime = AgentRuntime(os.environ["LEDGER"])

    def effect(line):
        with WORLD.open("a") as f:
            f.write(line + "\\n")

    @tool(runtime, compensation="cancel_flight")
    def book_flight(flight: str) -> str:
        effect(f"book {flight}")
        return flight

    @tool(runtime, compensation="cancel_hotel")
    def book_hotel(hotel: str) -> str:
        effect(f"book {hotel}")
        return hotel

    @tool(runtime, compensation="refund")
    def charge(amount: int) -> str:
        effect(f"charge {amount}")
        return "ch_1"

    @tool(runtime)
    def cancel_flight(flight: str) -> None:
        effect(f"cancel {flight}")

    @tool(runtime, idempotent=os.environ.get("HOTEL_IDEMPOTENT") == "1")
    def cancel_hotel(hotel: str) -> None:
        if os.environ.get("CRASH") == "cancel_hotel":
            os._exit(9)  # dies inside the compensation, before its side effect
        effect(f"cancel {hotel}")

    @tool(runtime)
    def refund(amount: int, forward_result: str) -> None:
        effect(f"refund {forward_result}")
    """
)

CRASHING_RUN = textwrap.dedent(
    """
    from trip_tools import runtime, book_flight, book_hotel, charge

    with runtime.agent_session(name="trip") as session:
        print(session.run_id, flush=True)
        book_flight("LH400")
        book_hotel("Adlon")
        charge(1999)
        raise RuntimeError("the agent gave up")
    """
)

RECOVER = textwrap.dedent(
    """
    import sys
    from trip_tools import runtime
    session = runtime.compensate(sys.argv[1])
    print(session.status, len(session.compensation_errors))
    for failure in session.compensation_errors:
        print(type(failure.error).__name__, failure.error)
    """
)


def _run(tmp: Path, code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(tmp),
        "WORLD": str(tmp / "world.txt"),
        "LEDGER": f"sqlite:///{tmp / 'ledger.db'}",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tmp,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    (tmp_path / "trip_tools.py").write_text(TOOLS)
    return tmp_path


def test_unwind_killed_half_way_is_finished_by_compensate_exactly_once(tmp: Path) -> None:
    crashed = _run(tmp, CRASHING_RUN, CRASH="cancel_hotel", HOTEL_IDEMPOTENT="1")
    assert crashed.returncode == 9, crashed.stderr
    run_id = crashed.stdout.split()[0]
    world = (tmp / "world.txt").read_text().splitlines()
    assert world == ["book LH400", "book Adlon", "charge 1999", "refund ch_1"]

    first = _run(tmp, RECOVER, run_id, HOTEL_IDEMPOTENT="1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[:2] == ["compensated", "0"]
    second = _run(tmp, RECOVER, run_id, HOTEL_IDEMPOTENT="1")  # safe to call twice
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[:2] == ["compensated", "0"]

    world = (tmp / "world.txt").read_text().splitlines()
    assert world == ["book LH400", "book Adlon", "charge 1999", "refund ch_1", "cancel Adlon", "cancel LH400"]


def test_a_compensation_in_doubt_is_not_rerun_unless_idempotent(tmp: Path) -> None:
    crashed = _run(tmp, CRASHING_RUN, CRASH="cancel_hotel")
    run_id = crashed.stdout.split()[0]
    recovered = _run(tmp, RECOVER, run_id)
    assert recovered.returncode == 0, recovered.stderr
    lines = recovered.stdout.splitlines()
    assert lines[0] == "compensation_failed 1"
    assert (
        lines[1].startswith("CallInDoubtError")
        and "'cancel_hotel'" in lines[1]
        and "idempotent=True" in lines[1]
    )
    world = (tmp / "world.txt").read_text().splitlines()
    # the hotel's cancellation is left to a human; the flight is still cancelled
    assert world[-2:] == ["refund ch_1", "cancel LH400"]


def test_compensate_refuses_unknown_succeeded_and_live_runs(database_url: str) -> None:
    rt = AgentRuntime(database_url)
    with pytest.raises(UnknownRunError, match="no run 'nope'"):
        rt.compensate("nope")
    with rt.agent_session(name="fine") as ok:
        pass
    with pytest.raises(SessionStateError, match="succeeded"):
        rt.compensate(ok.run_id)
    with rt.agent_session(name="live") as live, pytest.raises(SessionStateError, match="still running"):
        rt.compensate(live.run_id)
    rt.shutdown()
