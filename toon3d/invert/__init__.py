"""GAN inversion of real photos: rosinality's projector, its losses, and an encoder that gives it a start."""
