"""WAF benchmark: Wardgate's WAF against ModSecurity v3 + OWASP CRS, in one run.

1. In-process cost of the WAF filter per request (median of many runs): a GET with five
   parameters and a 4 KiB JSON POST, each repeated, with values no earlier request had,
   and cold (the engine's memo of recent answers emptied before each request); and
   256 KiB / 1 MiB adversarial bodies (the ratio shows whether the cost stays linear).
2. Detection and false positives on the CRS-derived corpus (``shared/waf-corpus``): Wardgate
   in process, and nginx + libmodsecurity3 + CRS 3.3.4 at paranoia level 1 over HTTP with
   the same requests, side by side, plus both for payloads moved into a custom header and
   into the URL path.
3. Throughput over HTTP with one worker each (``wrk``): Wardgate (default policy, WAF on)
   and nginx + ModSecurity + CRS, both in front of the same nginx upstream.

ModSecurity needs the Debian packages ``libnginx-mod-http-modsecurity`` and
``modsecurity-crs`` (installed when missing and running as root). Usage:
``python bench/waf_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "gateway"), str(ROOT)]

from bench.harness import (  # noqa: E402
    ensure_modsecurity,
    nginx_modsecurity,
    run_wrk,
    wardgate_proxy,
)
from multidict import CIMultiDict  # noqa: E402

from wardgate.config.waf import WafSpec  # noqa: E402
from wardgate.filters.api import HttpRequest  # noqa: E402
from wardgate.filters.waf import corpus  # noqa: E402
from wardgate.filters.waf.filter import WafConfig  # noqa: E402

CORPUS_CANDIDATES = [
    ROOT.parent / "shared" / "waf-corpus" / "crs-regression.jsonl",
    ROOT / "shared" / "waf-corpus" / "crs-regression.jsonl",
    Path("/work/shared/waf-corpus/crs-regression.jsonl"),
]


# --- 1. in-process cost ---------------------------------------------------------------

HEADERS = [
    ("Host", "api.example.com"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"),
    ("Accept", "application/json"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"),
]


def _request(target: str, body: bytes = b"", content_type: str = "") -> HttpRequest:
    headers = list(HEADERS)
    if body:
        headers += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    path, _, query = target.partition("?")
    return HttpRequest(
        method="POST" if body else "GET",
        raw_target=target,
        path=path,
        query=query,
        headers=CIMultiDict(headers),
    )


async def _decide(config: WafConfig, target: str, body: bytes, content_type: str) -> object:
    request = _request(target, body, content_type)
    flt = config.create_filter()
    reply = await flt.decode_headers(request)
    if reply is None and body:
        reply = await flt.decode_body(request, body, True)
    return reply


Case = Callable[[int], tuple[str, bytes, str]]
"""Request number -> (request target, body, content type)."""


def _median_us(config: WafConfig, runs: int, case: Case, cold: bool = False) -> float:
    """Median wall time of one WAF decision. ``cold`` empties the engine's memo before each
    request, so every value is scanned as if never seen."""

    async def go() -> float:
        samples = []
        for number in range(runs):
            target, body, content_type = case(number)
            if cold:
                config.engine.forget()
            start = time.perf_counter()
            await _decide(config, target, body, content_type)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples) * 1e6

    return asyncio.run(go())


GET_TARGET = "/api/v1/items?page=2&size=50&sort=name&filter=active&q=blue+shoes"
WORDS = ("blue", "red", "shoes", "jacket", "wool", "linen", "summer", "kids", "sale", "xl")


def get_unseen(number: int) -> tuple[str, bytes, str]:
    """The GET with a page number and search text no earlier request had (the headers and
    parameter names repeat, as they do from one client)."""
    words = "+".join(WORDS[(number // 10**i) % 10] for i in range(4))
    return (
        f"/api/v1/items?page={number + 2}&size=50&sort=name&filter=active&q={words}+{number}",
        b"",
        "",
    )


def json_4k(number: int = 0) -> bytes:
    """A 4 KiB JSON document; ``number`` makes its titles and ids differ between requests
    (the keys and the shipping note repeat, as in real traffic)."""
    items = [
        {
            "id": number * 100 + i,
            "title": f"Item {number}-{i}",
            "note": "Ships in 2-3 days (excluding weekends); contact support@example.com.",
        }
        for i in range(40)
    ]
    doc = {"user": {"name": "Ann O'Neil", "bio": "I build APIs & like Go."}, "items": items}
    data = json.dumps(doc).encode()
    while len(data) > 4096:
        items.pop()
        data = json.dumps(doc).encode()
    return data


def adversarial(size: int) -> bytes:
    """A text body full of almost-attacks: quotes, comment openers, escapes, tags."""
    unit = b"a' or/* <x %25 \\x3c &#60; ${ ../ select ( union "
    return (unit * (size // len(unit) + 1))[:size]


def inprocess(config: WafConfig, quick: bool) -> dict[str, float]:
    """Per request shape: *repeat* sends the same request every time (every value answered
    by the memo), *unseen values* gives each request values no earlier one had, *cold*
    empties the memo before each request (every value scanned)."""
    runs = 200 if quick else 1000
    json_runs = max(runs // 5, 20)

    def get_repeat(_number: int) -> tuple[str, bytes, str]:
        return GET_TARGET, b"", ""

    def json_repeat(_number: int) -> tuple[str, bytes, str]:
        return "/api/v1/items", json_4k(), "application/json"

    def json_unseen(number: int) -> tuple[str, bytes, str]:
        return "/api/v1/items", json_4k(number + 1), "application/json"

    results = {
        "GET, 5 parameters, repeat": _median_us(config, runs, get_repeat),
        "GET, 5 parameters, unseen values": _median_us(config, runs, get_unseen),
        "GET, 5 parameters, cold": _median_us(config, runs, get_repeat, cold=True),
        "POST, 4 KiB JSON, repeat": _median_us(config, json_runs, json_repeat),
        "POST, 4 KiB JSON, unseen values": _median_us(config, json_runs, json_unseen),
        "POST, 4 KiB JSON, cold": _median_us(config, json_runs, json_repeat, cold=True),
    }
    for size in (256 * 1024, 1024 * 1024):
        body = adversarial(size)

        def text(_number: int, body: bytes = body) -> tuple[str, bytes, str]:
            return "/upload", body, "text/plain"

        results[f"POST, {size // 1024} KiB adversarial text"] = _median_us(
            WafConfig(WafSpec.model_validate({"requestBodyLimit": 2 * 1024 * 1024})), 3, text
        )
    return results


# --- 2. ModSecurity + CRS behind nginx -------------------------------------------------


def raw_status(port: int, record: corpus.Record) -> int:
    """Send one corpus request as bytes; the response status (0: no answer)."""
    lines = [f"{record.method} {record.target} {record.version}"]
    lines += [f"{name}: {value}" for name, value in record.headers]
    data = ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode(
        "utf-8", "surrogateescape"
    ) + record.body
    try:
        with socket.create_connection(("127.0.0.1", port), 10) as sock:
            sock.sendall(data)
            head = sock.recv(64)
    except OSError:
        return 0
    match = re.match(rb"HTTP/\d\.\d (\d{3})", head)
    return int(match.group(1)) if match else 0


def http_report(port: int, records: list[corpus.Record]) -> corpus.Report:
    report = corpus.Report()
    for record in records:
        status = raw_status(port, record)
        blocked = status in (403, 400, 413, 414, 431) and status != 0
        tallies = report.attacks if record.expect == "block" else report.benign
        tally = tallies[record.category]
        tally.total += 1
        tally.blocked += blocked
    return report


# --- 3. throughput --------------------------------------------------------------------


UNSEEN_WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/api/v1/items?page=" .. counter ..
    "&size=50&sort=name&filter=active&q=blue+shoes+" .. counter)
end
"""
"""The GET with 5 parameters, page number and search text new in every request (so a WAF
that remembers answers gains only on what really repeats: headers, parameter names)."""


def wrk_rps(port: int, seconds: int) -> float:
    """Peak req/s of ``UNSEEN_WRK_SCRIPT`` (wrk, 1 thread, 16 connections)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(UNSEEN_WRK_SCRIPT)
        script.flush()
        url = f"http://127.0.0.1:{port}/"
        return run_wrk(url, seconds, Path(script.name), connections=16).rps


# --- main -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    corpus_path = next((p for p in CORPUS_CANDIDATES if p.exists()), None)

    start = time.perf_counter()
    config = WafConfig(WafSpec())
    print(
        f"# Wardgate WAF: {len(config.rules)} rules at paranoia level 1, compiled or loaded in "
        f"{time.perf_counter() - start:.2f} s"
    )
    print("\n## In-process WAF cost per request (median)")
    costs = inprocess(config, args.quick)
    for name, micros in costs.items():
        print(f"  {name:<36} {micros:>10.0f} us")
    ratio = costs["POST, 1024 KiB adversarial text"] / costs["POST, 256 KiB adversarial text"]
    print(f"  1 MiB / 256 KiB cost ratio: {ratio:.1f} (4.0 = linear)")

    if corpus_path is None:
        print("\ncorpus not found: detection comparison skipped")
        return 0
    records = corpus.select(corpus.load(corpus_path), 1)
    wardgate = asyncio.run(corpus.evaluate(config, records))
    header_set, path_set = corpus.relocated(records, "header"), corpus.relocated(records, "path")
    wg_header = asyncio.run(corpus.evaluate(config, header_set))
    wg_path = asyncio.run(corpus.evaluate(config, path_set))

    why_not = ensure_modsecurity()
    modsec = ms_header = ms_path = None
    rps: dict[str, float] = {}
    if why_not is None:
        with (
            tempfile.TemporaryDirectory(prefix="wardgate-modsec-") as tmp,
            nginx_modsecurity(Path(tmp)) as (port, upstream_port),
        ):
            modsec = http_report(port, records)
            ms_header = http_report(port, header_set)
            ms_path = http_report(port, path_set)
            seconds = 3 if args.quick else 8
            rps["nginx + ModSecurity + CRS PL1"] = wrk_rps(port, seconds)
            with wardgate_proxy(upstream_port, None) as wg_port:
                rps["Wardgate (WAF on, default policy)"] = wrk_rps(wg_port, seconds)
    print(
        "\n## Detection on the CRS-derived corpus, paranoia level 1 (attacks blocked / benign blocked)"
    )
    print(f"  {'':<34}{'Wardgate':>22}{'ModSecurity+CRS 3.3.4':>26}")
    rows = [
        ("corpus attacks (PL1)", wardgate.detection, modsec.detection if modsec else None),
        (
            "corpus benign FP (high conf.)",
            wardgate.false_positive_rate,
            modsec.false_positive_rate if modsec else None,
        ),
        (
            "attacks moved into a header",
            wg_header.detection,
            ms_header.detection if ms_header else None,
        ),
        ("attacks moved into the path", wg_path.detection, ms_path.detection if ms_path else None),
    ]
    for name, ours, theirs in rows:
        theirs_text = f"{theirs:.1%}" if theirs is not None else "n/a"
        print(f"  {name:<34}{ours:>22.1%}{theirs_text:>26}")
    print("\n  Wardgate per category:\n" + _indent(wardgate.table()))
    if modsec:
        print("\n  ModSecurity + CRS per category:\n" + _indent(modsec.table()))
    if why_not:
        print(f"\nModSecurity not measured: {why_not}")
    if rps:
        print(
            "\n## Throughput over HTTP, one worker each (wrk -t1 -c16, GET with 5 parameters,"
            " values new in every request)"
        )
        for name, value in rps.items():
            print(f"  {name:<36} {value:>10.0f} req/s")
        ours = rps.get("Wardgate (WAF on, default policy)", 0.0)
        theirs = rps.get("nginx + ModSecurity + CRS PL1", 0.0)
        if theirs:
            print(f"  ratio Wardgate / ModSecurity: {ours / theirs:.2f}x")
    return 0


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
