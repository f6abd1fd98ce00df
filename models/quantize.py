"""Other quantizations of a base model, made with llama.cpp's own quantizer.

The embedded model ships only as Q4_K_M, so the variants are requantized from
it (`allow_requantize`): the same weights, stored again at another precision.
A variant can never be better than the Q4_K_M it came from; what it shows is
the cost of each storage format on this board (size, memory, speed).

    python -m tidings.models.quantize Q8_0 Q4_0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import llama_cpp

from tidings.device.config import Config
from tidings.models.registry import DEFAULT_MODEL, ModelError, ModelFile, resolve_model

FTYPES = {
    "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
}


def requantize(model: ModelFile, ftype: str, out_dir: Path, threads: int = 0) -> Path:
    """`model` stored at `ftype` in `out_dir` (made once; an existing file is reused)."""
    if ftype not in FTYPES:
        raise ModelError(f"unknown quantization {ftype!r}; known: {', '.join(FTYPES)}")
    target = out_dir / f"{model.path.stem}.requant-{ftype}.gguf"
    if target.is_file():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.allow_requantize = True
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(model.path).encode(), str(partial).encode(), params) != 0:
        partial.unlink(missing_ok=True)
        raise ModelError(f"llama.cpp could not quantize {model.path} to {ftype}")
    partial.rename(target)  # atomic: a half-written file never looks finished
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ftypes", nargs="+", choices=list(FTYPES))
    parser.add_argument("--model", default=DEFAULT_MODEL, help="manifest name or GGUF path (default: %(default)s)")
    args = parser.parse_args(argv)
    config = Config()
    model = resolve_model(args.model, config.model.cache_dir)
    for ftype in args.ftypes:
        path = requantize(model, ftype, config.model.cache_dir / "requantized")
        print(f"{ftype}: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
