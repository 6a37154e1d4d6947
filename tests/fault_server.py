"""A small OpenAI-compatible server on 127.0.0.1 that misbehaves on purpose, for testing retries.

`FaultServer(script=[...])` answers its first calls with the scripted faults, in order of arrival,
then answers normally:

- ``"429"``, ``"500"``, ``"503"``, ``"400"``: that HTTP status with an OpenAI-style error body;
- ``"hang"``: never answers (until the server stops): the client's timeout must end the call;
- ``"drop"``: closes the connection without any response;
- ``"fewer"``: answers with one choice fewer than asked;
- ``"truncated"``: starts a 200 answer whose body stops halfway (the connection closes early);
- ``"malformed"``: a 200 answer whose body is not JSON (a proxy's error page, say);
- ``"no_choices"``: a 200 JSON answer without its choices.

Normal answers: choice i of a chat or completion request is ``"reply[i]: <last text>"``. The server
records every call (path, JSON body, Authorization header) and the largest number of requests
handled at once. Runs its own event loop in a daemon thread; use it as a context manager.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    authorization: str
    fault: str | None


@dataclass
class FaultServer:
    script: list[str] = field(default_factory=list)
    answer_delay_s: float = 0.0
    model: str = "fault-model"
    calls: list[Call] = field(default_factory=list)
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._script = list(self.script)
        self._in_flight = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ---- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _stop(self) -> None:
        await self._runner.cleanup()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:  # e.g. a handler still "hanging"
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/v1/completions", self._complete)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    # ---- handlers ---------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        fault = self._script.pop(0) if self._script else None
        self.calls.append(Call(request.path, body, request.headers.get("Authorization", ""), fault))
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if fault in ("429", "500", "503", "400"):
                return web.json_response(
                    {"error": {"message": f"injected {fault}", "type": "injected", "code": int(fault)}},
                    status=int(fault),
                )
            if fault == "drop":
                request.transport.abort()  # close the socket: the client sees a dropped connection
                raise asyncio.CancelledError
            if fault == "hang":
                await asyncio.Event().wait()  # never set: cancelled when the server stops
            if fault == "malformed":
                return web.Response(status=200, text="<html>502 Bad Gateway</html>", content_type="application/json")
            if fault == "no_choices":
                return web.json_response({"id": "x", "object": "chat.completion", "model": self.model})
            if fault == "truncated":
                import json

                full = json.dumps(self._answer(request.path, body)).encode()
                resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                               "Content-Length": str(len(full))})
                await resp.prepare(request)
                await resp.write(full[: len(full) // 2])
                request.transport.abort()  # the rest never comes
                raise asyncio.CancelledError
            if self.answer_delay_s:
                await asyncio.sleep(self.answer_delay_s)
            answer = self._answer(request.path, body)
            if fault == "fewer":
                answer["choices"] = answer["choices"][:-1]
            return web.json_response(answer)
        finally:
            self._in_flight -= 1

    def _answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        n = body.get("n") or 1
        if path.endswith("/chat/completions"):
            last = body["messages"][-1]["content"]
            if isinstance(last, list):
                last = " ".join(p.get("text", "") for p in last if p.get("type") == "text")
            choices = [
                {"index": i, "message": {"role": "assistant", "content": f"reply[{i}]: {last}"},
                 "finish_reason": "stop"}
                for i in range(n)
            ]
            obj = "chat.completion"
        else:
            choices = [{"index": i, "text": f"reply[{i}]: {body['prompt']}", "finish_reason": "length"}
                       for i in range(n)]
            obj = "text_completion"
        words = sum(len(c.get("text", c.get("message", {}).get("content", "")).split()) for c in choices)
        return {
            "id": "cmpl-fault", "object": obj, "created": 0, "model": body.get("model", self.model),
            "choices": choices,
            "usage": {"prompt_tokens": 1, "completion_tokens": words, "total_tokens": words + 1},
        }
