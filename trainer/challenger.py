"""Champion / challenger decision: a pure function of metrics on the same held-out bars."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.metrics import HorizonMetrics

#: Metrics where larger is better; every other is an error (smaller is better).
HIGHER_IS_BETTER: frozenset[str] = frozenset({"skill", "directional", "prob_skill"})
#: Central-interval coverage a model must reach (mean over the horizon) to be promoted.
COVERAGE_BAND: tuple[float, float] = (0.70, 0.90)


def coverage_problem(m: HorizonMetrics, band: tuple[float, float] = COVERAGE_BAND) -> str | None:
    """Why `m`'s central-interval coverage disqualifies it, or None when it is inside `band`."""
    cov = m.average("coverage")
    if cov is None:
        return None
    lo, hi = band
    if not lo <= cov <= hi:
        return f"central-interval coverage {cov:.3f} is outside [{lo:.2f}, {hi:.2f}]"
    return None


def select(
    candidates: dict[str, HorizonMetrics], *, metric: str = "pinball", band: tuple[float, float] = COVERAGE_BAND
) -> str | None:
    """The candidate promotion would choose: best mean `metric` among those whose coverage is
    inside `band` (None when none qualifies). Scored on validation data, never the test split."""
    ok = {k: m.average(metric) for k, m in candidates.items() if coverage_problem(m, band) is None}
    scored = {k: v for k, v in ok.items() if v is not None and v == v}
    if not scored:
        return None
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0
    return min(scored, key=lambda k: sign * scored[k])


@dataclass(frozen=True, slots=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    challenger: float | None
    champion: float | None
    persistence: float | None


def _better(a: float, b: float, metric: str, margin: float) -> bool:
    """`a` beats `b` by a relative margin (0.02 = 2 %) on `metric`."""
    if metric in HIGHER_IS_BETTER:
        return a > b + abs(b) * margin if b != 0 else a > margin
    return a < b * (1.0 - margin)


def decide(
    challenger: HorizonMetrics,
    champion: HorizonMetrics | None,
    persistence: HorizonMetrics,
    *,
    metric: str = "pinball",
    margin: float = 0.0,
    band: tuple[float, float] = COVERAGE_BAND,
) -> Decision:
    """Promote the challenger only if, averaged over the horizon, it beats persistence and the
    champion (if any) by `margin` (relative) on `metric`.

    All three must be scored on the same origins; a differing count is refused because a
    comparison on different bars is meaningless. A metric that persistence cannot have
    (directional) is compared with the champion only.
    """
    for name, m in (("champion", champion), ("persistence", persistence)):
        if m is not None and m.n != challenger.n:
            raise ValueError(
                f"{name} scored on {m.n} origins, challenger on {challenger.n}: not the same bars"
            )
    c = challenger.average(metric)
    p = persistence.average(metric)
    ch = champion.average(metric) if champion is not None else None
    if c is None:
        return Decision(False, f"challenger has no {metric}", metric, c, ch, p)
    problem = coverage_problem(challenger, band)
    if problem is not None:
        return Decision(False, f"challenger {problem}", metric, c, ch, p)
    if p is not None and not _better(c, p, metric, margin):
        return Decision(
            False,
            f"challenger {metric} {c:.6g} does not beat persistence {p:.6g} by {margin:.1%}",
            metric,
            c,
            ch,
            p,
        )
    if ch is not None and not _better(c, ch, metric, margin):
        return Decision(
            False,
            f"challenger {metric} {c:.6g} does not beat champion {ch:.6g} by {margin:.1%}",
            metric,
            c,
            ch,
            p,
        )
    against = "no champion" if ch is None else f"champion {ch:.6g}"
    persistence_text = "persistence (no score)" if p is None else f"persistence {p:.6g}"
    return Decision(True, f"challenger {metric} {c:.6g} beats {against} and {persistence_text}", metric, c, ch, p)
