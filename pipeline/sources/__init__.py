"""Dataset readers (Cityscapes-Seq, VIPER, SYNTHIA-SEQS), the registry of labelled datasets and their class protocols.

The face for the trainer: the class protocols (`get_protocol`, `protocol_names`, `Protocol`, `colorize`, `id_outside`,
`IGNORE_ID`, the one home of the ignore label 255), the registry of labelled datasets (`SOURCES`, `SourceDataset`),
the image helpers it shares with prep (`read_rgb`, `resize_rgb`, `resize_label`, `read_palette_png`, `write_png`),
sizes as flags write them (`parse_size_wh`, `size_text`), the figure layout every picture shares (`figure_grid`,
`class_legend` of the classes `legend_classes` finds, `with_legend`, `title_strip`, `tile`, `stack_rows`) and the
gtFine layout (`label_files`, `label_key`, `read_cityscapes_label`), so no trainer module parses a dataset path.
"""

from __future__ import annotations

from pipeline.sources.cityscapes import label_files, label_key
from pipeline.sources.cityscapes import read_label as read_cityscapes_label
from pipeline.sources.datasets import (
    SOURCES,
    SourceDataset,
    default_protocol,
    get_protocol,
    list_source,
    protocol_names,
    read_source_label,
)
from pipeline.sources.figures import (
    GRID_PAD,
    LEGEND_ROW_HEIGHT,
    TITLE_HEIGHT,
    as_rgb,
    class_legend,
    figure_grid,
    legend_classes,
    legend_entry_width,
    stack_rows,
    tile,
    title_strip,
    with_legend,
)
from pipeline.sources.images import (
    parse_size_wh,
    read_palette_png,
    read_rgb,
    resize_label,
    resize_rgb,
    size_text,
    write_png,
)
from pipeline.sources.protocols import IGNORE_ID, Protocol, colorize, id_outside, make_protocol
from pipeline.sources.records import SourceRecord

__all__ = [
    "GRID_PAD",
    "IGNORE_ID",
    "LEGEND_ROW_HEIGHT",
    "TITLE_HEIGHT",
    "SOURCES",
    "Protocol",
    "as_rgb",
    "class_legend",
    "figure_grid",
    "SourceDataset",
    "SourceRecord",
    "colorize",
    "default_protocol",
    "get_protocol",
    "id_outside",
    "label_files",
    "label_key",
    "legend_classes",
    "legend_entry_width",
    "list_source",
    "make_protocol",
    "parse_size_wh",
    "protocol_names",
    "read_cityscapes_label",
    "read_palette_png",
    "read_rgb",
    "read_source_label",
    "resize_label",
    "resize_rgb",
    "size_text",
    "stack_rows",
    "tile",
    "title_strip",
    "with_legend",
    "write_png",
]
