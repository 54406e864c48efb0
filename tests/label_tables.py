"""Expected label tables, transcribed entry by entry from the datasets' published label tables and the paper."""

X = 255  # ignore

# Paper Table 1 and Table 2 column order.
TABLE1 = ["road", "sidewalk", "building", "fence", "light", "sign", "vegetation", "terrain", "sky", "person", "car",
          "truck", "bus", "motorcycle", "bicycle"]  # fmt: skip
TABLE2 = ["road", "sidewalk", "building", "pole", "light", "sign", "vegetation", "sky", "person", "rider", "car"]

# Expected train id per dataset id, written out entry by entry from the reference tables (not from the module).
VIPER15_FROM_VIPER = [X, X, 8, 0, 1, X, 7, 6, 6, 2, X, 3, X, 4, 5, X,  # ids 0-15
                      X, X, X, X, 9, X, 14, 13, 10, X, 12, 11, X, X, X, X]  # ids 16-31  # fmt: skip
VIPER15_FROM_CITYSCAPES = [X, X, X, X, X, X, X, 0, 1, X, X, 2, X, 3, X, X, X,  # labelIds 0-16
                           X, X, 4, 5, 6, 7, 8, 9, 9, 10, 11, 12, X, X, X, 13, 14]  # labelIds 17-33  # fmt: skip
SYNTHIA12_FROM_SYNTHIA = [X, 8, 2, 0, 1, 3, 7, 4, 11, 6, 9, 10, X, X, X, 5]  # ids 0-15
SYNTHIA12_FROM_CITYSCAPES = [X, X, X, X, X, X, X, 0, 1, X, X, 2, X, 3, X, X, X,
                             4, X, 5, 6, 7, X, 8, 9, 10, 11, X, X, X, X, X, X, X]  # fmt: skip
SYNTHIA11_FROM_SYNTHIA = [X, 7, 2, 0, 1, X, 6, 3, 10, 5, 8, 9, X, X, X, 4]
SYNTHIA11_FROM_CITYSCAPES = [X, X, X, X, X, X, X, 0, 1, X, X, 2, X, X, X, X, X,
                             3, X, 4, 5, 6, X, 7, 8, 9, 10, X, X, X, X, X, X, X]  # fmt: skip
