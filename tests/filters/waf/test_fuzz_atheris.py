"""A short coverage-guided fuzz run (atheris / libFuzzer) of the WAF's parsers and
normalisers: arbitrary bytes through the body parser (form, JSON, multipart, XML, raw),
decompression, query, cookie and path splitting, and every transformation. The contract
under test is the filter contract's: bad input is a refusal, never an exception.

libFuzzer ends the process when the run is over, so the harness runs in a subprocess (this
file executed as a script); a Python exception escaping the target makes libFuzzer stop
with a non-zero status and a crash report, which the test shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUNS = 30000
MAX_SECONDS = 4
CONTENT_TYPES = (
    "application/x-www-form-urlencoded",
    "application/json",
    "multipart/form-data; boundary=xyz",
    "text/xml",
    "application/soap+xml",
    "text/plain",
)
ENCODINGS = ("gzip", "deflate", "identity", "br")


def fuzz_one(data: bytes) -> None:
    """One input through every parser and normaliser; only refusals (return values) are
    allowed, any exception is a finding."""
    import atheris

    from wardgate.filters.waf.bodies import BodyParser, Shape, decompress
    from wardgate.filters.waf.targets import Target, split_cookies, split_path, split_query
    from wardgate.filters.waf.transforms import TRANSFORMS

    shape = Shape(
        max_parameters=64,
        max_name_length=128,
        max_value_length=4096,
        max_depth=16,
        max_decompressed_bytes=65536,
        max_decompression_ratio=100,
    )
    fdp = atheris.FuzzedDataProvider(data)
    content_type = CONTENT_TYPES[fdp.ConsumeIntInRange(0, len(CONTENT_TYPES) - 1)]
    encoding = ENCODINGS[fdp.ConsumeIntInRange(0, len(ENCODINGS) - 1)]
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 512))
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    out: list[Target] = []
    BodyParser(shape).parse(body, content_type, out)
    decompress(body, encoding, shape)
    split_query(text, "query", out)
    split_cookies(text, out)
    split_path("/" + text, out)
    for transform in TRANSFORMS.values():
        transform(text)


def _main() -> None:
    import atheris

    # Load the libraries and the config layer uninstrumented (instrumenting them costs many
    # seconds and finds nothing in our parsers); only the WAF package is instrumented.
    import hyperscan  # noqa: F401
    import libinjection  # noqa: F401
    import prometheus_client  # noqa: F401
    import yaml  # noqa: F401

    import wardgate.config
    import wardgate.filters.api

    with atheris.instrument_imports():
        import wardgate.filters.waf.bodies
        import wardgate.filters.waf.targets
        import wardgate.filters.waf.transforms  # noqa: F401
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()


def test_parsers_survive_a_fuzz_run(tmp_path: Path) -> None:
    seeds = tmp_path / "corpus"
    seeds.mkdir()
    for i, seed in enumerate(
        (
            b"\x00\x00a=1&b=%41%zz&c[]=x",
            b'\x01\x00{"a": {"b": [1, "x\\u0000", {"$ne": null}]}}',
            b'\x02\x00--xyz\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n'
            b"v\r\n--xyz--\r\n",
            b'\x03\x00<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "x">]><a b="1">&e;</a>',
        )
    ):
        (seeds / f"seed{i}").write_bytes(seed)
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            f"-runs={RUNS}",
            f"-max_total_time={MAX_SECONDS}",
            f"-artifact_prefix={tmp_path}/",
            "-rss_limit_mb=1024",
            str(seeds),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = done.stderr[-4000:]
    assert done.returncode == 0, f"the fuzzer found an input that raises:\n{report}"
    assert "Done" in done.stderr, report  # libFuzzer finished its run rather than dying early


if __name__ == "__main__":
    _main()
