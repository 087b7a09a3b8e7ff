"""Where a classifier may cut MobileNetV2: the residual outputs of its stages, and its end.

Rotation features that transfer best come from the middle of the network; the last blocks
specialise in predicting rotation (RotNet, Gidaris et al. 2018). A backbone cut earlier is also
smaller and faster on the device. Names are those of keras.applications.MobileNetV2.
"""

from __future__ import annotations

from edge_ssl.errors import ConfigError

# Output stride at 64 px: block_2 16×16, block_5 8×8, block_9/12 4×4, block_15 and out_relu 2×2.
CUT_LAYERS = ("block_2_add", "block_5_add", "block_9_add", "block_12_add", "block_15_add",
              "out_relu")
DEFAULT_CUT = "block_9_add"
# A network trained from scratch on a few labels learns more when it is shallow (measured on
# development pairs: docs/training-recipe.md, "Shallower cuts favour the from-scratch baseline").
# The `scratch_shallow` baseline uses it so that the pretext is compared with a from-scratch
# network of a size that suits the labels, not only with one too deep for them.
SHALLOW_CUT = "block_2_add"


def reaches(top: str | None, cut: str) -> bool:
    """Whether a backbone that ends at `top` (None: MobileNetV2's own end) contains `cut`."""
    return top is None or CUT_LAYERS.index(cut) <= CUT_LAYERS.index(top)


def require_within_pretext(cut: str, top: str | None) -> None:
    """A classifier cannot cut a pretext network past its last block: say so before any work."""
    if not reaches(top, cut):
        raise ConfigError(f"--cut {cut} is past the end of the pretext network, which stops at "
                          f"{top}: cut at {top} or an earlier block, or train a pretext with "
                          "--pretext-depth full.")
