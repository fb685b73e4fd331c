"""The detection benchmark: its NumPy baseline detects like the exported graph, and its CLI."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import common, detection
from benchmarks.detection import (
    BOX_TOLERANCE,
    SCORE_TOLERANCE,
    NumpyDetector,
    decode_grid,
    decode_png,
    encode_png,
    graph_detector,
    letterbox,
    main,
    measure,
    plot,
    report_text,
)
from models import detection_graph
from models.detector import build_yolo
from pipelines.data.scene_data import make_digit_scenes
from pipelines.detector import DetectorGraph

CLASS_NAMES = [str(digit) for digit in range(10)]
# Boxes of 2-6 cells a side: neighbouring cells' boxes of one class overlap, so NMS has something to drop.
ANCHORS = np.array([[16.0, 18.0], [28.0, 32.0], [44.0, 48.0]], np.float32)
# (score threshold, IoU threshold, max detections): hundreds of candidates cut down to max_detections, and
# about a hundred per image of which NMS keeps half, below max_detections.
SETTINGS = [(0.05, 0.3, 20), (0.5, 0.5, 100)]


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_yolo(
        input_shape=(128, 128, 1), num_classes=len(CLASS_NAMES), num_anchors=len(ANCHORS), base_filters=4
    )
    # Fresh weights give logits near 0 (plus whatever objectness prior build_yolo starts from), so every
    # score is alike. Sharpened, the logits spread out (scores from ~0 to ~1), and an objectness bias of 2
    # puts dozens of boxes per image above 0.5, overlapping ones of the same class among them.
    head = model.get_layer("predictions")
    kernel, bias = head.get_weights()
    bias = np.zeros_like(bias)
    bias[4 :: 5 + len(CLASS_NAMES)] = 2.0  # the objectness logit of each anchor
    head.set_weights([3.0 * kernel, bias])
    return model


@pytest.fixture(scope="module")
def pictures() -> list[np.ndarray]:
    scenes = [scene.image for scene in make_digit_scenes(0, 0, 3, seed=0).test]
    wide = np.concatenate(scenes[:2], axis=1)  # 128×256: shrunk to 64×128, padded above and below
    small = scenes[2][:96, :80]  # 96×80: enlarged to 128×107, padded left and right
    return [*scenes, wide, small]


@pytest.fixture(scope="module")
def images(pictures) -> list[bytes]:
    return [encode_png(picture) for picture in pictures]


def exported_like(model: keras.Model, max_detections: int) -> DetectorGraph:
    return DetectorGraph(model, CLASS_NAMES, ANCHORS, max_detections=max_detections)


@pytest.mark.parametrize(("score_threshold", "iou_threshold", "max_detections"), SETTINGS)
def test_numpy_baseline_detects_like_the_graph(model, images, score_threshold, iou_threshold, max_detections):
    thresholds = {"score_threshold": score_threshold, "iou_threshold": iou_threshold}
    # One call on a batch of mixed sizes: square scenes (letterboxing is the identity) and two that are not.
    graph = exported_like(model, max_detections)  # kept referenced: its tf.functions hold it weakly
    expected = graph_detector(graph.detect_image_bytes)(images, **thresholds)
    found = NumpyDetector(model, ANCHORS, max_detections=max_detections)(images, **thresholds)
    assert len(found) == len(images)
    for graph_side, numpy_side in zip(expected, found):
        np.testing.assert_array_equal(numpy_side.classes, graph_side.classes)
        np.testing.assert_allclose(numpy_side.boxes, graph_side.boxes, atol=BOX_TOLERANCE, rtol=0)
        np.testing.assert_allclose(numpy_side.scores, graph_side.scores, atol=SCORE_TOLERANCE, rtol=0)
    assert detection.compare(expected, found)["agreement"] == 1.0


@pytest.mark.parametrize(("score_threshold", "iou_threshold", "max_detections"), SETTINGS)
def test_nms_has_work_to_do(model, images, score_threshold, iou_threshold, max_detections):
    """Guards the test above: every image has several detections, and far more candidates pass the score
    threshold than are kept, so suppression (and, at the low threshold, the max_detections cut) decides the answer."""
    detector = NumpyDetector(model, ANCHORS, max_detections=max_detections)
    canvases = np.stack([letterbox(decode_png(data, 1), 128, 128).canvas for data in images])
    _, scores = decode_grid(model.predict(canvases, verbose=0), ANCHORS, image_size=(128, 128))
    candidates = (scores > score_threshold).sum(axis=(1, 2))
    kept = [
        len(found.scores) for found in detector(images, score_threshold=score_threshold, iou_threshold=iou_threshold)
    ]
    assert min(kept) > 1
    assert candidates.sum() > 1.5 * sum(kept)
    if max_detections < 100:
        assert max(kept) == max_detections
    else:
        assert max(kept) < max_detections


def test_letterbox_matches_the_graph(pictures):
    for picture in pictures:
        pixels = picture.astype(np.float32)
        canvas, scale, offset = (
            part.numpy()[0] for part in detection_graph.letterbox(tf.constant(pixels[np.newaxis]), 128, 128)
        )
        fitted = letterbox(pixels, 128, 128)
        np.testing.assert_array_equal(fitted.scale, scale)
        np.testing.assert_array_equal(fitted.offset, offset)
        # Pillow weighs in double precision, TF's resize in float32: equal to a few thousandths of a gray level.
        np.testing.assert_allclose(fitted.canvas, canvas, atol=5e-3, rtol=0)
        assert fitted.original_size == picture.shape[:2]


@pytest.mark.benchmark  # measures: make test-benchmarks
def test_measure_report_and_plot(model, images, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "MIN_TIMED_SECONDS", 0.0)  # one pass is enough to check the bookkeeping
    exported = exported_like(model, 20)  # kept referenced: its tf.functions hold it weakly
    graph = graph_detector(exported.detect_image_bytes)
    baseline = NumpyDetector(model, ANCHORS, max_detections=20)
    rows = [
        measure(graph, baseline, images, batch_size=batch_size, score_threshold=0.3, iou_threshold=0.5, repeats=1)
        for batch_size in (1, 4)
    ]
    assert [row["agreement"] for row in rows] == [1.0, 1.0]
    assert all(row["ratio"] > 0 and row["detections_per_image"] > 0 for row in rows)
    assert all(abs(sum(row["numpy"]["stage_shares"].values()) - 1.0) < 1e-9 for row in rows)
    json.dumps(rows)
    text = report_text(rows)
    assert (
        "ratio graph / numpy:" in text and "detections agree on both sides (within 0.001 px, 0.0001 score): yes" in text
    )
    plot(rows, tmp_path / "detection.png")
    assert (tmp_path / "detection.png").stat().st_size > 0


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "python -m benchmarks.detection" in usage
    for option in (
        "--run-dir",
        "--artifact",
        "--batch-sizes",
        "--score-thresholds",
        "--iou-threshold",
        "--images",
        "--image-size",
        "--repeats",
        "--train-if-missing",
        "--out",
    ):
        assert option in usage


def test_cli_without_a_model_says_how_to_train_one(tmp_path, capsys):
    assert (
        main(
            [
                "--run-dir",
                str(tmp_path / "run"),
                "--artifact",
                str(tmp_path / "artifacts"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "--train-if-missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.benchmark
def test_cli_trains_a_tiny_model_and_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(common, "MIN_TIMED_SECONDS", 0.0)
    monkeypatch.setattr(
        detection,
        "SMALL_MODEL",
        {"train_size": 48, "dev_size": 8, "test_size": 8, "base_filters": 4, "residual_blocks": 0},
    )
    monkeypatch.setattr(detection, "SMALL_TRAINING", {"epochs": 1, "batch_size": 16, "patience": 0})
    run_dir, artifact, out = tmp_path / "run", tmp_path / "artifacts" / "detector", tmp_path / "out"
    argv = [
        "--run-dir",
        str(run_dir),
        "--artifact",
        str(artifact),
        "--batch-sizes",
        "1",
        "3",
        "--images",
        "3",
        "--repeats",
        "1",
        "--image-size",
        "96",
        "160",
        "--out",
        str(out),
    ]
    assert main([*argv, "--train-if-missing"]) == 0
    printed = capsys.readouterr().out
    assert (run_dir / "model.keras").is_file() and (artifact / "1" / "saved_model.pb").is_file()
    assert "ratio graph / numpy:" in printed
    results = json.loads((out / "detection.json").read_text())
    assert [(row["score_threshold"], row["batch_size"]) for row in results["results"]] == [
        (0.6, 1),
        (0.6, 3),
        (0.01, 1),
        (0.01, 3),
    ]
    assert all(row["agreement"] == 1.0 for row in results["results"])
    assert (out / "detection.png").stat().st_size > 0
    # Found this time: measured again, neither retrained nor exported again.
    assert main([*argv, "--train-if-missing", "--score-thresholds", "0.3"]) == 0
    assert "trained and exported" not in capsys.readouterr().out and not (artifact / "2").exists()
