import numpy as np
import pytest

from pix2pred.metrics import accuracy, confusion_matrix, per_class_accuracy


def test_confusion_matrix_counts_and_per_class_accuracy():
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(y_true, y_pred, 4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[[0, 0, 1, 1, 2], [0, 1, 1, 0, 2]] = [1, 1, 2, 1, 1]
    np.testing.assert_array_equal(cm, expected)
    pca = per_class_accuracy(cm)
    np.testing.assert_allclose(pca[:3], [0.5, 2 / 3, 1.0])
    assert np.isnan(pca[3])
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)


def test_metric_errors():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="shape"):
        accuracy(np.zeros(3), np.zeros(4))
