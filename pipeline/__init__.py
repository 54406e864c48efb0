"""i2vda offline side: dataset readers, the built-in demo world, optical flow, shards, the Ray prep job."""

__version__ = "0.1.0"
