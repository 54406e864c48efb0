"""i2vda online side: streaming readers, DeepLab-v2, discriminator, temporal augmentation, Algorithm 1, evaluation."""
