"""``wardgate run --http2-*``: every HTTP/2 limit is a flag, validated before the gateway
starts (a clear error naming the flag and its range), and what is set is what a client
meets on the wire."""

from __future__ import annotations

import contextlib
import time

import h2.errors
import h2.events
import h2.settings
import hyperframe.frame
import pytest

from tests.conftest import run_wardgate
from tests.proxy.h2.conftest import RawH2

CODES = h2.settings.SettingCodes


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--http2-max-frame-size", "1000", "between 16384 and 1.67772e+07"),
        ("--http2-header-table-size", "-1", "between 0 and 1.04858e+06"),
        ("--http2-max-control-frames-per-second", "0", "between 1 and"),
        ("--http2-premature-reset-min-streams", "0", "between 1 and"),
        ("--http2-premature-reset-max-lifetime", "0", "between 0.001 and 3600"),
        ("--http2-premature-reset-ratio", "1.5", "between 0.01 and 1"),
        ("--http2-max-outbound-buffer", "10", "between 65536 and"),
        ("--http2-idle-timeout", "0", "between 1 and 604800"),
    ],
)
def test_out_of_range_flags_are_refused_with_the_flag_named(flag, value, message):
    result = run_wardgate("run", "--upstream", "http://127.0.0.1:9", flag, value)
    assert result.returncode != 0
    assert f"{flag} must be {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_non_number_is_refused_by_the_parser():
    result = run_wardgate("run", "--upstream", "http://127.0.0.1:9", "--http2-idle-timeout", "x")
    assert result.returncode == 2 and "--http2-idle-timeout" in result.stderr


def _server_settings(client: RawH2) -> dict[int, int]:
    events = client.pump(
        5, lambda ev: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in ev)
    )
    changed = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged))
    return {code: setting.new_value for code, setting in changed.changed_settings.items()}


def test_the_flags_reach_the_wire(gateway_process):
    """No request is made: what is checked is what the connection itself does."""
    proc = gateway_process(
        "--upstream",
        "http://127.0.0.1:9",
        "--http2-max-frame-size",
        "65536",
        "--http2-header-table-size",
        "1024",
        "--http2-max-control-frames-per-second",
        "20",
        "--http2-idle-timeout",
        "1",
    )
    start = time.monotonic()  # before connecting: the idle timer starts after this
    client = RawH2(proc.listen)
    settings = _server_settings(client)
    assert settings[CODES.MAX_FRAME_SIZE] == 65536
    assert settings[CODES.HEADER_TABLE_SIZE] == 1024
    # A connection without streams is closed after the idle timeout: GOAWAY(NO_ERROR).
    client.pump(10, lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) for e in ev))
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert 0.9 <= time.monotonic() - start < 8
    client.close()
    # 200 PINGs at once are over a budget of 20 per second (1000 would pass by default).
    client = RawH2(proc.listen)
    ping = hyperframe.frame.PingFrame(0)
    ping.opaque_data = b"12345678"
    with contextlib.suppress(OSError):
        client.send_raw(ping.serialize() * 200)
    client.pump(5, lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) for e in ev))
    client.close()
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
