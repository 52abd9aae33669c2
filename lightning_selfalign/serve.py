"""A small OpenAI-compatible HTTP server over the hf engine: ``python -m lightning_selfalign.serve --model DIR``.

For CPU demos and tests, not production (use ``vllm serve`` there). It speaks the part of the API the
openai engine uses: ``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions`` with
``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``, ``n=1`` and ``stream`` (server-sent events in the
API's chunk format; the text is sent once the completion is generated, a line per event, since the batcher
generates whole completions). A request naming another model than the one served gets a 404, as the API answers.
``/v1/models`` reports the folder it loaded as ``root``, as ``vllm serve`` and SGLang do. With ``--allow_reload true``
it also takes SGLang's ``POST /update_weights_from_disk`` (``{"model_path": DIR}``): the new weights load beside the
old, the batcher switches between batches (never inside one), and the request returns once they serve; the served
name stays. The self-align rounds use it (``--generation.reload_command``) to make the server follow each round.
Concurrent requests are gathered into batches (up to ``batch_size``, waiting at most ``max_wait_ms`` for company)
and run by one thread, since the model is not thread-safe. Because the hf engine samples each row with its own
seeded generator, a request returns the same text here as through ``--engine hf`` directly, however it was batched.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lightning_selfalign.engines import Completion, Request, Sampling
from lightning_selfalign.errors import UserError


class BadRequest(ValueError):
    """A request the server cannot serve; answered with HTTP 400."""


class Batcher:
    """Runs queued requests in batches on one thread; requests with the same sampling settings share a batch."""

    def __init__(self, engine: Any, batch_size: int, max_wait_s: float, root: str = "") -> None:
        self.engine = engine
        self.root = root
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.queue: queue.Queue[tuple[Request, Sampling, Future]] = queue.Queue()
        self._swap = threading.Lock()  # held while a batch generates, so weights never change inside one
        threading.Thread(target=self._loop, daemon=True, name="batcher").start()

    def replace_engine(self, engine: Any, root: str) -> None:
        """Serve ``engine`` (loaded from ``root``) from the next batch on; the old one is closed."""
        with self._swap:
            old, self.engine, self.root = self.engine, engine, root
        old.close()

    def submit(self, request: Request, sampling: Sampling) -> Completion:
        future: Future = Future()
        self.queue.put((request, sampling, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            pending = [self.queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(pending) < self.batch_size and (left := deadline - time.monotonic()) > 0:
                try:
                    pending.append(self.queue.get(timeout=left))
                except queue.Empty:
                    break
            with self._swap:
                self._run(pending)

    def _run(self, pending: list[tuple[Request, Sampling, Future]]) -> None:
        for sampling in dict.fromkeys(item[1] for item in pending):
            group = [item for item in pending if item[1] == sampling]
            try:
                completions = self.engine.generate([item[0] for item in group], sampling)
            except Exception as exc:  # the error goes back to each waiting client as HTTP 500
                for _, _, future in group:
                    future.set_exception(exc)
                continue
            for (_, _, future), completion in zip(group, completions):
                future.set_result(completion)


def parse_request(body: dict, chat: bool) -> tuple[Request, Sampling]:
    """OpenAI request body -> engine request + sampling; :class:`BadRequest` for what this server cannot do."""
    if body.get("n", 1) != 1:
        raise BadRequest("only n=1 is supported; send one request per sample")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    seed = int(body["seed"]) if body.get("seed") is not None else 0
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        request = Request(text=None, messages=messages, stop=tuple(stop), seed=seed)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be one string")
        request = Request(text=prompt, messages=None, stop=tuple(stop), seed=seed)
    sampling = Sampling(
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        max_new_tokens=int(body.get("max_tokens") or 16),
    )
    return request, sampling


def response_body(model: str, completion: Completion, chat: bool) -> dict:
    """The OpenAI response JSON for one completion."""
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": completion.text}}
    else:
        choice = {"index": 0, "text": completion.text, "logprobs": None}
    choice["finish_reason"] = completion.finish_reason
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.num_tokens,
            "total_tokens": completion.prompt_tokens + completion.num_tokens,
        },
    }


def stream_chunks(model: str, completion: Completion, chat: bool) -> list[dict]:
    """The completion as the API's streamed chunks: the text a line at a time, then the finish reason."""
    ident, created = f"cmpl-{uuid.uuid4().hex[:12]}", int(time.time())
    pieces = completion.text.splitlines(keepends=True) or [""]

    def chunk(text: str | None, finish: str | None) -> dict:
        if chat:
            delta = {} if text is None else {"content": text}
            choice: dict = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        kind = "chat.completion.chunk" if chat else "text_completion"
        return {"id": ident, "object": kind, "created": created, "model": model, "choices": [choice]}

    first = [chunk(None, None) | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                              "finish_reason": None}]}] if chat else []  # fmt: skip
    return first + [chunk(piece, None) for piece in pieces] + [chunk(None, completion.finish_reason)]


def make_handler(
    model_name: str, batcher: Batcher, load: Callable[[str], Any] | None = None
) -> type[BaseHTTPRequestHandler]:
    """The request handler; ``load`` (a folder -> engine) enables ``POST /update_weights_from_disk``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise here
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                card = {"id": model_name, "object": "model", "owned_by": "local", "root": batcher.root}
                self._send(200, {"object": "list", "data": [card]})
            elif self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            path = self.path.rstrip("/").removeprefix("/v1")
            if path == "/update_weights_from_disk" and load is not None:
                self._reload()
                return
            if path not in ("/completions", "/chat/completions"):
                self._error(404, f"no route {self.path}")
                return
            chat = path == "/chat/completions"
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                request, sampling = parse_request(body, chat)
            except (BadRequest, ValueError, TypeError, KeyError) as exc:
                self._error(400, str(exc))
                return
            if body.get("model") not in (None, model_name):
                self._send(404, {"error": {"message": f"The model `{body['model']}` does not exist; this server "
                                           f"serves `{model_name}`", "type": "invalid_request_error",
                                           "code": "model_not_found"}})  # fmt: skip
                return
            try:
                completion = batcher.submit(request, sampling)
            except Exception as exc:  # a failed generation is the server's fault: 500, and the client may retry
                self._error(500, f"{type(exc).__name__}: {exc}")
                return
            if body.get("stream"):
                self._stream(stream_chunks(model_name, completion, chat))
            else:
                self._send(200, response_body(model_name, completion, chat))

        def _reload(self) -> None:
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                folder = body["model_path"]
                if not isinstance(folder, str) or not folder:
                    raise TypeError("'model_path' must be a folder")
            except (ValueError, TypeError, KeyError) as exc:
                self._send(400, {"success": False, "message": f"bad request: {exc}"})
                return
            try:
                batcher.replace_engine(load(folder), folder)
            except Exception as exc:  # whatever stops a folder from loading, the old weights go on serving
                self._send(400, {"success": False, "message": f"cannot load {folder}: {' '.join(str(exc).split())}"})
                return
            self._send(200, {"success": True, "message": f"serving {folder}"})

        def _stream(self, chunks: list[dict]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_model_name: str | None = None,
    dtype: str = "auto",
    batch_size: int = 16,
    max_wait_ms: float = 20.0,
    allow_reload: bool = False,
) -> None:
    """Serve a transformers model over an OpenAI-compatible HTTP API (CPU demos and tests; use vllm serve on GPUs).

    Args:
        model: model folder or Hub name, loaded with transformers.
        host: interface to listen on (127.0.0.1: this machine only).
        port: TCP port; 0 picks a free one (the line printed at start names it).
        served_model_name: name clients pass as ``model`` (default: ``model`` as given).
        dtype: weights dtype: auto, float32, bfloat16 or float16.
        batch_size: most requests generated together.
        max_wait_ms: how long the first request of a batch waits for others to join it.
        allow_reload: accept ``POST /update_weights_from_disk`` with ``{"model_path": DIR}`` (SGLang's API) and serve
            that folder's weights from then on, under the same name. Off by default: any client that reaches the
            port could make the server load another folder.
    """
    from lightning_selfalign.engines.hf import HFEngine

    if not 0 <= port <= 65535:
        raise UserError(f"--port must be in 0-65535 (0 picks a free one), got {port}")

    def load(folder: str) -> HFEngine:
        return HFEngine(folder, dtype=dtype, batch_size=batch_size)

    batcher = Batcher(load(model), batch_size=batch_size, max_wait_s=max_wait_ms / 1000, root=model)
    handler = make_handler(served_model_name or model, batcher, load if allow_reload else None)
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None
    server.daemon_threads = True
    bound_host, bound_port = server.server_address[:2]
    print(f"serving {served_model_name or model} on http://{bound_host}:{bound_port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    import sys

    from lightning_selfalign.cli import main as selfalign

    selfalign(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    main()
