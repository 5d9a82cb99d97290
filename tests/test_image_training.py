"""The image classifier in the engine: ImageDataModule's splits and ViTModule's training, evaluation and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnbook.train import ImageDataModule, ViTModule


def test_digits_datamodule_splits_are_disjoint_normalised_and_seeded() -> None:
    data = ImageDataModule("digits", val_fraction=0.2, batch_size=16, batches_per_epoch=10, val_batches=None, seed=3)
    data.setup("fit")
    train, val, test = data.train_data, data.val_data, data.test_data
    assert (data.image_size, data.in_channels, data.num_classes) == (8, 1, 10)
    assert len(train) + len(val) == 1347 and len(test) == 450 and len(val) == round(0.2 * 1347)
    assert abs(float(train.images.mean())) < 1e-5 and abs(float(train.images.std()) - 1) < 0.01
    rows = lambda d: {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(d.images, d.labels, strict=True)}  # noqa: E731
    assert len(rows(train) & rows(val)) < 5  # a few digits occur twice in the data set itself
    assert sum(len(b[1]) for b in data.val_dataloader()) == len(val)  # val_batches=None: all of it
    other = ImageDataModule("digits", val_fraction=0.2, batch_size=16, batches_per_epoch=10, seed=4)
    other.setup("fit")
    assert not torch.equal(other.val_data.labels, val.labels)
    first = [b[1] for b in data.train_dataloader()]
    assert len(first) == 10 and len(torch.cat(first).unique()) == 10


def test_bad_settings_name_the_argument() -> None:
    with pytest.raises(ValueError, match="data.dataset"):
        ImageDataModule("mnist")
    with pytest.raises(ValueError, match="val_fraction"):
        ImageDataModule(val_fraction=1.0)
    too_many = ImageDataModule("digits", batch_size=64, batches_per_epoch=100)
    with pytest.raises(ValueError, match="batches_per_epoch=100 x data.batch_size=64 exceeds"):
        too_many.setup("fit")
    with pytest.raises(ValueError, match="num_heads=3 must divide model.dim=64"):
        ViTModule(num_heads=3)
    with pytest.raises(ValueError, match="augment_padding"):
        ViTModule(augment_padding=-1)


def test_vit_module_learns_digits_and_logs_accuracy(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from attnbook.train import EngineOptions, read_metrics, trainer_kwargs

    pl.seed_everything(0)
    data = ImageDataModule("digits", batch_size=32, batches_per_epoch=30, val_batches=None)
    module = ViTModule(patch_size=4, dim=32, depth=1, num_heads=2, augment_padding=1, lr=3e-3, warmup_steps=10)
    engine = EngineOptions(run_dir=str(tmp_path), loggers=["csv"], progress_bar=False)
    options = {"accelerator": "cpu", "max_epochs": 3, "enable_model_summary": False, "num_sanity_val_steps": 0}
    trainer = pl.Trainer(**trainer_kwargs(engine, **options))
    trainer.fit(module, datamodule=data)
    accuracy = [value for _, value in read_metrics(tmp_path)["val/acc"]]
    assert len(accuracy) == 3 and accuracy[-1] > 0.5 and accuracy[-1] > accuracy[0]  # chance is 0.1
    (result,) = trainer.test(module, datamodule=data, verbose=False)
    assert result["test/acc"] > 0.5
    (predicted,) = trainer.predict(module, datamodule=data)
    assert (
        predicted["predicted"].shape == (32,) and (predicted["predicted"] == predicted["labels"]).float().mean() > 0.4
    )
