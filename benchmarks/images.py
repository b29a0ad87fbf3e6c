"""Images on Fashion-MNIST: pretrained features, a learned latent space, outliers and text-to-image.

Data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (see benchmarks/datasets.py). To fit two
CPU cores, a seeded, class-balanced subset: 2,000 training and 500 test images for the EfficientNet
features (which upscale every 28 × 28 image to 224 × 224), 10,000 training images for the autoencoder.

Reported side by side:

- 10-NN classification accuracy (test images by their 10 nearest training images, cosine) of raw
  pixels, EfficientNet-Lite0 features and the variational autoencoder's 16-d latents;
- the autoencoder's reconstruction error (MSE per pixel on test images);
- images encoded per second by each encoder;
- outlier ROC-AUC with one class ("Bag") held out of training and planted among the test images: the
  kNN scorer on each representation, and the autoencoder's reconstruction error;
- text-to-image precision@10 through ``align`` (captions: class names) on the held-out test images.

Pictures: an interpolation strip and a grid of samples from the autoencoder, in benchmarks/results/.

    python -m benchmarks.images

Writes benchmarks/results/images.json and the README table between the bench:images markers.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.datasets import fashion_mnist

N_TRAIN, N_TEST, N_AE_TRAIN = 2_000, 500, 10_000
ANOMALY_CLASS = 8  # Bag
SEED = 0


def balanced(labels: np.ndarray, n: int, seed: int, exclude: int | None = None) -> np.ndarray:
    """Indices of a seeded, class-balanced subset of size n (optionally without one class)."""
    rng = np.random.default_rng(seed)
    classes = [c for c in range(10) if c != exclude]
    per = n // len(classes)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in classes]))


def knn_accuracy(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray) -> float:
    """10-NN majority vote accuracy with cosine similarity (FAISS, exact)."""
    import faiss

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    _, idx = faiss.knn(unit(test), unit(train), 10, metric=faiss.METRIC_INNER_PRODUCT)
    votes = np.array([np.bincount(train_labels[row], minlength=10).argmax() for row in idx])
    return float((votes == test_labels).mean())


def outlier_auc(train: np.ndarray, test: np.ndarray, is_anomaly: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    from latentsearch.analysis.outliers import KNNScorer

    return float(roc_auc_score(is_anomaly, KNNScorer(10).fit(train).score_samples(test)))


def main() -> None:
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from latentsearch.encoders import get_encoder
    from latentsearch.encoders.align import train_alignment
    from latentsearch.encoders.autoencoder import (
        AutoencoderConfig,
        AutoencoderEncoder,
        save_autoencoder,
        save_grid,
        save_strip,
        train_autoencoder,
    )

    data = fashion_mnist()
    classes = data["classes"]
    train_idx = balanced(data["train_labels"], N_TRAIN, SEED)
    test_idx = balanced(data["test_labels"], N_TEST, SEED)
    train_images, train_labels = data["train_images"][train_idx], data["train_labels"][train_idx].astype(int)
    test_images, test_labels = data["test_images"][test_idx], data["test_labels"][test_idx].astype(int)
    results: dict = {"subset": {"train": N_TRAIN, "test": N_TEST, "autoencoder_train": N_AE_TRAIN}}
    print(f"Fashion-MNIST subset: {N_TRAIN} train, {N_TEST} test")

    # Raw pixels.
    pixels_train = train_images.reshape(len(train_images), -1).astype(np.float32) / 255
    pixels_test = test_images.reshape(len(test_images), -1).astype(np.float32) / 255

    # EfficientNet-Lite0 features.
    efficientnet = get_encoder("efficientnet-lite0")
    to_pil = [Image.fromarray(im).convert("RGB") for im in np.concatenate([train_images, test_images])]
    efficientnet.encode(to_pil[:4])  # load the model before timing
    start = time.perf_counter()
    features = np.concatenate([efficientnet.encode(to_pil[i : i + 32]) for i in range(0, len(to_pil), 32)])
    effnet_rate = len(to_pil) / (time.perf_counter() - start)
    effnet_train, effnet_test = features[:N_TRAIN], features[N_TRAIN:]
    print(f"  EfficientNet-Lite0: {effnet_rate:.1f} images/s")

    # The variational autoencoder, trained without the anomaly class (so it can flag it).
    config = AutoencoderConfig(image_size=28 + 4, channels=1, latent_dim=16, variational=True)
    ae_idx = balanced(data["train_labels"], N_AE_TRAIN, SEED + 1, exclude=ANOMALY_CLASS)
    ae_pil = [Image.fromarray(im) for im in data["train_images"][ae_idx]]
    from latentsearch.encoders.autoencoder import images_to_array

    ae_train = images_to_array(ae_pil, config)
    start = time.perf_counter()
    model, losses = train_autoencoder(
        ae_train,
        config,
        epochs=15,
        seed=SEED,
        progress=lambda e, n, loss: print(f"\r  VAE epoch {e}/{n} loss {loss:.4f}", end=""),
    )
    train_seconds = time.perf_counter() - start
    print()
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_autoencoder(model, config, Path(tmp) / "vae", losses=losses)
        ae = AutoencoderEncoder(folder)
        test_pil = [Image.fromarray(im) for im in test_images]
        train_pil = [Image.fromarray(im) for im in train_images]
        start = time.perf_counter()
        ae_test = ae.encode(test_pil)
        ae_rate = len(test_pil) / (time.perf_counter() - start)
        ae_train_latent = ae.encode(train_pil)
        recon_error = ae.reconstruction_error(test_pil)
        normal_train = train_labels != ANOMALY_CLASS
        is_anomaly = (test_labels == ANOMALY_CLASS).astype(int)
        pictures = report.RESULTS
        pictures.mkdir(parents=True, exist_ok=True)
        a = test_pil[int(np.flatnonzero(test_labels == 7)[0])]  # a sneaker ...
        b = test_pil[int(np.flatnonzero(test_labels == 9)[0])]  # ... to an ankle boot
        save_strip(ae.interpolate(a, b, steps=10), pictures / "images_interpolation.png")
        save_grid(ae.sample(32, seed=SEED), pictures / "images_samples.png", cols=8)

    results["knn_accuracy@10"] = {
        "raw pixels": knn_accuracy(pixels_train, train_labels, pixels_test, test_labels),
        "EfficientNet-Lite0": knn_accuracy(effnet_train, train_labels, effnet_test, test_labels),
        "VAE latents (16-d)": knn_accuracy(ae_train_latent, train_labels, ae_test, test_labels),
    }
    results["images_per_second"] = {"EfficientNet-Lite0": effnet_rate, "VAE encoder": ae_rate}
    results["vae"] = {
        "train_seconds": train_seconds,
        "epochs": len(losses),
        "losses": losses,
        "test_reconstruction_mse": float(recon_error.mean()),
    }
    results["outlier_roc_auc (Bag held out)"] = {
        "raw pixels, kNN": outlier_auc(pixels_train[normal_train], pixels_test, is_anomaly),
        "EfficientNet-Lite0, kNN": outlier_auc(effnet_train[normal_train], effnet_test, is_anomaly),
        "VAE latents, kNN": outlier_auc(ae_train_latent[normal_train], ae_test, is_anomaly),
        "VAE reconstruction error": float(roc_auc_score(is_anomaly, recon_error)),
    }
    # Text to image: align EfficientNet features to MiniLM with class names as captions.
    minilm = get_encoder("minilm")
    captions = [f"a photo of a {c.lower()}" for c in classes]
    caption_vectors = minilm.encode(captions)
    weight, bias, _ = train_alignment(effnet_train, caption_vectors[train_labels], epochs=30, seed=SEED)
    projected = effnet_test @ weight.T + bias
    projected /= np.linalg.norm(projected, axis=1, keepdims=True)
    precision = [
        float(np.mean(test_labels[np.argsort(-(projected @ caption_vectors[c]))[:10]] == c)) for c in range(10)
    ]
    results["text_to_image_precision@10"] = {
        "mean": float(np.mean(precision)),
        "per_class": dict(zip(classes, precision)),
    }
    for key, value in results.items():
        print(f"  {key}: {value if not isinstance(value, dict) else {k: v for k, v in value.items() if k != 'losses'}}")

    path = report.save("images", results)
    acc, auc = results["knn_accuracy@10"], results["outlier_roc_auc (Bag held out)"]
    rate = results["images_per_second"]
    rows = [
        ["raw pixels (784-d)", acc["raw pixels"], auc["raw pixels, kNN"], "", ""],
        [
            "EfficientNet-Lite0 (1280-d)",
            acc["EfficientNet-Lite0"],
            auc["EfficientNet-Lite0, kNN"],
            f"{rate['EfficientNet-Lite0']:.0f}",
            f"{results['text_to_image_precision@10']['mean']:.3f}",
        ],
        ["VAE latents (16-d)", acc["VAE latents (16-d)"], auc["VAE latents, kNN"], f"{rate['VAE encoder']:.0f}", ""],
        ["VAE reconstruction error", "", auc["VAE reconstruction error"], "", ""],
    ]
    table = report.markdown_table(
        ["representation", "10-NN accuracy", "outlier ROC-AUC (Bag held out)", "images / s", "text→image P@10 (align)"],
        rows,
    )
    machine = report.machine()
    note = (
        f"\n\nFashion-MNIST, {N_TRAIN:,} train / {N_TEST} test images (class-balanced, seed {SEED}); VAE trained "
        f"{len(losses)} epochs on {N_AE_TRAIN:,} images without bags in {train_seconds:.0f}s, test reconstruction MSE "
        f"{results['vae']['test_reconstruction_mse']:.4f}. `python -m benchmarks.images`; {machine['cpu_count']} CPU "
        f"cores, {machine['date']}.\n\n"
        "Interpolation from a sneaker to an ankle boot, and samples from the prior:\n\n"
        "![interpolation](benchmarks/results/images_interpolation.png)\n\n"
        "![samples](benchmarks/results/images_samples.png)"
    )
    updated = report.update_readme("images", table + note)
    print(f"saved {path}" + ("; README table updated" if updated else ""))


if __name__ == "__main__":
    main()
