#!/usr/bin/env python3
"""Two people chat through a running chat-engine server with a generic WebSocket client
(the `websockets` package), speaking raw protocol v1. Exits non-zero if anything is off.

    python3 scripts/demo_chat.py ws://127.0.0.1:8080/ws
"""
import asyncio
import json
import sys

import websockets


async def request(ws, frame, pending):
    await ws.send(json.dumps(frame))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply.get("id") == frame["id"]:
            if reply["type"] != "ok":
                raise SystemExit(f"refused: {frame} -> {reply}")
            return reply
        pending.append(reply)


async def push(ws, kind, pending, **match):
    def fits(f):
        return f.get("type") == kind and "id" not in f and all(f.get(k) == v for k, v in match.items())
    for i, f in enumerate(pending):
        if fits(f):
            return pending.pop(i)
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if fits(frame):
            return frame
        pending.append(frame)


async def main(url):
    async with websockets.connect(url) as alice, websockets.connect(url) as bob:
        a, b = [], []
        hello = await request(alice, {"type": "hello", "id": 1, "token": "dev:alice"}, a)
        print("alice:", hello)
        await request(bob, {"type": "hello", "id": 1, "token": "dev:bob"}, b)
        await request(alice, {"type": "join", "id": 2, "room": "general"}, a)
        await request(bob, {"type": "join", "id": 2, "room": "general"}, b)
        sent = await request(alice, {"type": "send", "id": 3, "room": "general", "cid": "c-1", "body": "hi bob"}, a)
        got = await push(bob, "message", b, cid="c-1")
        print("bob got:", got)
        assert got["body"] == "hi bob" and got["from"] == "alice" and got["seq"] == sent["seq"]
        await request(bob, {"type": "send", "id": 4, "to": "alice", "cid": "d-1", "body": "hi alice, privately"}, b)
        dm = await push(alice, "message", a, cid="d-1")
        print("alice got:", dm)
        assert dm["room"] == "dm:alice:bob" and dm["from"] == "bob"
        history = await request(alice, {"type": "history", "id": 5, "room": "general"}, a)
        assert [m["body"] for m in history["messages"]] == ["hi bob"]
    print("ok: two generic WebSocket clients chatted through", url)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8080/ws"))
