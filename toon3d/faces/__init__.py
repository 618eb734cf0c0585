"""Face networks: identity embedders (dlib's face ResNet in PyTorch), read from their published files."""
