"""The aiohttp adapter: the native reverse proxy, its admin port and the demo upstream.
The only part of ``wardgate`` that imports ``aiohttp.web``."""
