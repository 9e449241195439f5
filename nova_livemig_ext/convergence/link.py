"""The link: how many migrations share it, this job's share, and its stall.

Migrations from one host share the link about evenly: the controller
learns the link's capacity as this job's settled bandwidth times the
migrations sharing it (the driver counts them), and judges this job's
transfer rate against its fair share.

Network stall: the transfer rate below ``bandwidth_collapse_fraction`` of
the best smoothed bandwidth (of this job's fair share of the link) for
``network_stall_window_s``.  It is told apart from a dirty-rate stall and
holds every escalation: post-copy over a dead link leaves the guest running
on the destination with its memory out of reach, and a pause would freeze
it for nothing.  Only the deadline abort remains.
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


def link_is_slow(config: ControllerConfig, est: estimator.Estimate,
                 share_bytes_s: float | None = None) -> bool:
    """Is data moving at a small fraction of what this job should get?

    ``share_bytes_s`` is this job's fair share of the link (see
    :func:`fair_share_bytes_s`); without it, the best rate this job saw.
    Only while there is data waiting: near the end QEMU has little to send
    between syncs and goes quiet without anything being wrong.
    """
    rate = est.interval_bandwidth_bytes_s
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
    """What this job should get of the link with the others running now."""
    if state.peak_link_bytes_s <= 0:
        return None
    return state.peak_link_bytes_s / state.link_shares


def link_slow(config: ControllerConfig, state: ControllerState) -> bool:
    """Is the link slow for this job, its share of the link considered?"""
    return link_is_slow(config, state.estimate, fair_share_bytes_s(state))


def track_network(config: ControllerConfig, state: ControllerState,
                  now_s: float) -> Step:
    """Declare or clear a network stall (bandwidth collapse)."""
    t = elapsed_s(state, now_s)
    est = state.estimate
    share = fair_share_bytes_s(state)
    if not link_is_slow(config, est, share):
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
        state = dataclasses.replace(state, network_slow_since_s=t)
        since = t
    if state.network_stalled or t - since < config.network_stall_window_s:
        return state, ()
    state = dataclasses.replace(state, network_stalled=True)
    rate_mib_s = mib(est.interval_bandwidth_bytes_s)
    expected = est.peak_bandwidth_bytes_s if share is None else share
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
