"""toon3d: 3D cartoon face avatars with controllable expressions from a single GAN image."""

__version__ = "0.1.0"
