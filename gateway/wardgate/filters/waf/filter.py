"""The ``waf`` filter: collect targets, run the engine, score, apply exceptions, decide.

Scoring follows the OWASP CRS: every matching rule adds its severity's score once per
request (critical 5, error 4, warning 3, notice 2). Matches of enforcing families add up to
the *blocking* score; a request whose blocking score reaches ``anomalyThreshold`` is
refused with 403 and every violation says which rule, family and location (never the
value). Matches of families in ``detect`` mode, and everything when the section is in
``detect`` mode, go to ``request.findings`` and the request continues.

Corroboration: a *weak* signal (a rule with ``confidence: weak``, something real content
also produces) scores at paranoia level 1 only when backed up by a strong match, or by a
weak match of another family, in the same request (:func:`corroborated`). An
uncorroborated weak match scores nothing but is still reported as a finding.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from dataclasses import dataclass

from wardgate.config.policy import PolicySpec
from wardgate.config.waf import OversizeAction, WafFamily, WafMode, WafSpec
from wardgate.filters.api import FilterConfig, HttpFilter, HttpRequest, LocalReply, Violation
from wardgate.filters.json_body import parsed_document
from wardgate.filters.waf import metrics
from wardgate.filters.waf.bodies import BodyParser, BodyProblem, Shape, decompress
from wardgate.filters.waf.engine import Engine, Match, engine_for
from wardgate.filters.waf.rules import Rule, load_rules
from wardgate.filters.waf.site import referer_site
from wardgate.filters.waf.targets import (
    REFERER_SITE,
    REQUEST_HEADERS,
    REQUEST_HEADERS_NAMES,
    REQUEST_METHOD,
    REQUEST_PROTOCOL,
    REQUEST_URI_RAW,
    Target,
    split_cookies,
    split_path,
    split_query,
)
from wardgate.filters.waf.transforms import normalize_path, url_decode_path

NAME = "waf"
MAX_VIOLATIONS = 10
log = logging.getLogger("wardgate.waf")


@functools.cache
def shipped_rules() -> tuple[Rule, ...]:
    """The package's rule set, loaded once per process."""
    return load_rules()


@dataclass(frozen=True, slots=True)
class CompiledException:
    """One ``waf.exceptions`` entry in matching form."""

    index: int
    rule_ids: frozenset[str]
    families: frozenset[WafFamily]
    exact: frozenset[str]
    prefixes: tuple[str, ...]
    paths: tuple[str, ...]
    methods: frozenset[str]
    expires: float | None

    def covers(self, match: Match, method: str, path: str, now: float) -> bool:
        rule = match.rule
        if rule.id not in self.rule_ids and rule.family not in self.families:
            return False
        if self.expires is not None and now >= self.expires:
            return False
        if self.methods and method not in self.methods:
            return False
        if self.paths and not any(_under(path, prefix) for prefix in self.paths):
            return False
        if self.exact or self.prefixes:
            location = match.location
            if location not in self.exact and not location.startswith(self.prefixes or ("\0",)):
                return False
        return True


def _under(path: str, prefix: str) -> bool:
    """Segment-aware prefix: ``/search`` covers ``/search`` and ``/search/x``, not
    ``/searching``."""
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def _normal_location(location: str) -> str:
    part, sep, name = location.partition(":")
    return f"{part}:{name.lower()}" if sep and part == "header" else location


def _compile_exception(index: int, spec: WafSpec) -> CompiledException:
    entry = spec.exceptions[index]
    exact: set[str] = set()
    prefixes: list[str] = []
    for written in entry.locations:
        location = _normal_location(written)
        if location.endswith("*"):
            prefixes.append(location[:-1])
        else:
            exact.add(location)
    return CompiledException(
        index=index,
        rule_ids=frozenset(entry.rule_ids),
        families=frozenset(entry.families),
        exact=frozenset(exact),
        prefixes=tuple(prefixes),
        paths=entry.paths,
        methods=frozenset(entry.methods),
        expires=entry.expires_at.timestamp() if entry.expires_at else None,
    )


class WafConfig(FilterConfig):
    """One policy generation's WAF: the engine for the active rules, per-family modes,
    exceptions and limits."""

    name = NAME

    def __init__(self, spec: WafSpec, now: dt.datetime | None = None) -> None:
        self.spec = spec
        self.detect_only = spec.mode is WafMode.DETECT
        self.modes: dict[WafFamily, WafMode] = {}
        levels: dict[WafFamily, int] = {}
        for family in WafFamily:
            override = spec.families.get(family)
            mode = override.mode if override and override.mode else spec.mode
            level = override.paranoia_level if override and override.paranoia_level else None
            self.modes[family] = (
                WafMode.DETECT if self.detect_only and mode is WafMode.ENFORCE else mode
            )
            levels[family] = level or spec.effective_paranoia_level()
        active = [
            rule
            for rule in shipped_rules()
            if self.modes[rule.family] is not WafMode.OFF
            and rule.paranoia_level <= levels[rule.family]
        ]
        self.rules = tuple(active)
        self.weak_families = frozenset(f for f, level in levels.items() if level <= 1)
        """Families at paranoia level 1: their weak signals need corroboration."""
        self.engine: Engine = engine_for(self.rules)
        self.threshold = spec.effective_anomaly_threshold()
        self.request_body_limit = spec.request_body_limit
        self.shape = Shape(
            max_parameters=spec.max_parameters,
            max_name_length=spec.max_name_length,
            max_value_length=spec.max_value_length,
            max_depth=spec.max_json_depth,
            max_decompressed_bytes=spec.max_decompressed_bytes,
            max_decompression_ratio=spec.max_decompression_ratio,
        )
        self.body_parser = BodyParser(self.shape)
        moment = (now or dt.datetime.now(dt.UTC)).timestamp()
        self.exceptions: list[CompiledException] = []
        self.expired: list[int] = []
        for index, entry in enumerate(spec.exceptions):
            if entry.expires_at is not None and entry.expires_at.timestamp() <= moment:
                self.expired.append(index)
            else:
                self.exceptions.append(_compile_exception(index, spec))

    def create_filter(self) -> HttpFilter:
        return WafFilter(self)

    def limitations(self) -> tuple[str, ...]:
        notes = [
            f"exceptions[{index}] expired at {self.spec.exceptions[index].expires_at} and "
            "no longer applies"
            for index in self.expired
        ]
        if self.spec.oversize_action is OversizeAction.ALLOW_UNINSPECTED:
            notes.append(
                f"bodies over {self.request_body_limit} bytes pass with only their first "
                f"{self.request_body_limit} bytes inspected"
            )
        return tuple(notes)


class WafFilter(HttpFilter):
    """One request: header-phase matches are kept so the body phase adds to their score."""

    __slots__ = ("config", "matches", "reported")

    def __init__(self, config: WafConfig) -> None:
        self.config = config
        self.matches: dict[str, Match] = {}
        self.reported = 0

    async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
        targets = request_targets(request)
        query_count = sum(1 for t in targets if t.kind == "ARGS_NAMES")
        if query_count > self.config.shape.max_parameters:
            return _problem(
                BodyProblem(
                    400,
                    "too_many_parameters",
                    "query",
                    f"the query has more than {self.config.shape.max_parameters} parameters",
                )
            )
        return self._decide(request, targets)

    async def decode_body(
        self, request: HttpRequest, body: bytes, complete: bool
    ) -> LocalReply | None:
        config = self.config
        if not complete:
            if config.spec.oversize_action is OversizeAction.REJECT:
                return _problem(
                    BodyProblem(
                        413,
                        "body_over_inspection_limit",
                        "body",
                        f"the request body is larger than the WAF inspection limit of "
                        f"{config.request_body_limit} bytes",
                    )
                )
            log.warning(
                "request body over the inspection limit passed with a prefix inspected",
                extra={"wardgate": {"requestId": request.request_id, "filter": NAME}},
            )
        encoding = request.headers.get("content-encoding", "")
        if encoding:
            decoded = decompress(body, encoding, config.shape)
            if isinstance(decoded, BodyProblem):
                return _problem(decoded)
            body = decoded
        targets: list[Target] = []
        content_type = request.headers.get("content-type", "")
        parsed = parsed_document(request, body)  # the OpenAPI filter's parse, if any
        problem = config.body_parser.parse(body, content_type, targets, parsed)
        if problem is not None:
            log.info(
                "request body refused by the WAF body parser",
                extra={
                    "wardgate": {
                        "requestId": request.request_id,
                        "filter": NAME,
                        "reason": problem.reason,
                        "location": problem.location,
                    }
                },
            )
            return _problem(problem)
        return self._decide(request, targets)

    def _decide(self, request: HttpRequest, targets: list[Target]) -> LocalReply | None:
        config = self.config
        found = config.engine.scan(targets)
        if not found:
            return None
        if config.exceptions:
            path = normalize_path(url_decode_path(request.path))
            now = time.time()
            kept = []
            for match in found:
                cover = next(
                    (e for e in config.exceptions if e.covers(match, request.method, path, now)),
                    None,
                )
                if cover is None:
                    kept.append(match)
                else:
                    _note(request, "suppressed", match, f"exceptions[{cover.index}]")
            found = kept
        for match in found:
            if not match.rule.requires:
                self.matches.setdefault(match.rule.id, match)
        for match in found:
            if match.rule.requires in self.matches:
                self.matches.setdefault(match.rule.id, match)
        blocking: list[Match] = []
        score = 0
        scoring = [m for m in self.matches.values() if m.rule.score]
        for match in scoring:  # conditions (score 0) are only there to be required
            if is_weak(match, config.weak_families) and not corroborated(
                match, scoring, config.weak_families
            ):
                _note(request, "uncorroborated", match, "weak signal, no second signal")
                continue
            if config.modes[match.rule.family] is WafMode.ENFORCE:
                blocking.append(match)
                score += match.rule.score
        if blocking and score >= config.threshold:
            for match in blocking:
                metrics.count(match.rule, "block")
            return _block(request, blocking, score, config.threshold)
        new = list(self.matches.values())[self.reported :]
        self.reported = len(self.matches)
        for match in new:
            if match.rule.score == 0:
                continue
            action = "detect" if config.modes[match.rule.family] is WafMode.DETECT else "score"
            metrics.count(match.rule, action)
            request.findings.append(_violation(match))
        return None


def _note(request: HttpRequest, kind: str, match: Match, why: str) -> None:
    """Record in ``request.metadata["waf"][kind]`` a match that did not score and why
    (``wardgate explain`` shows them: which exception suppressed which match, which weak
    signal stood alone). Never the value."""
    notes = request.metadata.setdefault(NAME, {}).setdefault(kind, [])
    entry = {"ruleId": f"waf.{match.rule.id}", "location": match.location, "by": why}
    if entry not in notes:
        notes.append(entry)


def is_weak(match: Match, weak_families: frozenset[WafFamily]) -> bool:
    """Whether ``match`` is a signal real content produces on its own (see the module
    docstring): a ``confidence: weak`` rule of a family at paranoia level 1."""
    return match.rule.weak and match.rule.family in weak_families


def corroborated(match: Match, matches: list[Match], weak_families: frozenset[WafFamily]) -> bool:
    """Another rule backs ``match`` up: a strong match of any family, or a weak one of
    another family (weak matches of one family are one signal, however many rules)."""
    for other in matches:
        if other.rule.id == match.rule.id:
            continue
        if not is_weak(other, weak_families):
            return True
        if match.rule.shape or other.rule.shape:
            continue
        if other.rule.family is not match.rule.family:
            return True
    return False


def request_targets(request: HttpRequest) -> list[Target]:
    """Targets of the request line and headers (the body comes in its own phase). A header
    value an earlier filter vouched for (``HttpRequest.vouched``) is not a target."""
    targets = [
        Target(REQUEST_METHOD, "", "method", request.method),
        Target(REQUEST_PROTOCOL, "", "protocol", request.version),
        Target(REQUEST_URI_RAW, "", "path", request.raw_target),
        Target(REFERER_SITE, "", "header:referer", referer_site(request.headers)),
    ]
    split_path(request.path, targets)
    if request.query:
        split_query(request.query, "query", targets)
    vouched = request.vouched
    for name, value in request.headers.items():
        lower = name.lower()
        if lower == "cookie":
            split_cookies(value, targets)
            continue
        location = f"header:{lower}"
        targets.append(Target(REQUEST_HEADERS_NAMES, lower, location, name))
        if vouched and (lower, value) in vouched:
            continue  # a token the JWT filter verified: not free text (RATIONALE.md)
        targets.append(Target(REQUEST_HEADERS, lower, location, value))
    return targets


def _violation(match: Match) -> Violation:
    rule = match.rule
    return Violation(f"waf.{rule.id}", match.location, f"{rule.family.value}: {rule.message}")


def _block(request: HttpRequest, blocking: list[Match], score: int, threshold: int) -> LocalReply:
    families = sorted({m.rule.family.value for m in blocking})
    log.info(
        "request refused by the WAF",
        extra={
            "wardgate": {
                "requestId": request.request_id,
                "filter": NAME,
                "ruleIds": [m.rule.id for m in blocking],
                "families": families,
                "score": score,
                "locations": [m.location for m in blocking],
            }
        },
    )
    return LocalReply(
        status=403,
        filter=NAME,
        reason="attack_detected",
        detail=f"refused by WAF rules ({', '.join(families)}; anomaly score {score}, "
        f"threshold {threshold})",
        violations=tuple(_violation(m) for m in blocking[:MAX_VIOLATIONS]),
    )


def _problem(problem: BodyProblem) -> LocalReply:
    metrics.count_refusal(problem.reason)
    return LocalReply(
        status=problem.status,
        filter=NAME,
        reason=problem.reason,
        detail=problem.detail,
        violations=(Violation(f"waf.{problem.reason}", problem.location, problem.detail),),
    )


def compile(policy: PolicySpec) -> WafConfig | None:
    """``None`` (not in the chain) when ``waf.mode`` is ``off``."""
    spec = policy.waf
    if spec.mode is WafMode.OFF:
        return None
    return WafConfig(spec)
