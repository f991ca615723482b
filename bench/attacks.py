#!/usr/bin/env python3
"""The attacks of issue 15, black-box, against a demo binary this script starts itself.

    cargo build --example axum
    python3 bench/attacks.py target/debug/examples/axum            # on the memory store
    python3 bench/attacks.py target/debug/examples/axum --redis    # on a redis-server it starts

Each attack prints one line: what it tried and what came of it. Codes "sent" are counted
from the demo's own log (one `verification code` line per code the handler sends). Only
loopback is used: the demo and redis-server listen on free 127.0.0.1 ports, and every loop is
bounded in count and time.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conn:
    """One keep-alive HTTP/1.1 connection, for responses with a Content-Length."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def request(self, method, path, headers=None, body=b""):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        data = b""
        if length and method != "HEAD":
            data = await self.reader.readexactly(int(length.group(1)))
        if re.search(rb"(?i)connection: *close", head):
            self.close()
        return status, head.decode("latin-1"), data

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def once(port, method, path, headers=None, body=b""):
    conn = Conn(port)
    try:
        return await conn.request(method, path, headers, body)
    finally:
        conn.close()


class Demo:
    def __init__(self, binary, redis_url):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile("w+", delete=False)
        env = dict(os.environ, ADDR=f"127.0.0.1:{self.port}", RUST_LOG="info", NO_COLOR="1")
        env.pop("REDIS_URL", None)
        if redis_url:
            env["REDIS_URL"] = redis_url
        self.process = subprocess.Popen([binary], env=env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the demo did not start listening")

    def codes_sent(self, mobile):
        with open(self.log.name) as log:
            return sum(1 for line in log if "verification code" in line and mobile in line)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


class Redis:
    def __init__(self):
        if not shutil.which("redis-server"):
            raise SystemExit("redis-server is missing (apt-get install redis-server)")
        self.port = free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while self.cli("PING") != "PONG":
            if time.time() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)

    def cli(self, *args):
        done = subprocess.run(["redis-cli", "-p", str(self.port), *args],
                              capture_output=True, text=True)
        return done.stdout.strip()

    def stop(self):
        self.process.kill()
        self.process.wait()


async def spellings(demo):
    number = "13700137000"
    paths = []
    for mask in range(64):
        digits = [f"%{ord(d):02X}" if i < 6 and mask >> i & 1 else d
                  for i, d in enumerate(number)]
        paths.append(f"/sms_codes/{''.join(digits)}/")
    statuses = await asyncio.gather(*(once(demo.port, "GET", p) for p in paths))
    ok = sum(1 for s, _, _ in statuses if s == 200)
    print(f"64 spellings of one number at once: {ok} answered 200, "
          f"{demo.codes_sent(number)} codes sent")


async def resets(demo):
    number = "13600136000"
    for n in range(300):
        reader, writer = await asyncio.open_connection("127.0.0.1", demo.port)
        writer.write(f"GET /sms_codes/{number}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        # reset (SO_LINGER 0) at staggered moments around the handler's run
        await asyncio.sleep(n / 20000)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
    await asyncio.sleep(0.5)
    print(f"300 sends of one number reset just after sending: {demo.codes_sent(number)} codes sent")


async def burst_with(demo, redis, number, disturb):
    async def one():
        started = time.monotonic()
        status, _, _ = await once(demo.port, "GET", f"/sms_codes/{number}/")
        return status, time.monotonic() - started

    tasks = [asyncio.create_task(one()) for _ in range(200)]
    await asyncio.sleep(0.002)
    await asyncio.get_running_loop().run_in_executor(None, disturb)
    results = await asyncio.gather(*tasks)
    counts = {}
    for status, _ in results:
        counts[status] = counts.get(status, 0) + 1
    return counts, max(took for _, took in results)


async def redis_blips(demo, redis):
    for round_ in range(5):
        number = f"1350013500{round_}"
        counts, _ = await burst_with(
            demo, redis, number, lambda: redis.cli("CLIENT", "KILL", "TYPE", "normal"))
        print(f"CLIENT KILL during 200 sends of one number: {demo.codes_sent(number)} codes, "
              f"statuses {counts}")
    number = "13400134000"

    def stall():
        redis.process.send_signal(signal.SIGSTOP)
        time.sleep(3)
        redis.process.send_signal(signal.SIGCONT)

    counts, slowest = await burst_with(demo, redis, number, stall)
    print(f"SIGSTOP for 3 s during 200 sends of one number: {demo.codes_sent(number)} codes, "
          f"statuses {counts}, slowest answer {slowest * 1000:.0f} ms")


async def flood(demo, total):
    tokens = []
    for _ in range(20):
        _, _, body = await once(demo.port, "POST", "/login/",
                                {"Content-Type": "application/json"},
                                b'{"username": "alice", "password": "wonderland"}')
        tokens.append(json.loads(body)["token"])
    flagged = [str(13300000000 + i) for i in range(20)]
    for mobile in flagged:
        await once(demo.port, "GET", f"/sms_codes/{mobile}/")
    flags_set = time.monotonic()

    async def survivors():
        alive = held = 0
        for token in tokens:
            status, _, _ = await once(demo.port, "GET", "/me/",
                                      {"Authorization": f"Bearer {token}"})
            alive += status == 200
        for mobile in flagged:
            status, _, _ = await once(demo.port, "GET", f"/sms_codes/{mobile}/")
            held += status == 429
        return alive, held

    async def worker(start, stop, step):
        conn = Conn(demo.port)
        for n in range(start, stop, step):
            await conn.request("GET", f"/sms_codes/{13000000000 + n}/")
            await conn.request("GET", f"/articles/?q={n}")
        conn.close()

    # in steps, checking in between: the flags live 60 s, and the flood may take longer
    phase = 25_000
    for start in range(0, total // 2, phase):
        stop = min(start + phase, total // 2)
        await asyncio.gather(*(worker(start + i, stop, 16) for i in range(16)))
        alive, held = await survivors()
        age = time.monotonic() - flags_set
        note = "" if age < 60 else " (flags past their 60 s)"
        print(f"after {2 * stop} distinct anonymous requests, {age:.0f} s: {alive}/20 tokens "
              f"valid, {held}/20 flags in force{note}")
    rss = 0
    with open(f"/proc/{demo.process.pid}/status") as status_file:
        for line in status_file:
            if line.startswith("VmRSS"):
                rss = int(line.split()[1]) // 1024
    print(f"{total} distinct anonymous requests: demo RSS {rss} MiB")


async def limits(demo):
    # announce 8 MiB, send the first 64 KiB, and see what the server makes of it
    reader, writer = await asyncio.open_connection("127.0.0.1", demo.port)
    writer.write(b"POST /login/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 8388608\r\n\r\n" + b"a" * 65536)
    try:
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout=20)
        status = int(line.split(b" ", 2)[1]) if line else "closed"
    except (OSError, asyncio.TimeoutError) as err:
        status = f"no answer ({err!r})"
    writer.close()
    head, _, _ = await once(demo.port, "HEAD", "/articles/")
    reader, writer = await asyncio.open_connection("127.0.0.1", demo.port)
    writer.write(b"GET /articles/ HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    try:
        await asyncio.wait_for(reader.read(), timeout=40)
        closed = f"closed after {time.monotonic() - started:.1f} s"
    except asyncio.TimeoutError:
        closed = "still open after 40 s"
    writer.close()
    print(f"POST announcing 8 MiB: {status}; HEAD /articles/: {head}; unfinished header: {closed}")


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("--redis", action="store_true", help="run the demo on a redis-server")
    parser.add_argument("--flood", type=int, default=300_000, help="requests in the flood")
    parser.add_argument("--only-resets", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    redis = Redis() if args.redis else None
    demo = Demo(args.binary, f"redis://127.0.0.1:{redis.port}" if redis else None)
    try:
        await spellings(demo)
        await resets(demo)
        if args.only_resets:
            return
        if redis:
            await redis_blips(demo, redis)
        else:
            await flood(demo, args.flood)
        await limits(demo)
    finally:
        demo.stop()
        if redis:
            redis.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
