"""A procedural benchmark with ground truth: one class-defining shape per image, on clutter.

Images are rendered on the fly, deterministically from ``(seed, index)``, with vectorised
torch code (signed-distance functions on the pixel grid). Each sample carries the object's
class and its pixel mask, so explanations can be scored against where the evidence really is.

Example::

    from captum_fvit.data import ShapesBenchmark
    ds = ShapesBenchmark.from_split("test", size=600)
    sample = ds[0]                  # {"image": 3×64×64 float32, "label": int, "mask": 1×64×64 bool}
    batch = ds.batch(range(256))    # batched rendering (~3000 images/s on 2 CPU cores)
    loader = torch.utils.data.DataLoader(ds, batch_size=256)   # renders whole batches too

Seeds: ``SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}``; streams of different seeds are
independent, so evaluating on any seed a model was not trained on is a fresh test set.

Modules: :mod:`.shapes` (class shapes, SDFs, areas), :mod:`.background` (clutter),
:mod:`.distractors` (non-class shapes), :mod:`.rng` (counter-based randomness),
:mod:`.benchmark` (rendering and the dataset). Real images for evaluation:
:mod:`.folder` (a folder of images with optional masks) and :mod:`.imagenet_segmentation`
(the ``gtsegs_ijcv.mat`` file of the ImageNet-segmentation test).
"""

from .benchmark import (
    MIN_IMAGE_SIZE,
    SPLIT_SEEDS,
    RenderedBatch,
    ShapesBenchmark,
    ShapesConfig,
    render_batch,
    sample_labels,
)
from .folder import ImageFolderWithMasks
from .imagenet_segmentation import ImageNetSegmentation
from .shapes import CLASS_NAMES, NUM_CLASSES, class_index, rasterize_shape, shape_area, shape_sdf

#: Alias of :data:`NUM_CLASSES`.
num_classes = NUM_CLASSES

__all__ = [
    "CLASS_NAMES",
    "ImageFolderWithMasks",
    "ImageNetSegmentation",
    "MIN_IMAGE_SIZE",
    "NUM_CLASSES",
    "SPLIT_SEEDS",
    "RenderedBatch",
    "ShapesBenchmark",
    "ShapesConfig",
    "class_index",
    "num_classes",
    "rasterize_shape",
    "render_batch",
    "sample_labels",
    "shape_area",
    "shape_sdf",
]
