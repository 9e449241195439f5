"""What each rung costs the guest, and the order that follows (rank_rungs).

Every rung decision carries what the guest is predicted to pay for it
(:mod:`.guest`): its longest unavailability and the work it loses.  When
pre-copy needs help, the rung entered is the one not tried yet that the
guest is predicted to pay least for; the ladder's configured order only
breaks ties (:func:`rank_rungs` has the tie rules).

With ``max_guest_stop_s`` set the operator has said what the guest may
bear: a rung predicted to stop it longer is not entered
(:func:`beyond_ceiling`), and among the others the least work lost wins.
"""

from __future__ import annotations

from collections.abc import Sequence

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence import guest
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.config import RUNG_AUTO_CONVERGE
from nova_livemig_ext.convergence.config import RUNG_DOWNTIME
from nova_livemig_ext.convergence.config import RUNG_POSTCOPY
from nova_livemig_ext.convergence.reasons import fmt
from nova_livemig_ext.convergence.rungs.auto_converge import throttle_chance_price
from nova_livemig_ext.convergence.rungs.downtime import next_downtime_ms
from nova_livemig_ext.convergence.stall import Trigger
from nova_livemig_ext.convergence.state import ControllerState

MS_PER_S = 1000.0

# Rungs whose predicted longest unavailability is within this factor of the
# least are ranked by the work the guest loses instead.
RANK_UNAVAILABLE_TOLERANCE = 1.25


def rung_cost(config: ControllerConfig, state: ControllerState, rung: str,
              trigger: Trigger, now_s: float) -> guest.GuestCost:
    """What the guest is predicted to pay if ``rung`` is entered now.

    A pre-copy rung (downtime, auto-converge) is costed as if it works: its
    stop-and-copy within the limit when the model cannot predict it yet.

    QEMU keeps throttling while pre-copy goes on (auto-converge is armed at
    start, not per rung), so a higher downtime limit costs the throttle in
    force until the predicted completion; a pause or a post-copy switch
    ends it.
    """
    est = state.estimate
    lost = state.throttle_lost_s
    if rung == RUNG_DOWNTIME:
        target = next_downtime_ms(config, state, trigger, now_s)
        limit = state.downtime_ms if target is None else target
        until_s = estimator.predicted_completion_s(est, limit)
        if until_s is None:
            until_s = estimator.expected_pass_s(est) or 0.0
        return guest.once_converged(guest.predicted_throttle(
            est, limit, est.throttle_pct or 0, until_s, lost), limit)
    if rung == RUNG_AUTO_CONVERGE:
        return guest.once_converged(throttle_chance_price(config, state)[1],
                                    state.downtime_ms)
    if rung == RUNG_POSTCOPY:
        return guest.predicted_postcopy(est, lost)
    return guest.predicted_pause(est, lost)


def felt_unavailable_s(config: ControllerConfig,
                       cost: guest.GuestCost) -> float:
    """A rung's longest unavailability as the ranking sees it.

    The operator's ``max_downtime_ms`` is what the guest was promised it
    may feel: anything within it counts as that much, so the work lost
    decides between rungs that all keep within the promise.
    """
    longest = cost.longest_unavailable_s
    if longest is None:
        return float('inf')
    return max(longest, config.max_downtime_ms / MS_PER_S)


def beyond_ceiling(config: ControllerConfig,
                   cost: guest.GuestCost) -> str | None:
    """Why a rung's predicted stop breaks ``max_guest_stop_s``, or None.

    A stop that cannot be predicted yet breaks it: the ceiling is a
    promise.
    """
    ceiling = config.max_guest_stop_s
    if ceiling is None:
        return None
    longest = cost.longest_unavailable_s
    if longest is None:
        return (f'its longest stop cannot be predicted yet and '
                f'max_guest_stop_s is {ceiling:g} s')
    if longest > ceiling:
        return (f'it would stop the guest for about {longest:.2f} s, beyond '
                f'max_guest_stop_s of {ceiling:g} s')
    return None


def rank_rungs(config: ControllerConfig,
               costs: Sequence[tuple[str, guest.GuestCost]]
               ) -> list[tuple[str, guest.GuestCost]]:
    """The rungs the guest pays least for first.

    With ``max_guest_stop_s`` set (the costs are all within it, see
    :func:`beyond_ceiling`): the least work lost first, then the ladder's
    order.  Without it, least longest unavailability first: when a rung
    keeps within ``max_downtime_ms`` the rungs that do are tied; otherwise
    those within ``RANK_UNAVAILABLE_TOLERANCE`` of the least are
    (predictions are not finer than that).  Ties go to the least work lost,
    then to the ladder's order.
    """
    if not costs:
        return []
    order = {rung: i for i, rung in enumerate(config.ladder)}
    if config.max_guest_stop_s is not None:
        return sorted(costs, key=lambda item: (
            float('inf') if item[1].work_lost_s is None
            else item[1].work_lost_s, order[item[0]]))
    least = min(felt_unavailable_s(config, c) for _, c in costs)
    promised_s = config.max_downtime_ms / MS_PER_S
    # Within the promise only what keeps it ties; beyond it, the tolerance.
    tied_up_to = (least if least <= promised_s
                  else least * RANK_UNAVAILABLE_TOLERANCE)

    def key(item: tuple[str, guest.GuestCost]) -> tuple[int, float, int]:
        rung, cost = item
        felt = felt_unavailable_s(config, cost)
        if felt > tied_up_to:
            return (1, felt, order[rung])
        lost = cost.work_lost_s
        return (0, float('inf') if lost is None else lost, order[rung])

    return sorted(costs, key=key)


def ranking_text(ranked: Sequence[tuple[str, guest.GuestCost]]) -> str:
    """The ranking in words: the rung chosen, against the others."""
    first, cost = ranked[0]
    others = '; '.join(
        f'{rung} {fmt(c.longest_unavailable_s, " s", 2)} unavailable, '
        f'{fmt(c.work_lost_s, " s", 1)} lost' for rung, c in ranked[1:])
    return (f'{first} costs the guest least ('
            f'{fmt(cost.longest_unavailable_s, " s", 2)} unavailable, '
            f'{fmt(cost.work_lost_s, " s", 1)} lost; against {others})')
