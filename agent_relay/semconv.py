"""Span attribute names, in one place.

The GenAI names come from ``opentelemetry-semantic-conventions`` (incubating GenAI attributes); ours live
under ``agent_relay.*``. No other module spells an attribute key as a string literal.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv.attributes import exception_attributes as _exception

# --- OpenTelemetry GenAI semantic conventions ---------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = _gen_ai.GEN_AI_OPERATION_NAME
GEN_AI_AGENT_NAME: Final = _gen_ai.GEN_AI_AGENT_NAME
GEN_AI_TOOL_NAME: Final = _gen_ai.GEN_AI_TOOL_NAME
GEN_AI_TOOL_CALL_ID: Final = _gen_ai.GEN_AI_TOOL_CALL_ID
GEN_AI_TOOL_TYPE: Final = _gen_ai.GEN_AI_TOOL_TYPE
GEN_AI_REQUEST_MODEL: Final = _gen_ai.GEN_AI_REQUEST_MODEL
GEN_AI_PROVIDER_NAME: Final = _gen_ai.GEN_AI_PROVIDER_NAME
GEN_AI_TOOL_CALL_ARGUMENTS: Final = _gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS
GEN_AI_TOOL_CALL_RESULT: Final = _gen_ai.GEN_AI_TOOL_CALL_RESULT
GEN_AI_TOKEN_TYPE: Final = _gen_ai.GEN_AI_TOKEN_TYPE
GEN_AI_RESPONSE_MODEL: Final = _gen_ai.GEN_AI_RESPONSE_MODEL
GEN_AI_RESPONSE_ID: Final = _gen_ai.GEN_AI_RESPONSE_ID
GEN_AI_RESPONSE_FINISH_REASONS: Final = _gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
GEN_AI_USAGE_COST: Final = "gen_ai.usage.cost"  # USD, as Logfire and OpenLIT read it (not yet in semconv)
GEN_AI_SYSTEM: Final = "gen_ai.system"  # the attribute's older name, still set by many instrumentations
GEN_AI_USAGE_PROMPT_TOKENS: Final = "gen_ai.usage.prompt_tokens"  # older names of input/output tokens
GEN_AI_USAGE_COMPLETION_TOKENS: Final = "gen_ai.usage.completion_tokens"
# OpenInference (Arize) names of the same facts
LLM_TOKEN_COUNT_PROMPT: Final = "llm.token_count.prompt"
LLM_TOKEN_COUNT_COMPLETION: Final = "llm.token_count.completion"
LLM_MODEL_NAME: Final = "llm.model_name"
LLM_PROVIDER: Final = "llm.provider"
GEN_AI_USAGE_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
ERROR_TYPE: Final = _error.ERROR_TYPE
EXCEPTION_TYPE: Final = _exception.EXCEPTION_TYPE
EXCEPTION_MESSAGE: Final = _exception.EXCEPTION_MESSAGE
EXCEPTION_STACKTRACE: Final = _exception.EXCEPTION_STACKTRACE
EVENT_EXCEPTION: Final = "exception"  # the event OpenTelemetry's record_exception adds

# MCP (Model Context Protocol) conventions, on the spans of MCP tool calls (spelled here: the package's
# mcp_attributes module is newer than the lowest semantic-conventions release agent_relay supports)
MCP_METHOD_NAME: Final = "mcp.method.name"
MCP_SESSION_ID: Final = "mcp.session.id"
MCP_PROTOCOL_VERSION: Final = "mcp.protocol.version"
JSONRPC_REQUEST_ID: Final = "jsonrpc.request.id"
MCP_METHOD_TOOLS_CALL: Final = "tools/call"

OPERATION_INVOKE_AGENT: Final = _gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value
OPERATION_EXECUTE_TOOL: Final = _gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value
OPERATION_CHAT: Final = _gen_ai.GenAiOperationNameValues.CHAT.value
TOOL_TYPE_FUNCTION: Final = "function"

# --- AgentRelay's own attributes -----------------------------------------------------------------------
RUN_ID: Final = "agent_relay.run.id"
PARENT_RUN_ID: Final = "agent_relay.run.parent_id"
IDEMPOTENCY_KEY: Final = "agent_relay.idempotency_key"
TOOL_PHASE: Final = "agent_relay.tool.phase"
CALL_SEQ: Final = "agent_relay.call.seq"
CALL_ID: Final = "agent_relay.call.id"
LLM_CALL: Final = "agent_relay.llm.call"  # the ledger name of an instrumented model call
CALL_ATTEMPT: Final = "agent_relay.call.attempt"
COST_USD: Final = "agent_relay.cost.usd"
REPLAYED: Final = "agent_relay.replayed"
REPLAY_OF: Final = "agent_relay.replay.source_run_id"
REPLAY_UNREQUESTED: Final = "agent_relay.replay.unrequested_calls"
RESUMED: Final = "agent_relay.resumed"
DEDUPLICATED: Final = "agent_relay.deduplicated"
KEY_SCOPE: Final = "agent_relay.key.scope"  # "global": the call's key deduplicates across runs
SERVED_FROM_RUN_ID: Final = "agent_relay.served_from.run_id"  # the run whose call served this one
SERVED_FROM_CALL_ID: Final = "agent_relay.served_from.call_id"
BUDGET_LIMIT_USD: Final = "agent_relay.budget.limit_usd"
BUDGET_SPENT_USD: Final = "agent_relay.budget.spent_usd"
BUDGET_EXCEEDED: Final = "agent_relay.budget.exceeded"
COST_UNKNOWN: Final = "agent_relay.cost.unknown"
RUN_STATUS: Final = "agent_relay.run.status"
RUN_MODE: Final = "agent_relay.run.mode"
CALL_STATUS: Final = "agent_relay.call.status"
CALL_ORIGIN: Final = "agent_relay.call.origin"
FORWARD_CALL_ID: Final = "agent_relay.compensation.forward_call_id"
FORWARD_SEQ: Final = "agent_relay.compensation.forward_seq"
FORWARD_TOOL: Final = "agent_relay.compensation.forward_tool"

# --- span events -----------------------------------------------------------------------------------------
EVENT_DEDUPLICATED: Final = "agent_relay.deduplicated"
EVENT_REPLAYED: Final = "agent_relay.replayed"
EVENT_RESUMED: Final = "agent_relay.resumed"
EVENT_COMPENSATION: Final = "agent_relay.compensation"
EVENT_BUDGET_EXCEEDED: Final = "agent_relay.budget.exceeded"
EVENT_RETRY: Final = "agent_relay.retry"  # a failed attempt that will be tried again (@tool(retry=...))
RETRY_DELAY: Final = "agent_relay.retry.delay_s"
EVENT_APPROVAL_REQUESTED: Final = "agent_relay.approval.requested"  # the call stopped to await a person
APPROVAL_DECISION: Final = "agent_relay.approval.decision"  # approved | rejected
APPROVAL_DECIDED_BY: Final = "agent_relay.approval.decided_by"
APPROVAL_DECIDED_AT: Final = "agent_relay.approval.decided_at"
APPROVAL_NOTE: Final = "agent_relay.approval.note"
