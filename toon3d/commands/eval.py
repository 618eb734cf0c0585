"""`toon3d eval`: the paper's Tables I and II on toon3d's worlds (docs/eval.md).

    toon3d eval style --n 256 --out DIR [--style cartoon toon|FILE ...] [--ablation-nostruct STYLE=FILE]
                      [--perceptual auto|vgg|dlib] [--ckpt base|FILE --data synface|DIR]
    toon3d eval shape --n N --out DIR [--world synface|toon|both] [--rows prior,instant,...]
                      [--preset cpu|tiny|paper] [--images render|generator] [--mask auto|layout|parser]

`style` writes DIR/table.md, table.json and sheet.png all at once (atomically). `shape` writes
every image's arrays and scores as it goes (a rerun with the same settings continues; see
`toon3d.io.eval_store`), then DIR/table.md, table.json and DIR/<world>/sheet.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

WORLD_CHOICES = ("synface", "toon", "both")
# The built-in reconstructor (toon3d/weights/shape_<name>) and style of each ground-truth world.
WORLD_RECONSTRUCTOR = {"synface": "base", "toon": "toon"}
NOSTRUCT_MISSING = {"toon": "no toon fine-tune without the structure loss exists (only cartoon's was trained); "
                            "pass --ablation-nostruct toon=FILE to fill the row"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toon3d eval style` and `toon3d eval shape`."""
    parser = subparsers.add_parser("eval", help="the paper's Tables I (style) and II (3D accuracy) on toon3d's worlds",
                                   description="Evaluate styles (Table I) or 3D reconstruction (Table II).")
    sub = parser.add_subparsers(dest="eval_command", metavar="TABLE")
    _register_style(sub)
    _register_shape(sub)

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 1

    parser.set_defaults(func=usage)


def _register_style(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("style", help="Table I: FD-dlib vs human data and instance similarity per style",
                       description="Table I: for each style, FD-dlib of its images against the human data and the "
                                   "perceptual distance between cartoon and human image of the same w; rows full "
                                   "(blended), w/o structure loss, w/o model interpolation.")
    p.add_argument("--n", type=int, default=256, help="seeds 0..n-1 per row, and n data images (default 256)")
    p.add_argument("--out", required=True, help="output folder (new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a folder a previous toon3d run wrote")
    p.add_argument("--ckpt", default="base", help="the human generator: base (default) or a checkpoint (550000.pt)")
    p.add_argument("--style", nargs="+", default=["cartoon", "toon"], metavar="STYLE",
                   help="styles: cartoon, toon or fine-tuned generator files (default: cartoon toon)")
    p.add_argument("--ablation-nostruct", action="append", default=[], metavar="[STYLE=]FILE",
                   help="the style's fine-tune without the structure loss (the w/o structure loss row); "
                        "STYLE= may be left out with one --style")
    p.add_argument("--blend-resolution", type=int, default=None,
                   help="resolution of the blend (default: the style file's, else 16)")
    p.add_argument("--blend-mode", choices=["swap", "inject"], default=None,
                   help="model interpolation: swap (Pinkney layer swapping, the paper) or inject (the seed code's "
                        "feature injection); default: the style file's, else swap")
    p.add_argument("--data", default=None,
                   help="human data: synface (renders at the generator size; the default for the built-in base) "
                        "or a toon3d dataset folder (e.g. FFHQ for --ckpt 550000.pt)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data sample and split halves (default 0)")
    p.add_argument("--views", choices=["auto", "anchored", "plain"], default="auto",
                   help="--data synface: render SynFace's anchored or plain views; auto (default): the views --ckpt "
                        "was trained on")
    p.add_argument("--perceptual", choices=["auto", "vgg", "dlib"], default="auto",
                   help="instance distance: vgg = LPIPS-VGG (needs VGG16), dlib = the offline substitute; "
                        "auto = vgg when VGG16 is found, else dlib")
    p.add_argument("--vgg16", default=None, help="torchvision VGG16 weights (vgg16-397923af.pth)")
    p.add_argument("--lpips-vgg", default=None, help="LPIPS v0.1 vgg.pth heads (default: from the lpips package)")
    p.add_argument("--descriptor", choices=["port", "dlib"], default="port",
                   help="FD-dlib descriptor: port (toon3d's PyTorch port, default) or dlib (C++, slower)")
    p.add_argument("--noise", choices=["random", "const", "none"], default="random", help="noise maps (default random)")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_style)


def _register_shape(sub: argparse._SubParsersAction) -> None:
    from toon3d.metrics.shape_rows import SHAPE_ROWS

    p = sub.add_parser("shape", help="Table II: SIDE and MAD of each 3D method on ground-truth worlds",
                       description="Table II: SIDE (x10^-2) and MAD (degrees) of the ellipsoid prior, the instant "
                                   "reconstructor and the GAN2Shape cycles (released, w/o L_id, w/o L_sym, full) on "
                                   "the same SynFace / toon test images. Resumable: rerun to continue.")
    p.add_argument("--n", type=int, default=32, help="test images 0..n-1 per world (default 32)")
    p.add_argument("--out", required=True, help="output folder (new, empty, or a previous run's to continue)")
    p.add_argument("--world", choices=WORLD_CHOICES, default="both", help="synface, toon or both (default)")
    p.add_argument("--rows", default=None, help=f"comma-separated rows (default all: {','.join(SHAPE_ROWS)})")
    p.add_argument("--preset", choices=["cpu", "tiny", "paper"], default="cpu",
                   help="reconstruction preset of the GAN rows (and image size of every row); default cpu")
    p.add_argument("--images", choices=["render", "generator"], default="render",
                   help="input images: the world's renders (exact ground truth, default) or the generator's G(w)")
    p.add_argument("--views", choices=["auto", "anchored", "plain"], default="auto",
                   help="render SynFace's anchored views (eyes and mouth at fixed pixels under pose) or plain ones; "
                        "auto (default): the views --ckpt was trained on, so that G(w) draws the test image")
    p.add_argument("--mask", choices=["auto", "layout", "parser"], default="auto",
                   help="face mask for the prior and the cycles: the built-in SynFace parser, the fixed layout "
                        "ellipse, or auto (parser when shipped)")
    p.add_argument("--ckpt", default="base", help="the synface world's generator, a SynFace decoder (default base)")
    p.add_argument("--toon-style", default="toon", help="the toon world's style, blended with --ckpt (default toon)")
    p.add_argument("--reconstructor", action="append", default=[], metavar="WORLD=FILE",
                   help="pretrained reconstructor of a world (default: the built-in shape_base / shape_toon)")
    p.add_argument("--start", choices=["auto", "pretrained", "prior"], default="auto",
                   help="what the GAN rows start from: the pretrained reconstructor or the fitted ellipsoid prior "
                        "(auto: pretrained when there is one)")
    p.add_argument("--vgg16", default=None, help="VGG16 weights for the paper preset's perceptual loss")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one reconstruction setting of the preset (repeatable), e.g. --set lam_smooth=0.1 "
                        "--set stage0_steps=(100,20,60); names: toon3d.shape.settings.ReconstructionSettings")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="also show each reconstruction's step progress")
    p.set_defaults(func=run_shape)


def parse_overrides(items: list[str]) -> dict:
    """['lam_smooth=0.1', 'stage0_steps=(100,20,60)'] → {'lam_smooth': 0.1, 'stage0_steps': (100, 20, 60)}."""
    import ast

    from toon3d.errors import Toon3dError

    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise Toon3dError(f"--set {item!r}: write KEY=VALUE, e.g. --set lam_smooth=0.1")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()  # a bare word: a string setting such as prior_schedule=cosine
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


# ---------------------------------------------------------------------------------------------
# eval style


def _pairs(items: list[str], styles: list[str], flag: str) -> dict[str, str]:
    """'STYLE=FILE' items (or one bare FILE when there is one style) → {style: file}; one-line errors."""
    from toon3d.errors import Toon3dError

    out: dict[str, str] = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not eq:
            if len(styles) != 1:
                raise Toon3dError(f"{flag} {item}: with several styles write STYLE=FILE (styles: {', '.join(styles)})")
            name, path = styles[0], item
        if name not in styles:
            raise Toon3dError(f"{flag} {item}: {name!r} is not one of the evaluated styles ({', '.join(styles)})")
        if name in out:
            raise Toon3dError(f"{flag} names {name} twice; give one file per style")
        out[name] = path
    return out


def _style_blend(raw, resolution: int | None, mode: str | None = None):
    from toon3d.models import DEFAULT_STYLE_BLEND
    from toon3d.stylegan2.blend import BlendSettings

    settings = dict(DEFAULT_STYLE_BLEND, **raw.meta.get("blend", {}))
    if resolution is not None:
        settings["swap_resolution"] = resolution
    if mode is not None:
        settings["mode"] = mode
        if mode == "inject":
            settings.update(level=0, width=None)
    return BlendSettings(**settings)


def _style_variants(base, specs: list[str], nostruct: dict[str, str], resolution: int | None, mode: str | None,
                    device):
    from toon3d.metrics.style_eval import StyleVariants
    from toon3d.models import resolve_generator
    from toon3d.stylegan2.blend import blend_loaded

    variants = []
    for spec in specs:
        raw = resolve_generator(spec, blend=False)
        settings = _style_blend(raw, resolution, mode)
        v = StyleVariants(spec)
        v.generators["full"] = blend_loaded(base, raw, settings, base.source, raw.source)
        if spec in nostruct:
            ablation = resolve_generator(nostruct[spec], blend=False)
            v.generators["nostruct"] = blend_loaded(base, ablation, settings, base.source, ablation.source)
        else:
            v.missing["nostruct"] = NOSTRUCT_MISSING.get(
                spec, f"no fine-tune of {spec} without the structure loss given (--ablation-nostruct {spec}=FILE)")
        v.generators["noblend"] = raw
        for g in v.generators.values():
            g.generator.to(device).eval()
        variants.append(v)
    return variants


def _data_images(spec: str, n: int, size: int, seed: int, batch: int, anchored: bool = False):
    import torch

    from toon3d.errors import Toon3dError

    if spec == "synface":
        from toon3d.synth.face_params import SynFaceParams
        from toon3d.synth.synface import SynFaceSettings, render_synface

        params = SynFaceParams.sample(n, seed=seed)
        views = SynFaceSettings(anchor_eyes=anchored)
        images = torch.cat([render_synface(params[i:i + batch], max(size, 64), settings=views)["image"]
                            for i in range(0, n, batch)])
        if images.shape[-1] != size:
            from toon3d.metrics.shape_worlds import area_resize

            images = area_resize(images, size)
        return images.float(), (f"{n} SynFace renders ({'anchored' if anchored else 'plain'} views) at {size} px "
                                f"(data seed {seed})")
    from toon3d.data.dataset import FaceDataset

    data = FaceDataset(spec, size=size, flip=False, load_gt=False)
    if len(data) < n:
        raise Toon3dError(f"{spec} holds {len(data)} images, fewer than --n {n}; pass a smaller --n")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return torch.stack([data[i]["image"] for i in order]).float(), f"{n} images of {spec} at {size} px (seed {seed})"


def run_style(args: argparse.Namespace) -> int:
    """Measure Table I and write table.md, table.json and sheet.png into --out, all or nothing."""
    from toon3d.devices import resolve_device
    from toon3d.errors import Toon3dError
    from toon3d.faces.lpips import lpips_available
    from toon3d.io.atomic import atomic_dir, check_output_dir
    from toon3d.io.eval_store import write_tables
    from toon3d.io.images import save_png
    from toon3d.io.sheet import labelled_sheet
    from toon3d.metrics.style_eval import (StyleEvalSettings, make_descriptor, make_instance_distance,
                                           style_table)
    from toon3d.models import UNTRAINED_SEEDS, resolve_generator

    settings = StyleEvalSettings(n=args.n, batch=args.batch, noise=args.noise, data_seed=args.data_seed).check()
    nostruct = _pairs(args.ablation_nostruct, list(args.style), "--ablation-nostruct")
    if len(set(args.style)) != len(args.style):
        raise Toon3dError("--style names a style twice; list each once")
    data_spec = args.data
    if data_spec is None:
        if args.ckpt not in UNTRAINED_SEEDS and args.ckpt != "default":
            raise Toon3dError(f"--ckpt {args.ckpt} is not the built-in base: pass --data DIR with the human images it "
                              "was trained on (e.g. an FFHQ folder from 'toon3d data prepare')")
        data_spec = "synface"
    check_output_dir(args.out, args.overwrite)
    device = resolve_device(args.device)
    kind = args.perceptual
    if kind == "auto":
        kind = "vgg" if lpips_available(args.vgg16, args.lpips_vgg) else "dlib"
    distance, distance_label = make_instance_distance(kind, args.vgg16, args.lpips_vgg)
    distance.to(device)
    describe = make_descriptor(args.descriptor)

    base = resolve_generator(args.ckpt)
    base.generator.to(device).eval()
    styles = _style_variants(base, list(args.style), nostruct, args.blend_resolution, args.blend_mode, device)
    size = int(base.config["size"])
    anchored = data_spec == "synface" and _anchored_views(args.views, args.ckpt, base.meta)
    data, data_label = _data_images(data_spec, settings.n, size, settings.data_seed, settings.batch, anchored)
    result = style_table(base, styles, data, data_label, _on_cpu(describe), _paired(distance, device),
                         distance_label, settings, progress=not args.no_progress)
    if any(g.meta.get("untrained") for s in styles for g in s.generators.values()) or base.meta.get("untrained"):
        result.table.notes.append("untrained stand-in weights were used: the numbers test the pipeline only")
    sheet_rows = [(label, list(images)) for label, images in result.sheet.items()]
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        write_tables(tmp, result.table.to_markdown(),
                     {"table": result.table.to_json(), "figures": result.figures,
                      "settings": {"n": settings.n, "batch": settings.batch, "noise": settings.noise,
                                   "data": data_label, "data_seed": settings.data_seed, "perceptual": kind,
                                   "descriptor": args.descriptor, "ckpt": base.source,
                                   "styles": {s.name: {k: g.source for k, g in s.generators.items()}
                                              for s in styles}}})
        save_png(labelled_sheet(sheet_rows, [f"seed {i}" for i in range(settings.sheet_count)]), tmp / "sheet.png")
    print(result.table.to_markdown())
    print(f"wrote {Path(args.out) / 'table.md'}, table.json, sheet.png")
    return 0


def _on_cpu(describe):
    def wrapped(images):
        return describe(images.cpu())

    return wrapped


def _paired(distance, device):
    def wrapped(a, b):
        return distance(a.to(device), b.to(device)).cpu()

    return wrapped


# ---------------------------------------------------------------------------------------------
# eval shape


def _worlds(choice: str) -> list[str]:
    return ["synface", "toon"] if choice == "both" else [choice]


def _reconstructor_specs(items: list[str], worlds: list[str]) -> dict[str, str]:
    from toon3d.errors import Toon3dError
    from toon3d.models import WEIGHTS_DIR

    given: dict[str, str] = {}
    for item in items:
        world, eq, path = item.partition("=")
        if not eq or world not in WORLD_RECONSTRUCTOR:
            raise Toon3dError(f"--reconstructor {item}: write WORLD=FILE with WORLD synface or toon")
        given[world] = path
    out = {}
    for world in worlds:
        if world in given:
            out[world] = given[world]
        elif (WEIGHTS_DIR / f"shape_{WORLD_RECONSTRUCTOR[world]}.safetensors").is_file():
            out[world] = WORLD_RECONSTRUCTOR[world]
    return out


def _face_mask_fn(mode: str, device):
    from toon3d.faces.synface_parser import WEIGHTS_NAME
    from toon3d.models import WEIGHTS_DIR

    if mode == "auto":
        mode = "parser" if (WEIGHTS_DIR / f"{WEIGHTS_NAME}.safetensors").is_file() else "layout"
    if mode == "layout":
        return "layout", None
    from toon3d.faces.synface_parser import load_synface_parser

    parser = load_synface_parser().to(device)

    def mask(image):
        return parser.face_mask(image.to(device)).cpu()

    return "parser", mask


def _world_generators(args: argparse.Namespace, worlds: list[str], device) -> dict:
    from toon3d.models import resolve_generator
    from toon3d.stylegan2.blend import blend_loaded

    base = resolve_generator(args.ckpt)
    out = {}
    if "synface" in worlds:
        out["synface"] = base
    if "toon" in worlds:
        raw = resolve_generator(args.toon_style, blend=False)
        out["toon"] = blend_loaded(base, raw, _style_blend(raw, None), base.source, raw.source)
        out["toon"].meta["style"] = args.toon_style
    for loaded in out.values():
        loaded.generator.to(device).eval()
    return out


def _anchored_views(choice: str, ckpt: str, meta: dict | None = None) -> bool:
    """--views → whether to render anchored views; auto reads what the --ckpt decoder (its `meta`) was trained on."""
    if choice != "auto":
        return choice == "anchored"
    from toon3d.train.decoder import trained_on_anchored_views

    if meta is None:
        from toon3d.models import resolve_generator

        meta = resolve_generator(ckpt).meta
    # The toon world blends its style with --ckpt and takes its mapping, so --ckpt decides both worlds.
    return trained_on_anchored_views(meta)


def _discriminator(world: str, args: argparse.Namespace, device):
    from toon3d.models import BUILTIN_STYLES, builtin_discriminator_path
    from toon3d.stylegan2.checkpoints import load_discriminator

    name = "base" if world == "synface" and args.ckpt in ("base", "default") else (
        args.toon_style if world == "toon" and args.toon_style in BUILTIN_STYLES else None)
    if name is None or not builtin_discriminator_path(name).is_file():
        return None, "none (L_dis uses the perceptual substitute)"
    path = builtin_discriminator_path(name)
    return load_discriminator(path).to(device).eval(), str(path.name)


def _fits_settings(nets, geometry, settings, latent_dim: int) -> str:
    """'' when a reconstructor's D, A, V, L have the shapes the preset builds, else what differs."""
    import torch

    from toon3d.shape.instant import shape_state
    from toon3d.shape.networks import ShapeNets

    if geometry.size != settings.image_size:
        return f"{geometry.size} px vs {settings.image_size} px"
    with torch.random.fork_rng(devices=[]):
        wanted = shape_state(ShapeNets(settings.net_config(latent_dim)))
    have = shape_state(nets)
    for key, value in wanted.items():
        if key not in have or tuple(have[key].shape) != tuple(value.shape):
            got = tuple(have[key].shape) if key in have else "missing"
            return f"{key} is {got}, the preset needs {tuple(value.shape)}"
    return ""


def run_shape(args: argparse.Namespace) -> int:
    """Score Table II's rows on the ground-truth worlds image by image, then write the tables and sheets."""
    from toon3d.devices import resolve_device
    from toon3d.errors import Toon3dError
    from toon3d.io.eval_store import ShapeEvalFolder, write_tables
    from toon3d.io.images import save_png
    from toon3d.io.sheet import labelled_sheet
    from toon3d.metrics.shape_eval import ShapePlan, WorldModels, evaluate_shape, shape_sheet
    from toon3d.metrics.shape_rows import GAN_ROWS, GanModels, parse_rows
    from toon3d.metrics.shape_worlds import TEST_SEED_BASE
    from toon3d.shape.settings import preset

    rows = parse_rows(args.rows)
    if args.n < 1:
        raise Toon3dError(f"--n must be at least 1, got {args.n}")
    worlds = _worlds(args.world)
    settings = preset(args.preset, **parse_overrides(args.overrides))
    device = resolve_device(args.device)
    specs = _reconstructor_specs(args.reconstructor, worlds)
    if "instant" in rows:
        for world in worlds:
            if world not in specs:
                raise Toon3dError(f"the instant row needs a pretrained reconstructor for the {world} world and none "
                                  f"is shipped (toon3d/weights/shape_{WORLD_RECONSTRUCTOR[world]}.safetensors); "
                                  f"pass --reconstructor {world}=FILE or leave instant out of --rows")
    if args.start == "pretrained":
        missing = [w for w in worlds if w not in specs]
        if missing:
            raise Toon3dError(f"--start pretrained needs a reconstructor for {', '.join(missing)}; pass "
                              "--reconstructor WORLD=FILE or use --start prior")
    gan_rows = [r for r in rows if r in GAN_ROWS]
    mask_mode, mask_fn = _face_mask_fn(args.mask, device)
    generators = _world_generators(args, worlds, device)
    anchored = _anchored_views(args.views, args.ckpt, generators["synface"].meta if "synface" in generators else None)

    from toon3d.shape.instant import resolve_shape_model, shape_state

    embedder = perceptual = None
    if gan_rows and settings.identity and any(r in ("full", "no_sym") for r in gan_rows):
        from toon3d.faces.identity import load_identity_embedder

        embedder = load_identity_embedder("dlib").to(device).eval()
    if gan_rows and settings.perceptual != "none":
        from toon3d.shape.losses import load_perceptual

        perceptual = load_perceptual(settings.perceptual, args.vgg16 if settings.perceptual == "vgg" else None)
    models: dict[str, WorldModels] = {}
    world_config: dict[str, dict] = {}
    for world in worlds:
        loaded = generators[world]
        instant = None
        nets_init = None
        overrides: dict = {}
        start = "prior"
        if world in specs:
            nets, geometry, shape_meta = resolve_shape_model(specs[world], {"latent_dim": loaded.generator.style_dim,
                                                                            "nf_encoder": settings.nf_encoder},
                                                             device)
            instant = (nets, geometry)
            fits = _fits_settings(nets, geometry, settings, loaded.generator.style_dim)
            if args.start == "pretrained" and gan_rows and fits:
                raise Toon3dError(f"the {world} reconstructor ({specs[world]}) does not fit the {args.preset} "
                                  f"preset's 3D networks ({fits}); pass --start prior or another --preset")
            if args.start != "prior" and gan_rows and not fits:
                nets_init = shape_state(nets)
                if shape_meta.get("encoder_loaded"):  # its pretrained latent encoder (train-shape-encoder)
                    nets_init.update({"encoder." + k: v for k, v in nets.encoder.state_dict().items()})
                    start = "pretrained (with its latent encoder)"
                overrides = {"view_mean": geometry.view_mean, "light_mean": geometry.light_mean}
                start = start if start != "prior" else "pretrained"
        gan = None
        dis_name = ""
        if gan_rows:
            discriminator, dis_name = _discriminator(world, args, device)
            gan = GanModels(loaded.generator, discriminator, embedder, perceptual, nets_init, device, overrides)
        models[world] = WorldModels(loaded, gan, instant, mask_fn)
        world_config[world] = {"generator": loaded.source, "reconstructor": specs.get(world),
                               "gan_start": start if gan_rows else None, "discriminator": dis_name or None,
                               "settings_overrides": {k: list(v) if v is not None else None
                                                      for k, v in overrides.items()}}

    config = {"command": "toon3d eval shape", "preset": args.preset, "settings": settings.as_dict(),
              "images": args.images, "views": "anchored" if anchored else "plain", "mask": mask_mode,
              "test_seed_base": TEST_SEED_BASE, "worlds": world_config}
    folder = ShapeEvalFolder(args.out)
    resumed = folder.open(config)
    if resumed:
        print(f"continuing the evaluation in {args.out}")
    notes = [f"views: {config['views']}; face mask: {mask_mode}; GAN rows' preset {args.preset}, start: "
             + ", ".join(f"{w} {c['gan_start']}" for w, c in world_config.items())]
    if any(loaded.meta.get("untrained") for loaded in generators.values()):
        notes.append("untrained stand-in generators were used: the numbers test the pipeline only")
    plan = ShapePlan(worlds, rows, args.n, settings, args.images, notes, anchored)
    table = evaluate_shape(folder, plan, models, progress=not args.no_progress, inner_progress=args.verbose)
    write_tables(folder.root, table.to_markdown(), {"table": table.to_json(), "config": config, "n": args.n,
                                                    "rows": rows})
    for world in worlds:
        sheet = shape_sheet(folder, plan, world)
        if sheet:
            save_png(labelled_sheet(sheet, [f"image {i}" for i in range(len(sheet[0][1]))]),
                     folder.root / world / "sheet.png")
    print(table.to_markdown())
    print(f"wrote {Path(args.out) / 'table.md'}, table.json and per-image files")
    return 0
