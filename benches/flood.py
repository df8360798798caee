#!/usr/bin/env python3
"""Hostile load for benches/flood.sh: idle TLS devices and slowloris handshakes.

  flood.py HOST PORT --idle N --slow M [--sources K]

Opens N TLS connections that send eddy's Hello and then stay silent, and M
connections that trickle a TLS record header one byte a second and reconnect
whenever eddy cuts them off (its handshake timeout). Connections come from
K loopback source addresses (127.0.1.1 …), as many hostile devices would,
so eddy's per-source limit does not simply refuse them. Prints
"ready idle=N slow=M" once all idle connections are up and every slowloris
task has started, then a status line every 5 s, until SIGTERM or SIGINT.
Only connects to the address it is given (loopback in the benchmark).
"""
import argparse
import asyncio
import signal
import ssl
import sys

# eddy's Hello: a u32 big-endian length, then postcard RequestFrame
# {correlation_id: 0, Request::Hello (variant 0) {protocol_version: 1,
# client_id: "flood"}} (varints; a string is its length then its bytes).
BODY = bytes([0, 0, 1, 5]) + b"flood"
HELLO = len(BODY).to_bytes(4, "big") + BODY


async def idle_device(host, port, source, ctx, up, stop):
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname="localhost", local_addr=(source, 0))
            writer.write(HELLO)
            await writer.drain()
            prefix = await reader.readexactly(4)
            await reader.readexactly(int.from_bytes(prefix, "big"))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            await asyncio.sleep(1)
            continue
        up[0] += 1
        try:
            await reader.read()  # until the server closes (idle timeout) or stop
        except (OSError, ssl.SSLError):
            pass
        up[0] -= 1
        writer.close()


async def slowloris(host, port, source, cuts, stop):
    header = bytes([0x16, 0x03, 0x01, 0x02, 0x00])  # a ClientHello record header, never the body
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            await asyncio.sleep(1)
            continue
        try:
            for byte in header * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(1), timeout=1.0)
                    if not data:
                        break  # cut off
                except asyncio.TimeoutError:
                    pass
        except OSError:
            pass
        cuts[0] += 1
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--idle", type=int, default=5000)
    p.add_argument("--slow", type=int, default=500)
    p.add_argument("--sources", type=int, default=10)
    a = p.parse_args()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sources = [f"127.0.1.{i + 1}" for i in range(a.sources)]
    up, cuts = [0], [0]
    tasks = []
    # Connect in waves so the listen backlog is not the bottleneck.
    for i in range(a.idle):
        tasks.append(asyncio.create_task(
            idle_device(a.host, a.port, sources[i % len(sources)], ctx, up, stop)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    while up[0] < a.idle and not stop.is_set():
        await asyncio.sleep(0.2)
    for i in range(a.slow):
        tasks.append(asyncio.create_task(
            slowloris(a.host, a.port, sources[i % len(sources)], cuts, stop)))
    print(f"ready idle={up[0]} slow={a.slow}", flush=True)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=5)
        except asyncio.TimeoutError:
            print(f"idle={up[0]} slowloris_cut_off={cuts[0]}", flush=True)
    for t in tasks:
        t.cancel()
    print(f"done idle={up[0]} slowloris_cut_off={cuts[0]}", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
