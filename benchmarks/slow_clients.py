"""Does /health still answer while slow clients hold connections open? One row per set-up.

A slow client (slowloris) opens a connection and then sends nothing (`idle`), sends request
headers one byte per --interval and never ends them (`headers`), or sends complete headers
announcing a 1 MB body and then the body one byte per --interval (`body`). A client whose
connection the server closes opens a new one at once, as an attacker would. `predict` is no
attack but the load the server exists for: N clients each POSTing /predict with 8 generated
images (one forward pass of a randomly initialised yolo11n) in a loop. Each set-up is
a real server on 127.0.0.1 with the app of `backend.wsgi` (TRAINING=0, MODEL_DIR in a
temporary folder, no model needed for /health), and every attack is bounded: N clients for
--duration seconds, then every socket is closed.

While an attack runs, a probe asks GET /health on a new connection every 0.5 s, as Label
Studio does, with a --timeout second socket timeout, and the table gives: how many probes got
200 at all, how many within 1 s (Label Studio's /health budget), their median and worst
latency, and how long /health took to answer again once the attack stopped.

    python -m benchmarks.slow_clients [--setups serve,gthread,nginx] [--clients 4,100]
        [--attacks idle,headers,body,predict] [--duration 15] [--json results.json]

Set-ups (`--setups`, comma-separated; `all` runs every one whose requirements are here):
  serve        `ls-active-yolo serve` as shipped: the tornado worker, 1 worker x 4 threads
  gthread      gunicorn gthread, 1 worker x 4 threads: what `serve` ran before the fix
  gthread-32   the same with 32 threads, the only gthread knob that changes anything
  nginx        nginx (proxy_request_buffering on, client header/body timeouts 10 s) in
               front of gthread 1 x 4 (needs an `nginx` binary: apt-get install nginx-light)
  tornado      gunicorn's stock tornado worker, the app in tornado's WSGIContainer on 4
               threads (`serve` adds chunked bodies and a graceful stop to it)
  asgi         gunicorn's asgi worker, the app wrapped by a2wsgi on 4 threads (needs a2wsgi)
  gevent       gunicorn's gevent worker (monkey-patches threads; needs gevent)
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from devkit.datagen import CLASSES, write_images

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
THREADS = 4
# What `ls-active-yolo serve` passed to gunicorn before the fix, besides bind/workers/threads.
GUNICORN_BASE = ["--timeout", "180", "--graceful-timeout", "30", "--no-control-socket"]
ATTACKS = ("idle", "headers", "body", "predict")
PROBE_EVERY = 0.5
LS_BUDGET = 1.0  # seconds Label Studio allows /health
LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{c.capitalize()}"/>' for c in CLASSES)
    + "</RectangleLabels></View>"
)


# --- the apps some set-ups need (gunicorn imports them as 'benchmarks.slow_clients:...()') ---


def tornado_app() -> Any:
    """The backend in tornado's WSGIContainer, run on THREADS threads (not the IOLoop)."""
    from tornado.wsgi import WSGIContainer  # noqa: PLC0415 - optional dependency

    from backend.wsgi import app  # noqa: PLC0415 - builds the app: only in the server

    return WSGIContainer(app, executor=ThreadPoolExecutor(int(os.environ["THREADS"])))


def a2wsgi_app() -> Any:
    """The backend as an ASGI app (a2wsgi), run on THREADS threads."""
    from a2wsgi import WSGIMiddleware  # noqa: PLC0415 - optional dependency

    from backend.wsgi import app  # noqa: PLC0415 - builds the app: only in the server

    return WSGIMiddleware(app, workers=int(os.environ["THREADS"]))


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """Processes started for one set-up; `port` is where clients connect."""

    port: int
    images: list[Path] = field(default_factory=list)  # for /predict, under IMAGE_ROOT
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {log}\n{log.read_text()[-chars:]}" for log in self.logs)

    def stop(self) -> None:
        for process in reversed(self.processes):  # the front first
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _spawn(
    server: Server, workdir: Path, name: str, command: list[str], env: dict[str, str]
) -> None:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        server.processes.append(
            subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        )
    server.logs.append(log)


def _gunicorn(port: int, extra: list[str], app: str = "backend.wsgi:app") -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        "1",
        *GUNICORN_BASE,
        *extra,
        app,
    ]


NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client-body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_header_timeout 10s;
    client_body_timeout 10s;
    send_timeout 30s;
    keepalive_timeout 5s;
    client_max_body_size 64m;
    upstream backend {{ server {host}:{upstream}; keepalive 8; }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_read_timeout 180s;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Setup:
    name: str
    needs: tuple[str, ...]  # importable modules, or "bin:<program>"
    start: Callable[[Path, dict[str, str], argparse.Namespace], Server]

    def missing(self, args: argparse.Namespace) -> list[str]:
        out = []
        for need in self.needs:
            if need == "bin:nginx":
                if not Path(args.nginx).is_file():
                    out.append(f"nginx binary ({args.nginx})")
            elif find_spec(need) is None:
                out.append(f"python package {need}")
        return out


def _start_serve(workdir: Path, env: dict[str, str], args: argparse.Namespace) -> Server:
    server = Server(free_port())
    command = [
        sys.executable,
        "-m",
        "backend.cli",
        "serve",
        "--host",
        HOST,
        "--port",
        str(server.port),
    ]
    _spawn(server, workdir, "serve", command, env)
    return server


def _start_gunicorn(extra: list[str], app: str = "backend.wsgi:app") -> Callable[..., Server]:
    def start(workdir: Path, env: dict[str, str], args: argparse.Namespace) -> Server:
        server = Server(free_port())
        _spawn(server, workdir, "gunicorn", _gunicorn(server.port, extra, app), env)
        return server

    return start


def _start_nginx(workdir: Path, env: dict[str, str], args: argparse.Namespace) -> Server:
    upstream = free_port()
    server = Server(free_port())
    gthread = ["--worker-class", "gthread", "--threads", str(THREADS)]
    _spawn(server, workdir, "gunicorn", _gunicorn(upstream, gthread), env)
    nginx_dir = workdir / "nginx"
    nginx_dir.mkdir()
    conf = nginx_dir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(dir=nginx_dir, host=HOST, port=server.port, upstream=upstream)
    )
    _spawn(
        server,
        workdir,
        "nginx",
        [args.nginx, "-c", str(conf), "-p", str(nginx_dir)],
        env,
    )
    return server


SETUPS = {
    s.name: s
    for s in (
        Setup("serve", (), _start_serve),
        Setup("gthread", (), _start_gunicorn(["-k", "gthread", "--threads", str(THREADS)])),
        Setup("gthread-32", (), _start_gunicorn(["-k", "gthread", "--threads", "32"])),
        Setup("nginx", ("bin:nginx",), _start_nginx),
        Setup(
            "tornado",
            ("tornado",),
            _start_gunicorn(["-k", "tornado"], "benchmarks.slow_clients:tornado_app()"),
        ),
        Setup(
            "asgi",
            ("a2wsgi",),
            _start_gunicorn(["-k", "asgi"], "benchmarks.slow_clients:a2wsgi_app()"),
        ),
        Setup("gevent", ("gevent",), _start_gunicorn(["-k", "gevent"])),
    )
}


# --- the probe -------------------------------------------------------------------------------


def probe_health(port: int, timeout: float) -> float | None:
    """Seconds GET /health took on a new connection, or None if no 200 came in time."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", "/health")
        answer = connection.getresponse()
        answer.read()
        ok = answer.status == 200
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    return time.perf_counter() - started if ok else None


def wait_until_up(server: Server, seconds: float) -> float | None:
    """Seconds until /health answered, None if it did not within `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if not server.alive():
            return None
        if probe_health(server.port, timeout=2.0) is not None:
            return time.monotonic() - started
        time.sleep(0.2)
    return None


# --- slow clients ----------------------------------------------------------------------------


def _payload(kind: str, port: int) -> tuple[bytes, bytes]:
    """(sent at once, trickled one byte per interval, cyclically) for an attack kind."""
    host = f"Host: {HOST}:{port}\r\n".encode()
    if kind == "idle":
        return b"", b""
    if kind == "headers":  # the blank line that ends the headers never comes
        return b"GET /health HTTP/1.1\r\n" + host, b"X-Slow: 1\r\n"
    if kind == "body":
        head = (
            b"POST /webhook HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n"
        )
        return head, b" "
    if kind == "predict":
        return b"", b""  # not a slow client: see PredictClients
    raise ValueError(f"unknown attack {kind!r}; choose from {', '.join(ATTACKS)}")


class SlowClients:
    """N slow connections from one asyncio loop in a thread; each one reopens when closed."""

    def __init__(self, kind: str, count: int, port: int, interval: float) -> None:
        self.kind, self.count, self.port, self.interval = kind, count, port, interval
        self.head, self.trickle = _payload(kind, port)
        self.opened = 0  # connections opened
        self.closed_by_server = 0  # connections the server closed (or answered) first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> SlowClients:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 10)

    async def _run(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(self.count)))

    async def _client(self) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, self.port), timeout=5
                )
            except (TimeoutError, OSError):
                await asyncio.sleep(0.5)
                continue
            self.opened += 1
            ended = asyncio.ensure_future(reader.read(65536))  # data or EOF: the server acted
            sent = 0
            try:
                if self.head:
                    writer.write(self.head)
                while not self._stop.is_set() and not ended.done():
                    await asyncio.wait([ended], timeout=self.interval)
                    if self.trickle and not ended.done():
                        writer.write(self.trickle[sent % len(self.trickle)].to_bytes(1, "big"))
                        sent += 1
                        await writer.drain()
            except OSError:
                pass
            finally:
                if ended.done():
                    self.closed_by_server += 1
                ended.cancel()
                writer.close()
            await asyncio.sleep(0.1)  # bounds the reconnect rate


class PredictClients:
    """N threads POSTing /predict (8 images, one forward pass) in a loop: ordinary busy load."""

    def __init__(self, count: int, port: int, images: list[Path]) -> None:
        body = {
            "tasks": [{"id": i, "data": {"image": str(p)}} for i, p in enumerate(images)],
            "project": "1.1712345678",
            "label_config": LABEL_CONFIG,
        }
        self.port, self.body = port, json.dumps(body).encode()
        self.opened = 0  # requests sent
        self.closed_by_server = 0  # requests answered 200
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(count)]

    def __enter__(self) -> PredictClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _loop(self) -> None:
        while not self._stop.is_set():
            connection = http.client.HTTPConnection(HOST, self.port, timeout=110)
            self.opened += 1
            try:
                connection.request(
                    "POST", "/predict", self.body, {"Content-Type": "application/json"}
                )
                answer = connection.getresponse()
                answer.read()
                self.closed_by_server += answer.status == 200
            except (OSError, http.client.HTTPException):
                time.sleep(0.5)
            finally:
                connection.close()


# --- one measurement -------------------------------------------------------------------------


@dataclass
class Row:
    setup: str
    attack: str
    clients: int
    probes: int
    answered: int
    within_budget: int
    median_s: float | None
    worst_s: float | None
    recovered_s: float | None
    opened: int
    closed_by_server: int


def measure(setup: str, server: Server, kind: str, count: int, args: argparse.Namespace) -> Row:
    latencies: list[float | None] = []
    load = (
        PredictClients(count, server.port, server.images)
        if kind == "predict"
        else SlowClients(kind, count, server.port, args.interval)
    )
    with load as attack:
        time.sleep(min(2.0, args.duration / 4))  # let the connections open
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            started = time.monotonic()
            latencies.append(probe_health(server.port, args.timeout))
            time.sleep(max(0.0, PROBE_EVERY - (time.monotonic() - started)))
    recovered = wait_until_up(server, 60.0)
    answered = [s for s in latencies if s is not None]
    return Row(
        setup=setup,
        attack=kind,
        clients=count,
        probes=len(latencies),
        answered=len(answered),
        within_budget=sum(s <= LS_BUDGET for s in answered),
        median_s=statistics.median(answered) if answered else None,
        worst_s=max(answered) if answered else None,
        recovered_s=recovered,
        opened=attack.opened,
        closed_by_server=attack.closed_by_server,
    )


@contextmanager
def running(setup: Setup, workdir: Path, args: argparse.Namespace) -> Iterator[Server]:
    images = [path for path, _ in write_images(workdir / "images", 8, seed=0)]
    env = {
        **os.environ,
        "MODEL_DIR": str(workdir / "models"),
        "YOLO_CONFIG_DIR": str(workdir / "ultralytics"),
        "TRAINING": "0",
        "LOG_LEVEL": "WARNING",
        "WORKERS": "1",
        "THREADS": str(THREADS),
        "IMAGE_ROOT": str(workdir / "images"),
    }
    env.pop("MODEL_PATH", None)
    server = setup.start(workdir, env, args)
    server.images = images
    try:
        if wait_until_up(server, 120.0) is None:
            raise SystemExit(f"{setup.name}: /health never answered\n{server.log_tail()}")
        yield server
    finally:
        server.stop()


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}"


def print_table(rows: list[Row], header: bool = True) -> None:
    if header:
        print(
            "| set-up | attack | clients | /health 200 | within 1 s | median s | worst s "
            "| back after s | conns opened / closed by server (predict: sent / 200) |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.setup} | {r.attack} | {r.clients} | {r.answered}/{r.probes} "
            f"| {r.within_budget}/{r.probes} | {_fmt(r.median_s)} | {_fmt(r.worst_s)} "
            f"| {_fmt(r.recovered_s)} | {r.opened} / {r.closed_by_server} |",
            flush=True,
        )


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Set-ups: " + ", ".join(SETUPS) + ". Only 127.0.0.1 is ever contacted.",
    )
    parser.add_argument(
        "--setups",
        default="serve,gthread,gthread-32,nginx",
        help="comma-separated set-ups, or 'all' (default: %(default)s)",
    )
    parser.add_argument(
        "--attacks",
        default="idle,headers,body",
        help="comma-separated: idle, headers, body, predict (default: %(default)s)",
    )
    parser.add_argument(
        "--clients",
        default="4,100",
        help="comma-separated numbers of slow clients (default: %(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=15.0,
        help="seconds of probing per attack (default: %(default)s)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds between a slow client's bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="socket timeout of a /health probe (default: %(default)s)",
    )
    parser.add_argument(
        "--nginx",
        default=shutil.which("nginx") or "/usr/sbin/nginx",
        help="nginx binary for the nginx set-up (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    names = list(SETUPS) if args.setups == "all" else _csv(args.setups)
    unknown = [n for n in names if n not in SETUPS]
    if unknown:
        parser.error(f"unknown set-up(s) {', '.join(unknown)}; choose from {', '.join(SETUPS)}")
    kinds = _csv(args.attacks)
    for kind in kinds:
        _payload(kind, 0)  # raises on an unknown attack
    counts = [int(c) for c in _csv(args.clients)]
    if not all(0 < c <= 1000 for c in counts) or not 0 < args.duration <= 300:
        parser.error("clients must be 1..1000 and duration 0..300 s")

    rows: list[Row] = []
    for name in names:
        setup = SETUPS[name]
        missing = setup.missing(args)
        if missing:
            print(f"skipped {name}: missing {', '.join(missing)}", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory(prefix=f"slow-{name}-") as tmp:
            workdir = Path(tmp)
            os.chmod(workdir, 0o755)  # nginx's workers run as nobody
            with running(setup, workdir, args) as server:
                print(f"{name}: up on {HOST}:{server.port}", file=sys.stderr, flush=True)
                for kind in kinds:
                    for count in counts:
                        rows.append(measure(name, server, kind, count, args))
                        print_table(rows[-1:], header=False)
                        if not server.alive():
                            raise SystemExit(f"{name} died\n{server.log_tail()}")
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
