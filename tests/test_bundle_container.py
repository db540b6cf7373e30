"""The single-file bundle (.frs): a ZIP with the manifest deflated; tar .frs files from before
still read; damaged, foreign and hostile files refused with a clear reason."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from framers import bundle as fb
from framers.errors import BundleError
from framers.pipeline import compress, iter_reconstructed
from framers.registry import get_reconstructor
from tests.videogen import write_video


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(bundle folder, the same bundle as a .frs file) of a small clip with audio."""
    d = tmp_path_factory.mktemp("container")
    source = write_video(d / "src.mp4", frames=24, audio=True)
    compress(source, d / "b", selector="uniform", keep=4)
    # the .frs of the same coding (what compress writes for a .frs output: ``pipeline`` packs its
    # work folder): two encodes of the same frames on two x264 threads are not always byte-equal
    # (a clean-clone run: 1833 against 1717 bytes), and these tests are about the container
    fb.pack(d / "b", d / "b.frs")
    return d / "b", d / "b.frs"


def frames_of(bundle: Path) -> list[np.ndarray]:
    with fb.open_bundle(bundle) as folder:
        manifest = fb.read_manifest(folder)
        return list(iter_reconstructed(folder, manifest, get_reconstructor("linear")))


def test_frs_is_a_zip_with_the_manifest_deflated_and_streams_stored(bundles: tuple[Path, Path]) -> None:
    folder, single = bundles
    with zipfile.ZipFile(single) as archive:
        infos = {i.filename: i for i in archive.infolist()}
        assert next(iter(infos)) == fb.MANIFEST  # manifest first
        assert set(infos) == {fb.MANIFEST, fb.KEYFRAMES_H264, fb.AUDIO}
        manifest = infos[fb.MANIFEST]
        assert manifest.compress_type == zipfile.ZIP_DEFLATED
        assert manifest.compress_size < 0.7 * manifest.file_size
        for name in (fb.KEYFRAMES_H264, fb.AUDIO):
            assert infos[name].compress_type == zipfile.ZIP_STORED
            assert infos[name].file_size == (folder / name).stat().st_size
    # container overhead: the file is the members as stored plus the end record, nothing else
    sizes = fb.stored_sizes(single)
    assert sum(sizes.values()) + 22 == single.stat().st_size
    folder_bytes = sum(p.stat().st_size for p in folder.iterdir())
    assert single.stat().st_size < folder_bytes  # smaller than its files: the manifest shrank more than headers cost


def test_zip_tar_and_folder_forms_rebuild_the_same_frames(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    folder, single = bundles
    old = tmp_path / "old.frs"  # the tar container of bundles written before the ZIP form
    with tarfile.open(old, "w", format=tarfile.GNU_FORMAT) as tar:
        for name in fb.BUNDLE_FILES:
            if (folder / name).exists():
                tar.add(folder / name, arcname=name)
    assert set(fb.stored_sizes(old)) == {fb.MANIFEST, fb.KEYFRAMES_H264, fb.AUDIO}
    reference = frames_of(folder)
    for other in (single, old):
        rebuilt = frames_of(other)
        assert len(rebuilt) == len(reference)
        assert all(np.array_equal(a, b) for a, b in zip(rebuilt, reference, strict=True))


def test_truncated_or_corrupted_zip_is_said_to_be_damaged(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    _, single = bundles
    data = single.read_bytes()
    cut = tmp_path / "cut.frs"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated or damaged"):
        frames_of(cut)
    # one flipped byte inside the stored keyframes: the member's CRC-32 catches it on extraction
    with zipfile.ZipFile(single) as archive:
        info = archive.getinfo(fb.KEYFRAMES_H264)
        offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    flipped = bytearray(data)
    flipped[offset] ^= 0xFF
    bad = tmp_path / "flipped.frs"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(BundleError, match="truncated or damaged"):
        frames_of(bad)


def test_foreign_and_hostile_zips_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.frs"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("../escape.txt", b"x")
    with pytest.raises(BundleError, match="unexpected entry"):
        frames_of(foreign)
    bomb = tmp_path / "bomb.frs"  # a deflated stream member: not what pack writes
    with zipfile.ZipFile(bomb, "w") as archive:
        archive.writestr(fb.KEYFRAMES_H264, bytes(1 << 20), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(BundleError, match="unexpected compressed entry"):
        frames_of(bomb)
    junk = tmp_path / "junk.frs"
    junk.write_bytes(b"garbage" * 100)
    with pytest.raises(BundleError, match="not a FrameRS bundle"):
        frames_of(junk)


def test_frs_manifest_leaves_checksums_to_the_zip_and_sizes_are_still_checked(
    bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    """A .frs stores no sha256 (each member's CRC-32 is checked on extraction, tested above); the
    folder form keeps it; a member of the wrong size is refused either way."""
    folder, single = bundles
    folder_files = fb.read_manifest(folder).files
    assert all(len(e["sha256"]) == 64 for e in folder_files.values())
    unpacked = tmp_path / "u"
    unpacked.mkdir()
    fb.unpack(single, unpacked)
    files = fb.read_manifest(unpacked).files
    assert files and all("sha256" not in e and e["bytes"] > 0 for e in files.values())
    assert {n: e["bytes"] for n, e in files.items()} == {n: e["bytes"] for n, e in folder_files.items()}
    keyframes = unpacked / fb.KEYFRAMES_H264
    keyframes.write_bytes(keyframes.read_bytes()[:-10])
    with pytest.raises(BundleError, match="bytes, the manifest says"):
        fb.read_manifest(unpacked)
