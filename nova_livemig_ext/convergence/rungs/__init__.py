"""The escalation ladder's rungs, one file each.

Each says when its rung cannot help (its ``*_blocker``) and what entering
it does; which rung comes next is :mod:`..ladder`'s business.
"""
