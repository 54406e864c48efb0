"""Networks of I2VDA: the DeepLab-v2 segmenter M (and its proxy M'), the discriminator D, and their weight loaders."""

from trainer.models.deeplab import (
    AUX_HEAD_PREFIX,
    IMG_MEAN_BGR,
    MAIN_HEAD_PREFIX,
    SEGMENTERS,
    DeepLabV2,
    build_segmenter,
    caffe_normalize,
    deeplab_r50,
    deeplab_r101,
    deeplab_tiny,
)
from trainer.models.discriminator import FCDiscriminator
from trainer.models.weights import load_deeplab_imagenet, load_torchvision_resnet

__all__ = [
    "AUX_HEAD_PREFIX",
    "IMG_MEAN_BGR",
    "MAIN_HEAD_PREFIX",
    "SEGMENTERS",
    "DeepLabV2",
    "FCDiscriminator",
    "build_segmenter",
    "caffe_normalize",
    "deeplab_r50",
    "deeplab_r101",
    "deeplab_tiny",
    "load_deeplab_imagenet",
    "load_torchvision_resnet",
]
