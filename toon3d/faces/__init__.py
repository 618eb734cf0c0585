"""Face networks: identity embedders (dlib's face ResNet, LiftedGAN's LResNet-18), face parsers (BiSeNet, the
built-in SynFace parser) and the built-in world's attribute oracle."""
