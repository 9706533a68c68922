"""synth_core.data: discovery, splits, the volume store and the translation datasets.

The cohort is six tiny subjects written here with nibabel (no phantom): T1 and PET on a
1.5 x 1.5 x 2 mm grid of 14 x 15 x 12 voxels (one subject 12 x 15 x 12, so the store
must pad to a common shape), an ellipsoid brain mask, and a half-resolution T1.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from synth_core.data import (
    SubjectRecord,
    TranslationDataset,
    ValidationVolumes,
    VolumeStore,
    discover_subjects,
    recover_split,
    split_subjects,
    subjects_fingerprint,
    summarise,
    target_norm_reference,
)
from synth_core.errors import UserError
from synth_core.preprocess import denormalise, undo_crop_or_pad

AGES = [61.0, 67.5, 72.0, 78.0, 83.5, 90.0]
LABELS = ["CN", "MCI", "AD", "CN", "MCI", "AD"]
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0]) + np.array([[0, 0, 0, -10], [0, 0, 0, -12], [0, 0, 0, -12], [0, 0, 0, 0]])


def _ellipsoid(shape: tuple[int, int, int]) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij")
    return sum((g / (0.42 * s)) ** 2 for g, s in zip(grid, shape, strict=True)) <= 1.0


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    nib.Nifti1Image(data.astype(np.float32), affine).to_filename(path)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(7)
    rows = ["participant_id\tage\tsex\tdiagnosis"]
    for i in range(6):
        sid = f"sub-{i + 1:03d}"
        shape = (12, 15, 12) if i == 5 else (14, 15, 12)
        (root / sid).mkdir()
        mask = _ellipsoid(shape)
        tissue = rng.uniform(0.5, 1.5, shape)
        t1 = mask * (80 + 40 * tissue) + rng.uniform(0, 5, shape)
        pet = mask * (30 + 60 * tissue[::-1]) * (1 + i / 10) + rng.uniform(0, 2, shape)
        _save(t1, AFFINE, root / sid / f"{sid}_t1.nii.gz")
        _save(pet, AFFINE, root / sid / f"{sid}_pet.nii.gz")
        _save(mask, AFFINE, root / sid / f"{sid}_brainmask.nii.gz")
        rows.append(f"{sid}\t{AGES[i]}\t{'FM'[i % 2]}\t{LABELS[i]}")
    # Every other voxel, on a grid of twice the voxel size: a thick-voxel T1 of sub-001.
    t1 = nib.load(root / "sub-001" / "sub-001_t1.nii.gz").get_fdata()
    _save(t1[::2, ::2, ::2], AFFINE @ np.diag([2.0, 2.0, 2.0, 1.0]), root / "sub-001" / "sub-001_t1-lowres.nii")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def records(cohort: Path) -> list[SubjectRecord]:
    return discover_subjects(cohort)


@pytest.fixture(scope="module")
def store(records: list[SubjectRecord]) -> VolumeStore:
    return VolumeStore(records, multiple=8)


def _manifest(cohort: Path, folder: Path, rows: list[str] | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    lines = ["subject\tt1\tpet\tbrainmask\tage\tlabel\tsex"]
    for i in range(6):
        sid = f"sub-{i + 1:03d}"
        rel = f"../{cohort.name}/{sid}/{sid}"
        lines.append(f"{sid}\t{rel}_t1.nii.gz\t{rel}_pet.nii.gz\t{rel}_brainmask.nii.gz\t{AGES[i]}\t{LABELS[i]}\t{'FM'[i % 2]}")
    path = folder / "manifest.tsv"
    path.write_text("\n".join(rows if rows is not None else lines) + "\n")
    return path


def _key(r: SubjectRecord) -> tuple:
    return (r.subject_id, {k: v for k, v in r.paths.items() if k != "t1-lowres"}, r.age, r.label, r.extra)


def test_discover_folder_and_manifest_agree(cohort: Path, records: list[SubjectRecord]) -> None:
    assert [r.subject_id for r in records] == [f"sub-{i:03d}" for i in range(1, 7)]
    assert [r.age for r in records] == AGES and [r.label for r in records] == LABELS
    assert set(records[0].paths) == {"t1", "pet", "brainmask", "t1-lowres"}
    assert records[0].paths["t1"] == (cohort / "sub-001" / "sub-001_t1.nii.gz").resolve()
    manifest = _manifest(cohort, cohort.parent / "manifest_dir")
    from_manifest = discover_subjects(manifest)
    assert [_key(r) for r in from_manifest] == [_key(r) for r in records]
    # A folder holding only a manifest reads that manifest.
    assert [_key(r) for r in discover_subjects(manifest.parent)] == [_key(r) for r in records]


def test_discover_errors_name_the_problem(cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no sub-\*/ folders and no \.tsv manifest in .*empty"):
        (tmp_path / "empty").mkdir()
        discover_subjects(tmp_path / "empty")
    no_subject = _manifest(cohort, cohort.parent / "bad1", ["id\tt1", "sub-001\tx.nii.gz"])
    with pytest.raises(UserError, match=r"manifest .*bad1/manifest\.tsv has no 'subject' column"):
        discover_subjects(no_subject)
    rows = ["subject\tt1", f"sub-001\t../{cohort.name}/sub-001/sub-001_t1.nii.gz", "sub-002\tmissing_t1.nii.gz"]
    missing = _manifest(cohort, cohort.parent / "bad2", rows)
    with pytest.raises(UserError, match=r"row 3 \(subject sub-002\).*t1 file .*missing_t1\.nii\.gz does not exist"):
        discover_subjects(missing)


def _fake(n: int, labels: bool = True) -> list[SubjectRecord]:
    return [SubjectRecord(f"s{i:02d}", {}, 60.0 + i, "ABC"[i % 3] if labels else None) for i in range(n)]


def test_split_is_disjoint_covering_deterministic_and_stratified() -> None:
    recs = _fake(12)
    split = split_subjects(recs, seed=0)
    ids = split.ids()
    assert [len(v) for v in ids.values()] == [8, 2, 2]
    assert sorted(sum(ids.values(), [])) == sorted(r.subject_id for r in recs)
    assert split_subjects(list(reversed(recs)), seed=0).ids() == ids
    assert any(split_subjects(recs, seed=s).ids() != ids for s in (1, 2, 3))
    # 4 subjects per label: a stratified train set of 8 holds 2 or 3 of each.
    counts = [sum(r.label == lab for r in split.train) for lab in "ABC"]
    assert all(c in (2, 3) for c in counts), counts
    assert [len(v) for v in split_subjects(_fake(3), seed=5).ids().values()] == [1, 1, 1]
    assert [len(v) for v in split_subjects(_fake(2, labels=False)).ids().values()] == [1, 1, 0]
    with pytest.raises(UserError, match="at least 2"):
        split_subjects(_fake(1))


def _find_offset(volume: torch.Tensor, patch: torch.Tensor) -> tuple[int, ...]:
    size = patch.shape[1:]
    hits = [
        (x, y, z)
        for x in range(volume.shape[1] - size[0] + 1)
        for y in range(volume.shape[2] - size[1] + 1)
        for z in range(volume.shape[3] - size[2] + 1)
        if torch.equal(volume[:, x : x + size[0], y : y + size[1], z : z + size[2]], patch)
    ]
    assert len(hits) == 1, hits
    return hits[0]


def test_paired_patches_and_slices_match_the_store(store: VolumeStore, records: list[SubjectRecord]) -> None:
    ds = TranslationDataset(store, records, "t1", "pet", patch_size=6, samples_per_epoch=6, seed=3)
    assert ds.paired_subjects == [r.subject_id for r in records]
    for item in ds:
        assert item["source_id"] == item["target_id"] and bool(item["paired"])
        assert item["source"].shape == (1, 6, 6, 6) and item["target"].shape == (1, 6, 6, 6)
        x, y, z = _find_offset(store.get(item["source_id"], "t1"), item["source"])
        expected = store.get(item["source_id"], "pet")[:, x : x + 6, y : y + 6, z : z + 6]
        assert torch.equal(item["target"], expected)
        mask = store.mask(item["source_id"])[:, x : x + 6, y : y + 6, z : z + 6]
        assert torch.equal(item["mask"], mask) and mask.float().mean() >= 0.5
        sid = item["source_id"]
        assert float(item["age"]) == AGES[int(sid[-3:]) - 1]
        assert int(item["label"]) == store.labels.index(LABELS[int(sid[-3:]) - 1])
    slices = TranslationDataset(store, records, "t1", "pet", spatial="2d", seed=1)
    assert len(slices) == sum(len(slices.slices(r.subject_id)) for r in records)
    for i in range(0, len(slices), 7):
        item = slices[i]
        assert item["source"].shape == (1, 16, 16)
        source = store.get(item["source_id"], "t1")
        z = [k for k in range(source.shape[3]) if torch.equal(source[..., k], item["source"])]
        assert len(z) == 1 and store.mask(item["source_id"])[..., z[0]].sum() > 0
        assert torch.equal(item["target"], store.get(item["source_id"], "pet")[..., z[0]])


def test_unpaired_halves_are_disjoint(store: VolumeStore, records: list[SubjectRecord]) -> None:
    ds = TranslationDataset(store, records, "t1", "pet", mode="unpaired", spatial="2d", patch_size=(8, 8), seed=2)
    halves = set(ds.source_subjects), set(ds.target_subjects)
    assert not halves[0] & halves[1] and halves[0] | halves[1] == {r.subject_id for r in records}
    assert len(halves[0]) == len(halves[1]) == 3 and ds.paired_subjects == []
    for i in range(0, len(ds), 5):
        item = ds[i]
        assert item["source_id"] in halves[0] and item["target_id"] in halves[1]
        assert item["source"].shape == item["target"].shape == (1, 8, 8) and not bool(item["paired"])
        assert item["mask"].float().mean() >= 0.5


@pytest.mark.parametrize("fraction", [0.5, 0.34])
def test_partial_pairs_a_fraction(store: VolumeStore, records: list[SubjectRecord], fraction: float) -> None:
    ds = TranslationDataset(store, records, "t1", "pet", mode="partial", paired_fraction=fraction, samples_per_epoch=60)
    assert len(ds.paired_subjects) == round(fraction * 6)
    assert not set(ds.paired_subjects) & (set(ds.source_subjects) | set(ds.target_subjects))
    items = list(ds)
    paired = np.array([bool(it["paired"]) for it in items])
    assert abs(paired.mean() - fraction) <= 0.05
    for it, p in zip(items, paired, strict=True):
        if p:
            assert it["source_id"] == it["target_id"] in ds.paired_subjects
            assert torch.equal(it["target"], store.get(it["source_id"], "pet"))
        else:
            assert it["source_id"] in ds.source_subjects and it["target_id"] in ds.target_subjects


def test_draws_depend_only_on_seed_epoch_and_index(store: VolumeStore, records: list[SubjectRecord]) -> None:
    def make(seed: int = 0) -> TranslationDataset:
        return TranslationDataset(store, records, "t1", "pet", mode="partial", paired_fraction=0.5, patch_size=6, seed=seed, samples_per_epoch=8)

    a, b = make(), make()
    for i in (0, 5, 7):
        assert all(torch.equal(a[i][k], b[i][k]) for k in ("source", "target"))
    first = [a[i]["source"] for i in range(8)]
    a.set_epoch(1)
    assert sum(not torch.equal(x, a[i]["source"]) for i, x in enumerate(first)) >= 6
    b.set_epoch(1)
    assert all(torch.equal(a[i]["source"], b[i]["source"]) for i in range(8))
    shards = [list(DistributedSampler(a, num_replicas=2, rank=r, seed=0)) for r in (0, 1)]
    assert len(shards[0]) == 4 and not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(8))
    assert [a[i]["index"] for i in shards[1]] == shards[1]


def test_store_denormalises_to_the_files(store: VolumeStore, records: list[SubjectRecord]) -> None:
    assert store.common_shape == (14, 15, 12) and store.shape == (16, 16, 16)
    for r in records:
        crop, pad = store.padding(r.subject_id)
        for key in ("t1", "pet"):
            tensor = store.get(r.subject_id, key)
            assert tensor.dtype == torch.float32 and tensor.shape == (1, 16, 16, 16)
            native = undo_crop_or_pad(undo_crop_or_pad(tensor[0].numpy(), pad), crop)
            values = denormalise(native, store.norm_params(r.subject_id, key))
            on_disk = nib.load(r.paths[key]).get_fdata()
            np.testing.assert_allclose(values, on_disk, atol=1e-4, rtol=0)
        mask = undo_crop_or_pad(undo_crop_or_pad(store.mask(r.subject_id)[0].numpy(), pad), crop)
        assert np.array_equal(mask, nib.load(r.paths["brainmask"]).get_fdata() > 0.5)
        # Native voxel 0 sits at (crop + pad) voxels into the padded grid, same world mm.
        origin = np.add(crop.before, pad.before)
        assert np.allclose(store.grid_affine(r.subject_id) @ [*origin, 1], AFFINE[:, 3])
    # The thick-voxel T1 is resampled onto the T1 grid: its voxel centres are every other
    # T1 voxel, where (trilinear) interpolation must give back the T1 values themselves.
    crop, pad = store.padding("sub-001")
    low = undo_crop_or_pad(undo_crop_or_pad(store.get("sub-001", "t1-lowres")[0].numpy(), pad), crop)
    low = denormalise(low, store.norm_params("sub-001", "t1-lowres"))
    t1 = nib.load(records[0].paths["t1"]).get_fdata()
    np.testing.assert_allclose(low[::2, ::2, ::2], t1[::2, ::2, ::2], atol=1e-3, rtol=0)
    assert np.abs(low[1::2, 1::2, 1::2] - t1[1::2, 1::2, 1::2]).max() > 1.0


def test_summary_reference_and_validation(store: VolumeStore, records: list[SubjectRecord]) -> None:
    split = split_subjects(records, seed=0)
    summary = json.loads(json.dumps(summarise(records, split)))
    assert summary["n_subjects"] == 6 and summary["age_range"] == [61.0, 90.0]
    assert summary["label_counts"] == {"AD": 2, "CN": 2, "MCI": 2}
    assert summary["modalities"] == {"brainmask": 6, "pet": 6, "t1": 6, "t1-lowres": 1}
    # No identifiers in the card: each part is named by the fingerprint of its IDs.
    assert "sub-0" not in json.dumps(summary)
    assert {k: v["subjects_sha256"] for k, v in summary["splits"].items()} == {
        k: subjects_fingerprint(v) for k, v in split.ids().items()}
    assert subjects_fingerprint(["b", "a"]) == subjects_fingerprint(["a", "b"]) != subjects_fingerprint(["a"])
    assert recover_split([records[:-1], records], summary).ids() == split.ids()  # second candidate
    with pytest.raises(UserError, match="fingerprints differ"):
        recover_split([records[1:]], summary)
    ids = split.ids()["train"]
    reference = target_norm_reference(store, ids, "pet")
    scales = [store.norm_params(s, "pet").suvr_scale for s in ids]
    assert reference["kind"] == "suvr" and reference["suvr_scale"] == pytest.approx(np.median(scales))
    assert reference["hi"] == pytest.approx(np.median([store.norm_params(s, "pet").hi for s in ids]))
    val = ValidationVolumes(store, split.val, "t1", "pet")
    assert len(val) == len(split.val) >= 1
    item = val[0]
    assert torch.equal(item["target"], store.get(item["subject_id"], "pet")) and item["mask"].dtype == torch.bool


def test_bad_dataset_options_are_user_errors(store: VolumeStore, records: list[SubjectRecord]) -> None:
    with pytest.raises(UserError, match="patch size"):
        TranslationDataset(store, records, "t1", "pet", patch_size=40)
    with pytest.raises(UserError, match="data mode"):
        TranslationDataset(store, records, "t1", "pet", mode="semi")
    with pytest.raises(UserError, match="no t2 file"):
        store.get("sub-001", "t2")
