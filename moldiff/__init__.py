"""moldiff: E(3)-equivariant joint diffusion over 3D molecules (coordinates, atom types, charges, bonds)."""

__version__ = "0.1.0"
#: Version of the checkpoint format; a checkpoint with another value fails to load with a message.
CHECKPOINT_FORMAT = 1
