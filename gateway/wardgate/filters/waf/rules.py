"""The rule schema and loader: rules are YAML data in ``wardgate/filters/waf/rules/``.

One file per family::

    family: sqli
    defaults:                       # any rule field; each rule may override it
      targets: [ARGS, REQUEST_HEADERS, "!REQUEST_HEADERS:referer"]
      transformations: [urlDecodeUni, htmlEntityDecode]
    rules:
      - id: "942100"
        paranoiaLevel: 1            # 1-4
        severity: critical          # critical 5 | error 4 | warning 3 | notice 2
        operator: detectSQLi        # see wardgate.filters.waf.operators
        prefilter: "['\\"`;#(]"    # optional rx: run the operator only where it matches
        message: SQL injection (libinjection)
        references: [CWE-89]
        requires: "943001"          # optional: counts only if that rule matched this request
        confidence: weak            # optional (default strong): see below

A ``weak`` rule matches something real content also produces (a libinjection fingerprint
over code, a URL with an IP host, ``${...}``, one markup tag, a control character). At
paranoia level 1 it scores only when *corroborated*: another rule matched the same request,
either a strong one or a weak one of another family. From level 2 on it scores alone, as a
strong rule does. See ``docs/waf.md`` (scoring) and ``RATIONALE.md``.

A ``condition`` severity scores nothing and is never reported: such a rule only exists to be
``requires``-d (SecLang's chained rule, for relations such as "no off-site Referer").

``rx`` takes ``pattern`` (Hyperscan syntax, matched caseless with ``.`` matching newlines);
``pm`` takes ``phrases`` (literal, caseless). Targets are kinds from
:mod:`wardgate.filters.waf.targets`, optionally narrowed to one name
(``REQUEST_HEADERS:user-agent``) or excluding one (``!REQUEST_HEADERS:referer``).
Loading validates everything (unknown fields, operators, transformations, kinds, duplicate
ids); patterns are validated when the engine compiles them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from wardgate.config.waf import WafFamily
from wardgate.filters.waf.operators import OPERATORS
from wardgate.filters.waf.targets import KINDS
from wardgate.filters.waf.transforms import TRANSFORMS

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

SEVERITY_SCORES = {"critical": 5, "error": 4, "warning": 3, "notice": 2, "condition": 0}
_FIELDS = frozenset(
    {
        "id",
        "paranoiaLevel",
        "severity",
        "targets",
        "transformations",
        "operator",
        "pattern",
        "phrases",
        "prefilter",
        "message",
        "references",
        "requires",
        "confidence",
    }
)
CONFIDENCES = frozenset({"strong", "weak", "shape"})


class RuleError(ValueError):
    """A rule file that does not follow the schema; the message names file and rule."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled-ready rule."""

    id: str
    family: WafFamily
    paranoia_level: int
    severity: str
    kinds: frozenset[str]
    only_names: tuple[tuple[str, frozenset[str]], ...]
    """Per kind, the only names it applies to (``REQUEST_HEADERS:user-agent``)."""
    skip_names: tuple[tuple[str, frozenset[str]], ...]
    """Per kind, names it never applies to (``!REQUEST_HEADERS:referer``)."""
    transformations: tuple[str, ...]
    operator: str
    pattern: str
    phrases: tuple[str, ...]
    prefilter: str
    message: str
    references: tuple[str, ...]
    requires: str = ""
    """A rule id that must have matched the same request (in this or an earlier phase)."""
    weak: bool = False
    """``confidence: weak`` or ``shape``: at paranoia level 1 it needs corroboration to score."""
    shape: bool = False
    """``confidence: shape``: a weak signal about the form of a value (a line end, a control
    or shell character in a name), not its content: only a strong match corroborates it,
    and it corroborates no other weak signal."""

    @property
    def score(self) -> int:
        return SEVERITY_SCORES[self.severity]

    def applies_to(self, kind: str, name: str) -> bool:
        """Whether the rule looks at this target (after its kind matched)."""
        for only_kind, names in self.only_names:
            if only_kind == kind and name.lower() not in names:
                return False
        for skip_kind, names in self.skip_names:
            if skip_kind == kind and name.lower() in names:
                return False
        return True


def load_rules() -> tuple[Rule, ...]:
    """Every rule shipped in the package, validated; raises :class:`RuleError`."""
    package = resources.files("wardgate.filters.waf") / "rules"
    rules: list[Rule] = []
    for entry in sorted(package.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            rules.extend(parse_rule_file(entry.name, entry.read_text(encoding="utf-8")))
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise RuleError(f"rule {rule.id} is defined twice")
        seen.add(rule.id)
    check_requires(rules)
    return tuple(rules)


def check_requires(rules: list[Rule]) -> None:
    """Every ``requires`` names a rule of the same family (so both are on or off together)."""
    by_id = {rule.id: rule for rule in rules}
    for rule in rules:
        if not rule.requires:
            continue
        required = by_id.get(rule.requires)
        if required is None or required.family is not rule.family:
            raise RuleError(f"rule {rule.id} requires {rule.requires}: no such rule in its family")


def parse_rule_file(name: str, text: str) -> list[Rule]:
    """Parse one family file (see the module docstring)."""
    try:
        document = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise RuleError(f"{name}: not valid YAML: {exc}") from None
    if not isinstance(document, dict) or set(document) - {"family", "defaults", "rules"}:
        raise RuleError(f"{name}: expected a mapping with family, defaults, rules")
    try:
        family = WafFamily(str(document.get("family")))
    except ValueError:
        raise RuleError(f"{name}: unknown family {document.get('family')!r}") from None
    defaults = document.get("defaults") or {}
    entries = document.get("rules") or []
    if not isinstance(defaults, dict) or not isinstance(entries, list):
        raise RuleError(f"{name}: defaults must be a mapping and rules a list")
    return [_rule(name, family, {**defaults, **entry}) for entry in entries]


def _rule(file: str, family: WafFamily, data: dict[str, Any]) -> Rule:
    where = f"{file}: rule {data.get('id', '?')}"
    unknown = set(data) - _FIELDS
    if unknown:
        raise RuleError(f"{where}: unknown fields {sorted(unknown)}")
    rule_id = str(data.get("id", ""))
    if not (len(rule_id) == 6 and rule_id.isdigit()):
        raise RuleError(f"{where}: id must be six digits")
    level = data.get("paranoiaLevel", 1)
    if level not in (1, 2, 3, 4):
        raise RuleError(f"{where}: paranoiaLevel must be 1 to 4")
    severity = data.get("severity", "critical")
    if severity not in SEVERITY_SCORES:
        raise RuleError(f"{where}: severity must be one of {sorted(SEVERITY_SCORES)}")
    operator = data.get("operator")
    if operator not in OPERATORS:
        raise RuleError(f"{where}: operator must be one of {sorted(OPERATORS)}")
    pattern = str(data.get("pattern", ""))
    phrases = tuple(str(p) for p in data.get("phrases", ()))
    argument = OPERATORS[operator].argument
    if argument == "pattern" and not pattern:
        raise RuleError(f"{where}: {operator} needs a pattern")
    if argument == "phrases" and (not phrases or not all(phrases)):
        raise RuleError(f"{where}: {operator} needs non-empty phrases")
    transformations = tuple(data.get("transformations", ()))
    for transformation in transformations:
        if transformation not in TRANSFORMS:
            raise RuleError(f"{where}: unknown transformation {transformation!r}")
    kinds: set[str] = set()
    only: dict[str, set[str]] = {}
    skip: dict[str, set[str]] = {}
    for raw in data.get("targets", ()):
        text = str(raw)
        negate = text.startswith("!")
        kind, _, selector = text.removeprefix("!").partition(":")
        if kind not in KINDS:
            raise RuleError(f"{where}: unknown target {kind!r}")
        if negate:
            if not selector:
                raise RuleError(f"{where}: an exclusion names one target name ({text})")
            skip.setdefault(kind, set()).add(selector.lower())
            continue
        kinds.add(kind)
        if selector:
            only.setdefault(kind, set()).add(selector.lower())
    if not kinds:
        raise RuleError(f"{where}: no targets")
    requires = str(data.get("requires", ""))
    if requires and not (len(requires) == 6 and requires.isdigit()):
        raise RuleError(f"{where}: requires must be a six-digit rule id")
    confidence = data.get("confidence", "strong")
    if confidence not in CONFIDENCES:
        raise RuleError(f"{where}: confidence must be strong, weak or shape")
    message = str(data.get("message", ""))
    if not message:
        raise RuleError(f"{where}: a rule needs a message")
    return Rule(
        id=rule_id,
        family=family,
        paranoia_level=level,
        severity=severity,
        kinds=frozenset(kinds),
        only_names=tuple((k, frozenset(v)) for k, v in sorted(only.items())),
        skip_names=tuple((k, frozenset(v)) for k, v in sorted(skip.items())),
        transformations=transformations,
        operator=operator,
        pattern=pattern,
        phrases=phrases,
        prefilter=str(data.get("prefilter", "")),
        message=message,
        references=tuple(str(r) for r in data.get("references", ())),
        requires=requires,
        weak=confidence != "strong",
        shape=confidence == "shape",
    )
