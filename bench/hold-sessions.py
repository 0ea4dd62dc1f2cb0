#!/usr/bin/env python3
# hold-sessions.py - the bench's idle-session holder: opens N SMTP sessions to one relay from
# source addresses 127.0.0.2..127.0.0.K (so no single address runs out of ephemeral ports),
# says EHLO on each and then holds them idle. Run by bench/relay-vs-postfix.sh (its sessions
# phase); one asyncio thread. Prints "ready OPEN FAILED" once every session is up (or failed),
# then waits until RELEASE_FILE exists or --hold seconds pass, sends QUIT, closes every socket.
import argparse
import asyncio
import os
import resource
import sys
import time

from bench_smtp import Failure, greet


def parse_args():
    p = argparse.ArgumentParser(description="hold N idle SMTP sessions (EHLO done)")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--sessions", type=int, required=True)
    p.add_argument("--per-address", type=int, default=5000, help="sessions per source address")
    p.add_argument("--hold", type=float, default=120.0, help="longest hold in seconds")
    p.add_argument("--release-file", required=True)
    p.add_argument("--concurrency", type=int, default=200, help="sessions being opened at once")
    p.add_argument("--timeout", type=float, default=30.0)
    return p.parse_args()


async def open_one(args, i, gate, held, errors):
    src = "127.0.0.%d" % (2 + i // args.per_address)
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port, local_addr=(src, 0)), args.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            errors.append("connect from %s: %s" % (src, e))
            return
        try:
            await greet(reader, writer, "idle.bench", args.timeout)
            held.append((reader, writer))
        except (OSError, asyncio.TimeoutError, Failure) as e:
            errors.append("%s: %s" % (src, str(e) or type(e).__name__))
            writer.close()


async def main():
    args = parse_args()
    need = args.sessions + 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, soft), max(need, hard)))
    gate = asyncio.Semaphore(args.concurrency)
    held, errors = [], []
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(args, i, gate, held, errors) for i in range(args.sessions)))
    print("ready %d %d %.1f" % (len(held), len(errors), time.monotonic() - t0), flush=True)
    for e in errors[:5]:
        print("error: " + e, file=sys.stderr)
    deadline = time.monotonic() + args.hold
    while time.monotonic() < deadline and not os.path.exists(args.release_file):
        await asyncio.sleep(0.2)
    # still open after the hold? a session the relay dropped reads EOF here
    alive = 0
    for reader, writer in held:
        if not reader.at_eof():
            alive += 1
        writer.write(b"QUIT\r\n")
    for reader, writer in held:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in held), return_exceptions=True)
    print("released %d still-open %d" % (len(held), alive), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
