"""Where one generated token's time goes: llama.cpp's decode graph timed node by node.

The bandwidth roofline says how fast decoding could be if every weight streamed
at the machine's read bandwidth. This profile says why it is not: llama.cpp
calls back after each node of the decode graph (its `cb_eval` hook), each
node's time is charged to what it reads, and each group of weight matrices
gets its own effective bandwidth (weight bytes / time). A group far below the
measured read bandwidth is bound by its kernel, not by memory.

Groups: the output projection (the vocabulary matrix), the attention and FFN
weight matrices of the blocks, attention over the KV cache, and every other op
(norms, RoPE, softmax, copies). Observing each node costs a dispatch of its own,
so the profiled token is slower than a plain one; both times are reported, and
the shares are of the profiled time.

    python -m tidings.bench.decode_profile --model gemma3-270m-q4_k_m --threads 2
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import time
from collections import defaultdict
from pathlib import Path

OUTPUT = "output projection"
ATTENTION_WEIGHTS = "attention weights"
FFN_WEIGHTS = "FFN weights"
KV_ATTENTION = "attention over the KV cache"
OTHER = "other ops"
GROUPS = (OUTPUT, FFN_WEIGHTS, ATTENTION_WEIGHTS, KV_ATTENTION, OTHER)


class _GgmlTensor(ctypes.Structure):
    """The head of ggml.h's `struct ggml_tensor`, as far as the name (GGML_MAX_DIMS 4, MAX_SRC 10)."""

    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64)]


def _ggml():
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    for fn, argtype in (("ggml_nbytes", ctypes.c_void_p), ("ggml_op_name", ctypes.c_int),
                        ("ggml_type_name", ctypes.c_int)):
        getattr(lib, fn).argtypes = [argtype]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_type_name.restype = ctypes.c_char_p
    return lib


def group_of(op: str, weight: str | None) -> str:
    """The group a graph node's time is charged to, from its op and the weight it multiplies (if any)."""
    if op == "MUL_MAT" and weight:
        if not weight.startswith("blk."):
            return OUTPUT  # output.weight, or token_embd.weight when the embeddings are tied
        return ATTENTION_WEIGHTS if ".attn_" in weight else FFN_WEIGHTS
    return KV_ATTENTION if op in ("MUL_MAT", "SOFT_MAX", "FLASH_ATTN_EXT") else OTHER


def profile_decode(model_path: Path, threads: int, tokens: int = 24, context: int = 128) -> dict:
    """Decode `tokens` tokens after a `context`-token prompt, once plainly and once node by node."""
    import llama_cpp
    from tidings.device.llm.beam import decode_batch

    ggml = _ggml()
    spent: dict[str, float] = defaultdict(float)
    weight_bytes: dict[str, int] = defaultdict(int)
    weight_types: dict[str, set[str]] = defaultdict(set)
    clock = {"last": 0.0, "on": False}

    def observe(tensor_ptr, ask, _user_data):
        if ask:
            return True  # observe every node: each is then computed (and timed) on its own
        if clock["on"]:
            now = time.perf_counter()
            node = _GgmlTensor.from_address(tensor_ptr)
            op = ggml.ggml_op_name(node.op).decode()
            weight = None
            if op == "MUL_MAT":  # a GET_ROWS on the embeddings reads one row, not the matrix
                src = _GgmlTensor.from_address(node.src[0])
                if src.name.endswith(b".weight"):
                    weight = src.name.decode()
            group = group_of(op, weight)
            spent[group] += now - clock["last"]
            if weight:
                weight_bytes[group] += ggml.ggml_nbytes(node.src[0])
                weight_types[group].add(ggml.ggml_type_name(src.type).decode())
        clock["last"] = time.perf_counter()
        return True

    callback = llama_cpp.ggml_backend_sched_eval_callback(observe)
    llama_cpp.llama_backend_init()
    model_params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), model_params)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {model_path}")
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    # Token ids do not change a decode's cost; any in-vocabulary ids will do.
    prompt = [(1000 + 7 * i) % n_vocab for i in range(context)]

    def decode_tokens(observed: bool) -> float:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch = context + tokens + 8, context
        params.n_threads = params.n_threads_batch = threads
        if observed:
            params.cb_eval = callback
        ctx = llama_cpp.llama_init_from_model(model, params)
        try:
            decode_batch(ctx, [(i, 0, i == context - 1) for i in range(context)], tokens=prompt)
            started = time.perf_counter()
            for step in range(tokens):
                clock["on"], clock["last"] = observed, time.perf_counter()
                decode_batch(ctx, [(context + step, 0, True)], tokens=[prompt[step]])
                clock["on"] = False
            return (time.perf_counter() - started) / tokens
        finally:
            llama_cpp.llama_free(ctx)

    try:
        plain = decode_tokens(observed=False)
        decode_tokens(observed=True)
    finally:
        llama_cpp.llama_model_free(model)
    profiled = sum(spent.values()) / tokens
    groups = {}
    for group in GROUPS:
        seconds = spent[group] / tokens
        entry = {"ms_per_token": seconds * 1e3, "share": seconds / profiled}
        if weight_bytes[group]:
            mb = weight_bytes[group] / tokens / 1e6
            entry |= {"weight_mb_per_token": mb, "weight_gb_s": mb / 1e3 / seconds,
                      "weight_types": sorted(weight_types[group])}
        groups[group] = entry
    return {"threads": threads, "tokens": tokens, "context": context, "plain_ms_per_token": plain * 1e3,
            "profiled_ms_per_token": profiled * 1e3, "groups": groups}


def summary_line(profile: dict, bandwidth_gbs: float | None = None) -> str:
    """One line per group: share of the token, and for weights, the GB/s they streamed at."""
    parts = []
    for group, entry in profile["groups"].items():
        text = f"{group} {entry['share']:.0%}"
        if "weight_gb_s" in entry:
            text += f" ({', '.join(entry['weight_types'])}, {entry['weight_gb_s']:.1f} GB/s"
            text += f" = {entry['weight_gb_s'] / bandwidth_gbs:.2f} of read bandwidth)" if bandwidth_gbs else ")"
        parts.append(text)
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    from tidings.device.config import Config
    from tidings.models.registry import DEFAULT_MODEL, resolve_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="manifest name or GGUF path (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="decode threads (default: the cores available, %(default)s)")
    parser.add_argument("--tokens", type=int, default=24, help="generated tokens to time (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")
    args = parser.parse_args(argv)
    profile = profile_decode(resolve_model(args.model, Config().model.cache_dir).path, args.threads, args.tokens)
    if args.json:
        print(json.dumps(profile))
        return 0
    print(f"{args.model}, {args.threads} threads: {profile['plain_ms_per_token']:.1f} ms per token "
          f"({profile['profiled_ms_per_token']:.1f} ms observed node by node)")
    for group, entry in profile["groups"].items():
        rate = (f"  {entry['weight_mb_per_token']:6.1f} MB at {entry['weight_gb_s']:5.1f} GB/s "
                f"({', '.join(entry['weight_types'])})") if "weight_gb_s" in entry else ""
        print(f"  {group:<28} {entry['ms_per_token']:6.2f} ms {entry['share']:5.0%}{rate}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
