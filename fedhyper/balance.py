"""Spread clients over nodes so that the nodes finish together: largest first.

The classic longest-processing-time rule: take the clients by decreasing load and give
each to the node with the least load so far. Ties go to the lower client id and the
earlier node, so the same loads always give the same assignment.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["balance"]


def balance(loads: Mapping[int, float], nodes: int) -> list[list[int]]:
    """Split clients over ``nodes`` bins with loads as equal as the rule makes them.

    Parameters
    ----------
    loads : mapping of int to float
        Each client's expected work (e.g. its optimiser steps), by client id.
    nodes : int
        How many nodes there are (at least 1).

    Returns
    -------
    list of list of int
        For each node, the client ids it gets, in increasing order; a node may get none.

    Raises
    ------
    ValueError
        For fewer than one node.

    """
    if nodes < 1:
        raise ValueError(f"clients need at least one node, got {nodes}")
    bins: list[list[int]] = [[] for _ in range(nodes)]
    totals = [0.0] * nodes
    for client in sorted(loads, key=lambda client: (-loads[client], client)):
        lightest = min(range(nodes), key=lambda node: (totals[node], node))
        bins[lightest].append(client)
        totals[lightest] += loads[client]
    return [sorted(clients) for clients in bins]
