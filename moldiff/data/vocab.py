"""Vocabularies: which elements, formal charges and bond classes a dataset (and a model) uses."""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: Bond classes on every atom pair. Data are kekulized, so aromatic is not a class.
BOND_CLASSES = ("none", "single", "double", "triple")


@dataclass(frozen=True)
class Vocab:
    """Element symbols, formal charges, bond classes; index ``k`` of each is class ``k``."""

    elements: tuple[str, ...]
    charges: tuple[int, ...] = (-1, 0, 1)
    bonds: tuple[str, ...] = BOND_CLASSES

    def __post_init__(self) -> None:
        object.__setattr__(self, "elements", tuple(self.elements))
        object.__setattr__(self, "charges", tuple(int(c) for c in self.charges))
        object.__setattr__(self, "bonds", tuple(self.bonds))

    @property
    def num_atom_types(self) -> int:
        return len(self.elements)

    @property
    def num_charges(self) -> int:
        return len(self.charges)

    @property
    def num_bond_types(self) -> int:
        return len(self.bonds)

    def element_index(self, symbol: str, where: str = "") -> int:
        try:
            return self.elements.index(symbol)
        except ValueError:
            raise ValueError(
                f"{where}element {symbol!r} is not in the vocabulary {list(self.elements)}"
            ) from None

    def charge_index(self, charge: int, where: str = "") -> int:
        try:
            return self.charges.index(int(charge))
        except ValueError:
            raise ValueError(f"{where}formal charge {charge:+d} is not in the vocabulary {list(self.charges)}") from None

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        return cls(tuple(d["elements"]), tuple(d.get("charges", (-1, 0, 1))), tuple(d.get("bonds", BOND_CLASSES)))


QM9_VOCAB = Vocab(("H", "C", "N", "O", "F"), (-1, 0, 1))
