"""ingest, validate and exclude on the hostile dataset and on each layout rule."""
import itertools
import os
import re
import shutil

import pytest

from retrain.errors import DataError
from retrain.ingest import exclude, ingest, validate


def listed_paths(dataset):
    return [relative for relative, _ in dataset.records] + [r for r, _ in dataset.skipped]


def test_hostile_ingest_lists_candidates_and_ignores_the_rest(hostile_dataset):
    dataset = ingest(hostile_dataset.root)
    assert dataset.classes == hostile_dataset.classes
    assert dataset.layout == "classes" and dataset.split_folders == ()
    # Ingest reads no pixels: only the broken link is skipped; other bad files wait for validate.
    assert [relative for relative, _ in dataset.skipped] == ["dogs/broken_link.jpg"]
    expected = set(hostile_dataset.good) | set(hostile_dataset.bad) - {"dogs/broken_link.jpg"}
    assert {relative for relative, _ in dataset.records} == expected
    for ignored in hostile_dataset.ignored:
        assert not any(p == ignored or p.startswith(ignored + "/") for p in listed_paths(dataset))
    for relative, label in dataset.records:
        assert relative.split("/")[0] == dataset.classes[label]
    assert dataset.records == sorted(dataset.records)


def test_hostile_validate_keeps_exactly_the_good_files_and_gives_each_bad_reason(hostile_dataset):
    dataset = validate(ingest(hostile_dataset.root))
    assert dataset.classes == hostile_dataset.classes
    assert {relative for relative, _ in dataset.records} == set(hostile_dataset.good)
    reasons = dict(dataset.skipped)
    assert len(reasons) == len(dataset.skipped) and set(reasons) == set(hostile_dataset.bad)
    for relative, pattern in hostile_dataset.bad.items():
        assert re.search(pattern, reasons[relative]), (relative, reasons[relative])


def test_hostile_warnings_name_the_empty_class_the_loops_and_loose_files(hostile_dataset):
    warnings = ingest(hostile_dataset.root).warnings
    assert "class 'empty_class' has no usable images and is left out" in warnings
    assert any(w.startswith("did not follow cats/loop_to_self again") for w in warnings)
    assert any(w.startswith("did not follow dogs/loop_to_root again") for w in warnings)
    assert any("ignored 1 image file(s) directly in" in w and "'loose.jpg'" in w for w in warnings)
    assert len(warnings) == 4


def test_path_and_folder_of(hostile_dataset):
    dataset = ingest(hostile_dataset.root)
    index = [r for r, _ in dataset.records].index("日本/写真.png")
    assert dataset.path(index) == hostile_dataset.root / "日本" / "写真.png"
    assert dataset.folder_of(index) is None


def test_validate_reports_progress(image_tree):
    calls = []
    validate(ingest(image_tree({"a": 2, "b": 3})), progress=lambda done, total: calls.append(
        (done, total)))
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_ingest_is_deterministic_and_independent_of_creation_order(tmp_path, image_tree):
    first = ingest(image_tree({"b": 3, "a": 4}, root=tmp_path / "one"))
    second = ingest(image_tree({"a": 4, "b": 3}, root=tmp_path / "two"))
    assert first.classes == second.classes == ["a", "b"]
    assert first.records == second.records


def test_exclude_moves_records_to_skipped_and_drops_emptied_classes(image_tree):
    dataset = ingest(image_tree({"a": 1, "b": 2, "c": 2}))
    reduced = exclude(dataset, {"a/img000.png": "bad pixels", "b/img001.png": "unreadable"})
    assert reduced.classes == ["b", "c"]
    assert reduced.records == [("b/img000.png", 0), ("c/img000.png", 1), ("c/img001.png", 1)]
    assert reduced.skipped == [("a/img000.png", "bad pixels"), ("b/img001.png", "unreadable")]
    assert "class 'a' has no usable images and is left out" in reduced.warnings
    assert dataset.classes == ["a", "b", "c"]                    # the input is not modified


@pytest.mark.parametrize("counts, found", [
    ({"only": 3}, r"found 1 class with images \('only'\)"),
    ({}, r"found no class folder with images"),
    ({"a": 2, "empty": 0}, r"found 1 class with images \('a'\)"),
])
def test_fewer_than_two_classes_is_a_data_error(tmp_path, image_tree, counts, found):
    root = image_tree(counts)
    root.mkdir(exist_ok=True)
    (root / "empty").mkdir(exist_ok=True)
    with pytest.raises(DataError, match=found + r" in .*; at least 2 classes are needed") as info:
        ingest(root)
    assert "DATA/cats" in info.value.hint


def test_validate_raises_when_bad_files_leave_one_class(image_tree):
    root = image_tree({"a": 2, "b": 1})
    (root / "b" / "img000.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"found 1 class with images \('a'\)"):
        validate(ingest(root))


def test_missing_folder_or_a_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"the data folder .*nope does not exist"):
        ingest(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match=r"the data folder .*file.txt is not a folder"):
        ingest(tmp_path / "file.txt")


def test_explicit_split_folders(tmp_path, image_tree):
    root = tmp_path / "data"
    image_tree({"cat": 3, "dog": 2}, root=root / "train")
    image_tree({"cat": 1, "dog": 1, "bird": 1}, root=root / "test")
    image_tree({"x": 1}, root=root / "extra")
    dataset = ingest(root)
    assert dataset.layout == "splits" and dataset.split_folders == ("train", "test")
    assert dataset.classes == ["bird", "cat", "dog"]
    assert {dataset.folder_of(i) for i in range(len(dataset.records))} == {"train", "test"}
    assert ("test/bird/img000.png", 0) in dataset.records
    assert ("train/cat/img002.png", 1) in dataset.records
    assert any("ignored the folders ['extra']" in w for w in dataset.warnings)


def test_a_class_named_train_without_test_or_val_is_just_a_class(image_tree):
    dataset = ingest(image_tree({"train": 2, "bus": 2, "car": 2}))
    assert dataset.layout == "classes" and dataset.classes == ["bus", "car", "train"]


def test_symlinked_class_folder_outside_data_is_followed(tmp_path, image_tree):
    elsewhere = image_tree({"dogs": 2}, root=tmp_path / "elsewhere")
    root = image_tree({"cats": 2}, root=tmp_path / "data")
    os.symlink(elsewhere / "dogs", root / "dogs")
    dataset = ingest(root)
    assert dataset.classes == ["cats", "dogs"]
    assert ("dogs/img001.png", 1) in dataset.records
    assert dataset.warnings == []


def test_undecodable_file_name_is_skipped_with_a_reason(image_tree):
    root = image_tree({"a": 2, "b": 2})
    try:
        with open(os.path.join(os.fsencode(root / "a"), b"bad\xffname.png"), "wb") as handle:
            handle.write(b"x")
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    dataset = ingest(root)
    assert len(dataset.records) == 4
    assert dataset.skipped == [("a/bad\ufffdname.png",
                                "the file name is not valid UTF-8; rename the file")]


def test_copied_dataset_gives_the_same_records(tmp_path, hostile_dataset):
    copy = tmp_path / "copy"
    shutil.copytree(hostile_dataset.root, copy, symlinks=True)
    assert ingest(copy).records == ingest(hostile_dataset.root).records


# -- issue 21: odd trees are read, never fatal, and a file is one file ---------------------
def test_a_link_to_itself_is_skipped_with_its_reason(image_tree):
    """`loop.png -> loop.png` stopped fit: "Too many levels of symbolic links", exit 2."""
    root = image_tree({"a": 2, "b": 2})
    os.symlink("loop.png", root / "a" / "loop.png")
    os.symlink("notes", root / "a" / "notes")            # not a candidate: not listed
    dataset = ingest(root)
    assert dataset.skipped == [("a/loop.png", "cannot read it: Too many levels of symbolic links")]
    assert len(dataset.records) == 4


def test_a_class_folder_linked_into_another_is_not_read_as_that_class(image_tree):
    """`bag/more -> ../coat` trained coat's images as "bag" too, without a word."""
    root = image_tree({"bag": 2, "coat": 3})
    os.symlink("../coat", root / "bag" / "more")
    dataset = ingest(root)
    assert [(relative, dataset.classes[label]) for relative, label in dataset.records] == [
        ("bag/img000.png", "bag"), ("bag/img001.png", "bag"), ("coat/img000.png", "coat"),
        ("coat/img001.png", "coat"), ("coat/img002.png", "coat")]
    assert dataset.warnings == ["did not follow bag/more: it leads to the class folder 'coat', "
                                "whose images are not 'bag'"]


def test_a_file_reached_twice_is_used_once_or_refused_where_labels_disagree(image_tree):
    root = image_tree({"bag": 2, "coat": 2})
    os.link(root / "bag" / "img000.png", root / "bag" / "same.png")       # one class: once
    os.symlink("../coat/img001.png", root / "bag" / "jacket.png")         # two classes: none
    os.mkdir(root / "coat" / "sub")
    os.symlink("../img000.png", root / "coat" / "sub" / "again.png")
    dataset = ingest(root)
    assert [relative for relative, _ in dataset.records] == ["bag/img000.png", "bag/img001.png",
                                                              "coat/img000.png"]
    assert sorted(dataset.skipped) == [
        ("bag/jacket.png", "the same file is in the classes ['bag', 'coat'] (links); its label "
                           "is ambiguous"),
        ("bag/same.png", "the same file as bag/img000.png (a link); used once"),
        ("coat/img001.png", "the same file is in the classes ['bag', 'coat'] (links); its "
                            "label is ambiguous"),
        ("coat/sub/again.png", "the same file as coat/img000.png (a link); used once")]


@pytest.fixture
def deep_tree(image_tree):
    """DATA whose class a holds one image 1,100 folders down. Removed by renaming each level
    beside DATA first: shutil.rmtree (pytest's clean-up of old tmp folders too) recurses once
    per level and would fail on it, for every later pytest run of this user."""
    root = image_tree({"a": 1, "b": 1})
    deep = root / "a"
    try:
        for _ in range(1100):                  # os.makedirs would recurse too deep itself
            deep = deep / "d"
            deep.mkdir()
        shutil.copy(root / "b" / "img000.png", deep / "x.png")
        yield root
    finally:
        level = root / "a"
        for number in itertools.count():
            if not (level / "d").is_dir():
                break
            os.rename(level / "d", root.parent / f"level{number}")
            level = root.parent / f"level{number}"


def test_folders_nested_1100_deep_are_read(deep_tree):
    """They were "unexpected RecursionError", exit 1."""
    dataset = ingest(deep_tree)
    assert len(dataset.records) == 3 and dataset.skipped == []
    assert dataset.records[0][0] == "a/" + "d/" * 1100 + "x.png"
