"""The description (``rdf.yaml``) and the documentation of a bioimage.io model package, as plain data.

Written by our own code (a dict dumped with PyYAML), so export needs no bioimage.io library;
``bioimageio.spec`` checks the result when it is installed (the tests always do). The format is
the model spec 0.5: a (batch, channel, y, x) input scaled by the model card's percentiles
(``scale_range``), a (batch, channel, y, x) output of background / interior / boundary
probabilities with a halo, ``pytorch_state_dict`` weights whose architecture source travels in
the package, and ``torchscript`` weights. The instance step (seeded watershed) cannot be said in
the spec: the documentation describes it, and ``config.napari_unet`` keeps the whole model card
(post-processing parameters, object scale, lineage) so that napari-unet's import restores the
model exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from napari_unet.models.model_file import FORMAT_NAME, FORMAT_VERSION, Model, ModelFileError

__all__ = [
    "CHANNEL_NAMES",
    "CITATIONS",
    "CONFIG_KEY",
    "FORMAT_VERSION_SPEC",
    "HALO",
    "INPUT_ID",
    "OUTPUT_ID",
    "PACKAGE_VERSION",
    "PackageError",
    "PackageFiles",
    "describe",
    "documentation",
    "input_min_size",
    "render_card",
]

FORMAT_VERSION_SPEC = "0.5.4"  # the model spec version written (bioimageio.spec 0.5.x reads it)
CONFIG_KEY = "napari_unet"  # rdf config.napari_unet: what our import reads back
PACKAGE_VERSION = 1  # of our config.napari_unet entry; import refuses newer ones
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
CHANNEL_NAMES = ("background", "interior", "boundary")
HALO = 32  # px cut from each side of an output tile: the engine's default overlap (64) halved

CITATIONS = (
    {
        "text": "Ronneberger, Fischer and Brox. U-Net: Convolutional Networks for Biomedical Image "
        "Segmentation. MICCAI 2015 (the network)",
        "doi": "10.1007/978-3-319-24574-4_28",
    },
    {
        "text": "Caicedo et al. Nucleus segmentation across imaging experiments: the 2018 Data Science "
        "Bowl. Nature Methods 16, 1247-1253 (2019); image set BBBC038 (the bundled model's training "
        "data)",
        "doi": "10.1038/s41592-019-0612-7",
    },
)
AUTHORS = ({"name": "napari-unet developers"},)
LICENSE = "BSD-3-Clause"  # the plugin's licence; the bundled model's training data is CC0


class PackageError(ModelFileError):
    """A model the package format cannot hold, or a package napari-unet cannot import; one line."""


@dataclass(frozen=True)
class PackageFiles:
    """The files of a package by role: name inside the zip -> sha256 (hex), plus the test shape.

    ``state_dict``, ``torchscript``, ``architecture``, ``test_input``, ``test_output``,
    ``sample_input``, ``sample_output`` (the same tensors as TIFF, for people and viewers),
    ``cover`` and ``documentation`` are file names inside the package; ``sha256`` maps each to
    its digest, which the description records so a reader can check the bytes.
    """

    state_dict: str
    torchscript: str
    architecture: str
    architecture_callable: str
    test_input: str
    test_output: str
    sample_input: str
    sample_output: str
    cover: str
    documentation: str
    sha256: dict[str, str]
    pytorch_version: str


def input_min_size(model: Model) -> int:
    """The smallest input side the package allows: a multiple of ``2**depth`` over twice the halo.

    Smaller tiles would be all halo; every side must be a multiple of ``2**depth`` for the
    'same'-padded U-Net to give an output as large as its input.
    """
    multiple = 2**model.config.depth
    return multiple * (math.floor(2 * HALO / multiple) + 1)


def _plain(value: Any) -> Any:
    """A JSON round trip: tuples become lists and nothing YAML cannot hold survives unnoticed."""
    return json.loads(json.dumps(value))


def _tags(model: Model) -> list[str]:
    tags = ["unet", "2d", "pytorch", "napari-unet", "segmentation", "instance-segmentation"]
    text = f"{model.name} {model.card.get('description', '')}".lower()
    if "nucle" in text:
        tags += ["nuclei", "fluorescence-light-microscopy"]
    return tags


def _lineage(card: dict[str, Any]) -> list[str]:
    """The parents of a model, nearest first (a fine-tuned card nests its parent's parent)."""
    names = []
    parent = card.get("parent")
    while isinstance(parent, dict) and len(names) < 50:
        names.append(str(parent.get("name", "unnamed")))
        parent = parent.get("parent")
    return names


def _axes_in(model: Model) -> list[dict[str, Any]]:
    size = {"min": input_min_size(model), "step": 2**model.config.depth}
    channels = (
        ["image"]
        if model.config.in_channels == 1
        else [f"channel{i}" for i in range(model.config.in_channels)]
    )
    return [
        {"type": "batch"},
        {"type": "channel", "channel_names": channels},
        {"type": "space", "id": "y", "size": dict(size)},
        {"type": "space", "id": "x", "size": dict(size)},
    ]


def _axes_out(model: Model) -> list[dict[str, Any]]:
    n = model.config.out_channels
    channels = list(CHANNEL_NAMES) if n == len(CHANNEL_NAMES) else [f"class{i}" for i in range(n)]
    return [
        {"type": "batch"},
        {"type": "channel", "channel_names": channels},
        *(
            {"type": "space", "id": a, "size": {"tensor_id": INPUT_ID, "axis_id": a}, "halo": HALO}
            for a in ("y", "x")
        ),
    ]


def _file(files: PackageFiles, name: str) -> dict[str, str]:
    return {"source": name, "sha256": files.sha256[name]}


def describe(
    model: Model, files: PackageFiles, *, authors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """The package's description (the content of ``rdf.yaml``), spec 0.5.

    Parameters
    ----------
    model : Model
        The model exported; its card goes whole into ``config.napari_unet``.
    files : PackageFiles
        The files written beside the description, with their digests.
    authors : list of dict, optional
        bioimage.io authors (``{"name": ...}``); None: the napari-unet developers.

    Returns
    -------
    dict
        Plain data (str, numbers, lists, dicts) for ``yaml.safe_dump``.
    """
    low, high = model.normalization
    card = _plain(model.card)
    lineage = _lineage(card)
    post = card.get("postprocess") or {}
    description = str(card.get("description") or f"napari-unet model {model.name}")
    if lineage:
        description += f" (fine-tuned from {' <- '.join(lineage)})"
    pytorch = {"pytorch_version": files.pytorch_version}
    rdf: dict[str, Any] = {
        "format_version": FORMAT_VERSION_SPEC,
        "type": "model",
        "name": f"napari-unet {model.name}",
        "description": description[:1000],
        "authors": list(authors or AUTHORS),
        "cite": [dict(c) for c in CITATIONS],
        "license": LICENSE,
        "tags": _tags(model),
        "documentation": files.documentation,
        "covers": [files.cover],
        "inputs": [
            {
                "id": INPUT_ID,
                "description": "the image, one plane (z-stacks and time-lapses plane by plane)",
                "axes": _axes_in(model),
                "test_tensor": _file(files, files.test_input),
                "sample_tensor": _file(files, files.sample_input),
                "data": {"type": "float32"},
                "preprocessing": [
                    {
                        "id": "scale_range",
                        "kwargs": {"axes": ["y", "x"], "min_percentile": low, "max_percentile": high},
                    }
                ],
            }
        ],
        "outputs": [
            {
                "id": OUTPUT_ID,
                "description": "softmax class probabilities: background, object interior, object boundary "
                "(instances: see the documentation's seeded watershed)",
                "axes": _axes_out(model),
                "test_tensor": _file(files, files.test_output),
                "sample_tensor": _file(files, files.sample_output),
                "data": {"type": "float32", "range": [0.0, 1.0]},
            }
        ],
        "weights": {
            "pytorch_state_dict": {
                **_file(files, files.state_dict),
                "architecture": {
                    **_file(files, files.architecture),
                    "callable": files.architecture_callable,
                    "kwargs": asdict(model.config),
                },
                **pytorch,
                "comment": "napari-unet's U-Net with batch norm and a softmax head (the source file)",
            },
            "torchscript": {
                **_file(files, files.torchscript),
                **pytorch,
                "parent": "pytorch_state_dict",
                "comment": "traced from the state dict weights with batch norm folded into the convolutions",
            },
        },
        "config": {
            CONFIG_KEY: {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "package_version": PACKAGE_VERSION,
                "unet": asdict(model.config),
                "card": card,
                "postprocess": post,
                "normalization": {"method": "percentile", "low": low, "high": high},
                "lineage": lineage,
            },
            "bioimageio": {
                "architecture_type": "U-Net",
                "architecture_description": "U-Net (Ronneberger et al. 2015) with batch norm and 'same' "
                f"padding: base {model.config.base}, depth {model.config.depth}",
                "modality": "fluorescence microscopy" if "nuclei" in _tags(model) else None,
                "target_structure": ["nuclei"] if "nuclei" in _tags(model) else [],
                "task": "instance segmentation (probabilities; instances by seeded watershed)",
                "model_parameter_count": int(sum(p.numel() for p in model.net.parameters())),
            },
        },
    }
    if card.get("created"):
        rdf["timestamp"] = str(card["created"])
    rdf["config"]["bioimageio"] = {
        k: v for k, v in rdf["config"]["bioimageio"].items() if v not in (None, [])
    }
    return rdf


def render_card(card: dict[str, Any]) -> str:
    """A model card dict as Markdown: the headline facts, then the whole card as YAML-like JSON.

    Fine-tuned models have no hand-written card; this gives them a readable one.
    """
    lines = [f"# Model card: `{card.get('name', 'unnamed')}`", ""]
    if card.get("description"):
        lines += [str(card["description"]), ""]
    facts = [
        ("created", card.get("created")),
        ("object diameter (px)", card.get("object_diameter")),
        ("working zoom", card.get("working_zoom")),
        ("normalisation", card.get("normalization")),
        ("post-processing", card.get("postprocess")),
    ]
    lines += [f"- **{k}**: {json.dumps(v) if isinstance(v, dict) else v}" for k, v in facts if v is not None]
    metrics = card.get("metrics") or {}
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |" for k, v in metrics.items()
        ]
    lineage = _lineage(card)
    if lineage:
        lines += ["", "## Lineage", "", f"{card.get('name', 'this model')} <- " + " <- ".join(lineage)]
    lines += ["", "## The whole card", "", "```json", json.dumps(_plain(card), indent=2), "```", ""]
    return "\n".join(lines)


def _validation(card: dict[str, Any]) -> list[str]:
    """The README's Validation section: the scores the card records and how they were measured."""
    metrics = {k: v for k, v in (card.get("metrics") or {}).items() if isinstance(v, (int, float))}
    lines = ["## Validation", ""]
    if metrics:
        lines += [
            "Scores recorded in the model card (F1 at IoU 0.5 of the instances after the seeded watershed):"
        ]
        lines += ["", "| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in metrics.items()), ""]
    else:
        lines += ["The model card records no scores.", ""]
    if card.get("parent"):
        lines += [
            "A fine-tuned model is scored on the part of the user's annotation held back from training "
            "(`heldout_f1_before` / `heldout_f1_after`: its parent's score and its own).",
            "",
        ]
    lines += [
        "The test input (`test_input.npy`, a synthetic widefield nuclei image made by napari-unet) and "
        "`test_output.npy` (napari-unet's own probabilities for it, float32) let any tool check that it "
        "runs the model as napari-unet does: `bioimageio test THIS.zip`.",
        "",
    ]
    return lines


def documentation(model: Model, bundled_card_text: str | None) -> str:
    """The package's README: what goes in and out, how to get instances, where it runs, the card.

    ``bundled_card_text``: the hand-written model card of the bundled model (for it or for a
    model fine-tuned from it), or None.
    """
    low, high = model.normalization
    post = model.card.get("postprocess") or {}
    diameter = model.card.get("object_diameter")
    zoom = model.card.get("working_zoom")
    multiple = 2**model.config.depth
    scale = (
        f"Objects should be about {diameter} px wide, as in its training images"
        if diameter
        else "Objects should have the size they had in its training images"
    )
    if zoom and float(zoom) != 1.0:
        scale += (
            f"; napari-unet resizes images by {zoom} before the network (the scale this model was "
            "fine-tuned at), so resize your images by that factor before using the package elsewhere"
        )
    text = [
        f"# napari-unet model `{model.name}` (bioimage.io package)",
        "",
        str(model.card.get("description") or ""),
        "",
        "## Input and output",
        "",
        f"- **Input** `{INPUT_ID}`: one image plane, axes (batch, channel, y, x), {model.config.in_channels} "
        f"channel(s); sides multiples of {multiple}, at least {input_min_size(model)} px. Each image is "
        f"scaled so that its intensity percentiles {low:g} and {high:g} become 0 and 1 (`scale_range`).",
        f"- **Output** `{OUTPUT_ID}`: softmax probabilities of background / interior / boundary, as large "
        f"as the input. Tiles should overlap: drop {HALO} px on each side of a tile (the halo).",
        f"- {scale}.",
        "",
        "## From probabilities to objects",
        "",
        "The instance step is not part of the network. napari-unet does it with a seeded watershed: "
        f"foreground = interior + boundary > {post.get('threshold', 0.5)}; seeds = connected regions of "
        f"interior > {post.get('seed_threshold', 0.5)} (at least {post.get('min_seed_size', 4)} px)"
        + (
            f", each cut where it narrows by {post['split_depth']} px or more between two wider cores "
            "(h-maxima of its smoothed distance map)"
            if post.get("split_depth")
            else ""
        )
        + "; each seed grows over its foreground region by a watershed on the interior probability; "
        f"objects below {post.get('min_size', 15)} px are dropped. "
        "The parameters are in `config.napari_unet.postprocess`.",
        "",
        "## Use it elsewhere",
        "",
        "- **Fiji / deepImageJ**, **QuPath** (deep java library): install the package (the `.zip`); they run "
        "the `torchscript` weights. Threshold the interior channel, or use the probabilities as they are.",
        "- **ilastik** (neural network workflow) and **bioimageio.core** (`bioimageio predict`, "
        "`bioimageio test`) run the `pytorch_state_dict` weights with the architecture source inside.",
        f"- Tools that tile (bioimageio.core's `predict`, deepImageJ) mirror-pad the image by the {HALO} px "
        "halo before normalising it; napari-unet does not, so probabilities near the image border can "
        "differ (the test output is napari-unet's; `bioimageio test` reproduces it without padding).",
        "- **napari-unet**: `napari-unet models import THIS.zip` restores the model exactly (weights, "
        "post-processing, object scale, lineage).",
        "",
    ]
    text += _validation(model.card)
    lineage = _lineage(model.card)
    if lineage:
        text += [
            "## Lineage",
            "",
            f"`{model.name}` was fine-tuned from " + " <- ".join(f"`{n}`" for n in lineage),
        ]
        text += [""]
        text += [render_card(model.card)]
        if bundled_card_text:
            text += ["", "## The card of the model it started from", "", bundled_card_text]
    elif bundled_card_text:
        text += [bundled_card_text]
    else:
        text += [render_card(model.card)]
    text += ["", "## Citations", ""]
    text += [f"- {c['text']}. doi:{c['doi']}" for c in CITATIONS]
    return "\n".join(text).rstrip() + "\n"
