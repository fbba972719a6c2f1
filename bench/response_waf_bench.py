"""Response-side WAF benchmark: in-process cost per response of ``response_waf`` (security
headers and leak scanning), next to the request-side WAF's cost for a GET with five
parameters measured in the same run, so the ratio says what masking adds to a request.

Usage: ``python bench/response_waf_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "gateway"), str(ROOT)]

from bench.harness import median_us  # noqa: E402
from multidict import CIMultiDict  # noqa: E402

from wardgate.config import load_policy_text  # noqa: E402
from wardgate.config.waf import WafSpec  # noqa: E402
from wardgate.filters import response_waf  # noqa: E402
from wardgate.filters.api import HttpRequest, HttpResponse  # noqa: E402
from wardgate.filters.waf.filter import WafConfig  # noqa: E402

JSON_4K = json.dumps(
    {"items": [{"id": i, "name": f"item {i}", "note": "An ordinary note."} for i in range(90)]}
).encode()[:4096]
HTML_64K = (b"<p>An ordinary page with some prose, links and <b>markup</b>.</p>\n" * 1100)[:65536]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    number, repeats = (300, 3) if args.quick else (2000, 7)
    config = response_waf.compile(load_policy_text(""))
    assert config is not None
    flt = config.create_filter()

    def respond(content_type: str, body: bytes) -> Callable[[], object]:
        def run() -> object:
            request = HttpRequest("GET", "/x", "/x", "", CIMultiDict())
            response = HttpResponse(
                200, CIMultiDict({"content-type": content_type, "server": "gunicorn"})
            )
            flt.encode_headers(request, response)
            if flt.wants_response_body(request, response):
                return flt.encode_body(request, response, body, True)
            return None

        return run

    waf = WafConfig(WafSpec())
    query = "page=2&sort=name&filter=active&q=blue+shoes&lang=en"

    loop = asyncio.new_event_loop()
    waf_filter = waf.create_filter()

    def request_side_run() -> object:
        request = HttpRequest(
            "GET",
            f"/items?{query}",
            "/items",
            query,
            CIMultiDict({"host": "api", "user-agent": "bench", "accept": "application/json"}),
        )
        return loop.run_until_complete(waf_filter.decode_headers(request))

    cases = [
        ("request WAF: GET, 5 parameters (peer)", request_side_run),
        ("response: image/png (headers only)", respond("image/png", b"\x89PNG" * 1024)),
        ("response: 4 KiB JSON, scanned", respond("application/json", JSON_4K)),
        ("response: 64 KiB HTML, scanned", respond("text/html", HTML_64K)),
    ]
    results = {name: median_us(fn, number, repeats) for name, fn in cases}
    peer = results[cases[0][0]]
    print("\n## Response-side WAF cost per response (median, in process)")
    for name, micros in results.items():
        print(f"  {name:<42} {micros:>8.1f} us  {micros / peer:>5.2f}x request WAF")
    loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
