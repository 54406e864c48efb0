"""configs/: every file loads as `i2vda-train --config` loads it, and each baseline or ablation differs from its
main config in exactly the settings of its table row, with the paper's number in its comment."""

from pathlib import Path

import pytest

from trainer.training.config import TrainConfig, read_config_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VIPER, SYNTHIA = "viper2city.yaml", "synthia2city.yaml"

# file -> (main config, {setting: value} its row changes, table, row, the paper's mIoU), typed from the paper.
ROWS = {
    VIPER: (None, {}, "Table 1", "I2VDA", "51.2"),
    SYNTHIA: (None, {}, "Table 2", "I2VDA (Ours)", "53.0"),
    "baselines/source_only.yaml": (VIPER, {"method": "source_only"}, "Table 1", "Source only", "37.1"),
    "baselines/source_only_synthia.yaml": (SYNTHIA, {"method": "source_only"}, "Table 2", "Source only", "38.3"),
    "baselines/adv_only.yaml": (VIPER, {"method": "adv_only"}, "Table 3", "Baseline", "44.0"),
    "ablations/table3_no_temporal_aug.yaml": (
        VIPER,
        {"no_temporal_aug": True},
        "Table 3",
        "w/o Temporal Augmentation",
        "47.0",
    ),
    "ablations/table3_no_tc.yaml": (VIPER, {"no_tc": True}, "Table 3", "w/o Temporal-augmented Consistency", "45.6"),
    "ablations/table3_no_occlusion.yaml": (VIPER, {"no_occlusion": True}, "Table 3", "w/o Occlusion", "49.7"),
    "ablations/table3_no_entropy.yaml": (VIPER, {"no_entropy": True}, "Table 3", "w/o Entropy", "49.6"),
    "ablations/table4_iter_copy_1k.yaml": (VIPER, {"iter_copy": 1000}, "Table 4", "ITER_COPY 1k", "48.9"),
    "ablations/table4_iter_copy_15k.yaml": (VIPER, {"iter_copy": 15000}, "Table 4", "ITER_COPY 15k", "49.6"),
    "ablations/table4_iter_launch_1k.yaml": (VIPER, {"iter_launch": 1000}, "Table 4", "ITER_LAUNCH 1k", "48.3"),
    "ablations/table4_iter_launch_15k.yaml": (VIPER, {"iter_launch": 15000}, "Table 4", "ITER_LAUNCH 15k", "50.2"),
    "ablations/table5_eta_0.1.yaml": (VIPER, {"eta": 0.1}, "Table 5", "eta = 0.1", "50.4"),
    "ablations/table5_eta_2.0.yaml": (VIPER, {"eta": 2.0}, "Table 5", "eta = 2.0", "50.2"),
    "ablations/table5_delta_0.1.yaml": (VIPER, {"delta": 0.1}, "Table 5", "delta = 0.1", "48.5"),
    "ablations/table5_delta_0.5.yaml": (VIPER, {"delta": 0.5}, "Table 5", "delta = 0.5", "49.7"),
    "ablations/table5_t_0.0.yaml": (VIPER, {"t": 0.0}, "Table 5", "t = 0", "47.0"),
    "ablations/table5_t_0.25.yaml": (VIPER, {"t": 0.25}, "Table 5", "t = 0.25", "47.0"),
    "ablations/table5_t_0.5.yaml": (VIPER, {"t": 0.5}, "Table 5", "t = 0.5", "48.4"),
    "ablations/table5_t_0.75.yaml": (VIPER, {"t": 0.75}, "Table 5", "t = 0.75", "48.1"),
    "ablations/table5_t_1.0.yaml": (VIPER, {"t": 1.0}, "Table 5", "t = 1", "47.4"),
    "ablations/table5_alpha_0.1.yaml": (VIPER, {"alpha": 0.1}, "Table 5", "alpha = 0.1", "49.2"),
    "ablations/table5_alpha_0.3.yaml": (VIPER, {"alpha": 0.3}, "Table 5", "alpha = 0.3", "49.7"),
    "ablations/table5_alpha_0.7.yaml": (VIPER, {"alpha": 0.7}, "Table 5", "alpha = 0.7", "49.6"),
    "ablations/table5_alpha_0.9.yaml": (VIPER, {"alpha": 0.9}, "Table 5", "alpha = 0.9", "48.8"),
}


def load(name: str) -> TrainConfig:
    """The path of `i2vda-train --config FILE --out RUN`: the file's settings, then --out."""
    return TrainConfig.from_dict({**read_config_file(CONFIGS / name), "out": "runs/test"}, where=name)


def test_every_config_file_is_a_listed_table_row():
    found = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*") if p.is_file()}
    assert found == set(ROWS)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_a_config_differs_from_its_main_config_in_its_row_only(name):
    main, changes, table, row, number = ROWS[name]
    config = load(name).to_dict()
    reference = load(main).to_dict() if main else config
    differing = {key: config[key] for key in config if config[key] != reference.get(key)}
    assert differing == changes
    header = "".join(line for line in (CONFIGS / name).read_text().splitlines(keepends=True) if line.startswith("#"))
    assert table in header and row in header and f"reports {number} mIoU" in header


@pytest.mark.parametrize(
    ("name", "source", "protocol", "source_hw"),
    [(VIPER, "viper", "viper15", (512, 896)), (SYNTHIA, "synthia", "synthia11", (768, 1280))],
)
def test_the_main_configs_hold_the_papers_settings(name, source, protocol, source_hw):
    config = load(name)
    assert (config.source, config.method, config.protocol) == (source, "i2vda", protocol)
    assert config.target == "cityscapes_seq"
    assert config.target_size_hw == (512, 1024) and config.source_size_hw == source_hw  # [H, W] (§4.2)
    assert (config.max_iter, config.lr, config.lr_d, config.betas_d, config.poly_power) == (
        50_000,
        2.5e-4,
        1e-4,
        (0.9, 0.99),
        0.9,
    )  # §4.2
    assert (config.iter_copy, config.iter_launch, config.eta, config.delta, config.alpha, config.t) == (
        8000,
        8000,
        1.0,
        0.3,
        0.5,
        None,
    )  # Tables 4-5's best columns
    assert config.arch == "deeplab_r101" and config.flow_estimator == "flownet2" and config.lambda_adv == 0.01


def test_sizes_are_width_first_in_config_files_as_in_flags(tmp_path):
    """`target_size: 1024x512` in a file means 1024 wide, 512 high, as `--target-size 1024x512`; [H, W] fields still
    read (RUN/config.json); both at once, or a bad size, is one error line."""
    from pipeline.errors import InputError
    from trainer.training.config import read_config_file

    good = tmp_path / "good.yaml"
    good.write_text("target_size: 1024x512\nsource_size: 896x512\n")
    assert read_config_file(good) == {"target_size_hw": [512, 1024], "source_size_hw": [512, 896]}
    both = tmp_path / "both.yaml"
    both.write_text("target_size: 1024x512\ntarget_size_hw: [512, 1024]\n")
    with pytest.raises(InputError, match="not both"):
        read_config_file(both)
    bad = tmp_path / "bad.yaml"
    bad.write_text("target_size: 512\n")
    with pytest.raises(InputError, match="expected WIDTHxHEIGHT"):
        read_config_file(bad)
