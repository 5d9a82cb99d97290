"""The Vision Transformer (attnbook.models.vit) against timm with copied weights, and the image data loaders."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from attnbook.data.images import _cifar_archive_bytes, load_cifar10, load_digits_split
from attnbook.models.vit import PatchEmbedding, ViT


def copy_from_timm(model: ViT, ref) -> ViT:
    """timm's VisionTransformer weights into ours: the fused qkv is split into q, k and v."""
    with torch.no_grad():
        model.patch_embed.proj.load_state_dict(ref.patch_embed.proj.state_dict())
        model.cls_token.copy_(ref.cls_token)
        model.pos_embed.copy_(ref.pos_embed)
        for ours, theirs in zip(model.encoder.layers, ref.blocks, strict=True):
            ours.norm1.load_state_dict(theirs.norm1.state_dict())
            ours.norm2.load_state_dict(theirs.norm2.state_dict())
            w, b = theirs.attn.qkv.weight.chunk(3), theirs.attn.qkv.bias.chunk(3)
            for proj, wi, bi in zip(
                (ours.self_attn.q_proj, ours.self_attn.k_proj, ours.self_attn.v_proj), w, b, strict=True
            ):
                proj.weight.copy_(wi)
                proj.bias.copy_(bi)
            ours.self_attn.out_proj.load_state_dict(theirs.attn.proj.state_dict())
            ours.linear1.load_state_dict(theirs.mlp.fc1.state_dict())
            ours.linear2.load_state_dict(theirs.mlp.fc2.state_dict())
        model.encoder.norm.load_state_dict(ref.norm.state_dict())
        model.head.load_state_dict(ref.head.state_dict())
    return model


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_matches_timm_with_copied_weights(pool):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    kwargs = dict(img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=32, depth=2, num_heads=4)
    ref = timm.models.vision_transformer.VisionTransformer(
        **kwargs, global_pool="token" if pool == "cls" else "avg", class_token=True, fc_norm=False
    ).eval()  # fc_norm=False: the final norm acts on every token before pooling, as in ours
    with torch.no_grad():  # timm starts cls_token and biases at zero: make them count
        ref.cls_token.normal_()
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model = copy_from_timm(ViT(8, 2, 1, 10, dim=32, depth=2, num_heads=4, pool=pool), ref).eval()
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_attention_weights_are_rows_of_a_distribution_over_class_and_patches():
    model = ViT(8, 4, 1, 3, dim=16, depth=3, num_heads=2).eval()
    logits, weights = model(torch.rand(2, 1, 8, 8), need_weights=True)
    assert logits.shape == (2, 3) and len(weights) == 3
    for w in weights:
        assert w.shape == (2, 2, 5, 5)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 5))


def test_patch_embedding_is_a_linear_map_of_each_flattened_patch():
    embed = PatchEmbedding((6, 9), 3, 2, 7)
    x = torch.randn(4, 2, 6, 9)
    patches = embed.patchify(x)  # (4, 6, 18)
    assert patches.shape == (4, 6, 18)
    torch.testing.assert_close(patches[0, 1], x[0, :, 0:3, 3:6].flatten())  # raster order: row 0, column 1
    expected = patches @ embed.proj.weight.flatten(1).T + embed.proj.bias
    torch.testing.assert_close(embed(x), expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_name_the_fault():
    with pytest.raises(ValueError, match="patch_size 3 must divide"):
        ViT(8, 3, 1, 10)
    with pytest.raises(ValueError, match="pool"):
        ViT(8, 2, 1, 10, pool="max")
    with pytest.raises(ValueError, match="num_classes"):
        ViT(8, 2, 1, 0)
    model = ViT(8, 2, 1, 10, dim=16, depth=1, num_heads=2)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 8, 8\), got \(2, 3, 8, 8\)"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="got \\(8, 8\\)"):
        model(torch.rand(8, 8))


def test_digits_split_is_stratified_seeded_and_disjoint():
    train, test = load_digits_split(0.25, seed=3)
    assert train.images.shape[1:] == (1, 8, 8) and len(train.images) + len(test.images) == 1797
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    counts = torch.bincount(test.labels, minlength=10).float() / torch.bincount(
        torch.cat([train.labels, test.labels]), minlength=10
    )
    assert torch.all((counts - 0.25).abs() < 0.01)  # every class keeps its share
    again, _ = load_digits_split(0.25, seed=3)
    other, _ = load_digits_split(0.25, seed=4)
    assert torch.equal(again.images, train.images) and not torch.equal(other.images, train.images)
    sub, sub_test = load_digits_split(0.5, seed=0, classes=(1, 7))
    assert set(sub.labels.tolist()) == {1, 7} == set(sub_test.labels.tolist())
    for bad in ({"test_fraction": 1.0}, {"test_fraction": 0}, {"classes": (1, 1)}, {"classes": (10,)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            load_digits_split(**bad)


def _fake_records(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels[:, None], pixels], axis=1).tobytes(), labels, pixels


def test_cifar10_loader_reads_the_binary_records_and_download_checks_the_pin(tmp_path):
    members, expected = {}, {"train": ([], []), "test": ([], [])}
    for i in range(1, 6):
        data, y, x = _fake_records(3, i)
        members[f"cifar-10-batches-bin/data_batch_{i}.bin"] = data
        expected["train"][0].append(x)
        expected["train"][1].append(y)
    data, y, x = _fake_records(4, 9)
    members["cifar-10-batches-bin/test_batch.bin"] = data
    archive = tmp_path / "cifar.tar.gz"
    archive.write_bytes(_cifar_archive_bytes(members))
    train = load_cifar10("train", archive=archive)
    assert train.images.shape == (15, 3, 32, 32) and train.labels.dtype == torch.int64
    pixels = np.concatenate(expected["train"][0]).reshape(15, 3, 32, 32)
    torch.testing.assert_close(train.images, torch.from_numpy(pixels.astype(np.float32) / 255))
    assert train.labels.tolist() == np.concatenate(expected["train"][1]).tolist()
    test = load_cifar10("test", archive=archive, max_images=2)
    assert test.images.shape == (2, 3, 32, 32) and test.labels.tolist() == y[:2].tolist()
    assert torch.equal(test.images[1, 2].flatten(), torch.from_numpy(x[1, 2048:].astype(np.float32) / 255))
    # the real download path, from a local file: the pinned checksum is enforced, the cache reused
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="size|bytes|SHA-256|sha256"):
        load_cifar10("test", cache, url=archive.as_uri())  # the registry's pin does not match the fake archive
    assert not (cache / "cifar-10-binary.tar.gz").exists()  # nothing half-written kept
    with pytest.raises(FileNotFoundError, match="download_cifar10"):
        load_cifar10("test", cache, download=False)
    fetched = load_cifar10("test", cache, url=archive.as_uri(), sha256=digest)
    assert torch.equal(fetched.images, load_cifar10("test", archive=archive).images)
    assert (cache / "cifar-10-binary.tar.gz").read_bytes() == archive.read_bytes()
    assert torch.equal(load_cifar10("test", cache, download=False).labels, fetched.labels)  # offline, from the cache


def test_cifar10_loader_names_a_broken_archive(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(_cifar_archive_bytes({"cifar-10-batches-bin/test_batch.bin": b"\x00" * 100}))
    with pytest.raises(ValueError, match="broken.tar.gz.*not a whole number"):
        load_cifar10("test", archive=archive)
    with pytest.raises(ValueError, match="no member"):
        load_cifar10("train", archive=archive)
    with pytest.raises(ValueError, match="split"):
        load_cifar10("valid", archive=archive)


def test_random_crop_flip_shifts_and_mirrors_against_a_loop():
    from attnbook.data.images import random_crop_flip

    x = torch.rand(6, 2, 5, 7)
    torch.testing.assert_close(random_crop_flip(x, 0, flip=False), x)
    out = random_crop_flip(x, 2, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    shifts = torch.randint(0, 5, (6, 2), generator=generator)
    mirror = torch.rand(6, generator=generator) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(6):
        for i in range(5):
            for j in range(7):
                jj = 6 - j if mirror[b] else j
                torch.testing.assert_close(out[b, :, i, j], padded[b, :, shifts[b, 0] + i, shifts[b, 1] + jj])
    assert mirror.any() and not mirror.all()  # this seed exercises both branches
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(x, -1)
