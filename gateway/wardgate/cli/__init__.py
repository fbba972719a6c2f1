"""The ``wardgate`` command: ``run``, ``demo``, ``ext-authz`` (:mod:`.serve`), ``validate``,
``explain``, ``schema``, ``tune``, ``import-envoy``, ``precompile-waf`` (:mod:`.offline`);
arguments in :mod:`.arguments`. Each command returns its exit code: 0 success, 1 a finding
(invalid policy, refused request), 2 unusable input (options, files); a
:class:`~wardgate.errors.WardgateError` becomes a message, anything else is a bug."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from wardgate.cli import offline, serve
from wardgate.cli.arguments import build_parser

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": serve.cmd_run,
    "demo": serve.cmd_demo,
    "validate": offline.cmd_validate,
    "schema": offline.cmd_schema,
    "explain": offline.cmd_explain,
    "tune": offline.cmd_tune,
    "import-envoy": offline.cmd_import_envoy,
    "ext-authz": serve.cmd_ext_authz,
    "precompile-waf": offline.cmd_precompile_waf,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
