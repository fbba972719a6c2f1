"""Where Hyperscan databases come from: the read-only store (image build time), the private
cache, the compiler; and what the store is never trusted with."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import hyperscan
import pytest

from wardgate.filters import hyperscan_db

PATTERNS = [b"evil", b"sel.ct"]
FLAGS = hyperscan.HS_FLAG_CASELESS


def _matches(database: hyperscan.Database, data: bytes) -> list[int]:
    found: list[int] = []

    def on_match(expr: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
        found.append(expr)

    database.scan(data, match_event_handler=on_match, scratch=hyperscan.Scratch(database))
    return found


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty cache and a store location, both configured."""
    cache, store = tmp_path / "cache", tmp_path / "store"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("WARDGATE_HS_CACHE", str(cache))
    monkeypatch.setenv(hyperscan_db.STORE_ENV, str(store))
    monkeypatch.setattr(hyperscan_db, "_warned", False)
    return cache, store


def _build_store(store: Path) -> Path:
    with hyperscan_db.exporting(store):
        hyperscan_db.compile_database(PATTERNS, FLAGS)
    (entry,) = store.glob("*.hsdb")
    return entry


def test_a_stored_database_is_loaded_without_compiling_or_caching(dirs, monkeypatch):
    cache, store = dirs
    _build_store(store)
    for path in cache.iterdir():
        path.unlink()
    monkeypatch.setattr(hyperscan_db, "_cached_or_compiled", _never)
    database = hyperscan_db.compile_database(PATTERNS, FLAGS)
    assert _matches(database, b"x SELECT y") == [1]
    assert list(cache.iterdir()) == []


def _never(*_args: object) -> hyperscan.Database:
    raise AssertionError("compiled although the store has the database")


def test_other_patterns_never_hit_the_store(dirs):
    _cache, store = dirs
    _build_store(store)
    assert hyperscan_db.load(hyperscan_db.database_key([b"other"], FLAGS)) is None
    assert (
        hyperscan_db.load(hyperscan_db.database_key(PATTERNS, FLAGS | hyperscan.HS_FLAG_DOTALL))
        is None
    )


def test_a_database_built_for_another_cpu_is_compiled_instead(dirs, caplog):
    """Hyperscan refuses to load a database whose platform needs CPU features the host
    lacks; the start is then slow (it compiles), never without the database."""
    cache, store = dirs
    entry = _build_store(store)
    data = bytearray(entry.read_bytes())
    struct.pack_into("<Q", data, 12, 0)  # the platform word: "needs every CPU feature"
    entry.write_bytes(bytes(data))
    for path in cache.iterdir():
        path.unlink()
    with caplog.at_level(logging.WARNING, "wardgate.hyperscan"):
        database = hyperscan_db.compile_database(PATTERNS, FLAGS)
    assert _matches(database, b"EVIL") == [0]
    assert "not usable on this host" in caplog.text
    assert len(list(cache.glob("*.hsdb"))) == 1  # compiled (and cached)


def test_a_store_others_can_write_is_not_read(dirs):
    _cache, store = dirs
    _build_store(store)
    store.chmod(0o777)
    assert hyperscan_db.store_dir() is None
    store.chmod(0o755)
    assert hyperscan_db.store_dir() == store


def test_an_entry_others_can_write_is_not_read(dirs):
    _cache, store = dirs
    entry = _build_store(store)
    key = entry.stem
    assert hyperscan_db.load(key) is not None
    entry.chmod(0o666)
    assert hyperscan_db.load(key) is None


def test_an_empty_setting_turns_the_store_off(dirs, monkeypatch):
    _cache, store = dirs
    _build_store(store)
    monkeypatch.setenv(hyperscan_db.STORE_ENV, "")
    assert hyperscan_db.store_dir() is None


def test_building_a_store_replaces_what_it_held_and_is_world_readable(dirs):
    _cache, store = dirs
    store.mkdir()
    (store / "stale.hsdb").write_bytes(b"old")
    entry = _build_store(store)
    assert entry.stat().st_mode & 0o777 == 0o644
    assert store.stat().st_mode & 0o777 == 0o755
