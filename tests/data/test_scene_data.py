import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from pipelines.data import scene_data
from pipelines.data.image_data import load_digits


@pytest.fixture(scope="module")
def source():
    return load_digits(seed=0).train


@pytest.fixture(scope="module")
def scenes(source):
    rng = np.random.default_rng(0)
    return [scene_data.render_scene(rng, source) for _ in range(300)]


def ink_box(mask: np.ndarray) -> list[int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_boxes_are_the_exact_extent_of_each_digits_ink(source):
    rng = np.random.default_rng(1)
    for _ in range(100):
        # No overlap allowed, so each box holds only its own digit's ink.
        scene = scene_data.render_scene(rng, source, plain=True, max_overlap=0.0)
        ink = scene.image[..., 0] > 0
        covered = np.zeros_like(ink)
        for x1, y1, x2, y2 in scene.boxes.astype(int):
            assert ink_box(ink[y1:y2, x1:x2]) == [0, 0, x2 - x1, y2 - y1]
            covered[y1:y2, x1:x2] = True
        assert not (ink & ~covered).any()


def test_scene_shapes_counts_and_sizes(scenes):
    counts = [len(scene.classes) for scene in scenes]
    assert min(counts) == 1 and max(counts) == 6
    for scene in scenes:
        assert scene.image.shape == (128, 128, 1) and scene.image.dtype == np.uint8
        assert scene.boxes.dtype == np.float32 and scene.classes.dtype == np.int32
        assert scene.boxes.shape == (len(scene.classes), 4)
        assert ((scene.classes >= 0) & (scene.classes <= 9)).all()
        assert (scene.boxes >= 0).all() and (scene.boxes <= 128).all()
        heights = scene.boxes[:, 3] - scene.boxes[:, 1]
        widths = scene.boxes[:, 2] - scene.boxes[:, 0]
        assert ((heights >= 12) & (heights <= 48)).all()
        assert ((widths >= 1) & (widths <= 48)).all()


def test_backgrounds_vary_and_have_noise(scenes):
    corners = {int(scene.image[:4, :4].mean()) for scene in scenes[:50]}
    assert len(corners) > 10
    assert any(np.unique(scene.image[:8, :8]).size > 5 for scene in scenes[:10])


def test_overlaps_stay_below_the_limit(scenes):
    overlapping = 0
    for scene in scenes:
        for i in range(len(scene.boxes)):
            for j in range(i):
                value = iou(scene.boxes[i], scene.boxes[j])
                assert value <= 0.3 + 1e-6
                overlapping += value > 0
    assert overlapping > 0  # partial overlaps do happen


def test_same_seed_same_scenes_other_seed_other_scenes():
    first = scene_data.make_digit_scenes(20, 5, 5, seed=3)
    again = scene_data.make_digit_scenes(20, 5, 5, seed=3)
    other = scene_data.make_digit_scenes(20, 5, 5, seed=4)
    for a, b in zip(first.train + first.test, again.train + again.test):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.classes, b.classes)
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(first.train, other.train))


def test_test_scenes_do_not_depend_on_train_size():
    small = scene_data.make_digit_scenes(5, 5, 5, seed=0)
    large = scene_data.make_digit_scenes(30, 5, 5, seed=0)
    for a, b in zip(small.test, large.test):
        np.testing.assert_array_equal(a.image, b.image)


def test_summary():
    summary = scene_data.make_digit_scenes(30, 5, 10, seed=0).summary()
    assert summary["sizes"] == {"train": 30, "dev": 5, "test": 10}
    assert 1 <= summary["boxes_per_image"]["min"] <= summary["boxes_per_image"]["max"] <= 6
    assert summary["box_height"]["min"] >= 12 and summary["box_height"]["max"] <= 48
    assert list(summary["class_counts"]) == [str(digit) for digit in range(10)]
    assert sum(summary["class_counts"].values()) == round(summary["boxes_per_image"]["mean"] * 45)


def write_coco(folder, images):
    (folder / "images").mkdir(parents=True)
    annotations, image_infos = [], []
    for image_id, (name, size, objects) in enumerate(images, start=10):
        Image.new("L", size, 90).save(folder / "images" / name)
        image_infos.append({"id": image_id, "file_name": name, "width": size[0], "height": size[1]})
        for category_id, bbox in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 7, "name": "cat"}, {"id": 3, "name": "bird"}]
    (folder / "annotations.json").write_text(
        json.dumps({"images": image_infos, "annotations": annotations, "categories": categories})
    )


def test_coco_loader_round_trips_boxes_and_labels(tmp_path):
    write_coco(
        tmp_path,
        [
            ("a.png", (40, 30), [(7, [1.5, 2, 10, 20]), (3, [0, 0, 40, 30])]),
            ("b.jpg", (20, 24), [(3, [4, 5, 6, 7])]),
            ("c.png", (16, 16), []),
        ],
    )
    scenes, class_names = scene_data.load_coco(tmp_path / "annotations.json", tmp_path / "images")
    assert class_names == ["bird", "cat"]  # category ids 3, 7 -> 0, 1
    assert [scene.image.shape for scene in scenes] == [(30, 40, 1), (24, 20, 1), (16, 16, 1)]
    np.testing.assert_array_equal(scenes[0].boxes, [[1.5, 2, 11.5, 22], [0, 0, 40, 30]])
    np.testing.assert_array_equal(scenes[0].classes, [1, 0])
    np.testing.assert_array_equal(scenes[1].boxes, [[4, 5, 10, 12]])
    assert scenes[2].boxes.shape == (0, 4) and scenes[2].classes.shape == (0,)
    rgb, _ = scene_data.load_coco(tmp_path / "annotations.json", tmp_path / "images", channels=3)
    assert rgb[0].image.shape == (30, 40, 3)


def write_voc(folder, images):
    (folder / "Annotations").mkdir(parents=True)
    (folder / "JPEGImages").mkdir()
    for name, size, objects in images:
        Image.new("RGB", size, (90, 20, 200)).save(folder / "JPEGImages" / name)
        root = ElementTree.Element("annotation")
        ElementTree.SubElement(root, "filename").text = name
        for label, box in objects:
            item = ElementTree.SubElement(root, "object")
            ElementTree.SubElement(item, "name").text = label
            bndbox = ElementTree.SubElement(item, "bndbox")
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
                ElementTree.SubElement(bndbox, tag).text = str(value)
        ElementTree.ElementTree(root).write(folder / "Annotations" / f"{name.split('.')[0]}.xml")


def test_voc_loader_round_trips_boxes_and_labels(tmp_path):
    write_voc(
        tmp_path,
        [
            ("001.jpg", (50, 40), [("person", (1, 1, 10, 20)), ("dog", (5, 6, 50, 40))]),
            ("002.jpg", (30, 30), [("person", (3, 4, 5, 6))]),
        ],
    )
    scenes, class_names = scene_data.load_voc(tmp_path)
    assert class_names == ["dog", "person"]
    # VOC's 1-based inclusive pixels: xmin=1..xmax=10 are the first ten columns, edges 0..10.
    np.testing.assert_array_equal(scenes[0].boxes, [[0, 0, 10, 20], [4, 5, 50, 40]])
    np.testing.assert_array_equal(scenes[0].classes, [1, 0])
    np.testing.assert_array_equal(scenes[1].boxes, [[2, 3, 5, 6]])
    assert scenes[0].image.shape == (40, 50, 1)
    assert scene_data.load_voc(tmp_path, channels=3)[0][1].image.shape == (30, 30, 3)


def test_load_dataset_specs_split_user_data_deterministically(tmp_path):
    images = [(f"{i}.png", (16, 16), [(3, [i % 8, 0, 4, 4])]) for i in range(20)]
    write_coco(tmp_path / "coco", images)
    data = scene_data.load_dataset(f"coco:{tmp_path / 'coco'}", seed=1)
    again = scene_data.load_dataset(f"coco:{tmp_path / 'coco'}", seed=1)
    assert (len(data.train), len(data.dev), len(data.test)) == (14, 3, 3)
    assert [scene.boxes[0, 0] for scene in data.test] == [scene.boxes[0, 0] for scene in again.test]
    assert data.class_names == ["bird", "cat"]
    write_voc(tmp_path / "voc", [("a.jpg", (8, 8), [("x", (1, 1, 2, 2))])])
    assert scene_data.load_dataset(f"voc:{tmp_path / 'voc'}").class_names == ["x"]
    with pytest.raises(ValueError, match="Unknown detection dataset spec"):
        scene_data.load_dataset("pascal")


def test_tf_dataset_shapes_and_dtypes(scenes):
    dataset = scene_data.as_tf_dataset(scenes[:8])
    assert dataset.element_spec["image"].shape.as_list() == [128, 128, 1]
    for example, scene in zip(dataset.as_numpy_iterator(), scenes[:8]):
        assert example["image"].dtype == np.uint8 and example["boxes"].dtype == np.float32
        assert example["classes"].dtype == np.int32
        np.testing.assert_array_equal(example["boxes"], scene.boxes)
        np.testing.assert_array_equal(example["classes"], scene.classes)
    batch = next(iter(dataset.padded_batch(8, padding_values={"image": np.uint8(0), "boxes": -1.0, "classes": -1})))
    assert batch["boxes"].shape[:2] == (8, max(len(scene.classes) for scene in scenes[:8]))


def test_augment_keeps_boxes_on_the_ink(source):
    rng = np.random.default_rng(5)
    checked = 0
    for index in range(40):
        scene = scene_data.render_scene(rng, source, plain=True, min_digits=1, max_digits=1)
        out = scene_data.augment(scene.image, scene.boxes, scene.classes, seed=[9, index])
        image = out["image"].numpy()
        assert image.shape == scene.image.shape and image.dtype == np.uint8
        # Bilinear resampling smears a faint fringe just past the edge of the ink; it is not ink.
        ink = image[..., 0] > 48
        if len(out["boxes"]) == 0:
            continue  # pushed mostly out of the picture
        checked += 1
        np.testing.assert_allclose(out["boxes"].numpy()[0], ink_box(ink), atol=1.0)
        assert out["classes"].numpy().tolist() == scene.classes.tolist()
    assert checked >= 30


def test_augment_drops_boxes_that_leave_the_image():
    image = np.zeros((64, 64, 1), np.uint8)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    classes = np.array([3, 5], np.int32)
    # No zoom and no shift leaves the boxes alone.
    out = scene_data.augment(image, boxes, classes, seed=[0, 0], scale_range=(1.0, 1.0), max_shift=0.0)
    np.testing.assert_allclose(out["boxes"], boxes)
    out = scene_data.augment(image, boxes, classes, seed=[0, 0], scale_range=(2.0, 2.0), max_shift=0.0)
    # Zoom x2 about the centre (32, 32): box 1 -> [-32, -32, -12, -12] is gone, box 2 -> [8, 8, 48, 48].
    np.testing.assert_allclose(out["boxes"], [[8, 8, 48, 48]])
    assert out["classes"].numpy().tolist() == [5]


def test_augment_is_deterministic_per_seed(scenes):
    scene = scenes[0]
    a = scene_data.augment(scene.image, scene.boxes, scene.classes, seed=[1, 2])
    b = scene_data.augment(scene.image, scene.boxes, scene.classes, seed=[1, 2])
    c = scene_data.augment(scene.image, scene.boxes, scene.classes, seed=[1, 3])
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])


def test_augment_runs_in_tf_data(scenes):
    dataset = scene_data.as_tf_dataset(scenes[:4]).enumerate()
    dataset = dataset.map(lambda i, x: scene_data.augment(x["image"], x["boxes"], x["classes"], seed=tf.stack([7, i])))
    for example in dataset.as_numpy_iterator():
        assert example["image"].shape == (128, 128, 1)
        assert example["boxes"].shape[0] == example["classes"].shape[0]


def test_tfds_builder_prepares_offline_and_reads_back_the_same_scenes(tmp_path):
    config = next(config for config in scene_data.DigitScenes.BUILDER_CONFIGS if config.name == "small")
    expected = scene_data.make_digit_scenes(config.train_size, config.dev_size, config.test_size, seed=config.seed)
    test = list(scene_data.load_tfds("test", data_dir=str(tmp_path), config="small").as_numpy_iterator())
    assert len(test) == len(expected.test)
    for example, scene in zip(test, expected.test):
        np.testing.assert_array_equal(example["image"], scene.image)
        height, width = scene.image.shape[:2]
        ymin, xmin, ymax, xmax = example["objects"]["bbox"].T
        boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=-1)
        np.testing.assert_allclose(boxes, scene.boxes, atol=1e-4)
        np.testing.assert_array_equal(example["objects"]["label"], scene.classes)
    loaded = tfds.load("digit_scenes/small", split="validation", data_dir=str(tmp_path), download=False)
    assert loaded.cardinality().numpy() == config.dev_size


def test_cli_saves_a_contact_sheet(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert scene_data.main(["--samples", "6", "--out", str(out), "--seed", "2"]) == 0
    assert Image.open(out).size[0] > 0
    assert "6 scenes" in capsys.readouterr().out
