"""Commands that train models on a collection: tune-encoder (its text encoder, on its own texts) and
reencode (a collection with another encoder); align (image vectors into a text space),
train-autoencoder, and the autoencoder's pictures (ae-interpolate, ae-sample)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latentsearch.cli.app import (
    HomeOption,
    JsonOption,
    command,
    connect,
    console,
    open_collection,
    print_json,
    progress_bar,
    report_skipped,
)

STAGES = {"base": "measuring the base model", "train": "training", "tuned": "measuring the tuned model"}


@command("tune-encoder")
def tune_encoder(
    name: Annotated[str, typer.Argument(help="A text collection (encoder minilm or st:PATH).")],
    out: Annotated[Path, typer.Option(help="Folder to save the tuned sentence-transformers model in (new).")],
    pairs: Annotated[
        Path | None,
        typer.Option(
            help='Labelled pairs, JSONL: {"query": "text", "id": "item id"} (or "relevant": [ids]) or '
            '{"text_a": "text", "text_b": "text"} a line. Default: pseudo-pairs from the items.'
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="Training steps at most (one pass over the pairs at most).")] = 200,
    batch_size: Annotated[int, typer.Option(help="Pairs a step; the others of a batch are its negatives.")] = 16,
    sample: Annotated[int, typer.Option(help="Pairs used at most (held-out ones included).")] = 2000,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate (after a 10% warm-up).")] = 2e-5,
    holdout: Annotated[float, typer.Option(help="Share of the pairs held out to measure (at least 20).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Random seed (sample, split, batches, training).")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the --out folder if it exists.")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fine-tune the collection's text encoder on the collection's own texts (transfer learning).

    Trains on your --pairs, or on pseudo-pairs (a sentence of an item and the rest of its passage; an
    item's title and its text), holds out a share of them, and measures MRR@10 and recall@10 on the
    held-out pairs before and after. The tuned model is saved in --out (safetensors, with a card) only
    when it ranks them better. The collection is not changed: use `latentsearch reencode NAME --encoder
    st:OUT` to re-encode it with the new model.
    """
    with open_collection(name, home) as col, progress_bar(f"tuning the encoder of {name}", unit="texts") as update:
        shown = [""]

        def follow(stage: str, done: int, total: int, loss: float | None) -> None:
            if STAGES[stage] != shown[0]:
                shown[0] = STAGES[stage]
                update.stage(shown[0])
            if loss is not None:
                update.note = f"loss {loss:.4f}"
            update(done, total)

        report = col.tune_encoder(
            out,
            pairs,
            steps=steps,
            batch_size=batch_size,
            sample=sample,
            learning_rate=learning_rate,
            holdout=holdout,
            seed=seed,
            overwrite=overwrite,
            progress=follow,
        )
    if as_json:
        print_json(report.to_dict())
        return
    b, a = report.before, report.after
    console.print(
        f"{name}: {report.pairs['train']:,} {report.source} pairs, {report.settings['steps']} steps of "
        f"{report.settings['batch_size']} in {report.settings['seconds']:.0f}s; held out {report.pairs['heldout']:,} "
        f"among {report.corpus['items']:,} items: MRR@10 {b['mrr@10']:.4f} -> {a['mrr@10']:.4f}, recall@10 "
        f"{b['recall@10']:.4f} -> {a['recall@10']:.4f}"
    )
    if report.kept:
        console.print(f"{report.message()}; use it: latentsearch reencode {name} --encoder st:{report.out}")
    else:
        console.print(report.message(), style="yellow")


@command()
def reencode(
    name: Annotated[str, typer.Argument(help="A text collection.")],
    encoder: Annotated[str, typer.Option(help="The new encoder: st:PATH (a tune-encoder model, say) or minilm.")],
    into: Annotated[
        str | None, typer.Option(help="A new collection to write (default: re-encode NAME in place, crash-safe).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Re-encode a text collection with another encoder, into a new collection or in place.

    In place, the old vectors serve searches until the new ones are all written; then the manifest names
    the new encoder (a process holding the collection open takes it up at its next call, refused once).
    Ids, texts, metadata and pages are kept."""
    from latentsearch.workflows.reencode import reencode as run

    with progress_bar(f"re-encoding {name}") as update:
        report = run(connect(home), name, encoder, into=into, progress=update)
    console.print(report.message())


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
