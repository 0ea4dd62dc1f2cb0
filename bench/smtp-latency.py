#!/usr/bin/env python3
# smtp-latency.py - the bench's latency client: S SMTP sessions send N messages at an offered
# rate and time each one from the end of DATA (the moment the client's "\r\n.\r\n" is written)
# to the server's 250. Run by bench/relay-vs-postfix.sh (its latency phase); one asyncio thread.
# Prints one "key=value ..." line: achieved rate, p50/p99/p99.9/max in ms, failures.
import argparse
import asyncio
import socket
import sys
import time

from bench_smtp import Failure, greet, reply


def parse_args():
    p = argparse.ArgumentParser(description="time end of DATA -> 250 at an offered rate")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--rate", type=float, default=0.0, help="offered msg/s over all sessions; 0 = as fast as replies come")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--sender", required=True)
    p.add_argument("--rcpt", required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="start no new message after this many seconds (a relay slower than the offered rate)")
    return p.parse_args()


def body_for(args, n):
    # headers like smtp-source's (From is the sender, so DKIM and DMARC apply), then a body of
    # lines of 'x' up to the requested size
    head = ("From: <%s>\r\nTo: <%s>\r\nDate: %s\r\nMessage-Id: <lat.%d.%d@bench>\r\nSubject: latency %d\r\n\r\n"
            % (args.sender, args.rcpt, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
               time.time_ns(), n, n)).encode()
    line = b"x" * 78 + b"\r\n"
    body = line * max(1, (args.size - len(head)) // len(line))
    return head + body


async def session(args, state, lat, errors):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(args.host, args.port), args.timeout)
    except (OSError, asyncio.TimeoutError) as e:
        errors.append("connect: %s" % e)
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await greet(reader, writer, "latency.bench", args.timeout)
        while True:
            n = state["next"]
            if n >= args.messages:
                break
            if args.max_seconds > 0 and time.monotonic() - state["t0"] > args.max_seconds:
                state["cut"] = True
                break
            state["next"] = n + 1
            if args.rate > 0:
                due = state["t0"] + n / args.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            for cmd in (b"MAIL FROM:<%s>\r\n" % args.sender.encode(), b"RCPT TO:<%s>\r\n" % args.rcpt.encode()):
                writer.write(cmd)
                code, text = await reply(reader, args.timeout)
                if code != 250:
                    raise Failure(cmd.split(b":")[0].decode() + ": " + text)
            writer.write(b"DATA\r\n")
            code, text = await reply(reader, args.timeout)
            if code != 354:
                raise Failure("DATA: " + text)
            writer.write(body_for(args, n))
            writer.write(b".\r\n")  # the body ends in CRLF: this completes "\r\n.\r\n"
            await writer.drain()
            t = time.monotonic()
            code, text = await reply(reader, args.timeout)
            lat.append(time.monotonic() - t)
            if code != 250:
                raise Failure("end of DATA: " + text)
        writer.write(b"QUIT\r\n")
        await reply(reader, args.timeout)
    except (Failure, OSError, asyncio.TimeoutError) as e:
        errors.append(str(e) or type(e).__name__)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def pct(sorted_ms, q):
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms) - 1, max(0, int(round(q * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[i]


async def main():
    args = parse_args()
    state = {"next": 0, "t0": time.monotonic(), "cut": False}
    lat, errors = [], []
    await asyncio.gather(*(session(args, state, lat, errors) for _ in range(args.sessions)))
    wall = time.monotonic() - state["t0"]
    ms = sorted(x * 1000 for x in lat)
    print("messages=%d failed=%d cut=%s offered=%s achieved=%.1f p50=%.2f p99=%.2f p999=%.2f max=%.2f"
          % (len(ms), len(errors), "yes" if state["cut"] else "no", ("%.1f" % args.rate) if args.rate > 0 else "max",
             len(ms) / wall if wall > 0 else 0.0, pct(ms, 0.50), pct(ms, 0.99), pct(ms, 0.999),
             ms[-1] if ms else float("nan")))
    for e in errors[:5]:
        print("error: " + e, file=sys.stderr)
    return 0 if not errors and (state["cut"] or len(ms) == args.messages) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
