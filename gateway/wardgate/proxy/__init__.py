"""The aiohttp adapter: the native reverse proxy and the demo upstream (the admin port it
serves is :mod:`wardgate.admin`, shared with ``wardgate ext-authz``)."""
