"""The compact, versioned on-disk dataset cache and its reader (no RDKit needed to read).

Layout of ``<root>/<name>/``:
  ``arrays.npz``  concatenated atoms (``pos`` float32, ``atom_types``/``charges`` int8 class indices),
                  ``atom_ptr`` [M+1]; bonds as local index pairs (``bond_ij`` uint8/int16, ``bond_cls`` int8)
                  with ``bond_ptr`` [M+1]; ``props`` float32 [M,P]; ``split`` int8 [M] (0 train,
                  1 val, 2 test); ``half`` int8 [M] (train halves 0/1, -1 elsewhere).
  ``meta.json``   name, recipe version, vocabulary, property names/units, statistics, build report.
  ``smiles.txt``  one canonical SMILES per molecule (for novelty).
Everything is written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from moldiff.chem.molecule import Molecule
from moldiff.data.graph import make_data
from moldiff.data.vocab import Vocab

SPLITS = {"train": 0, "val": 1, "test": 2}


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Cache root: ``root`` if given, else ``$MOLDIFF_DATA``, else ``./data/processed``."""
    if root:
        return Path(root)
    return Path(os.environ.get("MOLDIFF_DATA", "data/processed"))


class CacheWriter:
    """Collects molecules one at a time (bounded per-molecule memory) and writes the cache."""

    def __init__(
        self,
        path: str | os.PathLike,
        name: str,
        recipe_version: int,
        vocab: Vocab,
        prop_names: list[str] | None = None,
        prop_units: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = name
        self.recipe_version = recipe_version
        self.vocab = vocab
        self.prop_names = list(prop_names or [])
        self.prop_units = dict(prop_units or {})
        self._pos: list[np.ndarray] = []
        self._types: list[np.ndarray] = []
        self._charges: list[np.ndarray] = []
        self._bonds: list[np.ndarray] = []
        self._props: list[np.ndarray] = []
        self._smiles: list[str] = []
        self._keys: list[str] = []

    def __len__(self) -> int:
        return len(self._pos)

    def add(self, mol: Molecule, smiles: str = "", props: np.ndarray | None = None, key: str = "") -> None:
        """Append one kekulized molecule. Raises ``ValueError`` (naming it) if outside the vocabulary."""
        where = f"molecule {mol.name or len(self)}: "
        self._types.append(np.array([self.vocab.element_index(e, where) for e in mol.elements], dtype=np.int8))
        self._charges.append(np.array([self.vocab.charge_index(c, where) for c in mol.charges], dtype=np.int8))
        if mol.has_bonds and mol.bonds[:, 2].max() > 3:
            raise ValueError(f"{where}aromatic bond; kekulize first")
        self._pos.append((mol.pos - mol.pos.mean(0)).astype(np.float32))
        self._bonds.append(mol.bonds.astype(np.int16))
        p = np.full(len(self.prop_names), np.nan, dtype=np.float32) if props is None else np.asarray(props, np.float32)
        self._props.append(p)
        self._smiles.append(smiles or "")
        self._keys.append(key or mol.name)

    def finish(self, split: np.ndarray, half: np.ndarray | None = None, report: dict | None = None) -> "MolCache":
        """Compute statistics on the train split and atomically write the cache folder."""
        m = len(self)
        split = np.asarray(split, dtype=np.int8)
        half = np.full(m, -1, np.int8) if half is None else np.asarray(half, dtype=np.int8)
        if split.shape != (m,) or half.shape != (m,):
            raise ValueError(f"split/half must have one entry per molecule ({m})")
        counts = np.array([len(t) for t in self._types], dtype=np.int64)
        nb = np.array([len(b) for b in self._bonds], dtype=np.int64)
        atom_ptr = np.concatenate([[0], np.cumsum(counts)])
        bond_ptr = np.concatenate([[0], np.cumsum(nb)])
        bonds = np.concatenate(self._bonds) if nb.sum() else np.zeros((0, 3), np.int16)
        ij_dtype = np.uint8 if counts.max(initial=0) <= 255 else np.int16
        arrays = dict(
            pos=np.concatenate(self._pos) if m else np.zeros((0, 3), np.float32),
            atom_types=np.concatenate(self._types) if m else np.zeros(0, np.int8),
            charges=np.concatenate(self._charges) if m else np.zeros(0, np.int8),
            atom_ptr=atom_ptr,
            bond_ij=bonds[:, :2].astype(ij_dtype),
            bond_cls=bonds[:, 2].astype(np.int8),
            bond_ptr=bond_ptr,
            props=np.stack(self._props) if self.prop_names and m else np.zeros((m, 0), np.float32),
            split=split,
            half=half,
        )
        meta = {
            "name": self.name,
            "recipe_version": self.recipe_version,
            "num_molecules": m,
            "vocab": self.vocab.to_dict(),
            "properties": self.prop_names,
            "units": self.prop_units,
            "split_sizes": {k: int((split == v).sum()) for k, v in SPLITS.items()},
            "statistics": compute_statistics(arrays, self.vocab, split == SPLITS["train"], self.prop_names),
            "report": report or {},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        try:
            np.savez_compressed(tmp / "arrays.npz", **arrays)
            (tmp / "smiles.txt").write_text("\n".join(self._smiles) + "\n")
            (tmp / "keys.txt").write_text("\n".join(self._keys) + "\n")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o777 & ~mask)
            for f in tmp.iterdir():
                os.chmod(f, 0o666 & ~mask)
            if self.path.exists():
                shutil.rmtree(self.path)
            os.replace(tmp, self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return MolCache(self.path)


def compute_statistics(arrays: dict, vocab: Vocab, train_mask: np.ndarray, prop_names: list[str]) -> dict:
    """Atom-count histogram, type/charge/bond marginals and property mean/std over the train molecules."""
    ptr = arrays["atom_ptr"]
    bptr = arrays["bond_ptr"]
    counts = np.diff(ptr)
    idx = np.flatnonzero(train_mask) if train_mask.any() else np.arange(len(counts))
    atom_sel = np.concatenate([np.arange(ptr[i], ptr[i + 1]) for i in idx]) if len(idx) else np.zeros(0, np.int64)
    bond_sel = np.concatenate([np.arange(bptr[i], bptr[i + 1]) for i in idx]) if len(idx) else np.zeros(0, np.int64)
    n = counts[idx]
    hist = np.bincount(n, minlength=int(n.max(initial=0)) + 1)
    types = np.bincount(arrays["atom_types"][atom_sel], minlength=vocab.num_atom_types).astype(np.float64)
    charges = np.bincount(arrays["charges"][atom_sel], minlength=vocab.num_charges).astype(np.float64)
    bonds = np.bincount(arrays["bond_cls"][bond_sel], minlength=vocab.num_bond_types).astype(np.float64)
    bonds[0] = float((n * (n - 1) // 2).sum()) - bonds[1:].sum()
    props = arrays["props"][idx] if len(prop_names) else np.zeros((0, 0))
    return {
        "num_atoms_hist": hist.tolist(),
        "atom_type_marginal": (types / max(types.sum(), 1)).tolist(),
        "charge_marginal": (charges / max(charges.sum(), 1)).tolist(),
        "bond_marginal": (bonds / max(bonds.sum(), 1)).tolist(),
        "prop_mean": {p: float(np.nanmean(props[:, k])) for k, p in enumerate(prop_names)},
        "prop_std": {p: float(np.nanstd(props[:, k])) for k, p in enumerate(prop_names)},
        "mean_num_atoms": float(n.mean()) if len(n) else 0.0,
    }


class MolCache:
    """Read-only view of a cache folder; serves ``Data`` graphs and ``Molecule`` records."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"no dataset cache at {self.path} (meta.json missing); run moldiff-prepare first")
        self.meta = json.loads(meta_file.read_text())
        with np.load(self.path / "arrays.npz") as z:
            a = {k: z[k] for k in z.files}
        self.pos = torch.from_numpy(a["pos"])
        self.atom_types = torch.from_numpy(a["atom_types"].astype(np.int64))
        self.charges = torch.from_numpy(a["charges"].astype(np.int64))
        self.atom_ptr = a["atom_ptr"]
        self.bond_ij = torch.from_numpy(a["bond_ij"].astype(np.int64))
        self.bond_cls = torch.from_numpy(a["bond_cls"].astype(np.int64))
        self.bond_ptr = a["bond_ptr"]
        self.props = torch.from_numpy(a["props"])
        self.split = a["split"]
        self.half = a["half"]
        self.vocab = Vocab.from_dict(self.meta["vocab"])
        self._smiles: list[str] | None = None

    def __len__(self) -> int:
        return len(self.atom_ptr) - 1

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def statistics(self) -> dict:
        return self.meta["statistics"]

    @property
    def prop_names(self) -> list[str]:
        return list(self.meta["properties"])

    def indices(self, split: str) -> np.ndarray:
        """Molecule indices of ``train``, ``val``, ``test``, ``train_a`` (first half) or ``train_b`` (second)."""
        if split in SPLITS:
            return np.flatnonzero(self.split == SPLITS[split])
        if split in ("train_a", "train_b"):
            return np.flatnonzero(self.half == (0 if split == "train_a" else 1))
        if split == "all":
            return np.arange(len(self))
        raise ValueError(f"unknown split {split!r}; choose from train, val, test, train_a, train_b, all")

    def num_atoms(self) -> np.ndarray:
        return np.diff(self.atom_ptr)

    def prop_columns(self, props: list[str]) -> list[int]:
        missing = [p for p in props if p not in self.prop_names]
        if missing:
            raise ValueError(f"dataset {self.name!r} has no properties {missing}; it has {self.prop_names}")
        return [self.prop_names.index(p) for p in props]

    def data(self, i: int, props: list[str] | None = None) -> Data:
        """Graph ``i`` in the package convention (see ``moldiff.data.graph``); ``y`` = raw property values."""
        lo, hi = int(self.atom_ptr[i]), int(self.atom_ptr[i + 1])
        blo, bhi = int(self.bond_ptr[i]), int(self.bond_ptr[i + 1])
        ij = self.bond_ij[blo:bhi]
        y = self.props[i, self.prop_columns(props)] if props else None
        d = make_data(self.pos[lo:hi], self.atom_types[lo:hi], self.charges[lo:hi], ij[:, 0], ij[:, 1], self.bond_cls[blo:bhi], y)
        d.idx = torch.tensor([i])
        return d

    def molecule(self, i: int) -> Molecule:
        lo, hi = int(self.atom_ptr[i]), int(self.atom_ptr[i + 1])
        blo, bhi = int(self.bond_ptr[i]), int(self.bond_ptr[i + 1])
        bonds = torch.cat([self.bond_ij[blo:bhi], self.bond_cls[blo:bhi, None]], 1).numpy()
        props = {p: float(self.props[i, k]) for k, p in enumerate(self.prop_names)}
        return Molecule(
            [self.vocab.elements[t] for t in self.atom_types[lo:hi]],
            self.pos[lo:hi].double().numpy(),
            np.array([self.vocab.charges[c] for c in self.charges[lo:hi]]),
            bonds,
            props,
            name=f"{self.name}_{i}",
        )

    @property
    def smiles(self) -> list[str]:
        if self._smiles is None:
            self._smiles = (self.path / "smiles.txt").read_text().split("\n")[: len(self)]
        return self._smiles


def load_cache(name: str, root: str | os.PathLike | None = None) -> MolCache:
    """Open the cache ``name`` under the data root (or a path to a cache folder)."""
    p = Path(name)
    if (p / "meta.json").exists():
        return MolCache(p)
    return MolCache(data_root(root) / name)
