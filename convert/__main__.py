"""Convert official lossy-vae checkpoints to lvae-jax model directories (Orbax) and back.

    python -m convert --torch-ckpt qarv_base-2022-dec-12.pt --out qarv_base_jax
    python -m convert --torch-ckpt qres34m-lmb64.pt            # λ read from the file name
    python -m convert --from-model qarv_base_jax --to-torch qarv_base_roundtrip.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

from lvae_jax.commands import Program, UsageError, arg, group

EPILOG = """\
official checkpoints (PyTorch, {"model": state_dict}), published by the lossy-vae authors at
https://huggingface.co/duanzh0/my-model-weights :
  qres34m           qres34m/qres34m-lmb{16,32,64,128,256,512,1024,2048}.pt
  qres34m_lossless  qres34m/qres34m-lossless.pt
  qres17m           qres17m/qres17m-lmb{1,2,4,8,16,32,64,1024}.pt
  qarv_base         qarv_base-2022-dec-12.pt
  rd_model_base     rd_model_base-200k-feb14-2023.pt
(download URL: https://huggingface.co/duanzh0/my-model-weights/resolve/main/<path>)

The model is detected from the keys and shapes (override with --model). Files are read with
torch.load(weights_only=True); trainer checkpoints with optimizer state are accepted (only
'model' is used). Exit status is non-zero on any problem and nothing is written.
"""


ARGS = (
    group(
        arg("--torch-ckpt", type=Path, help="official PyTorch checkpoint (.pt)"),
        arg("--out", type=Path, help="output model directory (default: <ckpt stem>_jax)"),
        arg("--model", help="official model name; default: detected from keys and shapes"),
        arg("--lmb", type=float,
            help="QRes λ (default: from a '-lmbN' file name, else the official default)"),
        arg("--lmb-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
            help="QARV/rd λ range (default: the official one)"),
        arg("--allow-nonfinite", action="store_true",
            help="convert weights that hold NaN/Inf (refused by default)"),
        title="official .pt -> lvae-jax"),
    group(
        arg("--from-model", "--from-orbax", dest="from_model", type=Path,
            help="lvae-jax model directory (--from-orbax: its former name)"),
        arg("--to-torch", type=Path,
            help="output .pt ({'model': state_dict}, loads with strict=True)"),
        title="lvae-jax -> official .pt"),
    arg("--overwrite", action="store_true",
        help="replace an existing output (a model directory only, never the input)"),
)


def run(args) -> int:
    """Convert in the direction the arguments name."""
    from lvae_jax.checkpoint.torch_io import (ConversionError, convert_model_to_torch,
                                              convert_torch_to_model)
    if args.torch_ckpt is not None:
        if args.from_model or args.to_torch:
            raise UsageError("use either --torch-ckpt or --from-model/--to-torch")
        out = args.out or Path(args.torch_ckpt.stem + "_jax")
        inside = Path(args.torch_ckpt).resolve().is_relative_to(Path(out).resolve())
        if inside and Path(out).exists():
            raise ConversionError(f"--out {out} holds the input {args.torch_ckpt}: refusing to "
                                  "replace it")
        res = convert_torch_to_model(args.torch_ckpt, out, model=args.model, lmb=args.lmb,
                                     lmb_range=args.lmb_range, overwrite=args.overwrite,
                                     allow_nonfinite=args.allow_nonfinite)
        print(f"detected model: {res.config.name} {res.config.args}")
        for n in res.notes:
            print(f"note: {n}")
        print(f"wrote {res.out_dir}")
    elif args.from_model is not None:
        if args.to_torch is None:
            raise UsageError("--from-model needs --to-torch OUT.pt")
        if Path(args.to_torch).resolve().is_relative_to(Path(args.from_model).resolve()):
            raise ConversionError(f"--to-torch {args.to_torch} is inside the input "
                                  f"{args.from_model}")
        print(f"wrote {convert_model_to_torch(args.from_model, args.to_torch, overwrite=args.overwrite)}")
    else:
        raise UsageError("nothing to do: give --torch-ckpt X.pt or --from-model DIR --to-torch OUT.pt")
    return 0


PROGRAM = Program("python -m convert", __doc__.splitlines()[0], ARGS, run, epilog=EPILOG)


def main(argv=None) -> int:
    return PROGRAM.main(argv)


if __name__ == "__main__":
    sys.exit(main())
