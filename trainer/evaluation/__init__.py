"""What runs a trained segmenter: the metrics and `i2vda-eval` on the Cityscapes-val store, `i2vda-predict` on a
user's footage, and the pictures both draw."""
