#!/usr/bin/python3
"""Call one camhub JSON-RPC method over WebSocket and print the result (needs python3-websockets).

    python3 scripts/rpc.py --token TOKEN get_camera_status device=cam0
    python3 scripts/rpc.py --token TOKEN --listen 10 get_camera_list   # then print notifications for 10 s
"""
import argparse
import asyncio
import json
import sys

import websockets


def parse_param(text):
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="ws://127.0.0.1:8002/ws")
    ap.add_argument("--token", help="JWT or API key")
    ap.add_argument("--listen", type=float, default=0, help="seconds to print notifications after the call")
    ap.add_argument("method")
    ap.add_argument("params", nargs="*", help="key=value (value parsed as JSON when it is JSON)")
    args = ap.parse_args()
    async with websockets.connect(args.url, max_size=None) as ws:
        next_id = 1
        if args.token:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "authenticate",
                                      "params": {"auth_token": args.token}}))
            reply = json.loads(await ws.recv())
            if "error" in reply:
                print(json.dumps(reply["error"], indent=2), file=sys.stderr)
                return 1
        params = dict(parse_param(p) for p in args.params)
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": next_id, "method": args.method, "params": params}))
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("id") == next_id:
                print(json.dumps(msg.get("result", msg.get("error")), indent=2))
                break
        end = asyncio.get_event_loop().time() + args.listen
        while (left := end - asyncio.get_event_loop().time()) > 0:
            try:
                print(json.dumps(json.loads(await asyncio.wait_for(ws.recv(), left))))
            except asyncio.TimeoutError:
                break
        return 1 if "error" in msg else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
