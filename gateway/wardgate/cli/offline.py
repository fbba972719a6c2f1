"""The offline commands: ``validate``, ``schema``, ``explain``, ``tune``, ``import-envoy`` and
``precompile-waf`` (files in, a report and an exit code out)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from wardgate.config import policy_json_schema
from wardgate.errors import BaselineError, PolicyError, RequestDescriptionError
from wardgate.runtime import load_compiled
from wardgate.runtime.explain import explain, parse_request_description


def cmd_validate(args: argparse.Namespace) -> int:
    if args.baseline:
        return validate_baseline(args)
    from wardgate.envoy.limitations import envoy_limitations
    from wardgate.runtime.validation import validate_file

    results = [r for name in args.files for r in validate_file(name)]
    for result in results:
        if result.compiled is not None:
            result.notes.extend(f"(envoy) {t}" for t in envoy_limitations(result.compiled))
        if args.quiet:
            result.notes.clear()
    valid = all(r.valid for r in results)
    if args.output == "json":
        print(json.dumps({"valid": valid, "documents": [r.as_json() for r in results]}, indent=2))
        return 0 if valid else 1
    for result in results:
        doc = result.document
        if not result.valid:
            what = "policy" if doc.kind in ("Policy", "Microgateway") else doc.kind
            print(f"{doc.source}: invalid {what}")
            print("".join(f"  {p}\n" for p in result.problems), end="")
        elif result.compiled is not None:
            filters = ", ".join(result.compiled.filter_names())
            print(f"{doc.source}: valid (digest {result.compiled.digest}, filters: {filters})")
        else:
            print(f"{doc.source}: valid {doc.kind}")
        for text in result.notes:
            label = "note (envoy)" if text.startswith("(envoy) ") else "note"
            print(f"  {label}: {text.removeprefix('(envoy) ')}")
    return 0 if valid else 1


def validate_baseline(args: argparse.Namespace) -> int:
    """``validate --baseline``: the operator's baseline merge, offline. Exit 1 when a policy
    is invalid or weakens a baseline; clamped defaults are notes."""
    from wardgate.config import load_policy_file
    from wardgate.config.baseline_merge import apply_baselines
    from wardgate.config.loading import load_baseline_file

    try:
        baselines = [b for name in args.baseline for b in load_baseline_file(name)]
    except PolicyError as exc:
        print(exc.report())
        return 2
    failed = False
    for name in args.files:
        try:
            load_compiled(name)
            outcome = apply_baselines(load_policy_file(name), baselines)
        except PolicyError as exc:
            failed = True
            print(exc.report())
            continue
        except BaselineError as exc:
            failed = True
            print(f"{name}: the baselines' defaults do not fit the policy")
            for problem in exc.problems:
                print(f"  {problem}")
            continue
        weakening = outcome.of_kind("violation", "unenforceable")
        if weakening:
            failed = True
            print(f"{name}: weakens a baseline")
        else:
            digest = outcome.effective.digest() if outcome.effective else "-"
            print(f"{name}: meets the baselines (effective digest {digest})")
        for finding in outcome.findings:
            label = "note" if finding.kind == "clamp" else finding.kind
            print(f"  {label}: {finding}")
    return 1 if failed else 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.format == "markdown":
        from wardgate.config.reference import render_reference

        sys.stdout.write(render_reference())
    else:
        print(json.dumps(policy_json_schema(), indent=2))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        policy = load_compiled(args.policy)
    except PolicyError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    try:
        raw = sys.stdin.buffer.read() if args.request == "-" else Path(args.request).read_bytes()
        description = parse_request_description(raw)
    except (OSError, RequestDescriptionError) as exc:
        print(f"wardgate explain: cannot read the request: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(explain(policy, description))
    print(json.dumps(result, indent=2))
    return 0 if result["decision"] == "allow" else 1


def cmd_tune(args: argparse.Namespace) -> int:
    from wardgate.filters.waf.tuning import propose, read_hits, render_patch

    lines: list[str] = []
    for name in args.logs:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"wardgate tune: cannot read {name}: {exc}", file=sys.stderr)
            return 2
        lines.extend(text.splitlines())
    reading = read_hits(lines)
    proposals = propose(reading.hits, args.min_hits)
    print(
        f"wardgate tune: {reading.lines} log lines, {reading.skipped} skipped, "
        f"{len(reading.hits)} WAF matches, {len(proposals)} proposed exceptions",
        file=sys.stderr,
    )
    sys.stdout.write(render_patch(proposals))
    return 0


def cmd_import_envoy(args: argparse.Namespace) -> int:
    """Policy YAML on stdout (or ``--output``); unsupported fields and notes on stderr.
    Exit 0: fully converted; 1: some fields could not be converted (named); 2: bad input."""
    import yaml

    from wardgate.config.envoy_import import import_envoy_text

    try:
        raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
        result = import_envoy_text(raw, args.file)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"wardgate import-envoy: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    text = yaml.safe_dump(result.policy, sort_keys=False)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    for line in result.unsupported:
        print(f"unsupported: {line}", file=sys.stderr)
    for line in result.notes:
        print(f"note: {line}", file=sys.stderr)
    return 1 if result.unsupported else 0


def cmd_precompile_waf(args: argparse.Namespace) -> int:
    """Compile (or load from the cache) every database of the built-in default policy, of
    the default WAF at each ``--paranoia-level`` and of each ``--policy``, and write them
    into the store ``wardgate run`` reads at start (replacing what it held)."""
    import os

    from wardgate.config.waf import WafSpec
    from wardgate.filters import hyperscan_db as store
    from wardgate.filters.waf.filter import WafConfig

    configured = os.environ.get(store.STORE_ENV)
    out = Path(args.out or configured or store.default_store_dir())
    try:
        with store.exporting(out):
            load_compiled(None)
            for level in args.paranoia_level:
                WafConfig(WafSpec.model_validate({"paranoiaLevel": level}))
            for path in args.policy:
                load_compiled(path)
    except PolicyError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    count = len(list(out.glob("*.hsdb")))
    print(f"wardgate precompile-waf: {count} databases in {out}")
    return 0
