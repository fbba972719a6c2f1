"""The rule engine: rules compiled into Hyperscan databases, one pass per target.

Rules sharing a transformation pipeline form a *group*; each group is one Hyperscan
database (every ``rx`` pattern, every ``pm`` phrase and every operator prefilter of the
group's rules), so a target is transformed once per pipeline and scanned once per group.
Pipelines share prefixes (``urlDecodeUni`` → ``htmlEntityDecode`` → ...), computed once per
target along a small tree. ``detectSQLi``/``detectXSS`` call libinjection on the group's
transformed value, only where their prefilter matched.

Per value the engine does as few scans as it can: rules that look at parameters share a
*union* database, the other ("narrow") rules are grouped by the targets they select and
share one database per kind; a value no pipeline changes is answered by those one or two
scans, a transformed text that several pipelines produce is scanned once, libinjection
judges each distinct value once per request, and a batched kind puts each distinct value
into its buffer once.

Modules, in the order a request meets them:

- :mod:`.facade` — :class:`Engine` (the API the filter uses), :class:`Match`,
  :func:`engine_for` (compiled engines of recent rule selections, so a reload that changes
  no rule reuses the compiled databases);
- :mod:`.memo` — recent answers by (kind, name, value; long values by a keyed digest);
- :mod:`.batch` — many targets of one kind in one buffer per tree node;
- :mod:`.single` — one target at a time (small requests, the batch fallback, and the
  reference the tests hold the other two to);
- :mod:`.plan` — compiling rules into the frozen :class:`~.plan.Plan` both strategies follow;
- :mod:`.databases` — Hyperscan compiling and its on-disk cache, batch-form patterns,
  per-thread scratch.

What each operator (``rx``, ``pm``, ``detectSQLi``...) contributes is declared once in
:mod:`wardgate.filters.waf.operators`.
"""

from wardgate.filters.waf.engine.databases import SEP, separated
from wardgate.filters.waf.engine.facade import Engine, Match, engine_for
from wardgate.filters.waf.engine.memo import MEMO_SIZE

__all__ = ["MEMO_SIZE", "SEP", "Engine", "Match", "engine_for", "separated"]
