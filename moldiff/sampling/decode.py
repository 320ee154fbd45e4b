"""Valence-constrained MAP decoding of the denoiser's final-step probabilities.

The sampler's last step takes an independent argmax over atom types, formal charges and bond
classes, which can leave atoms with a bond-order sum that no (element, charge) allows.
:func:`map_decode` instead picks, for one molecule, the joint assignment of types, charges and
bond orders with the largest summed log-probability

    sum_i log p(type_i) + log p(charge_i) + sum_{i<j} log p(bond_ij)

subject to

* valence: every atom's bond-order sum (single 1, double 2, triple 3; kekulized) is one of the
  valences that ``valences[(element, charge)]`` allows. Pass the strict table
  :data:`moldiff.metrics.valence.ALLOWED_VALENCES` (what the metrics score). An (element, charge)
  pair of the vocabulary that the table lacks is never assigned, exactly as the metrics count such
  an atom unstable; a vocabulary with no allowed pair at all has no solution;
* connectivity (``connected=True``): the bonds join all atoms into one molecule. Enforced with
  lazy cut constraints: the program is solved without it, and while the optimum falls apart into
  fragments, "at least one bond leaves this fragment" is added for every fragment and the program
  solved again.

The program is a small integer linear program solved with ``scipy.optimize.milp`` (HiGHS). Only
*candidate* pairs may be bonded: pairs with ``P(bond) > min_bond_prob``, plus pairs at most
``max_bond_length`` apart when coordinates are given; every other pair gets no bond. A class with
probability exactly 0 is never chosen (this is how a caller pins atoms or bonds: one-hot
probabilities). Each molecule gets at most ``time_limit`` seconds in all.

Statuses (:data:`STATUSES`):

* ``optimal``: the best valence-valid (and, when asked, connected) assignment;
* ``feasible``: valence-valid and connected, but the time limit ran out before optimality was proven;
* ``widened``: valence-valid and connected only once pairs up to ``widen_bond_length`` apart were
  allowed to bond (the fragments of the sample were further apart than ``max_bond_length``); at
  least one bond is long, so relaxing the geometry (``relax=mmff``) is advisable;
* ``disconnected``: no connected valence-valid assignment exists among the candidate bonds, even
  widened (or none was found in time); the best valence-valid assignment, in fragments, is returned;
* ``fallback_argmax``: no valence-valid assignment exists (or none was found in time); the
  independent argmax is returned, as the plain sampler would have.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from moldiff.utils.graph import reverse_edge_index

#: Every status :func:`map_decode` can report.
STATUSES = ("optimal", "feasible", "widened", "disconnected", "fallback_argmax")

#: Relative optimality gap at which HiGHS stops: "optimal" is optimal up to this fraction of the objective.
MIP_REL_GAP = 1e-7


@dataclass
class DecodeResult:
    """The decoded assignment of one molecule.

    Attributes:
        atom_types: ``[n]`` atom type classes.
        charges: ``[n]`` formal charge classes.
        bond_types: ``[P]`` bond classes (0 none, 1 single, 2 double, 3 triple) of the given pairs.
        status: one of :data:`STATUSES`.
        log_prob: summed log-probability of the assignment (types, charges, every given pair);
            ``-inf`` when it uses a class of probability 0.
        seconds: wall time spent on this molecule.
        programs: integer programs solved (1 + rounds of connectivity cuts).
    """

    atom_types: np.ndarray
    charges: np.ndarray
    bond_types: np.ndarray
    status: str
    log_prob: float
    seconds: float
    programs: int = 0


def _as_numpy(x: Any, dtype=np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _log(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(p)


def _assignment_log_prob(pa, pc, pb, types, charges, bonds) -> float:
    n = len(types)
    total = _log(pa[np.arange(n), types]).sum() + _log(pc[np.arange(n), charges]).sum()
    if len(bonds):
        total += _log(pb[np.arange(len(bonds)), bonds]).sum()
    return float(total)


def _components(n: int, pairs: np.ndarray, bonded: np.ndarray) -> np.ndarray:
    """Connected-component label ``[n]`` of each atom under the bonded pairs (union-find)."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in pairs[bonded].tolist():
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj
    roots = np.array([find(a) for a in range(n)])
    return np.unique(roots, return_inverse=True)[1]


def _satisfies(types, qs, bonds, pairs, elements, charges, valences, connected: bool) -> bool:
    """Whether an assignment meets the valence (and connectivity) constraints."""
    n = len(types)
    sums = np.zeros(n, dtype=np.int64)
    if len(bonds):
        np.add.at(sums, pairs[:, 0], bonds)
        np.add.at(sums, pairs[:, 1], bonds)
    for t, q, v in zip(types.tolist(), qs.tolist(), sums.tolist()):
        if v not in valences.get((str(elements[t]), int(charges[q])), ()):
            return False
    return not connected or n <= 1 or _components(n, pairs, bonds > 0).max() == 0


def _states(elements: Sequence[str], charges: Sequence[int], valences: Mapping[tuple[str, int], Sequence[int]]):
    """All allowed ``(type class, charge class, valence)`` triples of a vocabulary: ``[S, 3]`` int."""
    rows = [(t, q, int(v)) for t, el in enumerate(elements) for q, ch in enumerate(charges)
            for v in valences.get((str(el), int(ch)), ())]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def map_decode(
    atom_probs: Any,
    charge_probs: Any,
    bond_probs: Any,
    pairs: Any,
    elements: Sequence[str],
    charges: Sequence[int],
    valences: Mapping[tuple[str, int], Sequence[int]],
    pos: Any | None = None,
    *,
    connected: bool = True,
    min_bond_prob: float = 1e-4,
    max_bond_length: float | None = 2.0,
    time_limit: float = 1.0,
    max_cut_rounds: int = 50,
    widen_bond_length: float | None = 2.6,
) -> DecodeResult:
    """MAP assignment of one molecule under valence (and connectivity) constraints.

    Args:
        atom_probs: ``[n, Ka]`` atom type probabilities (rows sum to 1).
        charge_probs: ``[n, Kc]`` formal charge class probabilities.
        bond_probs: ``[P, Kb]`` bond class probabilities of the unordered pairs ``pairs``
            (class 0 no bond, 1 single, 2 double, 3 triple). Pairs not listed never get a bond.
        pairs: ``[P, 2]`` atom indices ``(i, j)``, ``i != j``, each unordered pair at most once.
        elements: element symbol of each atom type class (``Vocab.elements``).
        charges: formal charge of each charge class (``Vocab.charges``).
        valences: ``(element, charge) -> allowed bond-order sums``, e.g.
            :data:`moldiff.metrics.valence.ALLOWED_VALENCES`.
        pos: optional ``[n, 3]`` coordinates (Angstrom) for the distance criterion of candidate pairs.
        connected: require one connected molecule.
        min_bond_prob: pairs with ``1 - P(no bond)`` above this may be bonded.
        max_bond_length: pairs at most this far apart (Angstrom) may also be bonded (needs ``pos``;
            None: probability criterion only).
        time_limit: seconds for this molecule, all programs together.
        max_cut_rounds: at most this many rounds of connectivity cuts.
        widen_bond_length: with ``connected`` and ``pos``, when no connected assignment exists among the
            candidates, try once more with pairs up to this far apart (status ``widened``); None: never.

    Returns:
        The :class:`DecodeResult`; its classes index ``elements``, ``charges`` and the bond classes.

    Raises:
        ValueError: inconsistent shapes or pair indices.
    """
    t0 = time.perf_counter()
    pa, pc, pb = _as_numpy(atom_probs), _as_numpy(charge_probs), _as_numpy(bond_probs)
    pairs = _as_numpy(pairs, np.int64).reshape(-1, 2)
    n = pa.shape[0]
    if pa.ndim != 2 or pa.shape[1] != len(elements):
        raise ValueError(f"atom_probs must be [n, {len(elements)}] (one column per element), got {list(pa.shape)}")
    if pc.shape != (n, len(charges)):
        raise ValueError(f"charge_probs must be [{n}, {len(charges)}], got {list(pc.shape)}")
    if pb.ndim != 2 or pb.shape[0] != len(pairs) or pb.shape[1] < 2 or pb.shape[1] > 4:
        raise ValueError(f"bond_probs must be [{len(pairs)}, 2..4] (one row per pair), got {list(pb.shape)}")
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n or (pairs[:, 0] == pairs[:, 1]).any()):
        raise ValueError(f"pairs must hold distinct atom indices in [0, {n})")

    arg_t, arg_q = pa.argmax(1), pc.argmax(1)
    arg_b = pb.argmax(1) if len(pairs) else np.zeros(0, dtype=np.int64)

    def finish(types, qs, bonds, status, programs) -> DecodeResult:
        types, qs, bonds = (np.asarray(v, dtype=np.int64) for v in (types, qs, bonds))
        return DecodeResult(types, qs, bonds, status, _assignment_log_prob(pa, pc, pb, types, qs, bonds),
                            time.perf_counter() - t0, programs)

    def fallback(programs: int = 0) -> DecodeResult:
        return finish(arg_t, arg_q, arg_b, "fallback_argmax", programs)

    if n == 0:
        return finish(arg_t, arg_q, arg_b, "optimal", 0)

    # ---- candidate pairs
    p_bond = 1.0 - pb[:, 0] if len(pairs) else np.zeros(0)
    cand = p_bond > min_bond_prob
    if pos is not None and max_bond_length is not None and len(pairs):
        xyz = _as_numpy(pos).reshape(n, 3)
        d = np.linalg.norm(xyz[pairs[:, 0]] - xyz[pairs[:, 1]], axis=1)
        cand |= (d <= max_bond_length) & (p_bond > 0)
    forced = cand & (pb[:, 0] <= 0) if len(pairs) else cand  # P(no bond) = 0: must be bonded

    # the unconstrained optimum (argmax) is the answer whenever it already satisfies every constraint
    if not (arg_b[~cand] > 0).any() and _satisfies(arg_t, arg_q, arg_b, pairs, elements, charges, valences, connected):
        return finish(arg_t, arg_q, arg_b, "optimal", 0)

    # ---- atom states: (type, charge, valence) with nonzero probability
    S = _states(elements, charges, valences)
    if len(S) == 0:
        return fallback()
    n_orders = pb.shape[1] - 1
    # highest order each candidate pair could take, and an upper bound on every atom's bond-order sum
    top = np.zeros(len(pairs), dtype=np.int64)
    for o in range(1, n_orders + 1):
        top = np.where(cand & (pb[:, o] > 0), o, top)
    reach = np.zeros(n, dtype=np.int64)
    np.add.at(reach, pairs[:, 0], top)
    np.add.at(reach, pairs[:, 1], top)
    log_pa, log_pc = _log(pa), _log(pc)
    s_cost = -(log_pa[:, S[:, 0]] + log_pc[:, S[:, 1]])  # [n, S]
    s_cost = np.where(S[None, :, 2] <= reach[:, None], s_cost, np.inf)  # valences out of reach
    # the constraints see only an atom's valence: one variable per (atom, valence), the cheapest state
    x_atom, x_state, x_cost = [], [], []
    for v in np.unique(S[:, 2]):
        cols = np.nonzero(S[:, 2] == v)[0]
        best = cols[s_cost[:, cols].argmin(1)]
        cost = s_cost[np.arange(n), best]
        ok = np.isfinite(cost)
        x_atom.append(np.nonzero(ok)[0])
        x_state.append(best[ok])
        x_cost.append(cost[ok])
    x_atom, x_state, x_cost = np.concatenate(x_atom), np.concatenate(x_state), np.concatenate(x_cost)
    if len(np.unique(x_atom)) < n:
        return fallback()
    x_val = S[x_state, 2]
    max_val = np.zeros(n, dtype=np.int64)
    np.maximum.at(max_val, x_atom, x_val)

    log_pb = _log(pb)
    cand_idx = np.nonzero(cand)[0]
    y_pair, y_order, y_cost = [], [], []
    for o in range(1, n_orders + 1):
        i, j = pairs[cand_idx, 0], pairs[cand_idx, 1]
        ok = (pb[cand_idx, o] > 0) & (o <= np.minimum(max_val[i], max_val[j]))
        idx = cand_idx[ok]
        base = np.where(forced[idx], 0.0, log_pb[idx, 0])
        y_pair.append(idx)
        y_order.append(np.full(len(idx), o))
        y_cost.append(-(log_pb[idx, o] - base))
    y_pair = np.concatenate(y_pair).astype(np.int64)
    y_order = np.concatenate(y_order).astype(np.int64)
    y_cost = np.concatenate(y_cost)
    if np.isin(np.nonzero(forced)[0], y_pair, invert=True).any():
        return fallback()  # a pair that must be bonded can take no order

    nx, ny = len(x_atom), len(y_pair)
    nv = nx + ny
    c = np.concatenate([x_cost, y_cost])
    # one state per atom
    rows = [np.zeros((n, nv))]
    rows[0][x_atom, np.arange(nx)] = 1.0
    lo, hi = [np.ones(n)], [np.ones(n)]
    # at most one order per pair (exactly one when forced)
    used_pairs, y_slot = np.unique(y_pair, return_inverse=True)
    if len(used_pairs):
        a = np.zeros((len(used_pairs), nv))
        a[y_slot, nx + np.arange(ny)] = 1.0
        rows.append(a)
        lo.append(forced[used_pairs].astype(float))
        hi.append(np.ones(len(used_pairs)))
    # valence: sum of incident orders == chosen state's valence
    a = np.zeros((n, nv))
    a[x_atom, np.arange(nx)] = -x_val
    np.add.at(a, (pairs[y_pair, 0], nx + np.arange(ny)), y_order)
    np.add.at(a, (pairs[y_pair, 1], nx + np.arange(ny)), y_order)
    rows.append(a)
    lo.append(np.zeros(n))
    hi.append(np.zeros(n))
    A, lb, ub = np.vstack(rows), np.concatenate(lo), np.concatenate(hi)
    integrality = np.ones(nv)
    bounds = Bounds(0.0, 1.0)

    def solve(A, lb, ub):
        left = time_limit - (time.perf_counter() - t0)
        if left <= 0:
            return None, False
        res = milp(c, constraints=LinearConstraint(A, lb, ub), integrality=integrality, bounds=bounds,
                   options={"time_limit": left, "presolve": True, "mip_rel_gap": MIP_REL_GAP})
        if res.x is None:
            return None, False
        return res.x, res.status == 0

    def decode(x):
        on = x > 0.5
        xa = on[:nx]
        types = np.empty(n, dtype=np.int64)
        qs = np.empty(n, dtype=np.int64)
        types[x_atom[xa]] = S[x_state[xa], 0]
        qs[x_atom[xa]] = S[x_state[xa], 1]
        bonds = np.zeros(len(pairs), dtype=np.int64)
        yo = on[nx:]
        bonds[y_pair[yo]] = y_order[yo]
        return types, qs, bonds

    x, proven = solve(A, lb, ub)
    programs = 1
    if x is None:
        return fallback(programs)
    first = decode(x)
    if not connected or n == 1:
        return finish(*first, "optimal" if proven else "feasible", programs)
    best, best_proven = first, proven
    for _ in range(max_cut_rounds + 1):
        comp = _components(n, pairs, best[2] > 0)
        k = comp.max() + 1
        if k == 1:
            return finish(*best, "optimal" if best_proven else "feasible", programs)
        if programs > max_cut_rounds:
            break
        cuts = []
        for g in range(k if k > 2 else 1):  # with two fragments both cuts are the same
            inside = comp == g
            cross = inside[pairs[y_pair, 0]] != inside[pairs[y_pair, 1]]
            row = np.zeros(nv)
            row[nx + np.nonzero(cross)[0]] = 1.0
            cuts.append(row)
        A = np.vstack([A, *cuts])
        lb = np.concatenate([lb, np.ones(len(cuts))])
        ub = np.concatenate([ub, np.full(len(cuts), np.inf)])
        x, best_proven = solve(A, lb, ub)
        programs += 1
        if x is None:
            break
        best = decode(x)
    left = time_limit - (time.perf_counter() - t0)
    if (widen_bond_length is not None and pos is not None and max_bond_length is not None
            and widen_bond_length > max_bond_length and left > 0):
        wide = map_decode(pa, pc, pb, pairs, elements, charges, valences, pos, connected=True,
                          min_bond_prob=min_bond_prob, max_bond_length=widen_bond_length, time_limit=left,
                          max_cut_rounds=max_cut_rounds, widen_bond_length=None)
        programs += wide.programs
        if wide.status in ("optimal", "feasible"):
            return finish(wide.atom_types, wide.charges, wide.bond_types, "widened", programs)
    return finish(*first, "disconnected", programs)


def map_decode_batch(
    batch: Any,
    elements: Sequence[str],
    charges: Sequence[int],
    valences: Mapping[tuple[str, int], Sequence[int]],
    **options: Any,
) -> tuple[Any, list[DecodeResult]]:
    """:func:`map_decode` every molecule of a sampled batch.

    Args:
        batch: a PyG ``Batch`` (or ``Data``) over the full directed ``edge_index`` with
            ``atom_probs [N, Ka]``, ``charge_probs [N, Kc]``, ``bond_probs [E, Kb]`` (the same for
            ``(i, j)`` and ``(j, i)``; the ``i < j`` row is used), ``pos [N, 3]`` and, for a
            ``Batch``, ``ptr``.
        elements, charges, valences: as for :func:`map_decode`.
        **options: keyword options of :func:`map_decode` (``connected``, ``min_bond_prob``,
            ``max_bond_length``, ``time_limit``, ``max_cut_rounds``).

    Returns:
        ``(decoded, results)``: a copy of ``batch`` whose ``atom_types``, ``charges`` and
        ``bond_types`` (both directions) hold the decoded classes, and one result per molecule.

    Raises:
        ValueError: the batch carries no probabilities.
    """
    missing = [k for k in ("atom_probs", "charge_probs", "bond_probs") if getattr(batch, k, None) is None]
    if missing:
        raise ValueError(f"MAP decoding needs the final-step probabilities; the sampled batch lacks {missing}")
    pa = _as_numpy(batch.atom_probs)
    pc = _as_numpy(batch.charge_probs)
    pb = _as_numpy(batch.bond_probs)
    pos = _as_numpy(batch.pos) if getattr(batch, "pos", None) is not None else None
    ei = batch.edge_index.detach().cpu()
    src, dst = ei.numpy()
    num_nodes = pa.shape[0]
    ptr = _as_numpy(batch.ptr, np.int64) if getattr(batch, "ptr", None) is not None else np.array([0, num_nodes])
    node_graph = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    upper = np.nonzero(src < dst)[0]
    upper = upper[np.argsort(node_graph[src[upper]], kind="stable")]
    counts = np.bincount(node_graph[src[upper]], minlength=len(ptr) - 1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    types = np.empty(num_nodes, dtype=np.int64)
    qs = np.empty(num_nodes, dtype=np.int64)
    bonds = np.zeros(len(src), dtype=np.int64)
    results = []
    for g in range(len(ptr) - 1):
        lo, hi = int(ptr[g]), int(ptr[g + 1])
        e = upper[starts[g] : starts[g + 1]]
        r = map_decode(pa[lo:hi], pc[lo:hi], pb[e], np.stack([src[e] - lo, dst[e] - lo], 1), elements, charges,
                       valences, None if pos is None else pos[lo:hi], **options)
        types[lo:hi], qs[lo:hi], bonds[e] = r.atom_types, r.charges, r.bond_types
        results.append(r)
    rev = reverse_edge_index(ei, num_nodes).numpy()
    lower = src > dst
    bonds[lower] = bonds[rev[lower]]
    out = batch.clone()
    dev = batch.edge_index.device
    out.atom_types = torch.from_numpy(types).to(dev)
    out.charges = torch.from_numpy(qs).to(dev)
    out.bond_types = torch.from_numpy(bonds).to(dev)
    return out, results
