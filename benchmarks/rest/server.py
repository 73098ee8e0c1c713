"""A paginated JSON API with a fixed latency per request (run as its own process).

    python -m benchmarks.rest.server PORT PAGES PER_PAGE LATENCY_MS

``GET /items?page=N`` returns ``{"items": [...]}`` after sleeping LATENCY_MS;
pages past PAGES are empty. Threaded, so concurrent requests overlap their waits.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def main() -> None:
    port, pages, per_page, latency = (int(a) for a in sys.argv[1:5])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            page = int(parse_qs(urlsplit(self.path).query).get("page", ["1"])[0])
            time.sleep(latency / 1000)
            first = (page - 1) * per_page
            items = (
                [
                    {"id": first + i, "name": f"item {first + i}", "price": (first + i) % 997 / 10}
                    for i in range(per_page)
                ]
                if 1 <= page <= pages
                else []
            )
            body = json.dumps({"items": items}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
