"""i2vda's online side. `losses.py` and `temporal.py` are the paper's equations; `models/` the networks (DeepLab-v2,
the discriminator, their weight loaders); `training/` one run of Algorithm 1 (`i2vda-train`); `evaluation/` what runs
a trained model (`i2vda-eval`, `i2vda-predict`); `experiment/` the built-in world's experiment (`make demo`)."""
