"""The operator's view: rounds, devices, loss, ε and adapter versions, as text, JSON and a PNG."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tidings.server.registry import AdapterRegistry


@dataclass(frozen=True)
class Status:
    rounds: list[dict]
    versions: list[dict]
    nodes: list[dict] | None  # None: no deployment reachable

    def to_json(self) -> dict:
        return asdict(self)


def read_rounds(state_dir: Path) -> list[dict]:
    path = Path(state_dir) / "rounds.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect(state_dir: Path, nodes: list[dict] | None) -> Status:
    versions = [{"version": v.version, "round": v.round, "created": v.created, "sha256": v.sha256,
                 "epsilon": v.epsilon, "rolled_back_to": v.rolled_back_to, "metrics": v.metrics,
                 "rejected": v.rejected, "gate": v.gate}
                for v in AdapterRegistry(state_dir).versions()]
    return Status(read_rounds(state_dir), versions, nodes)


def render(status: Status) -> str:
    lines = []
    if status.nodes is not None:
        online = [n for n in status.nodes if n.get("status") == "online"]
        lines.append(f"SuperNodes: {len(online)} online of {len(status.nodes)} registered")
    lines.append(f"{'round':>5} {'clients':>7} {'failed':>6} {'rejected':>8} {'loss':>7} {'epsilon':>8} "
                 f"{'version':>7} {'upload/client':>13} {'seconds':>7}")
    for r in status.rounds:
        loss = f"{r['train_loss']:.3f}" if r.get("train_loss") is not None else "-"
        eps = f"{r['epsilon']:.2f}" if r.get("epsilon") is not None else "∞ (no DP)"
        lines.append(f"{r['round']:>5} {r['clients']:>7} {r['failures']:>6} {r['rejected']:>8} {loss:>7} {eps:>8} "
                     f"{r['adapter_version']:>7} {r['upload_bytes_per_client'] / 1e6:>11.3f}MB {r['seconds']:>7}")
        for rejection in r.get("rejections", []):
            lines.append(f"        rejected node {rejection['client']}: {rejection['reason']}")
        if r.get("gate") and not r["gate"]["passed"]:
            lines.append(f"        candidate version {r['candidate_version']} not published (quality gate): "
                         + "; ".join(r["gate"]["reasons"]))
    lines.append("versions:")
    for v in status.versions:
        note = f" (rollback to {v['rolled_back_to']})" if v["rolled_back_to"] is not None else ""
        eps = f"{v['epsilon']:.2f}" if v["epsilon"] >= 0 else "∞ (no DP)"
        candidate = (v.get("gate") or {}).get("candidate")
        figures = (f" ROUGE-L {candidate['rouge_l']:.2f} faithful {100 * candidate['faithful_rate']:.0f}% "
                   f"complete {100 * candidate['complete_rate']:.0f}%") if candidate else ""
        verdict = " REJECTED: " + "; ".join(v["gate"]["reasons"]) if v.get("rejected") else ""
        lines.append(f"  v{v['version']} round {v['round']} {v['created']} sha256 {v['sha256'][:12]}… "
                     f"ε {eps}{figures}{note}{verdict}")
    return "\n".join(lines)


def plot(status: Status, path: Path) -> Path:
    """Loss, participation and ε per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in status.rounds]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    axes[0].plot(rounds, [r.get("train_loss") or float("nan") for r in status.rounds], marker="o")
    axes[0].set_title("mean local training loss")
    axes[1].bar(rounds, [r["clients"] for r in status.rounds], label="aggregated")
    axes[1].bar(rounds, [r["failures"] + r["rejected"] for r in status.rounds],
                bottom=[r["clients"] for r in status.rounds], label="failed or rejected")
    axes[1].set_title("devices per round")
    axes[1].legend()
    axes[2].plot(rounds, [r["epsilon"] if r.get("epsilon") is not None else float("nan") for r in status.rounds],
                 marker="o")
    axes[2].set_title(f"ε spent (δ = {status.rounds[-1]['delta'] if status.rounds else '-'})")
    for ax in axes:
        ax.set_xlabel("round")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
