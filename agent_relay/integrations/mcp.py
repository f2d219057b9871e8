"""MCP (Model Context Protocol) tool calls, durable on both sides of the wire (needs ``mcp>=2.3``).

Client: ``durable_session(runtime, session)`` wraps an ``mcp.ClientSession`` (or an ``mcp.Client``).
Inside a session of ``runtime`` each ``call_tool(name, arguments)`` is a ledger row named ``mcp.<name>``
(``mcp.<server>.<name>`` with ``server=...``), keyed by that name and the arguments: a repeat in the run is
served, and a replay returns the recorded ``CallToolResult`` without sending a request. A result with
``is_error`` set is recorded as a failed call (``McpToolError``, its text as the message) and handed back as
it came; like any failed call it runs again when called again, and a replay hands back a ``CallToolResult``
with ``is_error`` and the recorded text. A protocol error (``MCPError``) is a failed call, raised as usual.

Across processes: the request carries the caller's call in its ``_meta`` (``agent-relay/call``: run id, call
id, and the call's run-scoped key), next to the W3C ``traceparent`` of the call's span. A server tool
registered with ``durable_mcp_tool(runtime, server)`` records each call in a child run of the caller's run
(``parent_run_id`` set, in the server's own ledger), whose id is derived from the caller's run and key: a
retried ``tools/call`` with the same key continues that run, so a call that succeeded is served and its side
effect does not happen again. The server's session span continues the caller's trace.

Spans carry the MCP conventions' ``mcp.method.name`` (``tools/call``), ``mcp.session.id`` when known (pass
``session_id=`` on the client; on the server, the Streamable HTTP session) and, on the server,
``jsonrpc.request.id`` (the client's request id is on the MCP SDK's own ``tools/call`` span, a child of ours).
"""

from __future__ import annotations

import contextvars
import inspect
import threading
import typing
from collections.abc import Callable, Mapping
from typing import Any, cast

import anyio.to_thread
from mcp import Client, ClientSession
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.utilities.context_injection import find_context_parameter
from mcp.types import CallToolResult, TextContent
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from .. import semconv
from ..calls import Invocation
from ..context import current_call
from ..encoding import encode
from ..errors import ArgumentEncodingError, ConfigurationError
from ..execute import execute_async
from ..run import current_run
from ..runtime import AgentRuntime
from ..session import AgentSession
from ..states import Phase
from ..tooling import tool

META_KEY = "agent-relay/call"
"""The ``_meta`` entry a durable client call carries: ``{"run_id", "call_id", "key"}``."""

_CONTEXT = "agent_relay_mcp_context"  # the Context parameter a server handler adds when the tool has none
_MARK = "__agent_relay_mcp__"  # on the stub function of a client call's tool: ours, not the user's
_lock = threading.Lock()


class McpToolError(Exception):
    """An MCP tool answered with ``is_error`` set: its call is recorded as failed with this error (the
    result's text as its message); a replay raises it again and the durable session hands it back as a
    ``CallToolResult``."""


# --- client --------------------------------------------------------------------------------------------
def durable_session(
    runtime: AgentRuntime,
    session: ClientSession | Client,
    *,
    server: str | None = None,
    session_id: str | None = None,
    idempotent: bool = False,
) -> DurableSession:
    """``session`` (an ``mcp.ClientSession``, or an ``mcp.Client``) with its ``call_tool`` recorded in
    ``runtime``'s sessions; its other methods pass through.

    ``server``: put in the ledger name (``mcp.<server>.<tool>``), so tools of two servers with one name
    stay apart. ``session_id``: the MCP session's id, for ``mcp.session.id`` on spans. ``idempotent``:
    a call left in doubt (its process died mid-call) may be sent again on resume — safe against a server
    that records with ``durable_mcp_tool``, which serves a repeated key. Outside a session of
    ``runtime`` calls go straight to the server.
    """
    if not isinstance(runtime, AgentRuntime):
        raise ConfigurationError(f"durable_session needs the runtime as its first argument, not {runtime!r}.")
    if not hasattr(session, "call_tool"):
        raise ConfigurationError(f"durable_session wraps an mcp.ClientSession or Client, not {session!r}.")
    for label, value in (("server", server), ("session_id", session_id)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigurationError(
                f"durable_session({label}=...) must be a non-empty string, not {value!r}."
            )
    return DurableSession(runtime, session, server, session_id, bool(idempotent))


class DurableSession:
    """An MCP client session whose tool calls are recorded, deduplicated and replayed; see
    ``durable_session``. Everything but ``call_tool`` is the wrapped session's own."""

    def __init__(
        self,
        runtime: AgentRuntime,
        session: ClientSession | Client,
        server: str | None,
        session_id: str | None,
        idempotent: bool,
    ) -> None:
        self.runtime = runtime
        self.session = session
        self.server = server
        self.session_id = session_id
        self.idempotent = idempotent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def ledger_name(self, name: str) -> str:
        """The name the calls of MCP tool ``name`` have in the ledger and in their keys."""
        return f"mcp.{self.server}.{name}" if self.server else f"mcp.{name}"

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        read_timeout_seconds: float | None = None,
        progress_callback: Any = None,
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> CallToolResult:
        """``ClientSession.call_tool``, recorded. The timeout, progress callback and ``meta`` are not part
        of the call's key; the arguments are, and must be JSON (else ``ArgumentEncodingError``, before any
        request is sent)."""
        run = current_run()
        if run is None or run.services is not self.runtime.services:
            return await self._send(name, arguments, read_timeout_seconds, progress_callback, meta)
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"call_tool(name=...) must name an MCP tool, not {name!r}.")
        if arguments is not None and not isinstance(arguments, Mapping):
            raise ConfigurationError(
                f"call_tool({name!r}, arguments=...) must be a dict of the tool's arguments, not "
                f"{type(arguments).__name__}; no request was sent."
            )
        ledger_name = self.ledger_name(name)
        args_json = encode(
            dict(arguments or {}),
            root="arguments",
            error=ArgumentEncodingError,
            tool_name=ledger_name,
            what=f"{ledger_name}: argument",
            then=" No request was sent.",
        )
        spec = _client_spec(self.runtime, ledger_name, self.idempotent)
        call = Invocation(self.runtime.services, run, spec, Phase.FORWARD, args_json)

        async def send() -> CallToolResult:
            info = current_call()
            carried = dict(meta or {})
            if info is not None:
                carried[META_KEY] = {"run_id": info.run_id, "call_id": info.call_id, "key": info.external_key}
            propagate.inject(carried)  # this call's span (the SDK puts its own there when it records one)
            span = trace.get_current_span()
            span.set_attribute(semconv.MCP_METHOD_NAME, semconv.MCP_METHOD_TOOLS_CALL)
            if self.session_id is not None:
                span.set_attribute(semconv.MCP_SESSION_ID, self.session_id)
            return await self._send(name, arguments, read_timeout_seconds, progress_callback, carried)

        try:
            result = await execute_async(call, send, (), {}, live=lambda result: _recorded(call, result))
        except McpToolError as replayed:  # a recorded is_error result, served again
            return CallToolResult(content=[TextContent(type="text", text=str(replayed))], is_error=True)
        return cast(CallToolResult, result)

    async def _send(
        self,
        name: str,
        arguments: Mapping[str, Any] | None,
        read_timeout_seconds: float | None,
        progress_callback: Any,
        meta: Mapping[str, Any] | None,
    ) -> CallToolResult:
        return await self.session.call_tool(
            name,
            dict(arguments) if arguments is not None else None,
            read_timeout_seconds,
            progress_callback,
            meta=cast(Any, dict(meta) if meta is not None else None),
        )


def _client_spec(runtime: AgentRuntime, ledger_name: str, idempotent: bool) -> Any:
    """The registered tool standing for MCP tool calls of ``ledger_name``: served as ``CallToolResult``,
    a recorded ``McpToolError`` raised again. Registered on first use."""
    with _lock:
        spec = runtime.tools.get(ledger_name)
        if spec is None:

            def mcp_call(**arguments: Any) -> Any: ...

            mcp_call.__annotations__ = {"return": CallToolResult}
            mcp_call.__name__ = ledger_name
            setattr(mcp_call, _MARK, True)
            tool(runtime, name=ledger_name, raises=(McpToolError,), idempotent=idempotent)(mcp_call)
            return runtime.tools[ledger_name]
    if getattr(spec.func, _MARK, False) is not True:
        raise ConfigurationError(
            f"a tool named {ledger_name!r} is registered on this runtime already, so MCP calls cannot be "
            f"recorded under that name; pass durable_session(..., server='...') to name them apart."
        )
    if spec.idempotent is not idempotent:
        raise ConfigurationError(
            f"MCP calls of {ledger_name!r} are recorded as idempotent={spec.idempotent} by another durable "
            f"session of this runtime; give both the same idempotent=..., or another server=... name."
        )
    return spec


def _recorded(call: Invocation, result: Any) -> Any:
    """Record a live result — failed when the tool reported an error — and hand it back as it came."""
    if getattr(result, "is_error", False):
        call.failed(McpToolError(_text(result) or "the MCP tool reported an error"))
    else:
        call.succeeded(result.model_dump(mode="json", by_alias=True, exclude_none=True))  # the wire form
    return result


def _text(result: Any) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


# --- server --------------------------------------------------------------------------------------------
def durable_mcp_tool(
    runtime: AgentRuntime,
    server: MCPServer,
    *,
    name: str | None = None,
    title: str | None = None,
    description: str | None = None,
    structured_output: bool | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as a tool of MCP ``server`` and of ``runtime`` (``@tool``, with
    ``options``: ``compensation``, ``idempotent``, ``cost``, ...); return the ``@tool`` function.

    Each ``tools/call`` runs it in a session of ``runtime``: a child run of the caller's run when the
    request comes from ``durable_session`` (its ``_meta`` names the run and the call's key), continued —
    not repeated — when the same key comes again; otherwise a run of its own. The session span continues
    the caller's trace (``traceparent`` in ``_meta``). A parameter annotated with MCP's ``Context``
    receives it, and is left out of the record and the key.
    """
    if not isinstance(runtime, AgentRuntime):
        raise ConfigurationError(
            f"durable_mcp_tool needs the runtime as its first argument, not {runtime!r}."
        )
    if not isinstance(server, MCPServer):
        raise ConfigurationError(
            f"durable_mcp_tool(runtime, server) registers on an mcp.server.mcpserver.MCPServer, not "
            f"{server!r}."
        )

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own_context = find_context_parameter(func)
        given = options.get("exclude", ())  # (anything but a tuple: @tool says what is wrong with it)
        excluded = (*given, own_context) if own_context and isinstance(given, tuple) else given
        recorded = tool(runtime, name=name, **(options | {"exclude": excluded}))(func)
        tool_name = name or func.__name__
        server.add_tool(
            _handler(runtime, func, recorded, tool_name, own_context),
            name=tool_name,
            title=title,
            description=description or inspect.getdoc(func),
            structured_output=structured_output,
        )
        return recorded

    return decorate


def _handler(
    runtime: AgentRuntime,
    func: Callable[..., Any],
    recorded: Callable[..., Any],
    tool_name: str,
    own_context: str | None,
) -> Callable[..., Any]:
    """What ``server`` calls: the tool's parameters (resolved, so MCP builds the same schema) and a
    ``Context`` one, through which the request's ``_meta`` is read."""
    context_name = own_context or _CONTEXT
    is_async = inspect.iscoroutinefunction(func)

    async def handler(**kwargs: Any) -> Any:
        ctx = kwargs[context_name] if own_context else kwargs.pop(_CONTEXT)
        session, parent = _server_session(runtime, tool_name, ctx)
        token = otel_context.attach(parent) if parent is not None else None
        try:
            if is_async:
                async with session:
                    _mark_server_span(ctx)
                    return await recorded(**kwargs)

            def run() -> Any:
                with session:
                    _mark_server_span(ctx)
                    return recorded(**kwargs)

            # on a worker thread, as MCP runs sync tools (the session and trace context go along)
            return await anyio.to_thread.run_sync(contextvars.copy_context().run, run)
        finally:
            if token is not None:
                otel_context.detach(token)

    hints = typing.get_type_hints(func, include_extras=True)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in _parameters(func)]
    if own_context is None:
        extra = inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=Context)
        at = len(params) - (1 if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD else 0)
        params.insert(at, extra)
    returns = hints.get("return", inspect.Signature.empty)
    handler.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    handler.__annotations__ = {p.name: p.annotation for p in params} | (
        {"return": returns} if returns is not inspect.Signature.empty else {}
    )
    handler.__name__ = handler.__qualname__ = tool_name
    handler.__doc__ = func.__doc__
    handler.__module__ = getattr(func, "__module__", __name__)
    return handler


def _parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    return list(inspect.signature(func).parameters.values())


def _request_meta(ctx: Any) -> tuple[Any, dict[str, Any]]:
    """The request context and its ``_meta`` (empty when the tool is called outside a request)."""
    try:
        request = ctx.request_context
    except (AttributeError, ValueError):
        return None, {}
    return request, dict(request.meta or {})


def _server_session(runtime: AgentRuntime, tool_name: str, ctx: Any) -> tuple[AgentSession, Any]:
    """The session a ``tools/call`` runs in, and the trace context to open it under (``None``: the
    current one already continues the caller's trace, as MCP's own server span does when recorded)."""
    _, meta = _request_meta(ctx)
    caller = meta.get(META_KEY)
    if isinstance(caller, Mapping) and isinstance(caller.get("run_id"), str) and caller.get("key"):
        parent, key = caller["run_id"], str(caller["key"])
        session = runtime.agent_session(tool_name, parent_run_id=parent, child_key=key)
    else:
        session = runtime.agent_session(tool_name)
    remote = propagate.extract(meta)
    remote_span = trace.get_current_span(remote).get_span_context()
    current = trace.get_current_span().get_span_context()
    if not remote_span.is_valid or (current.is_valid and current.trace_id == remote_span.trace_id):
        return session, None
    return session, remote


def _mark_server_span(ctx: Any) -> None:
    """The MCP conventions' attributes, on the session span of a ``tools/call``."""
    request, _ = _request_meta(ctx)
    span = trace.get_current_span()
    span.set_attribute(semconv.MCP_METHOD_NAME, semconv.MCP_METHOD_TOOLS_CALL)
    if request is None:
        return
    if request.request_id is not None:
        span.set_attribute(semconv.JSONRPC_REQUEST_ID, str(request.request_id))
    if request.protocol_version:
        span.set_attribute(semconv.MCP_PROTOCOL_VERSION, request.protocol_version)
    headers = getattr(request.request, "headers", None)  # Streamable HTTP: the session's header
    session_id = headers.get("mcp-session-id") if headers is not None else None
    if session_id:
        span.set_attribute(semconv.MCP_SESSION_ID, session_id)
