"""Training: SynFace decoder pretraining, adversarial StyleGAN2 training, cartoon fine-tuning."""
