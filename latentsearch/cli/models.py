"""Commands that train models on a collection's images: align (image vectors into a text space),
train-autoencoder, and the autoencoder's pictures (ae-interpolate, ae-sample)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latentsearch.cli.app import HomeOption, command, connect, console, open_collection, progress_bar, report_skipped


@command()
def align(
    name: Annotated[str, typer.Argument(help="An image collection (e.g. --encoder efficientnet-lite0).")],
    out: Annotated[Path, typer.Option(help="Folder to save the learned projection in.")],
    into: Annotated[str, typer.Option(help="New collection of the images in the text space (text queries work).")],
    caption_field: Annotated[str, typer.Option(help="Metadata field holding each image's caption.")] = "caption",
    text_encoder: Annotated[str, typer.Option(help="Text encoder whose space the images are mapped into.")] = "minilm",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
    home: HomeOption = None,
) -> None:
    """Learn a projection from image vectors into a text encoder's space from captioned images, so
    text queries search images without a CLIP model."""
    from latentsearch.workflows.align import align_collection

    with open_collection(name, home) as col, progress_bar("training the alignment (epochs)") as update:
        aligned, losses = align_collection(
            col,
            caption_field=caption_field,
            out=out,
            into=into,
            text_encoder=text_encoder,
            epochs=epochs,
            home=connect(home).home,
            progress=lambda epoch, total, loss: update(epoch, total),
        )
    with aligned:
        console.print(
            f"aligned {aligned.count():,} images of {name} into {into} (loss {losses[0]:.3f} -> {losses[-1]:.3f}); "
            f'try: latentsearch search {into} "a caption"'
        )


@command("train-autoencoder")
def train_autoencoder(
    images: Annotated[Path, typer.Argument(help="Folder of images to learn from (recursive).")],
    out: Annotated[Path, typer.Option(help="Folder to save the model in (model.safetensors + config.json).")],
    latent_dim: Annotated[int, typer.Option(help="Size of the latent vectors.")] = 16,
    variational: Annotated[bool, typer.Option("--variational", help="Train a VAE (can sample new images).")] = False,
    epochs: Annotated[int, typer.Option(help="Passes over the images.")] = 20,
    image_size: Annotated[int, typer.Option(help="Images are resized to this square size (multiple of 4).")] = 32,
    rgb: Annotated[bool, typer.Option("--rgb", help="Learn colour images (default: greyscale).")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Train a convolutional autoencoder (or VAE) on your images; use it as encoder ae:OUT."""
    from latentsearch.workflows.autoencoder import load_training_images, train_and_save

    training = load_training_images(
        images, latent_dim=latent_dim, variational=variational, image_size=image_size, rgb=rgb
    )
    report_skipped(training.skipped)
    with progress_bar(f"training on {len(training.kept):,} images (epochs)") as update:
        trained = train_and_save(training, out, epochs=epochs, seed=seed, progress=update)
    console.print(
        f"trained on {trained.images:,} images: loss {trained.losses[0]:.4f} -> {trained.losses[-1]:.4f}; "
        f"saved {trained.folder} ({', '.join(trained.pictures)}); "
        f"use it: latentsearch create NAME --encoder {trained.spec}"
    )
    console.print(trained.verdict(), style=None if trained.beats_baseline else "yellow")


@command("ae-interpolate")
def ae_interpolate(
    model: Annotated[Path, typer.Argument(help="An autoencoder folder (from train-autoencoder).")],
    start: Annotated[Path, typer.Argument(help="First image.")],
    end: Annotated[Path, typer.Argument(help="Last image.")],
    out: Annotated[Path, typer.Option(help="PNG strip to write.")] = Path("interpolation.png"),
    steps: Annotated[int, typer.Option(help="Images in the strip, ends included.")] = 8,
) -> None:
    """Decode evenly spaced points between two images' latents into a strip PNG."""
    from latentsearch.workflows.autoencoder import interpolation_strip

    written = interpolation_strip(model, start, end, out, steps=steps)
    console.print(f"wrote {written}: {steps} steps from {start.name} to {end.name}")


@command("ae-sample")
def ae_sample(
    model: Annotated[Path, typer.Argument(help="An autoencoder folder (best a --variational one).")],
    out: Annotated[Path, typer.Option(help="PNG grid to write.")] = Path("samples.png"),
    n: Annotated[int, typer.Option("-n", help="Number of images.")] = 32,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Decode random latents from the prior N(0, I) into a grid PNG of new images."""
    from latentsearch.workflows.autoencoder import sample_grid

    written = sample_grid(model, out, n=n, seed=seed)
    console.print(f"wrote {written}: {n} samples")
