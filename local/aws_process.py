"""moto's AWS backends in a process of their own, so the local runtime gets a second core.

In one process the handlers, botocore and moto share one GIL, and moto (DynamoDB, SQS, the stream,
Step Functions) is a third of a build's CPU. Here a child process runs the same moto, with the same
fixes (`local.moto_fixes`), and the runtime's boto3 clients reach it through botocore's `before-send`
event, the very hook moto's in-process mock uses: botocore still serializes, signs and parses every
call, only the bytes of the HTTP request and response cross to the other process (a local
authenticated connection, `multiprocessing.connection`), not an HTTP stack, which on this path
cost more CPU per call than moto itself.

What crosses back: Step Functions, running in the child, invokes the plan and dispatch functions;
its Lambda backend sends the invocation to the runtime's process, which runs the real handler as
`LambdaSimpleBackend.invoke` does in one process. The relay that plays the EventBridge Pipe waits
for the child's "a stream was written" signal over the same connection. SQS long polls wait in the
child. `python -m local.aws_process` is the child; `BackendsProcess` starts and talks to it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import secrets
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

# Answers a Lambda invocation: (function name, request payload) -> (response payload, FunctionError).
InvokeFunction = Callable[[str, bytes], tuple[bytes, str | None]]

_STARTUP_TIMEOUT_S = 60.0


class _Pool:
    """Authenticated connections to one listener, each used by one caller at a time (a long poll
    holds its connection while it waits, so there are as many as calls in flight)."""

    def __init__(self, address: Any, authkey: bytes) -> None:
        self.address = address
        self.authkey = authkey
        self._idle: deque[Connection] = deque()
        self._lock = threading.Lock()
        self.closed = False

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = Client(self.address, authkey=self.authkey)
        try:
            yield conn
        except BaseException:
            conn.close()  # a call cut short leaves its answer unread: never reuse the connection
            raise
        with self._lock:
            if self.closed:
                conn.close()
            else:
                self._idle.append(conn)

    def call(self, message: Any) -> Any:
        with self.connection() as conn:
            conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
            return pickle.loads(conn.recv_bytes())

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = list(self._idle), deque()
        for conn in idle:
            conn.close()


def _serve(listener: Listener, handle: Callable[[Any], Any], name: str) -> None:
    """Accept connections for good; each gets a thread answering its calls one after another."""

    def answer(conn: Connection) -> None:
        with conn:
            while True:
                try:
                    message = pickle.loads(conn.recv_bytes())
                except (EOFError, OSError):
                    return
                try:
                    reply = handle(message)
                except Exception as exc:  # the caller raises it (a bug here, not an AWS error)
                    reply = _Failure(f"{type(exc).__name__}: {exc}")
                conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))

    def accept() -> None:
        while True:
            try:
                conn = listener.accept()
            except OSError:
                return  # the listener was closed
            except Exception:  # a connection that failed the handshake: not ours
                continue
            threading.Thread(target=answer, args=(conn,), name=f"{name}-conn", daemon=True).start()

    threading.Thread(target=accept, name=f"{name}-accept", daemon=True).start()


class _Failure:
    def __init__(self, message: str) -> None:
        self.message = message


class BackendsError(RuntimeError):
    """The backends process failed a call (not an AWS error answer: those come back as responses)."""


def _reply(value: Any) -> Any:
    if isinstance(value, _Failure):
        raise BackendsError(value.message)
    return value


# --- the runtime's side ----------------------------------------------------------------------------
_active: BackendsProcess | None = None  # the process this one's boto3 clients are sent to, if any


def _before_send(request: Any, **_: Any) -> Any:
    """botocore's `before-send`: answer the request from the backends process (when one is active)."""
    target = _active
    if target is None:
        return None
    return target.send(request)


def _register_before_send() -> None:
    from botocore.handlers import BUILTIN_HANDLERS

    if ("before-send", _before_send) not in BUILTIN_HANDLERS:  # every client made from now on
        BUILTIN_HANDLERS.append(("before-send", _before_send))


class BackendsProcess:
    """Starts `python -m local.aws_process`, sends this process's AWS calls to it and answers its
    Lambda invocations with `invoke`."""

    def __init__(self, invoke: InvokeFunction, *, aws_port: int | None = None) -> None:
        self.invoke = invoke
        self.aws_port = aws_port
        self.pid: int | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._pool: _Pool | None = None
        self._callbacks: Listener | None = None
        self._authkey = b""

    @property
    def aws_endpoint(self) -> str | None:
        return f"http://127.0.0.1:{self.aws_port}" if self.aws_port else None

    def start(self) -> None:
        self.spawn()
        self.connect()

    def spawn(self) -> None:
        """Start the child; `connect` waits until it serves (this process can do its own start-up
        meanwhile: the child spends a second or more importing moto)."""
        if _active is not None:
            raise RuntimeError("another local runtime's backends process is active in this process")
        _register_before_send()
        authkey = self._authkey = secrets.token_bytes(32)
        self._callbacks = Listener(authkey=authkey)
        _serve(self._callbacks, self._answer_invocation, "lambda")
        config = {
            "authkey": authkey.hex(),
            "callback": self._callbacks.address,
            "aws_port": self.aws_port,
        }
        # stdin stays open for the child's life: when this process ends, so does the child.
        self._child = subprocess.Popen(
            [sys.executable, "-m", "local.aws_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=os.environ.copy(),
        )
        self.pid = self._child.pid
        assert self._child.stdin is not None and self._child.stdout is not None
        self._child.stdin.write((json.dumps(config) + "\n").encode())
        self._child.stdin.flush()

    def connect(self) -> None:
        global _active
        assert self._child is not None and self._child.stdout is not None, "spawn() first"
        line = _read_line(self._child.stdout, _STARTUP_TIMEOUT_S)
        if not line:
            code = self._child.poll()
            self.stop()
            raise RuntimeError(f"the AWS backends process did not start (exit code {code})")
        ready = json.loads(line)
        address = ready["address"]
        self._pool = _Pool(tuple(address) if isinstance(address, list) else address, self._authkey)
        self.aws_port = ready.get("aws_port")
        _active = self

    def stop(self) -> None:
        global _active
        if _active is self:
            _active = None
        if self._pool is not None:
            self._pool.close()
        if self._callbacks is not None:
            self._callbacks.close()
            self._callbacks = None
        child, self._child = self._child, None
        if child is not None:
            if child.stdin is not None:
                child.stdin.close()  # the child's lifeline: it exits
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()

    def send(self, request: Any) -> Any:
        """A botocore AWSPreparedRequest, answered by moto in the backends process."""
        from botocore.awsrequest import AWSResponse

        assert self._pool is not None, "the backends process is not running"
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        message = ("http", request.method, request.url, list(request.headers.items()), body)
        answer = _reply(self._pool.call(message))
        if answer is None:  # not a service moto plays (a local endpoint): botocore sends it itself
            return None
        status, headers, payload = answer
        return AWSResponse(request.url, status, headers, _RawBody(payload))

    def wait_stream(self, timeout_s: float) -> bool:
        """Block until a DynamoDB stream gets a record (or `timeout_s`); True if one did."""
        assert self._pool is not None
        return bool(_reply(self._pool.call(("stream_wait", timeout_s))))

    def wake_stream(self) -> None:
        """Wake whoever waits in `wait_stream` (stopping the relay)."""
        if self._pool is not None and not self._pool.closed:
            _reply(self._pool.call(("stream_wake",)))

    def _answer_invocation(self, message: Any) -> Any:
        _, name, payload = message
        return self.invoke(name, payload)


class _RawBody(io.BytesIO):
    """A response body as botocore reads it from urllib3 (`stream()`), as moto's in-process mock gives it."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        chunk = self.read()
        while chunk:
            yield chunk
            chunk = self.read()


def _read_line(stream: Any, timeout_s: float) -> bytes:
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return got[0] if got else b""


# --- the child's side ------------------------------------------------------------------------------
def _child_main() -> None:
    import signal

    # Ctrl-C reaches the whole process group: the runtime decides (it cancels the build, through
    # this process), and this one ends when the runtime closes its stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Only the "ready" line goes to the runtime's pipe; anything else printed goes to stderr.
    ready = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    config = json.loads(sys.stdin.readline())
    authkey = bytes.fromhex(config["authkey"])
    callback_address = config["callback"]
    callback_address = tuple(callback_address) if isinstance(callback_address, list) else callback_address

    from moto import mock_aws

    mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}})
    mock.start()
    from local import moto_fixes

    moto_fixes.install()
    from moto.core.models import botocore_stubber

    callbacks = _Pool(callback_address, authkey)
    _route_lambda_to(callbacks)

    from botocore.awsrequest import AWSPreparedRequest
    from botocore.compat import HTTPHeaders

    def handle(message: Any) -> Any:
        op = message[0]
        if op == "http":
            _, method, url, header_items, body = message
            headers = HTTPHeaders()
            for key, value in header_items:
                headers[key] = value
            request = AWSPreparedRequest(method=method, url=url, headers=headers, body=body, stream_output=False)
            answer = botocore_stubber.process_request(request)
            if answer is None:
                return None
            status, out_headers, payload = answer
            if isinstance(payload, str):
                payload = payload.encode("utf-8")
            return status, dict(out_headers), payload
        if op == "stream_wait":
            written = moto_fixes.stream_written.wait(message[1])
            moto_fixes.stream_written.clear()
            return written
        if op == "stream_wake":
            moto_fixes.stream_written.set()
            return None
        return _Failure(f"unknown operation {op!r}")

    listener = Listener(authkey=authkey)
    _serve(listener, handle, "aws")
    aws_port = None
    if config.get("aws_port") is not None:  # the same backends over HTTP, for tools (`stepwise dlq`)
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=config["aws_port"], verbose=False)
        server.start()
        aws_port = server.get_host_and_port()[1]
    from local import gc_policy

    gc_policy.install()  # moto's data lives here: full collections walk only what is new
    ready.write(json.dumps({"address": listener.address, "aws_port": aws_port}) + "\n")
    ready.close()
    sys.stdin.read()  # until the runtime closes it (or ends)
    os._exit(0)


def _route_lambda_to(callbacks: _Pool) -> None:
    """Step Functions' Lambda tasks, in this child, run in the runtime's process."""
    from moto.awslambda_simple.models import LambdaSimpleBackend

    def invoke(
        backend: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
    ) -> bytes:
        name = function_name.split(":")[6] if function_name.startswith("arn:") else function_name
        payload = body.encode() if isinstance(body, str) else (body or b"")
        result, function_error = _reply(callbacks.call(("invoke", name, payload)))
        if function_error:
            response_headers["x-amz-function-error"] = function_error
        return result  # type: ignore[no-any-return]

    LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign, assignment]


if __name__ == "__main__":
    _child_main()
