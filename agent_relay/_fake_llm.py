"""A local HTTP server that speaks the OpenAI and Anthropic wire formats, for tests and the offline demo.

It plays a simple tool-using model: asked with tools and a user message last, it calls the first tool
(with ``tool_arguments``); once a tool result is in the conversation, it answers in text. Usage is
reported like the real APIs (prompt tokens from the request's size), and every request is counted, so a
test can prove a replay sent none.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeLLMServer:
    """``with FakeLLMServer() as llm:`` then ``openai.OpenAI(base_url=llm.openai_url, api_key="x")`` or
    ``anthropic.Anthropic(base_url=llm.anthropic_url, api_key="x")``."""

    def __init__(self, tool_arguments: dict[str, Any] | None = None, output_tokens: int = 20) -> None:
        self.tool_arguments = tool_arguments or {}
        self.output_tokens = output_tokens
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests.append((self.path, body))
                    n = len(server.requests)
                route = {
                    "/v1/chat/completions": server._chat,
                    "/v1/responses": server._responses,
                    "/v1/messages": server._messages,
                }.get(self.path.split("?")[0])
                if route is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                reply = route(body, n)
                if body.get("stream"):
                    if self.path.startswith("/v1/chat"):
                        events = server._chat_chunks(reply, body)
                    elif self.path.startswith("/v1/responses"):
                        events = server._response_events(reply)
                    else:
                        events = server._message_events(reply)
                    payload = "".join(
                        f"{'event: ' + e['type'] + chr(10) if 'type' in e else ''}data: {json.dumps(e)}\n\n"
                        for e in events
                    ).encode()
                    if self.path.startswith("/v1/chat"):
                        payload += b"data: [DONE]\n\n"
                    content_type = "text/event-stream"
                else:
                    payload, content_type = json.dumps(reply).encode(), "application/json"
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-llm", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the "model" -----------------------------------------------------------------------------------
    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        return 10 + len(json.dumps(body.get("messages") or body.get("input") or "")) // 4

    def _wants_tool(self, messages: list[dict[str, Any]], tools: list[Any] | None) -> bool:
        last = messages[-1] if messages else {}
        content = last.get("content")
        is_tool_result = last.get("role") == "tool" or (
            isinstance(content, list)
            and any(isinstance(c, dict) and c.get("type") == "tool_result" for c in content)
        )
        return bool(tools) and not is_tool_result

    def _chat(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        messages, tools = body.get("messages", []), body.get("tools") or []
        if self._wants_tool(messages, tools):
            name = tools[0]["function"]["name"]
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{n}",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(self.tool_arguments)},
                    }
                ],
            }
            finish = "tool_calls"
        elif (schema := _schema(body)) is not None:  # structured outputs: an object of that schema
            message, finish = {"role": "assistant", "content": json.dumps(_example(schema, n))}, "stop"
        else:
            message, finish = (
                {"role": "assistant", "content": f"Done after {len(messages)} messages."},
                "stop",
            )
        prompt = self._prompt_tokens(body)
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": 1_700_000_000 + n,
            "model": body.get("model", "gpt-4o-mini"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": self.output_tokens,
                "total_tokens": prompt + self.output_tokens,
            },
        }

    def _chat_chunks(self, reply: dict[str, Any], body: dict[str, Any]) -> list[dict[str, Any]]:
        """The reply as ``chat.completion.chunk`` events (usage last, if the request asked for it)."""
        base = {
            "id": reply["id"],
            "object": "chat.completion.chunk",
            "created": reply["created"],
            "model": reply["model"],
        }
        message, finish = reply["choices"][0]["message"], reply["choices"][0]["finish_reason"]
        chunks = [
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
            }
        ]
        for word in (message.get("content") or "").split(" "):
            chunks.append(
                {**base, "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}
            )
        for i, call in enumerate(message.get("tool_calls") or []):
            chunks.append(
                {
                    **base,
                    "choices": [
                        {"index": 0, "delta": {"tool_calls": [{"index": i, **call}]}, "finish_reason": None}
                    ],
                }
            )
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": reply["usage"]})
        return chunks

    def _message_events(self, reply: dict[str, Any]) -> list[dict[str, Any]]:
        """The reply as Anthropic message stream events."""
        usage = reply["usage"]
        start = {**reply, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
        for i, block in enumerate(reply["content"]):
            if block["type"] == "text":
                events += [
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "text_delta", "text": block["text"]},
                    },
                    {"type": "content_block_stop", "index": i},
                ]
        events += [
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
            {"type": "message_stop"},
        ]
        return events

    def _response_events(self, reply: dict[str, Any]) -> list[dict[str, Any]]:
        """The reply as Responses API stream events, the text in two deltas (``sequence_number`` in order)."""
        start = {**reply, "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": start},
            {"type": "response.in_progress", "response": start},
        ]
        for index, item in enumerate(reply["output"]):
            where = {"output_index": index, "item_id": item["id"]}
            if item["type"] == "function_call":
                arguments = item["arguments"]
                events += [
                    {"type": "response.output_item.added", "output_index": index,
                     "item": {**item, "arguments": "", "status": "in_progress"}},
                    {"type": "response.function_call_arguments.delta", **where, "delta": arguments},
                    {"type": "response.function_call_arguments.done", **where, "arguments": arguments},
                ]  # fmt: skip
            else:
                text = item["content"][0]["text"]
                part, at = (
                    {"type": "output_text", "text": "", "annotations": []},
                    {**where, "content_index": 0},
                )
                events += [
                    {"type": "response.output_item.added", "output_index": index,
                     "item": {**item, "status": "in_progress", "content": []}},
                    {"type": "response.content_part.added", **at, "part": part},
                    *({"type": "response.output_text.delta", **at, "delta": d, "logprobs": []}
                      for d in (text[: len(text) // 2], text[len(text) // 2 :])),
                    {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
                    {"type": "response.content_part.done", **at, "part": item["content"][0]},
                ]  # fmt: skip
            events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        events.append({"type": "response.completed", "response": reply})
        return [{**event, "sequence_number": n} for n, event in enumerate(events)]

    def _responses(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        prompt = self._prompt_tokens(body)
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        given = body.get("input")
        items: list[Any] = given if isinstance(given, list) else []
        answered = any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)
        output: list[dict[str, Any]] = [
            {
                "id": f"msg_{n}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": f"Answer {n}.", "annotations": []}],
            }
        ]
        if tools and not answered:  # a tool-using model: call the first tool until a result comes back
            output = [
                {
                    "id": f"fc_{n}",
                    "type": "function_call",
                    "call_id": f"call_{n}",
                    "name": tools[0]["name"],
                    "arguments": json.dumps(self.tool_arguments),
                    "status": "completed",
                }
            ]
        return {
            "id": f"resp_{n}",
            "object": "response",
            "created_at": 1_700_000_000 + n,
            "status": "completed",
            "model": body.get("model", "gpt-4o-mini"),
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "output": output,
            "usage": {
                "input_tokens": prompt,
                "output_tokens": self.output_tokens,
                "total_tokens": prompt + self.output_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }

    def _messages(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        messages, tools = body.get("messages", []), body.get("tools") or []
        if self._wants_tool(messages, tools):
            content: list[dict[str, Any]] = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{n}",
                    "name": tools[0]["name"],
                    "input": self.tool_arguments,
                }
            ]
            stop = "tool_use"
        else:
            content, stop = [{"type": "text", "text": f"Done after {len(messages)} messages."}], "end_turn"
        return {
            "id": f"msg_{n}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._prompt_tokens(body),
                "output_tokens": self.output_tokens,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        }


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a chat request asks its answer to follow (``response_format`` json_schema)."""
    response_format = body.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) else None


def _example(schema: dict[str, Any], n: int) -> dict[str, Any]:
    """A deterministic object of ``schema``'s top-level properties (``n`` tells calls apart)."""
    example: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        if kind == "string":
            example[name] = f"{name}-{n}"
        elif kind == "integer":
            example[name] = n
        elif kind == "number":
            example[name] = n + 0.5
        else:
            example[name] = True if kind == "boolean" else None
    return example
