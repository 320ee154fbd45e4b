"""Valence-constrained MAP decoding: known optima on hand-made probabilities, a brute-force oracle,
fallbacks, connectivity, candidate pairs, the batched helper, ``moldiff-sample decode=map`` and the
decoding that ``moldiff-evaluate`` reports."""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from moldiff.data.graph import make_data
from moldiff.data.vocab import QM9_VOCAB
from moldiff.metrics.valence import ALLOWED_VALENCES
from moldiff.sampling.decode import STATUSES, map_decode, map_decode_batch
from tests.conftest import run_cli

EL, CH = QM9_VOCAB.elements, QM9_VOCAB.charges


def all_pairs(n: int) -> np.ndarray:
    return np.array(list(itertools.combinations(range(n), 2)), dtype=np.int64).reshape(-1, 2)


def row(**probs: float) -> list[float]:
    """A probability row over (H, C, N, O, F) from symbol=prob, the rest shared evenly."""
    rest = (1.0 - sum(probs.values())) / (len(EL) - len(probs))
    return [probs.get(e, rest) for e in EL]


def charge_row(minus: float = 0.01, zero: float = 0.98, plus: float = 0.01) -> list[float]:
    return [minus, zero, plus]


def is_valid(types, charges, bonds, pairs, elements=EL, charge_values=CH) -> bool:
    sums = np.zeros(len(types), dtype=int)
    np.add.at(sums, pairs[:, 0], bonds)
    np.add.at(sums, pairs[:, 1], bonds)
    return all(int(s) in ALLOWED_VALENCES.get((elements[t], charge_values[q]), ())
               for t, q, s in zip(types, charges, sums))


def is_connected(n: int, pairs, bonds) -> bool:
    seen, todo = {0}, [0]
    adj = {i: set() for i in range(n)}
    for (i, j), b in zip(pairs.tolist(), bonds.tolist()):
        if b:
            adj[i].add(j)
            adj[j].add(i)
    while todo:
        for j in adj[todo.pop()] - seen:
            seen.add(j)
            todo.append(j)
    return len(seen) == n


def brute_force(pa, pc, pb, pairs, connected: bool, elements=EL, charge_values=CH) -> float | None:
    """Best summed log-probability by enumerating every bond assignment (atoms then decouple)."""
    n = len(pa)
    assert pb.shape[1] ** len(pairs) <= 2**16, "too many bond assignments to enumerate"
    cfg = np.array(list(itertools.product(range(pb.shape[1]), repeat=len(pairs))), dtype=np.int64)
    sums = np.zeros((len(cfg), n), dtype=np.int64)
    for k, (i, j) in enumerate(pairs):
        sums[:, i] += cfg[:, k]
        sums[:, j] += cfg[:, k]
    best = np.full((n, 3 * n + 1), -np.inf)  # best atom log-prob for each bond-order sum
    for (t, e), (q, c) in itertools.product(enumerate(elements), enumerate(charge_values)):
        for v in ALLOWED_VALENCES.get((e, c), ()):
            if v < best.shape[1]:
                best[:, v] = np.maximum(best[:, v], np.log(pa[:, t]) + np.log(pc[:, q]))
    total = np.log(pb[np.arange(len(pairs))[None], cfg]).sum(1) + best[np.arange(n)[None], sums].sum(1)
    for k in np.argsort(-total):
        if not np.isfinite(total[k]):
            return None
        if not connected or is_connected(n, pairs, cfg[k]):
            return float(total[k])
    return None


def formaldehyde_like():
    """C, O, H, H whose argmax is H2C-O (C and O under-valent).

    The nearest fix is one change (C=O double), but the double bond is improbable; two cheap
    charge changes (C+ and O-) give the higher probability."""
    pa = np.array([row(C=0.97), row(O=0.97), row(H=0.97), row(H=0.97)])
    pc = np.array([charge_row(0.01, 0.55, 0.44), charge_row(0.44, 0.55, 0.01), charge_row(), charge_row()])
    pairs = all_pairs(4)  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    pb = np.array([
        [0.399, 0.59, 0.01, 0.001],  # C-O
        [0.02, 0.97, 0.005, 0.005],  # C-H
        [0.02, 0.97, 0.005, 0.005],  # C-H
        [0.97, 0.02, 0.005, 0.005],  # O-H
        [0.97, 0.02, 0.005, 0.005],  # O-H
        [0.98, 0.01, 0.005, 0.005],  # H-H
    ])
    return pa, pc, pb, pairs


def test_optimum_is_not_the_nearest_fix():
    pa, pc, pb, pairs = formaldehyde_like()
    arg = pa.argmax(1), pc.argmax(1), pb.argmax(1)
    assert not is_valid(*arg, pairs)
    nearest = arg[2].copy()
    nearest[0] = 2  # C=O: a single change makes the argmax valid
    assert is_valid(arg[0], arg[1], nearest, pairs)

    r = map_decode(pa, pc, pb, pairs, EL, CH, ALLOWED_VALENCES)
    assert r.status == "optimal" and r.programs >= 1
    assert [EL[t] for t in r.atom_types] == ["C", "O", "H", "H"]
    assert [CH[q] for q in r.charges] == [1, -1, 0, 0]  # two changes ...
    assert r.bond_types.tolist() == arg[2].tolist()  # ... and the argmax bonds
    assert is_valid(r.atom_types, r.charges, r.bond_types, pairs)
    n_changed = int((r.atom_types != arg[0]).sum() + (r.charges != arg[1]).sum() + (r.bond_types != arg[2]).sum())
    assert n_changed == 2
    nearest_lp = (np.log(pa[np.arange(4), arg[0]]).sum() + np.log(pc[np.arange(4), arg[1]]).sum()
                  + np.log(pb[np.arange(6), nearest]).sum())
    assert r.log_prob > nearest_lp + 3.0
    assert r.log_prob == pytest.approx(brute_force(pa, pc, pb, pairs, connected=True), abs=1e-6)


def test_valid_argmax_is_returned_without_a_program():
    pa, pc, pb, pairs = formaldehyde_like()
    pb[0] = [0.01, 0.01, 0.97, 0.01]  # C=O
    pc[0], pc[1] = charge_row(), charge_row()
    r = map_decode(pa, pc, pb, pairs, EL, CH, ALLOWED_VALENCES)
    assert r.status == "optimal" and r.programs == 0
    assert r.bond_types.tolist() == pb.argmax(1).tolist()


def test_infeasible_falls_back_to_argmax():
    # three hydrogens: the valences sum to 3, an odd number, so no bond assignment exists
    pa = np.ones((3, 1))
    pc = np.ones((3, 1))
    pairs = all_pairs(3)
    pb = np.array([[0.3, 0.7], [0.6, 0.4], [0.8, 0.2]])
    r = map_decode(pa, pc, pb, pairs, ("H",), (0,), ALLOWED_VALENCES)
    assert r.status == "fallback_argmax"
    assert r.bond_types.tolist() == [1, 0, 0] and r.atom_types.tolist() == [0, 0, 0]
    # a lone neutral atom: valence 0 is no option of neutral H, C, N, O, F
    one = map_decode(np.array([row(C=0.9)]), np.array([[0.0, 1.0, 0.0]]), np.zeros((0, 4)), np.zeros((0, 2)),
                     EL, CH, ALLOWED_VALENCES)
    assert one.status == "fallback_argmax" and EL[one.atom_types[0]] == "C"
    # ... but a fluoride ion is allowed when its charge is possible at all
    ion = map_decode(np.array([row(C=0.9)]), np.array([charge_row()]), np.zeros((0, 4)), np.zeros((0, 2)),
                     EL, CH, ALLOWED_VALENCES)
    assert ion.status == "optimal" and (EL[ion.atom_types[0]], CH[ion.charges[0]]) == ("F", -1)
    # no time at all
    pa, pc, pb, pairs = formaldehyde_like()
    assert map_decode(pa, pc, pb, pairs, EL, CH, ALLOWED_VALENCES, time_limit=0).status == "fallback_argmax"


def test_pairs_outside_the_table_are_never_assigned():
    # "Ne" has no entry in the valence table: the likely Ne atom is decoded as H (H2)
    pa = np.array([[0.1, 0.9], [0.9, 0.1]])
    pc = np.ones((2, 1))
    r = map_decode(pa, pc, np.array([[0.5, 0.5]]), all_pairs(2), ("H", "Ne"), (0,), ALLOWED_VALENCES)
    assert r.status == "optimal" and r.atom_types.tolist() == [0, 0] and r.bond_types.tolist() == [1]
    only_ne = map_decode(np.ones((2, 1)), pc, np.array([[0.5, 0.5]]), all_pairs(2), ("Ne",), (0,), ALLOWED_VALENCES)
    assert only_ne.status == "fallback_argmax"


def two_waters():
    """O(0) H H O(3) H H: two waters are the unconstrained optimum; joined, one O becomes C (methanol).

    Bond classes none / single only, so that the brute force stays small (2^15 bond assignments)."""
    pa = np.array([row(O=0.9, C=0.07), row(H=0.96), row(H=0.96), row(O=0.9, C=0.07), row(H=0.96), row(H=0.96)])
    pc = np.array([charge_row()] * 6)
    pairs = all_pairs(6)
    pb = np.tile([0.92, 0.08], (len(pairs), 1))
    for k, (i, j) in enumerate(pairs.tolist()):
        if (i, j) in {(0, 1), (0, 2), (3, 4), (3, 5)}:
            pb[k] = [0.1, 0.9]
        elif (i, j) == (0, 3):
            pb[k] = [0.72, 0.28]
    return pa, pc, pb, pairs


def test_connectivity_changes_the_answer():
    pa, pc, pb, pairs = two_waters()
    free = map_decode(pa, pc, pb, pairs, EL, CH, ALLOWED_VALENCES, connected=False)
    assert free.status == "optimal" and free.programs == 0  # the argmax: two waters
    assert not is_connected(6, pairs, free.bond_types)
    r = map_decode(pa, pc, pb, pairs, EL, CH, ALLOWED_VALENCES)
    assert r.status == "optimal" and r.programs >= 2  # a cut was needed
    assert is_connected(6, pairs, r.bond_types) and is_valid(r.atom_types, r.charges, r.bond_types, pairs)
    assert r.log_prob < free.log_prob
    assert sorted(EL[t] for t in r.atom_types) == ["C", "H", "H", "H", "H", "O"]  # methanol
    assert r.log_prob == pytest.approx(brute_force(pa, pc, pb, pairs, connected=True), abs=1e-6)


def test_disconnected_when_no_connected_assignment_exists():
    # four hydrogens can only pair up
    pairs = all_pairs(4)
    pb = np.array([[0.1, 0.9], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.5, 0.5], [0.2, 0.8]])
    r = map_decode(np.ones((4, 1)), np.ones((4, 1)), pb, pairs, ("H",), (0,), ALLOWED_VALENCES)
    assert r.status == "disconnected"
    assert r.bond_types.tolist() == [1, 0, 0, 0, 0, 1]  # (0,1) and (2,3): the best pairing
    assert is_valid(r.atom_types, r.charges, r.bond_types, pairs, ("H",), (0,))


def test_fragments_further_apart_than_a_bond_are_joined_by_widening():
    """Two waters 2.3 Angstrom apart, with every joining bond improbable: none of the joining pairs is a
    candidate at 2.0 Angstrom, so joining them needs the widened candidate set."""
    pa, pc, pb, pairs = two_waters()
    for k, (i, j) in enumerate(pairs.tolist()):
        if (i < 3) != (j < 3):
            pb[k] = [1 - 1e-7, 1e-7]
    water = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    pos = np.concatenate([water, water + [0.0, 0.0, 2.3]])
    strict = map_decode(pa, pc, pb, pairs, EL, CH, ALLOWED_VALENCES, pos=pos, widen_bond_length=None)
    assert strict.status == "disconnected" and not is_connected(6, pairs, strict.bond_types)
    r = map_decode(pa, pc, pb, pairs, EL, CH, ALLOWED_VALENCES, pos=pos)
    assert r.status == "widened"
    assert is_connected(6, pairs, r.bond_types) and is_valid(r.atom_types, r.charges, r.bond_types, pairs)
    assert r.programs > strict.programs


@pytest.mark.parametrize("seed", range(6))
def test_random_molecules_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 4
    pairs = all_pairs(n)
    pa = rng.dirichlet(np.full(len(EL), 0.3), n) + 1e-9
    pc = rng.dirichlet(np.full(len(CH), 0.3), n) + 1e-9
    pb = rng.dirichlet(np.full(4, 0.3), len(pairs)) + 1e-9
    for connected in (True, False):
        r = map_decode(pa, pc, pb, pairs, EL, CH, ALLOWED_VALENCES, connected=connected, min_bond_prob=0.0)
        best = brute_force(pa, pc, pb, pairs, connected)
        assert r.status == "optimal"
        assert r.log_prob == pytest.approx(best, abs=1e-6)
        assert is_valid(r.atom_types, r.charges, r.bond_types, pairs)


def test_zero_probabilities_are_never_chosen():
    pa, pc, pb, pairs = formaldehyde_like()
    pc[0] = [0.01, 0.99, 0.0]  # C+ impossible now
    r = map_decode(pa, pc, pb, pairs, EL, CH, ALLOWED_VALENCES)
    assert r.status == "optimal" and CH[r.charges[0]] != 1
    assert np.isfinite(r.log_prob) and is_valid(r.atom_types, r.charges, r.bond_types, pairs)


def test_candidate_pairs_from_probability_or_distance():
    pa, pc = np.ones((2, 1)), np.ones((2, 1))
    pb = np.array([[1 - 1e-6, 1e-6]])  # H2 is the only valid molecule, but the network gave the bond 1e-6
    pairs = all_pairs(2)
    assert map_decode(pa, pc, pb, pairs, ("H",), (0,), ALLOWED_VALENCES).status == "fallback_argmax"
    near = map_decode(pa, pc, pb, pairs, ("H",), (0,), ALLOWED_VALENCES, pos=[[0, 0, 0], [0.74, 0, 0]])
    assert near.status == "optimal" and near.bond_types.tolist() == [1]
    far = map_decode(pa, pc, pb, pairs, ("H",), (0,), ALLOWED_VALENCES, pos=[[0, 0, 0], [3.0, 0, 0]])
    assert far.status == "fallback_argmax"
    lax = map_decode(pa, pc, pb, pairs, ("H",), (0,), ALLOWED_VALENCES, min_bond_prob=1e-7)
    assert lax.status == "optimal"


def test_bad_shapes_are_clear():
    pa, pc, pb, pairs = formaldehyde_like()
    with pytest.raises(ValueError, match=r"atom_probs must be \[n, 5\]"):
        map_decode(pa[:, :3], pc, pb, pairs, EL, CH, ALLOWED_VALENCES)
    with pytest.raises(ValueError, match="bond_probs"):
        map_decode(pa, pc, pb[:3], pairs, EL, CH, ALLOWED_VALENCES)
    with pytest.raises(ValueError, match="pairs"):
        map_decode(pa, pc, pb, pairs + 1, EL, CH, ALLOWED_VALENCES)


def as_data(pa, pc, pb, pairs) -> "Batch":
    """A fully connected graph with the probabilities attached (argmax classes as the sampler gives)."""
    n = len(pa)
    d = make_data(torch.randn(n, 3) * 5, torch.as_tensor(pa.argmax(1)), torch.as_tensor(pc.argmax(1)),
                  torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    dense = torch.zeros(n, n, 4, dtype=torch.float64)  # classes a molecule lacks get probability 0
    dense[:, :, 0] = 1.0
    for (i, j), p in zip(pairs.tolist(), pb):
        dense[i, j, : len(p)] = dense[j, i, : len(p)] = torch.as_tensor(p)
    i, j = d.edge_index
    d.atom_probs, d.charge_probs, d.bond_probs = torch.as_tensor(pa), torch.as_tensor(pc), dense[i, j]
    d.bond_types = d.bond_probs.argmax(-1)
    return d


def test_batch_helper_decodes_every_molecule_symmetrically():
    mols = [formaldehyde_like(), two_waters()]
    batch = Batch.from_data_list([as_data(*m) for m in mols])
    out, results = map_decode_batch(batch, EL, CH, ALLOWED_VALENCES, max_bond_length=None)
    assert [r.status for r in results] == ["optimal", "optimal"] and set(STATUSES) >= {r.status for r in results}
    for g, (m, r) in enumerate(zip(mols, results)):
        lo, hi = int(out.ptr[g]), int(out.ptr[g + 1])
        assert out.atom_types[lo:hi].tolist() == r.atom_types.tolist()
        assert out.charges[lo:hi].tolist() == r.charges.tolist()
        expect = map_decode(*m, EL, CH, ALLOWED_VALENCES)
        assert r.log_prob == pytest.approx(expect.log_prob)
        src, dst = out.edge_index
        sel = (src >= lo) & (src < hi)
        dense = torch.zeros(hi - lo, hi - lo, dtype=torch.long)
        dense[src[sel] - lo, dst[sel] - lo] = out.bond_types[sel]
        assert torch.equal(dense, dense.T)
        pairs = m[3]
        assert dense[pairs[:, 0], pairs[:, 1]].tolist() == r.bond_types.tolist()
    assert torch.equal(batch.atom_types, torch.as_tensor(np.concatenate([m[0].argmax(1) for m in mols])))  # input untouched
    bare = Batch.from_data_list([make_data(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long),
                                           torch.tensor([0]), torch.tensor([1]), torch.tensor([1]))])
    with pytest.raises(ValueError, match="probabilities"):
        map_decode_batch(bare, EL, CH, ALLOWED_VALENCES)


def _sampler_gives_probabilities() -> bool:
    from moldiff.sampling.sampler import sample

    return "return_probs" in inspect.signature(sample).parameters


def test_cli_decode_option_is_checked(tmp_path):
    for bad, words in ((["decode=viterbi"], ["decode='viterbi'", "'argmax', 'map'"]),
                       (["decode=map", "decode_time_limit=0"], ["decode_time_limit"])):
        p = run_cli("sample", *bad, "n_samples=1", "steps=1", f"out={tmp_path / 'x.sdf'}", check=False)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        for w in words:
            assert w in p.stderr
    assert not (tmp_path / "x.sdf").exists()


@pytest.mark.skipif(not _sampler_gives_probabilities(),
                    reason="moldiff.sampling.sampler.sample has no return_probs option (final-step probabilities)")
def test_cli_sample_with_map_decoding(tmp_path):
    from moldiff.chem.io import read_sdf
    from moldiff.cli.evaluate import evaluate_file

    out = tmp_path / "map.sdf"
    # map is the default decoding
    p = run_cli("sample", "n_samples=4", "steps=3", "batch_size=4", f"out={out}", "seed=0", "progress=false")
    assert "decoding: map" in p.stdout
    mols = read_sdf(out)
    assert len(mols) == 4
    for m in mols:
        assert m.props["moldiff_decoding"] == "map"
        assert m.props["moldiff_decode_status"] in STATUSES
    metrics = evaluate_file(out)
    assert metrics["decoding"] == "map"
    from moldiff.metrics.valence import strict_stability

    for m in mols:
        if m.props["moldiff_decode_status"] != "fallback_argmax":
            assert strict_stability(m)[0].all(), m.name  # every atom has an allowed valence
    # the same run with argmax decoding: same settings otherwise, tagged argmax
    raw = tmp_path / "argmax.sdf"
    run_cli("sample", "n_samples=4", "steps=3", "batch_size=4", f"out={raw}", "seed=0", "progress=false", "decode=argmax")
    assert {m.props["moldiff_decoding"] for m in read_sdf(raw)} == {"argmax"}
    assert evaluate_file(raw)["decoding"] == "argmax"


def test_evaluate_reports_the_decoding_from_tags(tmp_path, capsys):
    from moldiff.chem.io import write_sdf
    from moldiff.cli.evaluate import evaluate_file
    from moldiff.metrics import evaluate_molecules, format_table
    from tests.chem.test_relax import embedded

    mols = [embedded(s) for s in ("CCO", "CC#N", "OCC=O")]
    assert evaluate_molecules(mols)["decoding"] == "unknown"
    for m, tag in zip(mols, ["map", "map", "map"]):
        m.props.update({"moldiff_decoding": tag, "moldiff_decode_status": "optimal", "moldiff_relax": "none"})
    mols[2].props["moldiff_decode_status"] = "fallback_argmax"
    write_sdf(mols, tmp_path / "m.sdf")
    r = evaluate_file(tmp_path / "m.sdf")
    assert r["decoding"] == "map" and r["decode_status"] == {"fallback_argmax": 1, "optimal": 2}
    assert r["relax"] == "none" and r["relax_status"] == {}
    table = format_table(r)
    assert "decoding: map" in table.splitlines()[0] and "1 fallback_argmax" in table
    mols[0].props["moldiff_decoding"] = "argmax"
    assert evaluate_molecules(mols)["decoding"] == "mixed"
    del mols[0].props["moldiff_decoding"]
    assert evaluate_molecules(mols)["decoding"] == "mixed"  # only some molecules say


@pytest.mark.skipif(not _sampler_gives_probabilities(),
                    reason="moldiff.sampling.sampler.sample has no return_probs option (final-step probabilities)")
def test_cli_map_decoding_keeps_an_inpainted_fragment(tmp_path):
    from moldiff.chem.io import read_sdf, write_sdf
    from moldiff.chem.molecule import Molecule

    frag = Molecule(["C", "O"], [[0.1, 0.2, 0.3], [1.3, 0.2, 0.3]], [0, 0], [[0, 1, 2]])
    write_sdf([frag], tmp_path / "frag.sdf")
    out = tmp_path / "grown.sdf"
    run_cli("sample", "n_samples=2", "steps=3", f"out={out}", f"inpaint.sdf={tmp_path / 'frag.sdf'}", "num_atoms=[6,8]",
            "decode=map", "relax=mmff", "progress=false")
    for m in read_sdf(out):
        assert m.elements[:2] == ["C", "O"] and m.charges[:2].tolist() == [0, 0]
        assert abs(m.pos[:2] - frag.pos).max() < 1e-3  # neither decoding nor relaxation moves it
        assert [0, 1, 2] in m.bonds.tolist()
