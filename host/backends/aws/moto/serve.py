"""A local moto server for the AWS backend's tests (started by host/backends/aws/src/moto.rs).

Usage: python3 serve.py [PORT]        (no PORT or 0: any free port)

Listens on 127.0.0.1, prints the port as the first line of stdout, and serves until SIGINT or
until its stdin closes (the test process that started it has exited).

moto's threaded server runs every request on its own thread and does not make a check-then-write
atomic: concurrent DynamoDB `ADD`s lose updates, and two conditional S3 PUTs (If-Match,
If-None-Match) can both pass their check. Real DynamoDB and S3 make each of these atomic, so this
wrapper runs DynamoDB requests one at a time, and S3 requests that write (PUT, POST, DELETE) one
at a time; reads still run in parallel. That way our tests test our protocol, not moto's races.
SQS requests (all POSTs, `X-Amz-Target: AmazonSQS.*`) are not serialised: a long poll waits up
to 20 seconds inside its request and would hold every other write back for that long.
This is werkzeug's threaded server, as `run_simple(threaded=True)` builds it, minus the banner.
"""

import logging
import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


class OneAtATime:
    """WSGI middleware: serialise the requests moto cannot run concurrently."""

    def __init__(self, app):
        self.app = app
        self.dynamodb = threading.Lock()
        self.writes = threading.Lock()

    def lock_for(self, environ):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB"):
            return self.dynamodb
        if target.startswith("AmazonSQS"):
            return None
        if environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE"):
            return self.writes
        return None

    def __call__(self, environ, start_response):
        lock = self.lock_for(environ)
        if lock is None:
            return self.app(environ, start_response)
        with lock:
            # Run the whole request, body included, under the lock.
            result = self.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        return [body]


def exit_when_stdin_closes():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except Exception:
        pass
    os.kill(os.getpid(), signal.SIGINT)


def interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    # A process started in the background by a non-interactive shell inherits SIGINT as
    # ignored, and Python then never raises KeyboardInterrupt: install the handler ourselves.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = OneAtATime(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True)
    os.environ["MOTO_PORT"] = str(server.port)
    print(server.port, flush=True)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        # Leave without interpreter shutdown: the stdin watcher is still blocked in a read,
        # and finalising around it aborts with "could not acquire lock for <stdin>".
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
