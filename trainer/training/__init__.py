"""One training run (`i2vda-train`): the settings, the streaming data, Algorithm 1's loop and its two steps, the
networks and optimisers, checkpoints, RNG capture and the run's records."""
