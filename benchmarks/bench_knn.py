"""k-NN on CIFAR-10 (JPEG): accuracy for k = 1..20, speed and memory against scikit-learn.

For each metric, one exact top-20 search gives the accuracy of every k; scikit-learn's brute
force ``KNeighborsClassifier(n_neighbors=20).kneighbors`` does the same search in the same run
(default ``n_jobs``). The table compares times, whether the two agree (neighbour lists; their
distances, equal where lists differ only in the order of tied neighbours; predictions for k = 1
and k = 10 voted with ``scipy.stats.mode``, scikit-learn's own rule), and the peak resident
memory of the process during each search.

Run from the repository root, one heavy job at a time::

    flock /tmp/p2p-heavy.lock .venv/bin/python benchmarks/bench_knn.py --size both
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from pathlib import Path

import numpy as np
from scipy import stats

from pix2pred.data import load_dataset
from pix2pred.knn import kneighbors, majority_vote

SIZES = {"small": (5_000, 500), "full": (50_000, 10_000)}
K_MAX = 20
AGREE_KS = (1, 10)
SKLEARN_METRIC = {"l1": "manhattan", "l2": "euclidean"}
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "../shared/data/cifar10-jpeg.tar.gz"


class PeakRSS:
    """Peak resident memory of this process while the ``with`` block runs (``peak``, bytes),
    and how far it rose above the start (``growth``).

    Samples ``/proc/self/statm`` every 2 ms from a thread (the kernel's own high-water mark,
    ``ru_maxrss``, cannot be reset between phases).
    """

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> int:
        """Peak minus the resident memory at the start of the block."""
        return self.peak - self.start

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())


def votes_like_sklearn(neighbor_labels: np.ndarray) -> np.ndarray:
    """scikit-learn's uniform vote: ``scipy.stats.mode`` (ties to the smallest label)."""
    return stats.mode(neighbor_labels, axis=1, keepdims=False).mode


def run_size(size: str, root: Path, skip_sklearn_l1: bool) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    n_train, n_test = SIZES[size]
    t0 = time.perf_counter()
    ds = load_dataset("folder", root=root, val_size=0, n_train=n_train, n_test=n_test)
    load_s = time.perf_counter() - t0
    X_train, X_test = ds.X_train, ds.X_test  # uint8 (N, 32, 32, 3)
    y_train, y_test = ds.y_train, ds.y_test
    n_classes = len(ds.classes)
    kneighbors(X_test[:2], X_train[:50], 3, "l1")  # compile or load the cached kernels
    kneighbors(X_test[:2], X_train[:50], 3, "l2")

    acc: dict[str, np.ndarray] = {}
    rows = []
    for metric in ("l1", "l2"):
        with PeakRSS() as mem:
            t = time.perf_counter()
            dist, idx = kneighbors(X_test, X_train, K_MAX, metric)
            ours_s = time.perf_counter() - t
        labels = y_train[idx]  # (n_test, K_MAX)
        acc[metric] = np.array(
            [np.mean(majority_vote(labels[:, :k], n_classes) == y_test) for k in range(1, 21)]
        )
        row = {"metric": metric, "ours_s": ours_s, "ours_mem": mem.peak, "ours_grow": mem.growth}
        if metric == "l1" and skip_sklearn_l1:
            rows.append(row)
            continue
        sk = KNeighborsClassifier(K_MAX, algorithm="brute", metric=SKLEARN_METRIC[metric])
        sk.fit(X_train.reshape(len(X_train), -1), y_train)
        with PeakRSS() as mem:
            t = time.perf_counter()
            sk_dist, sk_idx = sk.kneighbors(X_test.reshape(len(X_test), -1))
            row["sk_s"] = time.perf_counter() - t
        row["sk_mem"], row["sk_grow"] = mem.peak, mem.growth
        row["same_lists"] = np.mean(np.all(idx == sk_idx, axis=1))
        # lists that differ only in the order of equal distances have the same distances
        row["same_dists"] = np.mean(np.all(np.isclose(dist, sk_dist, rtol=1e-12), axis=1))
        sk_labels = y_train[sk_idx]
        for k in AGREE_KS:
            ours_pred = majority_vote(labels[:, :k], n_classes)
            row[f"agree{k}"] = np.mean(ours_pred == votes_like_sklearn(sk_labels[:, :k]))
        rows.append(row)
        del sk, sk_idx, sk_dist

    gib = 2.0**30
    print(
        f"\nCIFAR-10 (JPEG), {len(X_train):,} train / {len(X_test):,} test, "
        f"D = {X_train[0].size}, {os.cpu_count()} CPUs (data loaded in {load_s:.1f} s)"
    )
    print(f"{'k':>4} {'L1 acc':>8} {'L2 acc':>8}")
    for k in range(1, K_MAX + 1):
        print(f"{k:>4} {acc['l1'][k - 1]:>8.2%} {acc['l2'][k - 1]:>8.2%}")
    head = (
        f"{'':>4} {'ours s':>8} {'sklearn s':>10} {'speed-up':>9} {'same top-20':>12} "
        f"{'same dists':>11} "
        + " ".join(f"{'pred k=' + str(k):>10}" for k in AGREE_KS)
        + f" {'peak GiB (growth): ours':>25} {'sklearn':>12}"
    )
    print(head)
    for r in rows:
        if "sk_s" in r:
            sk_cols = (
                f"{r['sk_s']:>10.2f} {r['sk_s'] / r['ours_s']:>8.1f}x {r['same_lists']:>12.2%} "
                f"{r['same_dists']:>11.2%} "
                + " ".join(f"{r[f'agree{k}']:>10.2%}" for k in AGREE_KS)
            )
            sk_mem = f"{r['sk_mem'] / gib:.2f} (+{r['sk_grow'] / gib:.2f})"
        else:
            sk_cols = f"{'skipped':>10} {'':>9} {'':>12} {'':>11} " + " ".join(
                f"{'':>10}" for _ in AGREE_KS
            )
            sk_mem = ""
        ours_mem = f"{r['ours_mem'] / gib:>5.2f} (+{r['ours_grow'] / gib:.2f})"
        print(f"{r['metric'].upper():>4} {r['ours_s']:>8.2f} {sk_cols} {ours_mem:>25} {sk_mem:>12}")
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"process peak RSS so far (ru_maxrss): {max_rss / gib:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["small", "full", "both"], default="small")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="CIFAR-10 JPEG archive")
    parser.add_argument(
        "--skip-sklearn-l1-full",
        action="store_true",
        help="skip scikit-learn's L1 search on the full set (about 8 minutes)",
    )
    args = parser.parse_args()
    for size in ("small", "full") if args.size == "both" else (args.size,):
        run_size(size, args.root, skip_sklearn_l1=args.skip_sklearn_l1_full and size == "full")


if __name__ == "__main__":
    main()
