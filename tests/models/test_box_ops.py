"""Box geometry: a hand-computed IoU, edge cases of IoU, and k-means anchors on synthetic clusters."""

import warnings

import numpy as np
import pytest

from models.box_ops import box_area, iou_matrix, kmeans_anchors, mean_best_iou, wh_iou

CLUSTER_CENTRES = np.array([[10.0, 15.0], [40.0, 30.0], [120.0, 90.0]])


def synthetic_wh(per_cluster: int = 200) -> np.ndarray:
    """Box shapes scattered by about 5% around three well-separated centres."""
    rng = np.random.default_rng(0)
    scatter = rng.normal(1.0, 0.05, size=(len(CLUSTER_CENTRES), per_cluster, 2))
    return (CLUSTER_CENTRES[:, None, :] * scatter).reshape(-1, 2)


def test_box_area_is_zero_for_degenerate_boxes():
    boxes = np.array([[1, 1, 3, 4], [2, 2, 2, 5], [3, 3, 1, 1]], dtype=float)
    np.testing.assert_allclose(box_area(boxes), [6.0, 0.0, 0.0])


def test_overlapping_squares_have_iou_one_seventh():
    # 2x2 squares overlapping in a 1x1 corner: 1 / (4 + 4 - 1), with no "+1" pixel convention.
    a, b = np.array([[1.0, 1.0, 3.0, 3.0]]), np.array([[2.0, 2.0, 4.0, 4.0]])
    assert iou_matrix(a, b)[0, 0] == pytest.approx(1 / 7)


def test_identical_and_disjoint_boxes():
    boxes = np.array([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 7.0]])
    np.testing.assert_allclose(iou_matrix(boxes, boxes), [[1.0, 0.0], [0.0, 1.0]])


def test_iou_matrix_shape_and_symmetry():
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 50, size=(7, 2))
    a = np.concatenate([corners, corners + rng.uniform(1, 20, size=(7, 2))], axis=1)
    b = a[:4] + 3.0
    ious = iou_matrix(a, b)
    assert ious.shape == (7, 4)
    np.testing.assert_allclose(ious, iou_matrix(b, a).T)


def test_zero_area_boxes_give_zero_without_nan_or_warnings():
    point = np.array([[2.0, 2.0, 2.0, 2.0]])
    line = np.array([[0.0, 1.0, 4.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(iou_matrix(np.concatenate([point, line]), np.concatenate([point, line])), 0.0)


def test_wh_iou_hand_values():
    ious = wh_iou(np.array([[2.0, 2.0]]), np.array([[2.0, 2.0], [1.0, 4.0], [4.0, 4.0]]))
    # (1,4) overlaps (2,2) in 1x2 = 2, union 4 + 4 - 2 = 6; (4,4) contains it: 4 / 16.
    np.testing.assert_allclose(ious, [[1.0, 1 / 3, 0.25]])


def test_kmeans_recovers_cluster_centres():
    anchors = kmeans_anchors(synthetic_wh(), 3, seed=0)
    np.testing.assert_allclose(anchors, CLUSTER_CENTRES, rtol=0.03)


def test_kmeans_is_deterministic_and_sorted_by_area():
    wh = synthetic_wh()
    first = kmeans_anchors(wh, 5, seed=3)
    np.testing.assert_array_equal(first, kmeans_anchors(wh, 5, seed=3))
    areas = first.prod(axis=1)
    assert np.all(np.diff(areas) >= 0)


def test_more_anchors_fit_better():
    wh = synthetic_wh()
    fits = [mean_best_iou(wh, kmeans_anchors(wh, k)) for k in (1, 2, 3)]
    assert fits[0] < fits[1] < fits[2]
    assert fits[2] > 0.9


@pytest.mark.parametrize("k", [0, -1])
def test_kmeans_rejects_non_positive_k(k):
    with pytest.raises(ValueError, match="at least 1"):
        kmeans_anchors(synthetic_wh(), k)


def test_kmeans_rejects_fewer_distinct_shapes_than_anchors():
    wh = np.array([[10.0, 10.0], [10.0, 10.0], [20.0, 5.0]])
    with pytest.raises(ValueError, match="2 distinct"):
        kmeans_anchors(wh, 3)
    assert kmeans_anchors(wh, 2).shape == (2, 2)


@pytest.mark.parametrize("wh", [np.zeros((3, 3)), np.array([[0.0, 5.0], [3.0, 4.0]]), np.array([[np.nan, 1.0]])])
def test_kmeans_rejects_malformed_shapes(wh):
    with pytest.raises(ValueError):
        kmeans_anchors(wh, 1)
