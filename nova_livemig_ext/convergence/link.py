"""The link: how many migrations share it, this job's share, and its stall.

Migrations from one host share the link about evenly: the controller
learns the link's capacity as this job's settled bandwidth times the
migrations sharing it (the driver counts them), and judges this job's
transfer rate against its fair share.

A slow link: the transfer rate below ``bandwidth_collapse_fraction`` of
the best smoothed bandwidth (of this job's fair share of the link) for
``network_stall_window_s``.  While it is slow every escalation waits (a
collapsing rate inflates every prediction).  At the end of the window what
moved decides, not a count of anybody's jobs:

- less than ``DEAD_LINK_FRACTION`` of what the share would have carried: a
  network stall.  It is told apart from a dirty-rate stall and holds every
  escalation: post-copy over a dead link leaves the guest running on the
  destination with its memory out of reach, and a pause would freeze it for
  nothing.  Only the deadline abort remains.
- more: the link is alive and shared with traffic this host does not own.
  The job's expected rate becomes what it gets now (the log says so), the
  predictions already follow the measured bandwidth, and the ladder goes
  on.  The link counts as free again once the job gets ``FREED_FRACTION``
  of its fair share, or so much more than it got shared that the shared
  rate would read as a collapse.  Past the first pass the deadline does
  not stretch for traffic the host does not own (during it, it follows the
  link measured, whatever slows it).
"""

from __future__ import annotations

import dataclasses

from nova_livemig_ext.convergence import estimator
from nova_livemig_ext.convergence.config import ControllerConfig
from nova_livemig_ext.convergence.decision import Action
from nova_livemig_ext.convergence.reasons import decide
from nova_livemig_ext.convergence.reasons import fmt
from nova_livemig_ext.convergence.reasons import mib
from nova_livemig_ext.convergence.reasons import note_once
from nova_livemig_ext.convergence.state import ControllerState
from nova_livemig_ext.convergence.state import Step
from nova_livemig_ext.convergence.state import elapsed_s

# After the number of migrations sharing the link changes, the smoothed
# bandwidth needs this many half-lives to settle on the new share.
SHARE_SETTLE_HALF_LIVES = 2.0

# A link counts as slow only with more than this many polls' worth of data
# (at the best rate seen) waiting to be sent.
WAITING_DATA_POLLS = 2

# A slow link that moved less than this fraction of what the job's share
# carries over the stall window is dead; more, and it is alive but shared
# (a TCP stream over a dead path moves nothing; one among 40 bulk flows
# still gets about 2.5 %).
DEAD_LINK_FRACTION = 0.01
# A shared link counts as free again once the job gets this much of its
# fair share (the smoothed rate only approaches it; see track_contention).
FREED_FRACTION = 0.9


def link_is_slow(config: ControllerConfig, est: estimator.Estimate,
                 share_bytes_s: float | None = None,
                 rate_bytes_s: float | None = None) -> bool:
    """Is data moving at a small fraction of what this job should get?

    ``share_bytes_s`` is this job's fair share of the link (see
    :func:`fair_share_bytes_s`); without it, the best rate this job saw.
    ``rate_bytes_s`` is the rate judged; without it, the last interval's.
    Only while there is data waiting: near the end QEMU has little to send
    between syncs and goes quiet without anything being wrong.
    """
    rate = (est.interval_bandwidth_bytes_s if rate_bytes_s is None
            else rate_bytes_s)
    peak = (est.peak_bandwidth_bytes_s if share_bytes_s is None
            else share_bytes_s)
    if rate is None or peak <= 0:
        return False
    if est.remaining_bytes <= peak * config.poll_interval_s * (
            WAITING_DATA_POLLS):
        return False
    return rate < config.bandwidth_collapse_fraction * peak


def set_link_shares(state: ControllerState, shares: int,
                    now_s: float) -> ControllerState:
    """Record how many migrations share the link now (this one included)."""
    shares = max(1, int(shares))
    if shares == state.link_shares:
        return state
    return dataclasses.replace(
        state, link_shares=shares,
        max_link_shares=max(state.max_link_shares, shares),
        link_shares_changed_s=elapsed_s(state, now_s))


def track_link_capacity(config: ControllerConfig, state: ControllerState,
                        now_s: float) -> ControllerState:
    """Learn the link's capacity: this job's settled bandwidth × shares.

    Migrations from one host share the link about evenly; readings taken
    while the smoothed bandwidth still moves to a new share are skipped.
    """
    bandwidth = state.estimate.bandwidth_bytes_s
    if not bandwidth:
        return state
    changed = state.link_shares_changed_s
    settle_s = (SHARE_SETTLE_HALF_LIVES
                * config.estimator.bandwidth_half_life_s)
    if changed is not None and elapsed_s(state, now_s) - changed < settle_s:
        return state
    if state.link_shares > 1:
        least = state.least_shared_bytes_s
        if least is None or bandwidth < least:
            state = dataclasses.replace(state, least_shared_bytes_s=bandwidth)
    capacity = bandwidth * state.link_shares
    if capacity <= state.peak_link_bytes_s:
        return state
    return dataclasses.replace(state, peak_link_bytes_s=capacity)


def fair_share_bytes_s(state: ControllerState) -> float | None:
    """What this job should get of the link with the others running now
    (ours, and traffic this host does not own once it was measured)."""
    if state.peak_link_bytes_s <= 0:
        return None
    share = state.peak_link_bytes_s / state.link_shares
    if state.contended_bytes_s is not None:
        return min(share, state.contended_bytes_s)
    return share


def track_contention(config: ControllerConfig, state: ControllerState,
                     now_s: float) -> Step:
    """Say when a shared link is free again: the job gets most of its fair
    share, or so much more than it got shared that the rate expected of it
    then would itself read as a collapse (the link's own next verdict then
    sets the rate expected, if it is still shared)."""
    contended = state.contended_bytes_s
    est = state.estimate
    if (contended is None or not est.bandwidth_bytes_s
            or not est.interval_bandwidth_bytes_s):
        return state, ()
    # The smoothed rate lags a drop and the last interval's jumps about:
    # the job gets more only when both say so.
    bandwidth = min(est.bandwidth_bytes_s, est.interval_bandwidth_bytes_s)
    share = state.peak_link_bytes_s / state.link_shares
    if bandwidth < min(FREED_FRACTION * share,
                       contended / config.bandwidth_collapse_fraction):
        return state, ()
    state = dataclasses.replace(state, contended_bytes_s=None,
                                noted=state.noted - {'link-shared'})
    return state, (decide(
        state, now_s, Action.NOTE,
        f'link no longer shared with other traffic: '
        f'{fmt(mib(bandwidth))} MiB/s, against {fmt(mib(contended))} MiB/s '
        f'shared and a fair share of {fmt(mib(share))} MiB/s', None),)


def link_slow(config: ControllerConfig, state: ControllerState) -> bool:
    """Is the link slow for this job, its share of the link considered?"""
    return link_is_slow(config, state.estimate, fair_share_bytes_s(state))


def track_network(config: ControllerConfig, state: ControllerState,
                  now_s: float) -> Step:
    """Declare or clear a network stall (bandwidth collapse)."""
    t = elapsed_s(state, now_s)
    est = state.estimate
    share = fair_share_bytes_s(state)
    # Once slow, judged by the average since it turned slow: a link shared
    # with bursty flows moves data in bursts, and one good interval must
    # not start the window again.
    if not link_is_slow(config, est, share, slow_rate_bytes_s(state, t)):
        if not state.network_stalled:
            return dataclasses.replace(state, network_slow_since_s=None), ()
        state = dataclasses.replace(
            state, network_slow_since_s=None, network_stalled=False,
            noted=state.noted - {'network-stall'})
        return state, (decide(
            state, now_s, Action.NOTE,
            f'link recovered: {fmt(mib(est.interval_bandwidth_bytes_s))} '
            f'MiB/s', None),)
    since = state.network_slow_since_s
    if since is None:
        state = dataclasses.replace(
            state, network_slow_since_s=t,
            network_slow_processed_bytes=est.processed_bytes)
        since = t
    if state.network_stalled or t - since < config.network_stall_window_s:
        return state, ()
    expected = est.peak_bandwidth_bytes_s if share is None else share
    moved_bytes_s = slow_rate_bytes_s(state, t) or 0.0
    if moved_bytes_s >= DEAD_LINK_FRACTION * expected:
        return link_shared(state, now_s, moved_bytes_s, expected, t - since)
    state = dataclasses.replace(state, network_stalled=True)
    rate_mib_s = mib(est.interval_bandwidth_bytes_s)
    reason = (
        f"network stall: {fmt(rate_mib_s, ' MiB/s')}"
        f' for {t - since:.0f} s against '
        f"{fmt(mib(expected), ' MiB/s')} expected "
        f'({state.link_shares} migrations share the link); holding '

        f'escalation, post-copy or a pause over a dead link would strand the '
        f'guest')
    return note_once(state, 'network-stall', now_s, reason, None, (
        ('peak_bandwidth_mib_s', mib(est.peak_bandwidth_bytes_s)),
        ('expected_bandwidth_mib_s', mib(expected)),
        ('link_shares', state.link_shares),
        ('stalled_s', round(t - since, 1))))


def slow_rate_bytes_s(state: ControllerState, t: float) -> float | None:
    """What moved since the link turned slow, a second (None: not slow, or
    a stall already declared, whose end the last interval tells)."""
    since = state.network_slow_since_s
    if since is None or state.network_stalled or t <= since:
        return None
    return (state.estimate.processed_bytes
            - state.network_slow_processed_bytes) / (t - since)


def link_shared(state: ControllerState, now_s: float, moved_bytes_s: float,
                expected_bytes_s: float, window_s: float) -> Step:
    """A slow link that still moves data: shared with traffic this host does
    not own.  Expect what the job gets now, and let the ladder go on."""
    state = dataclasses.replace(state, network_slow_since_s=None,
                                contended_bytes_s=moved_bytes_s)
    reason = (
        f'link shared with traffic this host does not own: '
        f'{fmt(mib(moved_bytes_s))} MiB/s for {window_s:.0f} s against '
        f'{fmt(mib(expected_bytes_s))} MiB/s expected, more than a dead link '
        f'moves ({DEAD_LINK_FRACTION:.0%}); planning with the rate it gets')
    return note_once(state, 'link-shared', now_s, reason, None, (
        ('moved_mib_s', mib(moved_bytes_s)),
        ('expected_bandwidth_mib_s', mib(expected_bytes_s)),
        ('link_shares', state.link_shares),
        ('slow_s', round(window_s, 1))))
