"""An EMR that receives ORU^R01 over MLLP: python-hl7's own server (hl7.mllp.start_hl7_server) and its
msg.create_ack(). Used by test/integration/oru-delivery.test.ts as the independent peer.

Usage: oru-receiver.py --port N --out DIR [--mode aa|ae|ar|wrong-id|wrong-then-aa] [--delay-ms N]
                       [--tls-cert PEM --tls-key PEM [--tls-ca PEM]]

Each message received is written, byte for byte as framed, to DIR/<n>.hl7 before it is answered. Prints
"LISTENING <port>" once the server accepts connections. With --tls-ca the client must present a certificate
that CA signed.
"""

import argparse
import asyncio
import os
import ssl
import sys

import hl7
from hl7.mllp import start_hl7_server

REASON = {"ae": "Receiver database unavailable", "ar": "Unknown patient; message rejected"}


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--mode", default="aa", choices=["aa", "ae", "ar", "wrong-id", "wrong-then-aa"])
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-ca")
    return p.parse_args()


def ack_text(msg, code, n, reason=None, acked_id=None):
    """create_ack's MSH + MSA, with MSA-2 replaced and MSA-3/ERR added when asked."""
    lines = str(msg.create_ack(code.upper(), message_id="ACK%05d" % n)).rstrip("\r").split("\r")
    msa = lines[1].split("|")
    if acked_id is not None:
        msa[2] = acked_id
    if reason:
        msa.append(reason)
        lines.append("ERR|||207^Application internal error^HL70357|E||||" + reason)
    lines[1] = "|".join(msa)
    return "\r".join(lines) + "\r"


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    count = 0

    async def on_client(reader, writer):
        nonlocal count
        try:
            while not writer.is_closing():
                block = await reader.readblock()
                count += 1
                n = count
                with open(os.path.join(args.out, "%05d.hl7" % n), "wb") as f:
                    f.write(block)
                msg = hl7.parse(block.decode("utf-8"))
                if args.delay_ms:
                    await asyncio.sleep(args.delay_ms / 1000)
                control_id = str(msg.segment("MSH")(10))
                replies = []
                if args.mode in ("aa", "ae", "ar"):
                    replies.append(ack_text(msg, args.mode, n, REASON.get(args.mode)))
                else:
                    replies.append(ack_text(msg, "aa", n, acked_id="EARLIER-" + control_id))
                    if args.mode == "wrong-then-aa":
                        replies.append(ack_text(msg, "aa", n))
                for r in replies:
                    writer.writeblock(r.encode("utf-8"))
                    await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def serve():
        ctx = None
        if args.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
            if args.tls_ca:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(args.tls_ca)
        server = await start_hl7_server(on_client, "127.0.0.1", args.port, encoding="utf-8", ssl=ctx)
        print("LISTENING %d" % server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
