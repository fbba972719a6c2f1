"""HTTP/2 and gRPC through the proxy, beside aiohttp's HTTP/1.1 on the same listener.

* :mod:`~wardgate.proxy.h2.detect` — which protocol a connection speaks (preface, ALPN);
* :mod:`~wardgate.proxy.h2.connection` — the server side of a client connection (``h2``);
* :mod:`~wardgate.proxy.h2.exchange` — one stream through the shared filter chain;
* :mod:`~wardgate.proxy.h2.client` — the multiplexing h2c client to the upstream;
* :mod:`~wardgate.proxy.h2.grpc` — gRPC statuses, deadlines, message framing;
* :mod:`~wardgate.proxy.h2.settings` — HTTP/2 settings and attack limits, with defaults.

Kept import-light: the HTTP/1.1 path imports only what it uses."""
