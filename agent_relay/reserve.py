"""Budget reservation, fail closed: before a live call of a budgeted run starts, what it may cost at most
(``agent_relay.estimate``) is reserved on the run's ``agent_runs`` row, or the call is refused.

The check and the reservation are one atomic step in the ledger (``CallWriter.reserve``; the statements
are in ``ledger.budget_rows``), so the workers of one run (processes resuming it, on PostgreSQL or one
SQLite file) share its budget: together they admit calls only while spent + reserved + the call's
reservation <= the limit. The write of the call's outcome releases the reservation and adds the actual
cost, in the same transaction; a call that ends without that write (served after all, or the write failed)
releases it on its own. A model whose price is unknown is refused before its request. Calls whose cost is
not known in advance reserve nothing and are counted when they end, as before (``CallBase.count``);
replayed and served calls reserve nothing.

A process killed while it held a reservation leaves it counted on the run's row: the run's budget fails
closed (fewer calls are admitted), never open.
"""

from __future__ import annotations

from decimal import Decimal

from .callbase import CallBase
from .errors import BudgetReservationError, UnpricedUsageError
from .estimate import Unpriced
from .states import Origin, Phase

_ZERO = Decimal(0)


def hold(call: CallBase) -> None:
    """Reserve what ``call`` may cost (its run has a budget), or refuse it: its span ends with the error,
    which is raised; nothing of the call ran or was recorded."""
    try:
        _reserve(call)
    except BaseException as err:  # (refused, a bad estimate, the ledger: the key is free again)
        call.span = call.start_span()
        call.metric("refused", Origin.LIVE)
        call.abandon(err)


def keep(call: CallBase) -> None:
    """A call left in doubt (its body may still be under way, its cost unknown): its reservation stays
    counted on the run's row, and the write that marks it in doubt settles nothing."""
    call.hold = None
    if call.record is not None:
        call.record.budget_hold = None


def refuse_again(call: CallBase) -> None:
    """A replay met a call its recorded run does not have: if the run's budget refuses it (by the costs
    replayed so far, nothing reserved), refuse it as the recorded run did, instead of diverging."""
    try:
        estimate = _estimate(call)
        limit = call.run.spend.limit
        if estimate and limit is not None and call.run.spend.spent + estimate > limit:
            raise _refused(call, limit, call.run.spend.spent, _ZERO, estimate)
    except BaseException as err:
        call.span = call.start_span()
        call.metric("refused", Origin.REPLAYED)
        call.abandon(err)


def _reserve(call: CallBase) -> None:
    run, spec = call.run, call.spec
    spend = run.spend
    limit = spend.limit
    assert limit is not None
    call.hold = _ZERO  # (a budgeted run's call: its write settles the run's totals, reserved or not)
    if call.phase is not Phase.FORWARD:
        return
    estimate = _estimate(call)
    if not estimate:
        return
    if spend.spent + estimate > limit:  # this worker's own count refuses it: no need to ask the ledger
        raise _refused(call, limit, spend.spent, _ZERO, estimate)
    found = call.services.ledger.calls.reserve(run.run_id, spec.name, estimate)
    spend.at_least_spent(found.spent)  # (other workers' calls count here too from now on)
    if not found.granted:
        raise _refused(call, found.limit or limit, found.spent, found.reserved, estimate)
    call.hold = estimate


def _estimate(call: CallBase) -> Decimal | None:
    """The most ``call`` may cost, known before it runs (``None``: not known); a model call whose model
    has no price raises ``UnpricedUsageError``."""
    estimate = call.spec.estimate(call.args_json) if call.spec.estimate is not None else None
    if isinstance(estimate, Unpriced):
        raise UnpricedUsageError(
            model=estimate.model, provider=estimate.provider, run_id=call.run.run_id, before_call=True
        )
    return estimate


def _refused(
    call: CallBase, limit: Decimal, spent: Decimal, reserved: Decimal, estimate: Decimal
) -> BudgetReservationError:
    return BudgetReservationError(
        limit=limit,
        spent=spent,
        reserved=reserved,
        reservation=estimate,
        run_id=call.run.run_id,
        tool_name=call.spec.name,
    )
