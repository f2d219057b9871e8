"""LangChain tools made durable with one line, run offline: tool calls as a model (or LangGraph's
``ToolNode``) makes them.

    python docs/frameworks/langchain_example.py

The tool's injected tool-call id and config reach it but stay out of the record and the key: the same
call under a fresh id is served, and a replay of the run charges nothing.
"""

from typing import Annotated

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import InjectedToolCallId, tool

from agent_relay.integrations.langchain import durable_tools
from agent_relay.testing import in_memory_runtime

runtime = in_memory_runtime()
charges: list[int] = []


@tool
def charge_card(amount: int, config: RunnableConfig, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
    """Charge the customer's card (amount in cents)."""
    charges.append(amount)
    return f"charged {amount} ({tool_call_id})"


(charge,) = durable_tools(runtime, [charge_card])  # the one line
assert charge.tool_call_schema.model_json_schema() == charge_card.tool_call_schema.model_json_schema()


def model_call(call_id: str) -> dict:
    return {"type": "tool_call", "name": "charge_card", "args": {"amount": 500}, "id": call_id}


with runtime.agent_session(name="checkout") as session:
    print(f"first:  {charge.invoke(model_call('call_1')).content}")
    print(f"again:  {charge.invoke(model_call('call_2')).content}")  # a fresh id, the same call: served
with runtime.agent_session(name="checkout", replay=True, replay_run_id=session.run_id):
    print(f"replay: {charge.invoke(model_call('call_3')).content}")

for call in runtime.ledger.list_calls(session.run_id):
    print(f"ledger: {call.tool_name}({call.arguments}) -> {call.output!r} [{call.status}]")
print(f"charges made: {charges}")
assert charges == [500]
runtime.shutdown()
