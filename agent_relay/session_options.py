"""The options of ``agent_session(...)`` that choose how its run is recorded (live, replay, fork, resume, a
remote parent), checked together before anything else happens."""

from __future__ import annotations

from .errors import SessionStateError
from .states import RunMode


def check_remote_parent(parent_run_id: str | None, child_key: str | None, mode: RunMode) -> None:
    """``parent_run_id`` / ``child_key``: a child of a run recorded elsewhere, alone or continued."""
    for label, value in (("parent_run_id", parent_run_id), ("child_key", child_key)):
        if value is not None and (not isinstance(value, str) or not value):
            raise SessionStateError(f"agent_session({label}=...) must be a non-empty string, not {value!r}.")
    if child_key is not None and parent_run_id is None:
        raise SessionStateError("agent_session(child_key=...) needs parent_run_id=..., the parent run.")
    if parent_run_id is not None and mode is not RunMode.LIVE:
        raise SessionStateError(
            "parent_run_id cannot be combined with replay, fork or resume: a replay of the parent run serves "
            "its calls without asking this process."
        )


def run_mode(
    replay: bool, replay_run_id: str | None, fork_after: int | None, resume_run_id: str | None
) -> RunMode:
    """Validate the replay / fork / resume options together; return the run's mode."""
    if resume_run_id is not None:
        if replay or replay_run_id is not None or fork_after is not None:
            raise SessionStateError(
                "resume_run_id cannot be combined with replay, replay_run_id or fork_after."
            )
        if not isinstance(resume_run_id, str) or not resume_run_id:
            raise SessionStateError(f"resume_run_id must be a run id, not {resume_run_id!r}.")
        return RunMode.RESUME
    if fork_after is not None:
        if isinstance(fork_after, bool) or not isinstance(fork_after, int) or fork_after < 0:
            raise SessionStateError(f"fork_after must be an int >= 0 (calls to replay), not {fork_after!r}.")
        if replay_run_id is None:
            raise SessionStateError("fork_after needs replay_run_id=..., the run to fork.")
        return RunMode.FORK
    if replay_run_id is not None and not isinstance(replay_run_id, str):
        raise SessionStateError(f"replay_run_id must be a run id, not {replay_run_id!r}.")
    if replay and replay_run_id is None:
        raise SessionStateError("replay=True needs replay_run_id=..., the run to replay.")
    if replay_run_id is not None and not replay:
        raise SessionStateError("replay_run_id needs replay=True (or fork_after=K to fork the run).")
    return RunMode.REPLAY if replay else RunMode.LIVE
