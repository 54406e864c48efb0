"""Class protocols against the datasets' published label tables and the paper's Tables 1-2."""

import numpy as np
import pytest
from label_tables import (
    SYNTHIA11_FROM_CITYSCAPES,
    SYNTHIA11_FROM_SYNTHIA,
    SYNTHIA12_FROM_CITYSCAPES,
    SYNTHIA12_FROM_SYNTHIA,
    TABLE1,
    TABLE2,
    VIPER15_FROM_CITYSCAPES,
    VIPER15_FROM_VIPER,
    X,
)

from pipeline.errors import InputError
from pipeline.sources import colorize, default_protocol, get_protocol, protocol_names

CASES = [
    ("viper15", VIPER15_FROM_VIPER, VIPER15_FROM_CITYSCAPES),
    ("synthia11", SYNTHIA11_FROM_SYNTHIA, SYNTHIA11_FROM_CITYSCAPES),
    ("synthia12", SYNTHIA12_FROM_SYNTHIA, SYNTHIA12_FROM_CITYSCAPES),
]


@pytest.mark.parametrize("name, from_source, from_cityscapes", CASES)
def test_lookup_tables_match_reference(name, from_source, from_cityscapes):
    protocol = get_protocol(name)
    source_lut, city_lut = protocol.source_lut(), protocol.cityscapes_lut()
    assert source_lut.shape == city_lut.shape == (256,) and source_lut.dtype == city_lut.dtype == np.uint8
    assert source_lut[: len(from_source)].tolist() == from_source
    assert (source_lut[len(from_source) :] == X).all()
    assert city_lut[:34].tolist() == from_cityscapes
    assert (city_lut[34:] == X).all()  # includes 255 = labelId -1 (license plate) as stored in uint8


def test_class_order_and_eval_ids():
    viper, s11, s12 = get_protocol("viper15"), get_protocol("synthia11"), get_protocol("synthia12")
    assert list(viper.class_names) == TABLE1 and viper.num_classes == 15 and viper.eval_ids == tuple(range(15))
    assert list(s11.class_names) == TABLE2 and s11.num_classes == 11 and s11.eval_ids == tuple(range(11))
    assert s12.num_classes == 12 and s12.class_names[3] == "fence"
    assert s12.eval_ids == (0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11)
    assert list(s12.eval_class_names) == TABLE2  # DA-VSN scores the paper's 11 classes
    assert (viper.source, s11.source, s12.source) == ("viper", "synthia", "synthia")


def test_palette_is_cityscapes():
    viper, s11 = get_protocol("viper15"), get_protocol("synthia11")
    assert len(viper.palette) == 15 and len(s11.palette) == 11
    assert viper.palette[0] == (128, 64, 128) and viper.palette[3] == (190, 153, 153)
    assert viper.palette[13] == (0, 0, 230) and viper.palette[14] == (119, 11, 32)
    assert s11.palette[3] == (153, 153, 153) and s11.palette[9] == (255, 0, 0) and s11.palette[10] == (0, 0, 142)


def test_protocol_is_frozen():
    with pytest.raises(AttributeError):
        get_protocol("viper15").num_classes = 3


def test_get_protocol_errors_and_defaults():
    assert protocol_names() == ("viper15", "synthia11", "synthia12")
    with pytest.raises(InputError) as info:
        get_protocol("viper19")
    message = str(info.value)
    assert "viper19" in message and all(n in message for n in protocol_names()) and "\n" not in message
    assert default_protocol("viper").name == "viper15" and default_protocol("synthia").name == "synthia11"
    with pytest.raises(InputError, match="gta5"):
        default_protocol("gta5")


def test_colorize_hand_example():
    label = np.array([[0, 255], [10, 14]], dtype=np.uint8)
    expected = np.array([[[128, 64, 128], [0, 0, 0]], [[0, 0, 142], [119, 11, 32]]], dtype=np.uint8)
    out = colorize(label, get_protocol("viper15"))
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    # Ids beyond the protocol (here 14 under synthia11) are black too; int64 predictions are accepted.
    assert colorize(np.array([[14, 10]], dtype=np.int64), get_protocol("synthia11")).tolist() == [
        [[0, 0, 0], [0, 0, 142]]
    ]
