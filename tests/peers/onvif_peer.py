"""An ONVIF camera for tests/discovery.rs, run inside a network namespace of its own.

It announces itself with a third-party WS-Discovery implementation (PyPI's WSDiscovery, the `wsdiscovery` module),
publishing a NetworkVideoTransmitter whose XAddr is this script's HTTP server, which answers the device and media
services' SOAP calls camhub makes (GetCapabilities, GetServices, GetProfiles, GetStreamUri) with the RTSP URLs it is
given (the test camera's). With --username and --password every call must carry a WS-Security UsernameToken whose
PasswordDigest matches; otherwise it gets a SOAP fault ter:NotAuthorized (HTTP 400), as real cameras answer.

It also watches addresses nobody was told about (--watch): TCP ports and UDP 3702 on them, recording any contact, so
the test can show camhub sent nothing there. Every probe, request and contact is a JSON line in --log; the line
{"event": "ready"} comes once everything listens.

Installed by scripts/install-deps.sh --test (assets/.venv-peers); run as
  assets/.venv-peers/bin/python tests/peers/onvif_peer.py --address 10.201.0.2 --http-port 8080 \
      --stream-uri rtsp://10.201.0.2:8554/cam0 --log peer.log [--username U --password P] [--watch 10.201.0.3]
"""

import argparse
import base64
import hashlib
import http.server
import json
import socket
import sys
import threading
import xml.etree.ElementTree as ET

import ifaddr
from wsdiscovery import QName, Scope
from wsdiscovery.publishing import ThreadedWSPublishing

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DEVICE = "http://www.onvif.org/ver10/device/wsdl"
MEDIA = "http://www.onvif.org/ver10/media/wsdl"
SCHEMA = "http://www.onvif.org/ver10/schema"
NETWORK = "http://www.onvif.org/ver10/network/wsdl"

LOG_LOCK = threading.Lock()


def log(log_path, **event):
    with LOG_LOCK, open(log_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")


def envelope(body):
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP}" xmlns:tds="{DEVICE}" '
        f'xmlns:trt="{MEDIA}" xmlns:tt="{SCHEMA}" xmlns:ter="http://www.onvif.org/ver10/error">'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )


def fault(subcode, reason):
    return envelope(
        f"<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en">{reason}</s:Text></s:Reason></s:Fault>'
    )


def token_ok(root, username, password):
    """Whether the request's UsernameToken is USERNAME's with a PasswordDigest of PASSWORD."""
    token = root.find(f".//{{{WSSE}}}UsernameToken")
    if token is None:
        return False
    user = token.findtext(f"{{{WSSE}}}Username", "")
    digest = token.findtext(f"{{{WSSE}}}Password", "")
    nonce = token.findtext(f"{{{WSSE}}}Nonce", "")
    created = token.findtext(f"{{{WSU}}}Created", "")
    try:
        raw_nonce = base64.b64decode(nonce, validate=True)
    except ValueError:
        return False
    expected = base64.b64encode(hashlib.sha1(raw_nonce + created.encode() + password.encode()).digest()).decode()
    return user == username and digest == expected


class Onvif(http.server.BaseHTTPRequestHandler):
    """The device service (/onvif/device_service) and media service (/onvif/media_service)."""

    config = None

    def log_message(self, *args):
        pass

    def do_POST(self):
        c = self.config
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            root = ET.fromstring(body)
            call = next(iter(root.find(f"{{{SOAP}}}Body")))
        except (ET.ParseError, TypeError, StopIteration):
            return self.answer(400, fault("ter:WellFormed", "not a SOAP request"), "?", "bad")
        operation = call.tag.rsplit("}", 1)[-1]
        auth = "none" if root.find(f".//{{{WSSE}}}UsernameToken") is None else "token"
        if c.username is not None:
            if not token_ok(root, c.username, c.password):
                return self.answer(400, fault("ter:NotAuthorized", "Sender not authorized"), operation, "refused")
            auth = "ok"
        base = f"http://{c.address}:{c.http_port}/onvif"
        if self.path == "/onvif/device_service" and operation == "GetCapabilities":
            reply = (
                "<tds:GetCapabilitiesResponse><tds:Capabilities>"
                f"<tt:Media><tt:XAddr>{base}/media_service</tt:XAddr></tt:Media>"
                "</tds:Capabilities></tds:GetCapabilitiesResponse>"
            )
        elif self.path == "/onvif/device_service" and operation == "GetServices":
            reply = (
                "<tds:GetServicesResponse>"
                f"<tds:Service><tds:Namespace>{DEVICE}</tds:Namespace><tds:XAddr>{base}/device_service</tds:XAddr>"
                "</tds:Service>"
                f"<tds:Service><tds:Namespace>{MEDIA}</tds:Namespace><tds:XAddr>{base}/media_service</tds:XAddr>"
                "</tds:Service></tds:GetServicesResponse>"
            )
        elif self.path == "/onvif/media_service" and operation == "GetProfiles":
            profiles = "".join(
                f'<trt:Profiles token="profile{i}" fixed="true"><tt:Name>{name}</tt:Name>'
                f'<tt:VideoEncoderConfiguration token="encoder{i}"><tt:Name>encoder{i}</tt:Name>'
                f"<tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>{c.width}</tt:Width>"
                f"<tt:Height>{c.height}</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>"
                for i, name in enumerate(c.profile_names)
            )
            reply = f"<trt:GetProfilesResponse>{profiles}</trt:GetProfilesResponse>"
        elif self.path == "/onvif/media_service" and operation == "GetStreamUri":
            tokens = [f"profile{i}" for i in range(len(c.stream_uri))]
            token = call.findtext(f"{{{MEDIA}}}ProfileToken", "")
            if token not in tokens:
                return self.answer(400, fault("ter:InvalidArgVal", "no such profile"), operation, auth)
            index = tokens.index(token)
            reply = (
                f"<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{c.stream_uri[index]}</tt:Uri>"
                "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false"
                "</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>"
            )
        else:
            return self.answer(400, fault("ter:ActionNotSupported", "not supported"), operation, auth)
        self.answer(200, envelope(reply), operation, auth)

    def answer(self, status, text, operation, auth):
        log(self.config.log, event="http", client=self.client_address[0], path=self.path, op=operation, auth=auth,
            status=status)
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Publisher(ThreadedWSPublishing):
    """The library's publisher, recording each probe it answers."""

    log_path = None

    def _handle_probe(self, env, addr):
        types = [str(t) for t in env.getTypes()]
        log(self.log_path, event="probe", client=addr[0], types=types)
        super()._handle_probe(env, addr)


def watch(address, tcp_ports, path):
    """Listens on ADDRESS (TCP ports, UDP 3702) and records whoever comes."""

    def tcp(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(16)

        def serve():
            while True:
                conn, peer = s.accept()
                log(path, event="contact", proto="tcp", address=address, port=port, client=peer[0])
                conn.close()

        threading.Thread(target=serve, daemon=True).start()

    def udp():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, 3702))

        def serve():
            while True:
                _, peer = s.recvfrom(65536)
                log(path, event="contact", proto="udp", address=address, port=3702, client=peer[0])

        threading.Thread(target=serve, daemon=True).start()

    for port in tcp_ports:
        tcp(port)
    udp()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="the address the HTTP server listens on and XAddrs name")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--stream-uri", action="append", required=True, help="one per profile, in order")
    p.add_argument("--name", default="camhub-test-peer", help="the onvif://www.onvif.org/name/ scope")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--username")
    p.add_argument("--password", default="")
    p.add_argument("--watch", action="append", default=[], help="an address to watch for contacts")
    p.add_argument("--watch-port", type=int, action="append", default=[], help="a TCP port watched on each")
    p.add_argument("--log", required=True)
    c = p.parse_args()
    c.profile_names = ["MainStream", "SubStream", "ThirdStream", "FourthStream"][: len(c.stream_uri)]

    # WS-Discovery announces on every interface there is: only inside a namespace of the test's own, where the only
    # addresses are the ones it named, may it start.
    mine = {c.address, *c.watch}
    others = [
        ip.ip
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ip.ip.startswith("127.") and ip.ip not in mine
    ]
    if others:
        print(f"refusing to start outside a test namespace: this one also has {others}", file=sys.stderr)
        return 2

    for address in c.watch:
        watch(address, c.watch_port, c.log)

    Onvif.config = c
    server = http.server.ThreadingHTTPServer((c.address, c.http_port), Onvif)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    Publisher.log_path = c.log
    publisher = Publisher()
    publisher.start()
    publisher.publishService(
        types=[QName(NETWORK, "NetworkVideoTransmitter", "dn")],
        scopes=[Scope(f"onvif://www.onvif.org/name/{c.name}"), Scope("onvif://www.onvif.org/hardware/camhub-testcam")],
        xAddrs=[f"http://{c.address}:{c.http_port}/onvif/device_service"],
    )
    log(c.log, event="ready")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        publisher.stop()
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
