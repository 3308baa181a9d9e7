"""A Falco-like outputs server on gRPC's C core (what Falco's C++ server is built on), for the
interoperability test: no .proto, responses hand-encoded in protobuf wire format, Falco 0.43's
queue semantics (one shared queue; `sub` writes only after a request until the queue is empty;
`get` drains and ends OK).

usage: falco_core_server.py ADDRESS N_EVENTS LATER_EVENTS [TLS_DIR]
  ADDRESS       unix:///path or host:port (host:port needs TLS_DIR with ca.pem srv.pem srv.key)
  N_EVENTS      events queued before the first client connects
  LATER_EVENTS  events queued once "more" is read on stdin (tests idle polling)
Prints "ready" once serving; exits when stdin closes.
"""
import queue
import sys
from concurrent import futures

import grpc


def varint(n):
    out = b''
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def key(field, wire_type):
    return varint((field << 3) | wire_type)


def ld(field, payload):
    return key(field, 2) + varint(len(payload)) + payload


def text(field, value):
    return ld(field, value.encode())


def response(i):
    # time=1 (Timestamp seconds=1, nanos=2), priority=2 (5 = NOTICE), rule=4, output=5,
    # output_fields=6 (map entries key=1/value=2), hostname=7, tags=8, source=9.
    ts = key(1, 0) + varint(1764000000 + i) + key(2, 0) + varint(123456789)
    fields = {
        'proc.name': 'curl',
        'proc.pid': str(1000 + i),
        'fd.sip': '203.0.113.%d' % (i % 250 + 1),
        'fd.sport': '443',
        'fd.l4proto': 'tcp',
        'fd.sip.name': '<NA>',
        'container.id': 'host',
    }
    msg = ld(1, ts) + key(2, 0) + varint(5) + text(4, 'T1612 Host Outbound Connection') + text(5, 'event %d' % i)
    for k, v in fields.items():
        msg += ld(6, text(1, k) + text(2, v))
    return msg + text(7, 'core-host') + text(8, 'T1612') + text(8, 't1612_egress') + text(9, 'syscall')


EVENTS = queue.Queue()


def drain():
    while True:
        try:
            yield EVENTS.get_nowait()
        except queue.Empty:
            return


def sub(requests, _context):
    for _ in requests:
        yield from drain()


def get(_request, _context):
    yield from drain()


def main():
    address, n, later = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for i in range(n):
        EVENTS.put(response(i))
    same = lambda b: b  # noqa: E731 - raw bytes both ways: no generated code, no .proto
    handler = grpc.method_handlers_generic_handler('falco.outputs.service', {
        'sub': grpc.stream_stream_rpc_method_handler(sub, request_deserializer=same, response_serializer=same),
        'get': grpc.unary_stream_rpc_method_handler(get, request_deserializer=same, response_serializer=same),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    if address.startswith('unix:'):
        server.add_insecure_port(address)
    else:
        tls = sys.argv[4]
        read = lambda f: open('%s/%s' % (tls, f), 'rb').read()  # noqa: E731
        creds = grpc.ssl_server_credentials([(read('srv.key'), read('srv.pem'))], root_certificates=read('ca.pem'), require_client_auth=True)
        server.add_secure_port(address, creds)
    server.start()
    print('ready', flush=True)
    for line in sys.stdin:
        if line.strip() == 'more':
            for i in range(later):
                EVENTS.put(response(n + i))
    server.stop(grace=1)


if __name__ == '__main__':
    main()
