"""A static file server over HTTPS: Python's http.server behind its ssl module.

usage: https_server.py ADDRESS PORT DIRECTORY CERT_PEM KEY_PEM

The tests serve images with it as an operator's own image server would, with a certificate
from a CA that no public bundle holds.
"""

import functools
import http.server
import ssl
import sys


def main() -> None:
    address, port, directory, cert, key = sys.argv[1:6]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    server = http.server.ThreadingHTTPServer((address, int(port)), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
