"""`tidings bench`: how fast, how big and how good Tidings is on this board, per stage.

One command for the engineer deciding whether Tidings fits their board. In one run:

* machine: CPU model, cores, memory, load, and the measured read bandwidth per
  thread count (N threads each summing its share of a 512 MB array, best of five:
  decoding reads weights and writes next to nothing, and on a server CPU one core
  cannot draw the whole memory system's bandwidth, so N threads get their own roofline);
* speed per model variant and thread count: the embedded Q4_K_M, its
  lean-vocabulary variant (models/trim.py; peak RSS of its engine process
  against the full model's too) and variants requantized from it with
  llama.cpp's quantizer (Q8_0, Q4_0), through the
  Tidings engine and through raw llama-cpp-python in alternating processes;
  each generation speed is also divided by the bandwidth roofline (read bandwidth
  at that thread count / bytes read per generated token, taken as the GGUF's size:
  every weight is read once per token, the tied 262k-row output matrix included);
* decode profile per variant: one token's time split by what it reads (output
  projection, FFN and attention weights, KV attention, other ops), and the GB/s
  each group of weights streamed at, which shows where the roofline is lost;
* stages of the whole agent (LLM, task adapter, STT, TTS and VAD loaded in one
  process): ingest, prompt evaluation, generation, validation, TTS to first
  audio, STT, VAD, each p50/p95 over repeats; the agent's peak RSS and the
  memory each component added;
* voice latency through the real voice loop: message arrival to first spoken
  word, end of the wearer's speech to the read-back (tidings.bench.voice_bench);
* quality: ROUGE-L on SAMSum test per variant (full mode: the first N test
  dialogues through the device path; quick mode: the last full SAMSum report
  in bench/results/samsum, if there is one, labelled as such);
* faithfulness on threads written to a wearer (tidings.bench.faithfulness): faithful,
  complete and usable yes/no reply options on the dev suite (full mode: also on our own
  dev threads and the held-out ones), through `tidings summarize --json`.

Board profiles pin the benchmark's processes to a number of cores and cap their
address space (`--profile pi4|pi5|laptop`). Clock speed and memory bandwidth
cannot be emulated: figures for the named board are *projections*, the
measured generation speed scaled by the board's typical bandwidth over the one
measured here (decoding a small model is memory-bound), and are labelled so.

Writes DIR/report.json, DIR/results.md (the README's results table) and DIR/*.png, prints a
summary table; `--readme README.md` also puts the table into the README. report.json:

    date, mode ("quick"|"full"),
    machine {cpu, cores, memory_gb, read_bandwidth_gbs {N threads: GB/s}, bandwidth_gbs (at the most threads),
             load_avg, load_avg_end},
    profile {name, cores, memory_cap_gb, board_bandwidth_gbs | null},
    variants: [{name, file_mb, threads: {N: {engine: {gen_tok_s, prompt_tok_s, ttft_s}, raw: {...},
                generation_ratio_vs_raw, generation_ratio_vs_roofline, roofline_tok_s, engine_peak_rss_mb}}}]
              (p50/p95/n each),
    stages: {ingest_s, prompt_eval_s, generation_s, validation_s, tts_first_audio_s, stt_s, vad_chunk_s}  (p50/p95/n),
    decode_profile: {variant: {threads, plain_ms_per_token, profiled_ms_per_token,
                     groups {output projection | FFN weights | attention weights | attention over the KV cache |
                             other ops: {ms_per_token, share, weight_mb_per_token, weight_gb_s, weight_types}}}}
              (tidings.bench.decode_profile: why a variant is where it is against the roofline),
    memory_mb: {base, llm+adapter, stt, tts, vad, beam search (what an announced summary's beam search adds), peak_rss},
    voice: {first_spoken_word_s, readback_s}  (p50/p95/n),
    quality: {variant: {rouge_l, dialogues, source}},
    faithfulness: {suite: {threads, faithful, complete, faithful_rate, complete_rate, yesno_asked, yesno_usable,
                   injected_claims_stated, untrusted_threads, by_source}},
    projection: {board, gen_tok_s, derivation} | null,
    headline: generation_ratio_vs_raw, generation_ratio_vs_roofline, peak_rss_mb, first_spoken_word_p95_s,
              readback_p95_s, rouge_l, lean_vs_full_decode_ratio, lean_vs_full_rss_ratio, faithful_rate, complete_rate,
              goals {name: {goal, value, met}},
    wall_s (the run's wall time)

    tidings bench --quick --out bench/results/quick    # under 5 minutes on two cores
    tidings bench --out bench/results/full             # everything
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
from tidings.bench.decode_profile import GROUPS, summary_line
from tidings.bench.engine_bench import DIALOGUE, cpu_model, peak_rss_mb, percentiles
from tidings.device.config import Config
from tidings.models.quantize import requantize
from tidings.models.registry import DEFAULT_MODEL, ModelFile, resolve_model
from tqdm import tqdm


@dataclass(frozen=True)
class Profile:
    name: str
    cores: int | None  # None: every core available
    memory_cap_gb: float | None
    board_bandwidth_gbs: float | None  # typical figure for the board (not measured here), for projections


PROFILES = {
    "this-machine": Profile("this-machine", None, None, None),
    # Raspberry Pi 4: 4x Cortex-A72, LPDDR4-3200, about 4 GB/s in practice; 2 GB model.
    "pi4": Profile("pi4", 4, 2.0, 4.0),
    # Raspberry Pi 5: 4x Cortex-A76, LPDDR4X-4267, about 9 GB/s in practice; 4 GB model.
    "pi5": Profile("pi5", 4, 4.0, 9.0),
    # A thin laptop: 4 cores, dual-channel DDR4, about 20 GB/s; 8 GB.
    "laptop": Profile("laptop", 4, 8.0, 20.0),
}
# The lean-vocabulary variant of the embedded model (models/trim.py); its
# quality against the full model is measured by tidings.bench.lean_eval.
LEAN_MODEL = "gemma3-270m-q4_k_m-lean32k"
LEAN_LABEL = "Q4_K_M lean32k"
GOALS = {
    "generation_ratio_vs_raw": (">=", 0.95),
    "generation_ratio_vs_roofline": (">=", 0.7),
    "peak_rss_mb": ("<=", 600),
    "first_spoken_word_p95_s": ("<=", 0.8),
    "readback_p95_s": ("<=", 1.2),
    "lean_vs_full_decode_ratio": (">=", 1.8),
    "lean_vs_full_rss_ratio": ("<=", 0.6),
    # What the wearer hears must be right: the faithfulness dev suite (tidings.bench.faithfulness).
    "faithful_rate": (">=", 0.97),
    "complete_rate": (">=", 0.70),
}


# -- machine ------------------------------------------------------------------------


def read_bandwidth_gbs(threads: int, megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second that `threads` threads read, each summing its share of one array; best of `repeats`.

    numpy releases the GIL while it sums, so the threads run in parallel. The
    size barely matters (256 MB and 1 GB read at the same rate on the CI's Xeon).
    """
    data = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    shares = np.array_split(data, threads)

    def read_all() -> None:
        workers = [threading.Thread(target=np.sum, args=(share,)) for share in shares]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    best = min(_timed(read_all) for _ in range(repeats))
    return data.nbytes / best / 1e9


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def machine_facts() -> dict:
    return {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "load_avg": os.getloadavg()}


def _limit(profile: Profile):
    """preexec_fn for a worker process: pin cores, cap the address space."""
    def apply() -> None:
        if profile.cores:
            available = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, available[: profile.cores])
        if profile.memory_cap_gb:
            cap = int(profile.memory_cap_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return apply


# -- speed: engine vs raw, per variant and thread count ------------------------------------


def _model_argument(model: ModelFile) -> str:
    return model.lean.name if model.lean else str(model.path)  # a lean model needs its manifest entry


def _engine_worker(variant: str, model: ModelFile, threads: int, repeats: int, profile: Profile) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tidings.bench.engine_bench", "--worker", variant, "--model", _model_argument(model),
         "--threads", str(threads), "--repeats", str(repeats)],
        check=True, capture_output=True, text=True, preexec_fn=_limit(profile)).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_speed(models: dict[str, ModelFile], threads: list[int], rounds: int, repeats: int,
                  bandwidth_gbs: dict[int, float], profile: Profile) -> list[dict]:
    """Per variant and thread count; `bandwidth_gbs` maps a thread count to what that many threads read."""
    jobs = [(name, t, r, v) for name in models for t in threads for r in range(rounds)
            for v in (("raw", "engine") if r % 2 == 0 else ("engine", "raw"))]
    runs: dict[tuple[str, int, str], list[dict]] = {}
    rss: dict[tuple[str, int, str], list[float]] = {}
    for name, t, _, v in tqdm(jobs, desc="speed: engine vs raw llama.cpp", unit="process"):
        result = _engine_worker(v, models[name], t, repeats, profile)
        runs.setdefault((name, t, v), []).extend(result["runs"])
        rss.setdefault((name, t, v), []).append(result["peak_rss_mb"])
    variants = []
    for name, model in models.items():
        size = model.path.stat().st_size
        per_threads = {}
        for t in threads:
            roofline = bandwidth_gbs[t] * 1e9 / size
            entry = {v: {key: percentiles([r[key] for r in runs[(name, t, v)]])
                         for key in ("gen_tok_s", "prompt_tok_s", "ttft_s")} for v in ("engine", "raw")}
            engine_gen = entry["engine"]["gen_tok_s"]["p50"]
            entry["generation_ratio_vs_raw"] = engine_gen / entry["raw"]["gen_tok_s"]["p50"]
            entry["roofline_tok_s"] = roofline
            entry["generation_ratio_vs_roofline"] = engine_gen / roofline
            entry["engine_peak_rss_mb"] = max(rss[(name, t, "engine")])
            per_threads[t] = entry
        variants.append({"name": name, "file_mb": size / 1e6, "threads": per_threads})
    return variants


def measure_decode_profiles(models: dict[str, ModelFile], threads: int, profile: Profile) -> dict:
    """Per variant: where one generated token's time goes (tidings.bench.decode_profile), in its own process."""
    profiles = {}
    for name, model in tqdm(models.items(), desc="decode profile", unit="model"):
        out = subprocess.run(
            [sys.executable, "-m", "tidings.bench.decode_profile", "--json", "--model", _model_argument(model),
             "--threads", str(threads)],
            check=True, capture_output=True, text=True, preexec_fn=_limit(profile)).stdout
        profiles[name] = json.loads(out.strip().splitlines()[-1])
    return profiles


# -- stages and memory of the whole agent -----------------------------------------------------


def _stages_worker(repeats: int) -> dict:
    """Runs in its own process: load everything the agent loads, then time each stage."""
    import tempfile

    import llama_cpp
    from tidings.bench.speech_corpus import utterance
    from tidings.device.agent import open_summarizer
    from tidings.device.summary.grounding import check_grounding
    from tidings.device.messages import parse_lines
    from tidings.device.llm.prompts import summary_prompt
    from tidings.device.store import Store
    from tidings.device.voice.stt import WhisperStt
    from tidings.device.voice.tts import HibariTts
    from tidings.device.voice.vad import SileroVad
    from tidings.models.training.data import dialogue_messages

    process = psutil.Process()
    memory = {"base": process.memory_info().rss}
    config = Config()
    summarizer = open_summarizer(config)  # the LLM with its task adapter
    memory["llm+adapter"] = process.memory_info().rss
    stt = WhisperStt(threads=config.voice.stt_threads)
    memory["stt"] = process.memory_info().rss
    tts = HibariTts()
    memory["tts"] = process.memory_info().rss
    vad = SileroVad()
    memory["vad"] = process.memory_info().rss
    # An announced summary is beam-searched: what its first search adds counts too.
    summarizer.summary_text(list(dialogue_messages("bench", DIALOGUE)))
    memory["beam search"] = process.memory_info().rss
    engine = summarizer.engine
    feed = [json.dumps({"id": f"m{i}", "thread": f"t{i % 5}", "sender": "Ann", "text": line.split(": ", 1)[1],
                        "sent_at": "2026-11-20T15:00:00+01:00"}) for i, line in enumerate(DIALOGUE.splitlines() * 10)]
    speech = utterance(tts, "Tell her I will be there at six, and bring the blue bag.")
    prompt = summary_prompt(engine.prompt_format, DIALOGUE)
    stages: dict[str, list[float]] = {k: [] for k in ("ingest_s", "prompt_eval_s", "generation_s", "validation_s",
                                                       "tts_first_audio_s", "stt_s", "vad_chunk_s")}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            with Store(Path(tmp) / f"s{i}.db") as store:
                stages["ingest_s"].append(_timed(lambda: store.add(parse_lines(feed), "bench")))
                messages = store.unread_messages("t0")
            engine.reset_cache()
            completion = engine.complete(prompt, max_tokens=64, stop=("\n\n",))
            perf = llama_cpp.llama_perf_context(engine.llm.ctx)
            stages["prompt_eval_s"].append(perf.t_p_eval_ms / 1000)
            stages["generation_s"].append(perf.t_eval_ms / 1000)
            stages["validation_s"].append(_timed(lambda: check_grounding(completion.text, messages)))
            stages["tts_first_audio_s"].append(_timed(lambda: tts.synthesize("Two new messages from Mom.")))
            stages["stt_s"].append(_timed(lambda: stt.transcribe(speech)))
            chunks = speech[: len(speech) // 512 * 512].reshape(-1, 512)
            vad.reset()
            stages["vad_chunk_s"].append(_timed(lambda: [vad.probability(c) for c in chunks]) / len(chunks))
    peak = peak_rss_mb() * 1024 * 1024
    order = ["base", "llm+adapter", "stt", "tts", "vad", "beam search"]
    added = {k: (memory[k] - memory[order[i - 1]]) / 1e6 if i else memory[k] / 1e6 for i, k in enumerate(order)}
    return {"stages": {k: percentiles(v) for k, v in stages.items()},
            "memory_mb": added | {"peak_rss": peak / 1e6},
            "generated_tokens": completion.generated_tokens}


def measure_stages(repeats: int, profile: Profile) -> dict:
    with tqdm(total=1, desc="stages of the whole agent", unit="process") as bar:
        out = subprocess.run([sys.executable, "-m", "tidings.bench.suite", "--stages-worker", str(repeats)],
                             check=True, capture_output=True, text=True, preexec_fn=_limit(profile)).stdout
        bar.update(1)
    return json.loads(out.strip().splitlines()[-1])


# -- quality --------------------------------------------------------------------------------


def measure_quality(models: dict[str, ModelFile], dialogues: int | None) -> dict:
    """ROUGE-L per variant on the first `dialogues` SAMSum test dialogues; None: the last full report."""
    if dialogues is None:
        full = Path("bench/results/samsum/summary_quality.json")
        if not full.is_file():
            return {}
        report = json.loads(full.read_text())
        return {"Q4_K_M": {"rouge_l": report["results"]["device"]["rougeL"], "dialogues": report["dialogues"],
                           "source": f"{full} ({report['date']})"}}
    from tidings.bench.summary_eval import run as summary_eval

    quality = {}
    adapter = Path(__file__).resolve().parents[1] / "models" / "adapters" / "tidings-task" / "adapter.gguf"
    for name, model in tqdm(models.items(), desc="quality: ROUGE-L per variant", unit="variant"):
        report, _ = summary_eval(adapter, dialogues, ("device",), threads=0, model=_model_argument(model))
        quality[name] = {"rouge_l": report["results"]["device"]["rougeL"], "dialogues": report["dialogues"],
                         "source": "measured in this run"}
    return quality


def measure_faithfulness(quick: bool) -> dict:
    """Faithful / complete / usable reply options on threads written to a wearer, per suite (no per-thread rows)."""
    from tidings.bench.faithfulness import SUITES, run as faithfulness

    suites = ["dev"] if quick else list(SUITES)
    report = faithfulness(suites, base_config=None)
    return {name: {k: v for k, v in suite.items() if k != "results"} for name, suite in report["suites"].items()}


# -- voice ----------------------------------------------------------------------------------


def _voice_worker(arrivals: int, dictations: int) -> dict:
    """Runs in its own process: the voice bench's latency part through the real voice loop."""
    from tidings.bench.voice_bench import Options, measure_arrivals, measure_readback
    from tidings.device.agent import open_summarizer
    from tidings.device.voice.stt import WhisperStt
    from tidings.device.voice.tts import HibariTts

    config = Config()
    options = Options(arrivals=arrivals, dictations=dictations, progress=False)
    summarizer, tts, stt = open_summarizer(config), HibariTts(config.voice.voice), WhisperStt()
    arrival = measure_arrivals(summarizer, tts, stt, config, options)
    readback = measure_readback(summarizer, tts, stt, config, options)
    return {"first_spoken_word_s": arrival["summary"], "readback_s": readback["summary"],
            "readback_parts_s": readback["parts"]}


def measure_voice(arrivals: int, dictations: int, profile: Profile) -> dict:
    with tqdm(total=1, desc="voice loop latency (real time)", unit="process") as bar:
        out = subprocess.run([sys.executable, "-m", "tidings.bench.suite", "--voice-worker", str(arrivals),
                              str(dictations)], check=True, capture_output=True, text=True,
                             preexec_fn=_limit(profile)).stdout
        bar.update(1)
    return json.loads(out.strip().splitlines()[-1])


# -- the report -----------------------------------------------------------------------------


def headline(report: dict) -> dict:
    embedded = report["variants"][0]
    most = max(embedded["threads"], key=int)
    values = {
        "generation_ratio_vs_raw": embedded["threads"][most]["generation_ratio_vs_raw"],
        "generation_ratio_vs_roofline": embedded["threads"][most]["generation_ratio_vs_roofline"],
        "peak_rss_mb": report["memory_mb"]["peak_rss"],
        "first_spoken_word_p95_s": (report.get("voice") or {}).get("first_spoken_word_s", {}).get("p95"),
        "readback_p95_s": (report.get("voice") or {}).get("readback_s", {}).get("p95"),
        "rouge_l": (report["quality"].get("Q4_K_M") or {}).get("rouge_l"),
        "faithful_rate": ((report.get("faithfulness") or {}).get("dev") or {}).get("faithful_rate"),
        "complete_rate": ((report.get("faithfulness") or {}).get("dev") or {}).get("complete_rate"),
    }
    full = embedded["threads"][most]
    lean = next((v["threads"][most] for v in report["variants"] if v["name"] == LEAN_LABEL), None)
    values["lean_vs_full_decode_ratio"] = lean and lean["engine"]["gen_tok_s"]["p50"] / full["engine"]["gen_tok_s"]["p50"]
    values["lean_vs_full_rss_ratio"] = lean and lean["engine_peak_rss_mb"] / full["engine_peak_rss_mb"]
    goals = {}
    for name, (op, goal) in GOALS.items():
        value = values[name]
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        goals[name] = {"goal": f"{op} {goal}", "value": value, "met": met}
    return values | {"goals": goals}


def projection(report: dict, profile: Profile) -> dict | None:
    if profile.board_bandwidth_gbs is None:
        return None
    embedded = report["variants"][0]
    most = max(embedded["threads"], key=int)
    measured = embedded["threads"][most]["engine"]["gen_tok_s"]["p50"]
    scale = profile.board_bandwidth_gbs / report["machine"]["bandwidth_gbs"]
    return {"board": profile.name, "gen_tok_s": measured * scale,
            "derivation": f"PROJECTION, not measured on a {profile.name}: {measured:.1f} tok/s measured here with "
                          f"{most} threads pinned and memory capped, x {scale:.2f} = the board's typical bandwidth "
                          f"({profile.board_bandwidth_gbs} GB/s, spec figure) / this machine's measured "
                          f"{report['machine']['bandwidth_gbs']:.1f} GB/s (as if decoding were bound by memory, "
                          f"as it is on boards whose cores outrun their memory)"}


def plot(report: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for variant in report["variants"]:
        threads = sorted(variant["threads"], key=int)
        for kind, style in (("engine", "-o"), ("raw", "--x")):
            ax.plot([int(t) for t in threads], [variant["threads"][t][kind]["gen_tok_s"]["p50"] for t in threads],
                    style, label=f"{variant['name']} {kind}")
        ax.plot([int(t) for t in threads], [variant["threads"][t]["roofline_tok_s"] for t in threads], ":",
                color="grey")
    ax.set_xlabel("threads")
    ax.set_ylabel("generated tokens/s (p50)")
    ax.set_title("generation speed (dotted: bandwidth roofline)", fontsize=9)
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "tokens_per_thread.png"))

    if report.get("decode_profile"):
        paths.append(_plot_decode_profile(report, out))

    fig, ax = plt.subplots(figsize=(6, 3.2))
    left = 0.0
    for stage, value in report["stages"].items():
        width = value["p50"] * (1 if stage != "vad_chunk_s" else 1000 / 32)  # VAD: per second of audio
        ax.barh(["one turn"], [width], left=left, label=stage.removesuffix("_s"))
        left += width
    ax.set_xlabel("seconds (p50; VAD per second of audio)")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    ax.set_title("latency per stage", fontsize=9)
    paths.append(_save(fig, out / "stages.png"))

    if report["quality"]:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        sizes = {v["name"]: v["file_mb"] for v in report["variants"]}
        for name, q in report["quality"].items():
            ax.scatter(sizes.get(name, 0), q["rouge_l"])
            ax.annotate(name, (sizes.get(name, 0), q["rouge_l"]), fontsize=8)
        ax.set_xlabel("model file (MB)")
        ax.set_ylabel("ROUGE-L, SAMSum test")
        ax.set_title("quality against size and quantization", fontsize=9)
        paths.append(_save(fig, out / "quality.png"))

    fig, ax = plt.subplots(figsize=(5, 3.2))
    parts = {k: v for k, v in report["memory_mb"].items() if k != "peak_rss"}
    ax.bar(list(parts), list(parts.values()), color="#2b7bba")
    ax.axhline(report["memory_mb"]["peak_rss"], color="black", ls="--", lw=1, label="peak RSS")
    ax.axhline(600, color="#d62728", ls=":", lw=1, label="goal 600 MB")
    ax.set_ylabel("MB (RSS added)")
    ax.legend(fontsize=7)
    ax.set_title("memory per component", fontsize=9)
    paths.append(_save(fig, out / "memory.png"))
    return paths


def _plot_decode_profile(report: dict, out: Path) -> Path:
    """Per variant, one token's time split by what it reads, against the time the roofline allows."""
    import matplotlib.pyplot as plt

    profiles = report["decode_profile"]
    sizes = {v["name"]: v["file_mb"] for v in report["variants"]}
    names = list(profiles)
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(names) + 1.8))
    left = np.zeros(len(names))
    for group in GROUPS:
        # scaled to the plain (unobserved) token, so a bar is as long as a real token takes
        widths = np.array([p["groups"][group]["share"] * p["plain_ms_per_token"] for p in profiles.values()])
        ax.barh(names, widths, left=left, label=group)
        left += widths
    roofline_ms = [sizes[name] / report["machine"]["bandwidth_gbs"] for name in names]  # MB / (GB/s) = ms
    ax.scatter(roofline_ms, names, marker="|", s=400, color="black", zorder=3, label="bandwidth roofline")
    ax.set_xlabel("ms per generated token")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    ax.set_title("where a generated token's time goes (decode profile)", fontsize=9)
    return _save(fig, out / "decode_profile.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def run(quick: bool, profile: Profile, out: Path) -> dict:
    started = time.monotonic()
    config = Config()
    embedded = resolve_model(DEFAULT_MODEL, config.model.cache_dir)
    models = {"Q4_K_M": embedded, LEAN_LABEL: resolve_model(LEAN_MODEL, config.model.cache_dir)}
    if not quick:
        for ftype in ("Q8_0", "Q4_0"):
            models[ftype] = ModelFile(requantize(embedded, ftype, config.model.cache_dir / "requantized"), None)
    cores = profile.cores or len(os.sched_getaffinity(0))
    cores = min(cores, len(os.sched_getaffinity(0)))
    threads = [cores] if quick else sorted({1, *range(2, cores + 1)})
    report: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "mode": "quick" if quick else "full", "machine": machine_facts(),
                    "profile": {"name": profile.name, "cores": cores, "memory_cap_gb": profile.memory_cap_gb,
                                "board_bandwidth_gbs": profile.board_bandwidth_gbs}}
    read_bandwidth = {t: read_bandwidth_gbs(t) for t in threads}
    report["machine"] |= {"read_bandwidth_gbs": read_bandwidth, "bandwidth_gbs": read_bandwidth[max(threads)]}
    report["variants"] = measure_speed(models, threads, rounds=1 if quick else 2, repeats=3 if quick else 5,
                                       bandwidth_gbs=read_bandwidth, profile=profile)
    report["decode_profile"] = measure_decode_profiles(models, max(threads), profile)
    report |= measure_stages(repeats=3 if quick else 10, profile=profile)
    report["voice"] = measure_voice(arrivals=4 if quick else 20, dictations=2 if quick else 10, profile=profile)
    report["quality"] = measure_quality(models, None if quick else 100)
    report["faithfulness"] = measure_faithfulness(quick)
    report["projection"] = projection(report, profile)
    report["machine"]["load_avg_end"] = os.getloadavg()
    report["headline"] = headline(report)
    report["wall_s"] = time.monotonic() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(results_markdown(report, out))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    report["plots"] = [str(p) for p in plot(report, out)]
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _read_bandwidth_text(machine: dict) -> str:
    per_threads = ", ".join(f"{bw:.1f} GB/s with {t}" for t, bw in machine["read_bandwidth_gbs"].items())
    return f"read bandwidth {per_threads} threads"


def _verdict(goal: dict) -> str:
    op, value = goal["goal"].split()
    shown = f"{'≥' if op == '>=' else '≤'} {value}"
    return {True: f"{shown}: met", False: f"{shown}: **not met**", None: f"{shown}: not measured"}[goal["met"]]


def results_markdown(report: dict, out: Path) -> str:
    """The short results table the README shows, exactly as this run measured it."""
    machine, profile, goals = report["machine"], report["profile"], report["headline"]["goals"]
    full, lean = report["variants"][0], next((v for v in report["variants"] if v["name"] == LEAN_LABEL), None)
    most = max(full["threads"], key=int)
    at = full["threads"][most]
    command = f"tidings bench{' --quick' if report['mode'] == 'quick' else ''} --out {out}"
    lines = [f"`{command}` ({report['wall_s'] / 60:.1f} min), {report['date'][:10]}, {machine['cpu']}, "
             f"{profile['cores']} cores (profile {profile['name']}), {_read_bandwidth_text(machine)}; "
             f"task adapter active, {most} threads; the agent runs the default lean 32k model.", "",
             "| figure | value | goal |", "|---|---|---|"]
    engine, raw = at["engine"]["gen_tok_s"]["p50"], at["raw"]["gen_tok_s"]["p50"]
    lines.append(f"| generation, engine / raw llama-cpp-python (full Q4_K_M) | {engine:.1f} / {raw:.1f} tok/s "
                 f"= {at['generation_ratio_vs_raw']:.2f} | {_verdict(goals['generation_ratio_vs_raw'])} |")
    roof = f"full {at['roofline_tok_s']:.0f} tok/s"
    ratio = f"{at['generation_ratio_vs_roofline']:.2f}"
    lean_at = lean and lean["threads"][most]
    if lean_at:
        roof += f"; lean {lean_at['roofline_tok_s']:.0f} tok/s"
        ratio += f"; lean {lean_at['generation_ratio_vs_roofline']:.2f}"
    lines.append(f"| generation / bandwidth roofline ({roof}) | {ratio} | "
                 f"{_verdict(goals['generation_ratio_vs_roofline'])} |")
    decode = report.get("decode_profile", {}).get(full["name"])
    if decode:
        lines.append(f"| where a full-model token's {decode['plain_ms_per_token']:.1f} ms go (decode profile) | "
                     f"{summary_line(decode, machine['bandwidth_gbs'])} | |")
    if lean_at:
        lean_gen = lean_at["engine"]["gen_tok_s"]["p50"]
        lines.append(f"| lean 32k / full generation (engine) | {lean_gen:.1f} / {engine:.1f} tok/s = "
                     f"{lean_gen / engine:.2f} | {_verdict(goals['lean_vs_full_decode_ratio'])} |")
        lines.append(f"| lean 32k / full engine-process peak RSS | {lean_at['engine_peak_rss_mb']:.0f} / "
                     f"{at['engine_peak_rss_mb']:.0f} MB = {lean_at['engine_peak_rss_mb'] / at['engine_peak_rss_mb']:.2f}"
                     f" | {_verdict(goals['lean_vs_full_rss_ratio'])} |")
    memory = report["memory_mb"]
    parts = ", ".join(f"{name} {mb:.0f}" for name, mb in memory.items() if name != "peak_rss")
    lines.append(f"| whole-agent peak RSS ({parts} MB loaded) | {memory['peak_rss']:.0f} MB | "
                 f"{_verdict(goals['peak_rss_mb'])} |")
    for name, label in (("first_spoken_word_p95_s", "message arrival → first spoken word, p95"),
                        ("readback_p95_s", "end of speech → read-back, p95")):
        value = goals[name]["value"]
        lines.append(f"| {label} | {'n/a' if value is None else f'{value:.2f} s'} | {_verdict(goals[name])} |")
    quality = report["quality"].get("Q4_K_M")
    if quality:
        lines.append(f"| ROUGE-L, SAMSum test ({quality['source']}, {quality['dialogues']} dialogues) | "
                     f"{quality['rouge_l']:.1f} | |")
    for name, suite in (report.get("faithfulness") or {}).items():
        lines.append(f"| wearer threads ({name}, {suite['threads']}): faithful / complete / yes-no options usable | "
                     f"{suite['faithful_rate']:.1%} / {suite['complete_rate']:.1%} / "
                     f"{suite['yesno_usable']}/{suite['yesno_asked']} | "
                     + (f"{_verdict(goals['faithful_rate'])}; {_verdict(goals['complete_rate'])} |" if name == "dev"
                        else "|"))
    stages = report["stages"]
    lines.append("| stages p50: prompt eval / generation ({} tokens) / STT / TTS first audio | {} s | |".format(
        report.get("generated_tokens", "?"), " / ".join(f"{stages[k]['p50']:.2f}" for k in
                                                   ("prompt_eval_s", "generation_s", "stt_s", "tts_first_audio_s"))))
    if report["mode"] == "full":
        threads = sorted(full["threads"], key=int)
        lines += ["", "| variant | " + " | ".join(f"tok/s, {t} thread{'s' if int(t) > 1 else ''}" for t in threads)
                  + f" | vs raw ({most}) | vs roofline ({most}) | ROUGE-L |",
                  "|---|" + "---|" * (len(threads) + 3)]
        for variant in report["variants"]:
            speeds = " | ".join(f"{variant['threads'][t]['engine']['gen_tok_s']['p50']:.1f}" for t in threads)
            top = variant["threads"][most]
            rouge = (report["quality"].get(variant["name"]) or {}).get("rouge_l")
            lines.append(f"| {variant['name']} | {speeds} | {top['generation_ratio_vs_raw']:.2f} | "
                         f"{top['generation_ratio_vs_roofline']:.2f} | {'' if rouge is None else f'{rouge:.1f}'} |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, mode: str, table: str) -> None:
    """Replace the text between this mode's markers in the README with `table`."""
    replace_between_markers(readme, f"tidings bench {mode}", table)


def replace_between_markers(readme: Path, label: str, table: str) -> None:
    """Put `table` between the README's `<!-- LABEL: start -->` and `<!-- LABEL: end -->` lines."""
    start, end = f"<!-- {label}: start -->", f"<!-- {label}: end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no '{start}' ... '{end}' markers to put the results between")
    head, rest = text.split(start, 1)
    readme.write_text(f"{head}{start}\n{table}{end}{rest.split(end, 1)[1]}")


def print_summary(report: dict, out: Path) -> None:
    machine = report["machine"]
    print(f"\n{machine['cpu']}, {report['profile']['cores']} cores ({report['profile']['name']}), "
          f"{_read_bandwidth_text(machine)}, {report['mode']} mode, {report['date']}")
    print(f"{'variant':<15} {'threads':>7} {'engine tok/s':>12} {'raw tok/s':>10} {'vs raw':>7} {'roofline':>9} "
          f"{'vs roof':>8}")
    for v in report["variants"]:
        for t, e in v["threads"].items():
            print(f"{v['name']:<15} {t:>7} {e['engine']['gen_tok_s']['p50']:12.1f} {e['raw']['gen_tok_s']['p50']:10.1f} "
                  f"{e['generation_ratio_vs_raw']:7.2f} {e['roofline_tok_s']:9.1f} "
                  f"{e['generation_ratio_vs_roofline']:8.2f}")
    for name, decode in report.get("decode_profile", {}).items():
        print(f"decode profile, {name}: {summary_line(decode, machine['bandwidth_gbs'])}")
    print("stage p50 / p95 (s): " + ", ".join(f"{k.removesuffix('_s')} {s['p50']:.3f}/{s['p95']:.3f}"
                                              for k, s in report["stages"].items()))
    print("memory (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in report["memory_mb"].items()))
    for name, goal in report["headline"]["goals"].items():
        value = "n/a" if goal["value"] is None else f"{goal['value']:.3f}"
        verdict = {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]
        print(f"  {name:<30} {value:>8}  goal {goal['goal']:<8} {verdict}")
    if report["headline"]["rouge_l"] is not None:
        print(f"  ROUGE-L (SAMSum test)          {report['headline']['rouge_l']:8.1f}")
    if report["projection"]:
        print("  " + report["projection"]["derivation"] + f": {report['projection']['gen_tok_s']:.1f} tok/s")
    print(f"saved {out / 'report.json'} and {len(report['plots'])} plots in {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidings bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--stages-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--voice-worker", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stages_worker:
        print(json.dumps(_stages_worker(args.stages_worker)))
        return 0
    if args.voice_worker:
        print(json.dumps(_voice_worker(*args.voice_worker)))
        return 0
    return run_from_args(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the embedded model and its lean variant only, all cores only, few repeats (under 5 minutes "
                        "on two cores)")
    parser.add_argument("--profile", choices=list(PROFILES), default="this-machine",
                        help="pin cores and cap memory like this board; its speed is then projected (default: "
                        "%(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/suite"),
                        help="directory for report.json, results.md and the plots (default: %(default)s)")
    parser.add_argument("--readme", type=Path, metavar="README",
                        help="also put the results table between this file's '<!-- tidings bench quick|full: "
                        "start -->' and '... end -->' markers")


def run_from_args(args: argparse.Namespace) -> int:
    report = run(args.quick, PROFILES[args.profile], args.out)
    print_summary(report, args.out)
    if args.readme:
        update_readme(args.readme, report["mode"], (args.out / "results.md").read_text())
        print(f"updated the {report['mode']} results in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
