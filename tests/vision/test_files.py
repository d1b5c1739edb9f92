"""get_image_files: extensions in any case, hidden entries skipped, loop-safe, sorted."""

from __future__ import annotations

import pytest

from fastcore_cv.vision.files import IMAGE_EXTENSIONS, get_image_files, is_image_file


def rel(paths, root):
    return [p.relative_to(root).as_posix() for p in paths]


def test_finds_every_image_extension_in_any_case_sorted_and_nothing_else(tree):
    found = rel(get_image_files(tree), tree)
    assert found == [
        "a/1.jpg",
        "a/2.JPEG",
        "a/3.Png",
        "b/deep/y.TIFF",
        "b/x.webp",
        "b/z.bmp",
        "top.gif",
    ]


def test_symlink_loops_are_not_followed_twice(tree):
    found = get_image_files(tree)
    assert len(found) == len({p.resolve() for p in found})  # no file reached by two routes


def test_symlinked_folder_outside_the_tree_is_followed(tmp_path, tree):
    link_root = tmp_path / "links"
    link_root.mkdir()
    (link_root / "alias").symlink_to(tree / "a", target_is_directory=True)
    assert rel(get_image_files(link_root), link_root) == [
        "alias/1.jpg",
        "alias/2.JPEG",
        "alias/3.Png",
    ]


def test_recurse_false_lists_only_the_top_folder(tree):
    assert rel(get_image_files(tree, recurse=False), tree) == ["top.gif"]


def test_a_hidden_root_is_still_searched(tmp_path, tree):
    hidden = tmp_path / ".data"
    hidden.symlink_to(tree / "a", target_is_directory=True)
    assert len(get_image_files(hidden)) == 3


@pytest.mark.parametrize(
    "name", ["x.jpg", "X.JPG", "x.jpeg", "x.PnG", "x.gif", "x.webp", "x.tif", "x.tiff", "x.bmp"]
)
def test_image_names(name):
    assert is_image_file(name)


@pytest.mark.parametrize("name", [".x.jpg", "x.txt", "x", "x.jpg.part", "x.svg"])
def test_not_image_names(name):
    assert not is_image_file(name)


def test_extension_set_is_lower_case():
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)


def test_missing_path_and_file_path_raise_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        get_image_files(tmp_path / "nope")
    f = tmp_path / "f.jpg"
    f.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="f.jpg"):
        get_image_files(f)
