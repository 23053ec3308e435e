"""Train a small Keras U-Net on tfchips TFRecords, on the CPU, and write its predictions as GeoTIFFs.

    tfchips to-tfrecords demo-output/chips --out demo-output/records --encoding array \\
        --split train=0.75,val=0.25 --seed 2 --shards 1
    python examples/train_unet.py demo-output/records --epochs 10 --out demo-output/predictions

Reads the ``train`` and ``val`` splits with `tfchips.parse.make_dataset` (images
normalised by the band statistics of dataset.json), prints the loss and mean IoU
of every epoch, then writes one GeoTIFF of predicted classes per ``val`` chip,
named like the chip and on its grid, so that it overlays the chip in a GIS.
Label pixels equal to the labels' nodata value, if they have one, are ignored.
"""

from __future__ import annotations

import argparse
import os
import sys

from tfchips.console import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow loads: its import prints absl and CUDA lines (TFCHIPS_VERBOSE=1 keeps them)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfchips.parse import make_dataset, write_prediction
from tfchips.records import DatasetInfo, read_dataset_info


def unet(input_shape: tuple, classes: int, filters: int = 16, depth: int = 2) -> keras.Model:
    """A U-Net of ``depth`` poolings (rows and columns must divide by 2**depth); logits per class."""
    inputs = keras.Input(input_shape)
    x, skips = inputs, []
    for level in range(depth):
        x = _convolutions(x, filters * 2**level)
        skips.append(x)
        x = keras.layers.MaxPooling2D()(x)
    x = _convolutions(x, filters * 2**depth)
    for level in reversed(range(depth)):
        x = keras.layers.Conv2DTranspose(filters * 2**level, 2, strides=2, padding="same")(x)
        x = _convolutions(keras.layers.Concatenate()([x, skips[level]]), filters * 2**level)
    return keras.Model(inputs, keras.layers.Conv2D(classes, 1)(x), name="unet")


def _convolutions(x, filters: int):
    for _ in range(2):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    return x


def class_count(info: DatasetInfo) -> int:
    """Number of classes: one more than the largest class value dataset.json names or counts."""
    values = set((info.class_names or {}).keys())
    values |= set(((info.statistics or {}).get("class_counts") or {}).keys())
    if not values:
        raise SystemExit("dataset.json names no classes and counts none: cannot size the model")
    return int(max(float(v) for v in values)) + 1


class EpochReport(keras.callbacks.Callback):
    """One line per epoch: loss and mean IoU, on the training and validation splits."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        names = ("loss", "mean_iou", "val_loss", "val_mean_iou")
        figures = "  ".join(f"{name} {logs[name]:.4f}" for name in names if name in logs)
        print(f"epoch {epoch + 1}/{self.epochs}  {figures}", flush=True)


def _ignoring(nodata):
    """Maps (image, label) to (image, label, weight): weight 0 where the label is ``nodata``."""

    def weigh(image, label):
        valid = tf.not_equal(label, tf.cast(nodata, label.dtype))
        return image, tf.where(valid, label, tf.zeros_like(label)), tf.cast(valid[..., 0], tf.float32)

    return weigh


def train(
    records: str,
    out: str,
    epochs: int = 10,
    batch_size: int = 2,
    filters: int = 16,
    learning_rate: float = 5e-3,
    steps_per_epoch: int | None = None,
    train_split: str = "train",
    val_split: str = "val",
    seed: int = 0,
) -> dict[str, list[float]]:
    """Train on ``train_split``, validate on ``val_split``, write val predictions to ``out``; returns the history."""
    keras.utils.set_random_seed(seed)
    info = read_dataset_info(records)
    for split in (train_split, val_split):
        if info.split_named(split) is None:
            raise SystemExit(f"{records} has no split {split!r}; it has {', '.join(s.name for s in info.splits)}")
    classes = class_count(info)
    normalize = "stats" if info.statistics else None
    nodata = info.label.nodata

    def dataset(split: str, **options) -> tf.data.Dataset:
        data = make_dataset(records, split, batch_size=batch_size, normalize=normalize, seed=seed, **options)
        return data if nodata is None else data.map(_ignoring(nodata))

    training = dataset(train_split, shuffle=True, repeat=steps_per_epoch is not None)
    model = unet(info.image.shape, classes, filters)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.MeanIoU(classes, sparse_y_pred=False, name="mean_iou")],
    )
    print(f"training a U-Net ({model.count_params()} parameters, {classes} classes) on "
          f"{info.split_named(train_split).records} chips of {records}", flush=True)
    history = model.fit(
        training, epochs=epochs, steps_per_epoch=steps_per_epoch, validation_data=dataset(val_split),
        callbacks=[EpochReport(epochs)], verbose=0, shuffle=False,  # make_dataset shuffles
    )
    written = predict(model, records, val_split, out, batch_size, normalize)
    print(f"wrote {len(written)} predictions of split {val_split!r} to {out}", flush=True)
    return history.history


def predict(model: keras.Model, records: str, split: str, out: str, batch_size: int, normalize) -> list[str]:
    """Write the predicted classes of every chip of ``split`` as ``out/<chip name>.tif``; returns the paths."""
    written = []
    for batch in make_dataset(records, split, batch_size=batch_size, normalize=normalize, with_metadata=True):
        classes = tf.argmax(model(batch["image"], training=False), axis=-1, output_type=tf.int32).numpy()
        for i, name in enumerate(batch["name"].numpy()):
            metadata = {key: batch[key][i] for key in ("crs", "transform", "image")}
            path = os.path.join(out, name.decode("utf-8") + ".tif")
            written.append(write_prediction(path, classes[i], metadata, band_names=("class",)))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", help="folder written by `tfchips to-tfrecords` (with dataset.json)")
    parser.add_argument("--out", default="predictions", help="folder for the prediction GeoTIFFs")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--filters", type=int, default=16, help="filters of the first level (doubled per level)")
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default: one pass over the split")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train(
        args.records, args.out, args.epochs, args.batch_size, args.filters, args.learning_rate,
        args.steps_per_epoch, args.train_split, args.val_split, args.seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
