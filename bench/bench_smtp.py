# bench_smtp.py - the SMTP reply reader shared by the bench's own clients
# (bench/smtp-latency.py and bench/hold-sessions.py, both one asyncio thread); RFC 5321
# section 4.2: a reply is one or more lines, all but the last with "-" after the code.
import asyncio


class Failure(Exception):
    pass


async def reply(reader, timeout):
    """One SMTP reply (all continuation lines); returns (code, last line)."""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise Failure("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()


async def greet(reader, writer, name, timeout):
    """Read the 220 banner and say EHLO NAME; Failure unless both succeed."""
    code, text = await reply(reader, timeout)
    if code != 220:
        raise Failure("banner: " + text)
    writer.write(b"EHLO %s\r\n" % name.encode())
    code, text = await reply(reader, timeout)
    if code != 250:
        raise Failure("EHLO: " + text)
