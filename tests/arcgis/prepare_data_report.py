"""What ESRI's arcgis.learn.prepare_data makes of chip folders, written to OUT_DIR/report.json.

Runs inside .venv-arcgis (tests/arcgis/setup_venv.sh), not the tfchips venv:
    .venv-arcgis/bin/python tests/arcgis/prepare_data_report.py OUT_DIR FOLDER [FOLDER ...]
prepare_data writes esri_normalization_stats.json into the folder it loads, so
each folder is copied under OUT_DIR first; show_batch's figure goes there too.
The JSON maps each folder to what prepare_data reports; tests/test_esri.py
checks it against tfchips' manifest. (A file, not stdout: arcgis and torch print
warnings there.)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import fastai.vision.transform  # noqa: E402

# fastai 1.0.61 solves its warp coefficients with torch.solve, which torch 1.9 removed.
# The shim lives here, in the harness, so that nothing of tfchips depends on it.
fastai.vision.transform._solve_func = lambda B, A: (torch.linalg.solve(A, B),)

from arcgis.learn import prepare_data  # noqa: E402


def _tensor_list(data, name: str) -> list | None:
    value = getattr(data, name, None)
    return None if value is None else [float(v) for v in value]


def _label_values(dataset) -> list[int]:
    """Every value the label items of ``dataset`` hold, as prepare_data opens them (before transforms)."""
    values: set[int] = set()
    for index in range(len(dataset)):
        values.update(int(v) for v in torch.unique(dataset.y[index].data))
    return sorted(values)


def report(folder: str, out: str) -> dict:
    copy = os.path.join(out, os.path.basename(os.path.normpath(folder)))
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = prepare_data(copy, dataset_type="Classified_Tiles", batch_size=4, val_split_pct=0.25, seed=0)
    x, y = data.one_batch()
    weight = None if data.class_weight is None else torch.tensor([float(w) for w in data.class_weight])
    # Training-ready: a weighted cross-entropy over the batch accepts every label (an index >= c raises).
    loss_weight = None if weight is None else torch.cat([weight.mean().view(1), weight])
    logits = torch.zeros((y.shape[0], data.c, y.shape[-2], y.shape[-1]))
    loss = torch.nn.functional.cross_entropy(logits, y[:, 0].long(), weight=loss_weight)
    data.show_batch(rows=2)
    figure = os.path.join(out, os.path.basename(copy) + "-show_batch.png")
    plt.savefig(figure)
    plt.close("all")
    return {
        "classes": list(data.classes),
        "c": int(data.c),
        "class_mapping": {str(k): v for k, v in data.class_mapping.items()},
        "class_weight": None if weight is None else weight.tolist(),
        "is_multispectral": bool(getattr(data, "_is_multispectral", False)),
        "band_names": getattr(data, "_band_names", None),
        "band_min": _tensor_list(data, "_band_min_values"),
        "band_max": _tensor_list(data, "_band_max_values"),
        "band_mean": _tensor_list(data, "_band_mean_values"),
        "band_std": _tensor_list(data, "_band_std_values"),
        "chip_size": int(data.chip_size),
        "train": len(data.train_ds),
        "valid": len(data.valid_ds),
        "batch_x": list(x.shape),
        "batch_y": list(y.shape),
        "batch_label_values": sorted(int(v) for v in torch.unique(y)),
        "label_values": sorted(set(_label_values(data.train_ds)) | set(_label_values(data.valid_ds))),
        "loss": float(loss),
        "show_batch_bytes": os.path.getsize(figure),
    }


def main(argv: list[str]) -> int:
    out, folders = argv[0], argv[1:]
    os.makedirs(out, exist_ok=True)
    reports = {folder: report(folder, out) for folder in folders}
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as stream:
        json.dump(reports, stream, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
