"""Sub-commands of the `toon3d` CLI, one module each."""
