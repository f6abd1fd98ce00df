"""The wearer's personal adapter: trained on this device only, on top of task + global adapters, never sent.

Smaller than the global one (rank 2). It learns how this wearer writes from
the replies they sent (as drafted or edited), and the device applies it to
reply drafts only (device_sync.AdapterStack.replying): summaries stay on the
adapters the operator's quality gate measured. It continues from the
previous personal adapter when there is one, and is retrained after each new
global version (the fleet's adapter is merged below it while training,
exactly as the engine stacks them).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tidings.device.store import Store
from tidings.federated.adapter import AdapterLayout, AdapterSpec, load_arrays
from tidings.federated.device_sync import fetch_newest, load_personal, save_personal
from tidings.federated.task import LocalTraining, embedded_model, hf_dir, store_examples, train_local

# Never aggregated nor sent, so a plain LoRA: A trains too.
PERSONAL_SPEC = AdapterSpec(rank=2, alpha=4.0, target_modules=("q_proj", "v_proj"), frozen_a=False)
# 16 steps: on the tuning half of bench/personalization_bench.py, NLL per token of held-out replies fell by
# 0.86 (4 steps: 0.42), about 45 s on 2 cores.
PERSONAL_TRAINING = LocalTraining(steps=16)


def personalize(store_path: Path, registry: Path, device_dir: Path, *, steps: int | None = None, keep: int = 500,
                max_age_days: float | None = None, should_stop=lambda: False) -> dict:
    with Store(store_path) as store:
        store.prune_training_examples(keep, max_age_days)
    examples = [e for e in store_examples(Path(store_path), keep) if e.task == "reply"]
    if not examples:
        raise ValueError("no replies the wearer sent in the store yet")
    model = embedded_model()
    local = fetch_newest(registry, device_dir, base_sha256=model.spec.sha256)
    global_spec = AdapterSpec(**{k: tuple(v) if k == "target_modules" else v
                                 for k, v in _version_spec(local.arrays.parent).items()})
    layout = AdapterLayout.from_hf_dir(PERSONAL_SPEC, hf_dir(model))
    start = load_personal(device_dir) or layout.initial(seed=1)
    result = train_local(model, PERSONAL_SPEC, start, examples, replace(PERSONAL_TRAINING, steps=steps or PERSONAL_TRAINING.steps),
                         Path(device_dir) / "personal-work", should_stop=should_stop,
                         below=[(load_arrays(local.arrays), global_spec)])
    if result.arrays is None:
        return {"finished": False, "steps": result.steps}
    gguf = save_personal(result.arrays, PERSONAL_SPEC, device_dir, tag=f"g{local.version}")
    return {"finished": True, "steps": result.steps, "examples": result.num_examples, "loss": result.loss,
            "global_version": local.version, "gguf": str(gguf)}


def _version_spec(version_dir: Path) -> dict:
    import json

    return json.loads((version_dir / "version.json").read_text())["spec"]
